#include "net/node_tls.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include <catch2/catch.hpp>
#include <openssl/ssl.h>

using namespace llmux::net::node_tls;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("llmux-node-tls-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct socket_pair {
  int fd[2] = {-1, -1};
  socket_pair() {
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0);
    for (int f : fd)
      fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK);
  }
  ~socket_pair() {
    for (int f : fd)
      if (f >= 0)
        ::close(f);
  }
};

credentials files_of(const fs::path& dir, const std::string& node) {
  return {(dir / "ca.pem").string(), (dir / (node + ".pem")).string(), (dir / (node + ".key")).string()};
}

/// Drives both handshakes until each side is done or one has failed. The
/// socket pair moves bytes at once, so this needs no waiting.
void run_handshake(session& a, session& b) {
  for (int i = 0; i < 1000 && !(a.established() && b.established()) && !a.failed() && !b.failed(); ++i) {
    a.handshake();
    b.handshake();
  }
}

/// Sends `data` from `from` to `to`, both non-blocking, and returns what arrived.
std::string pump(session& from, session& to, const std::string& data) {
  std::string got;
  size_t sent = 0;
  std::vector<char> buf(64 * 1024);
  for (int i = 0; i < 100000 && got.size() < data.size(); ++i) {
    size_t n = 0;
    if (sent < data.size()) {
      REQUIRE(from.write(data.data() + sent, data.size() - sent, n) == session::result::ok);
      sent += n;
    }
    REQUIRE(to.read(buf.data(), buf.size(), n) == session::result::ok);
    got.append(buf.data(), n);
  }
  return got;
}

/// A TLS client outside llmux's checks: it trusts anything and presents the
/// given certificate, or none. Drives the handshake against `server` until
/// the server is done either way.
void raw_client_handshake(session& server, int fd, const std::string& cert = "", const std::string& key = "") {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  if (!cert.empty()) {
    REQUIRE(SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) == 1);
  }
  SSL* c = SSL_new(ctx);
  SSL_set_fd(c, fd);
  SSL_set_connect_state(c);
  for (int i = 0; i < 1000 && !server.failed() && !server.established(); ++i) {
    SSL_do_handshake(c);
    server.handshake();
    char b[8];
    SSL_read(c, b, sizeof b);  // TLS 1.3: the client is done first; this meets the server's answer
  }
  SSL_free(c);
  SSL_CTX_free(ctx);
}

struct cluster_dirs {
  temp_dir ours, theirs;
  cluster_dirs() {
    make_cluster_certs(ours.path.string(), "test", {{"edge", "127.0.0.1"}, {"gpu0", "10.0.0.2"}, {"stranger", "x"}});
    make_cluster_certs(theirs.path.string(), "other", {{"edge", "127.0.0.1"}, {"gpu0", "10.0.0.2"}});
  }
};

}  // namespace

TEST_CASE("two nodes of one cluster complete the handshake and exchange bytes both ways") {
  cluster_dirs d;
  std::vector<std::string> log;
  auto sink = [&](const std::string& line) { log.push_back(line); };
  auto server_ctx = std::make_shared<const context>(files_of(d.ours.path, "gpu0"), std::set<std::string>{"edge", "gpu0"}, sink);
  auto client_ctx = std::make_shared<const context>(files_of(d.ours.path, "edge"), std::set<std::string>{"edge", "gpu0"}, sink);
  socket_pair sp;
  session server(server_ctx, sp.fd[0], true, "peer-a");
  session client(client_ctx, sp.fd[1], false, "peer-b", "gpu0");
  run_handshake(server, client);
  REQUIRE(server.established());
  REQUIRE(client.established());
  CHECK(server.peer_node() == "edge");
  CHECK(client.peer_node() == "gpu0");
  CHECK(log.empty());
  CHECK(pump(client, server, "hello gpu0") == "hello gpu0");
  // More than a socket buffer: partial writes resume where they stopped.
  std::string big(3 * 1024 * 1024 + 17, '\0');
  std::mt19937 rng(7);
  for (auto& c : big)
    c = static_cast<char>(rng());
  CHECK(pump(server, client, big) == big);
}

TEST_CASE("a certificate from another CA is refused, and the refusal is logged with the peer") {
  cluster_dirs d;
  std::vector<std::string> log;
  auto sink = [&](const std::string& line) { log.push_back(line); };
  auto server_ctx = std::make_shared<const context>(files_of(d.ours.path, "gpu0"), std::set<std::string>{"edge", "gpu0"}, sink);
  // The intruder presents a certificate and key its own CA signed.
  socket_pair sp;
  session server(server_ctx, sp.fd[0], true, "10.9.9.9:4242");
  raw_client_handshake(server, sp.fd[1], (d.theirs.path / "edge.pem").string(), (d.theirs.path / "edge.key").string());
  CHECK(server.failed());
  CHECK_FALSE(server.established());
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Catch::Contains("refused a connection from 10.9.9.9:4242"));
  CHECK_THAT(log[0], Catch::Contains("'edge' not accepted"));
  // No byte of application data gets through a refused session.
  size_t n = 0;
  char buf[16];
  CHECK(server.read(buf, sizeof buf, n) == session::result::failed);
  CHECK(n == 0);
}

TEST_CASE("a certificate the cluster CA signed for a name that is no node is refused") {
  cluster_dirs d;
  std::vector<std::string> log;
  auto sink = [&](const std::string& line) { log.push_back(line); };
  auto server_ctx = std::make_shared<const context>(files_of(d.ours.path, "gpu0"), std::set<std::string>{"edge", "gpu0"}, sink);
  auto stranger_ctx = std::make_shared<const context>(files_of(d.ours.path, "stranger"), std::set<std::string>{"gpu0"}, nullptr);
  socket_pair sp;
  session server(server_ctx, sp.fd[0], true, "p");
  session client(stranger_ctx, sp.fd[1], false, "q");
  run_handshake(server, client);
  CHECK(server.failed());
  REQUIRE(log.size() == 1);
  CHECK_THAT(log[0], Catch::Contains("names 'stranger', which is no node of this cluster"));
}

TEST_CASE("a node that dials one node's address and meets another's certificate hangs up") {
  cluster_dirs d;
  std::vector<std::string> log;
  auto sink = [&](const std::string& line) { log.push_back(line); };
  auto names = std::set<std::string>{"edge", "gpu0"};
  auto edge_ctx = std::make_shared<const context>(files_of(d.ours.path, "edge"), names, nullptr);
  auto gpu0_ctx = std::make_shared<const context>(files_of(d.ours.path, "gpu0"), names, sink);
  socket_pair sp;
  session server(edge_ctx, sp.fd[0], true, "p");
  session client(gpu0_ctx, sp.fd[1], false, "127.0.0.1:9000", "gpu0");  // expects gpu0, meets edge
  run_handshake(server, client);
  CHECK(client.failed());
  CHECK_FALSE(client.established());
  bool found = false;
  for (const auto& l : log)
    found |= l.find("names node 'edge', not 'gpu0'") != std::string::npos
             && l.find("connection to 127.0.0.1:9000 (node gpu0) failed") != std::string::npos;
  CHECK(found);
}

TEST_CASE("a client without a certificate, and a client that does not speak TLS, are refused and logged") {
  cluster_dirs d;
  std::vector<std::string> log;
  auto sink = [&](const std::string& line) { log.push_back(line); };
  auto server_ctx = std::make_shared<const context>(files_of(d.ours.path, "gpu0"), std::set<std::string>{"edge"}, sink);
  SECTION("TLS without a certificate") {
    socket_pair sp;
    session server(server_ctx, sp.fd[0], true, "anon");
    raw_client_handshake(server, sp.fd[1]);
    CHECK(server.failed());
    REQUIRE(log.size() == 1);
    CHECK_THAT(log[0], Catch::Contains("refused a connection from anon"));
    CHECK_THAT(log[0], Catch::Contains("certificate"));
  }
  SECTION("plain bytes") {
    socket_pair sp;
    session server(server_ctx, sp.fd[0], true, "plain");
    const char hello[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    REQUIRE(::write(sp.fd[1], hello, sizeof hello - 1) == static_cast<ssize_t>(sizeof hello - 1));
    for (int i = 0; i < 10 && !server.failed(); ++i)
      server.handshake();
    CHECK(server.failed());
    REQUIRE(log.size() == 1);
    CHECK_THAT(log[0], Catch::Contains("refused a connection from plain"));
  }
}

TEST_CASE("a node's files are checked when its context is built") {
  cluster_dirs d;
  auto names = std::set<std::string>{"edge", "gpu0"};
  auto message = [&](const credentials& c) -> std::string {
    try {
      context ctx(c, names, nullptr);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  auto good = files_of(d.ours.path, "gpu0");
  CHECK(message(good).empty());
  auto missing = good;
  missing.cert_file = (d.ours.path / "nope.pem").string();
  CHECK_THAT(message(missing), Catch::Contains("does not exist (llmux certs CONFIG makes one)"));
  auto wrong_key = good;
  wrong_key.key_file = (d.ours.path / "edge.key").string();
  CHECK_THAT(message(wrong_key), Catch::Contains("does not belong to certificate"));
  auto other_ca = good;
  other_ca.cert_file = (d.theirs.path / "gpu0.pem").string();
  other_ca.key_file = (d.theirs.path / "gpu0.key").string();
  CHECK_THAT(message(other_ca), Catch::Contains("does not verify against CA"));
}

TEST_CASE("llmux certs keeps an existing cluster CA and writes keys for their owner only") {
  temp_dir dir;
  auto first = make_cluster_certs(dir.path.string(), "c", {{"a", "127.0.0.1"}});
  CHECK(first.ca_created);
  CHECK(first.files.size() == 4);
  auto second = make_cluster_certs(dir.path.string(), "c", {{"b", "host-b"}});
  CHECK_FALSE(second.ca_created);
  CHECK(second.files.size() == 2);
  // a's certificate (first run) and b's (second run) trust each other.
  auto names = std::set<std::string>{"a", "b"};
  auto ca = std::make_shared<const context>(files_of(dir.path, "a"), names, nullptr);
  auto cb = std::make_shared<const context>(files_of(dir.path, "b"), names, nullptr);
  socket_pair sp;
  session s(ca, sp.fd[0], true, "x");
  session c(cb, sp.fd[1], false, "y", "a");
  run_handshake(s, c);
  CHECK(s.established());
  CHECK(c.established());
  for (const char* key : {"ca.key", "a.key", "b.key"}) {
    struct stat st {};
    REQUIRE(::stat((dir.path / key).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
  }
}
