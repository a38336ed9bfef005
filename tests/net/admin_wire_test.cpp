#include "net/admin_wire.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace llmux::net;
using nlohmann::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto call_timeout = 5000ms;

/// Replies {"ok":true,"echo":request}.
admin_server::handler echo_handler() {
  return [](const json& req) { return json{{"ok", true}, {"echo", req}}; };
}

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

/// A plain blocking client socket, for sending frames admin_call never would.
class raw_client {
public:
  explicit raw_client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval tv{5, 0};  // a broken server fails the test instead of hanging it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~raw_client() { ::close(fd_); }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  void send_bytes(const std::string& bytes) {
    REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  }

  static std::string length_prefix(uint32_t n) {
    return {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n)};
  }

  void send_frame(const std::string& body) { send_bytes(length_prefix(static_cast<uint32_t>(body.size())) + body); }

  void send_json(const json& j) {
    const auto body = json::to_msgpack(j);
    send_frame(std::string(body.begin(), body.end()));
  }

  /// Reads one response frame; nullopt on EOF or timeout.
  std::optional<json> read_frame() {
    std::string header = read_n(4);
    if (header.size() != 4) return std::nullopt;
    const auto* h = reinterpret_cast<const unsigned char*>(header.data());
    const uint32_t n = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | h[3];
    std::string body = read_n(n);
    if (body.size() != n) return std::nullopt;
    return json::from_msgpack(body);
  }

  /// True when the server closed the connection (recv returns 0).
  bool closed_by_peer() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

private:
  std::string read_n(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      const ssize_t r = ::recv(fd_, out.data() + got, n - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  }

  int fd_ = -1;
};

}  // namespace

TEST_CASE("round trip keeps a nested value intact", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  REQUIRE(server.port() != 0);

  const json request = {
      {"cmd", "state"},
      {"token", "s3cret"},
      {"actor", ""},
      {"args", {{"ids", {1, -2, 3000000000LL}}, {"ratio", 0.25}, {"flag", false}, {"none", nullptr}}},
      {"deep", {{"a", {{"b", {{"c", json::array({"x", json::object(), json::array()})}}}}}}},
      {"text", "multi\nline \"quoted\" \xc3\xa9"},
  };
  const json response = admin_call("127.0.0.1", server.port(), request, call_timeout);
  CHECK(response["ok"] == true);
  CHECK(response["echo"] == request);
}

TEST_CASE("sequential calls are all served", "[admin_wire]") {
  std::atomic<int> calls{0};
  admin_server server("127.0.0.1", 0, [&](const json& req) {
    ++calls;
    return json{{"ok", true}, {"n", req.at("n").get<int>() * 2}};
  });
  server.start();
  for (int i = 0; i < 25; ++i) {
    const json r = admin_call("127.0.0.1", server.port(), {{"cmd", "double"}, {"n", i}}, call_timeout);
    CHECK(r["n"] == 2 * i);
  }
  CHECK(calls == 25);
}

TEST_CASE("one connection carries several request/response pairs", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  raw_client client(server.port());
  for (int i = 0; i < 5; ++i) {
    client.send_json({{"cmd", "ping"}, {"i", i}});
    const auto r = client.read_frame();
    REQUIRE(r.has_value());
    CHECK((*r)["echo"]["i"] == i);
  }
}

TEST_CASE("a handler exception becomes ok:false with its message", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, [](const json& req) -> json {
    throw std::runtime_error("no such actor: " + req.at("actor").get<std::string>());
  });
  server.start();
  const json r = admin_call("127.0.0.1", server.port(), {{"cmd", "state"}, {"actor", "router"}}, call_timeout);
  CHECK(r["ok"] == false);
  CHECK(r["error"] == "no such actor: router");
}

TEST_CASE("admin_call to a closed port fails fast naming host:port", "[admin_wire]") {
  uint16_t port = 0;
  {
    // Borrow a port that was just free, then free it again.
    admin_server probe("127.0.0.1", 0, echo_handler());
    probe.start();
    port = probe.port();
  }
  const auto t0 = steady::now();
  try {
    (void)admin_call("127.0.0.1", port, {{"cmd", "state"}}, call_timeout);
    FAIL("admin_call to a closed port returned");
  } catch (const admin_wire_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("127.0.0.1:" + std::to_string(port)));
  }
  CHECK(seconds_since(t0) < 3.0);
}

TEST_CASE("admin_call gives up on a slow handler after its timeout", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, [](const json&) {
    std::this_thread::sleep_for(1500ms);
    return json{{"ok", true}};
  });
  server.start();
  const auto t0 = steady::now();
  try {
    (void)admin_call("127.0.0.1", server.port(), {{"cmd", "slow"}}, 300ms);
    FAIL("admin_call did not time out");
  } catch (const admin_wire_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("127.0.0.1:" + std::to_string(server.port())));
    CHECK_THAT(e.what(), Catch::Contains("timed out"));
  }
  CHECK(seconds_since(t0) < 0.3 + 1.0);
}

TEST_CASE("an oversized length prefix is refused and the server lives on", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  {
    raw_client client(server.port());
    client.send_bytes(raw_client::length_prefix(0xFFFFFFFFu) + "junk");
    const auto r = client.read_frame();
    REQUIRE(r.has_value());
    CHECK((*r)["ok"] == false);
    CHECK_THAT((*r)["error"].get<std::string>(), Catch::Contains("exceeds the limit of 65536 bytes"));
    CHECK(client.closed_by_peer());
  }
  const json r = admin_call("127.0.0.1", server.port(), {{"cmd", "ping"}}, call_timeout);
  CHECK(r["ok"] == true);
}

TEST_CASE("non-msgpack and non-map frames get ok:false on a still-usable connection", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  raw_client client(server.port());

  client.send_frame("\xc1\xc1\xc1 not msgpack");  // 0xc1 is never used by msgpack
  auto r = client.read_frame();
  REQUIRE(r.has_value());
  CHECK((*r)["ok"] == false);
  CHECK_THAT((*r)["error"].get<std::string>(), Catch::Contains("msgpack"));

  client.send_json(json::array({1, 2, 3}));
  r = client.read_frame();
  REQUIRE(r.has_value());
  CHECK((*r)["ok"] == false);
  CHECK_THAT((*r)["error"].get<std::string>(), Catch::Contains("map"));

  client.send_frame("");  // zero-length frame
  r = client.read_frame();
  REQUIRE(r.has_value());
  CHECK((*r)["ok"] == false);

  client.send_json({{"cmd", "ping"}});
  r = client.read_frame();
  REQUIRE(r.has_value());
  CHECK((*r)["ok"] == true);

  CHECK(admin_call("127.0.0.1", server.port(), {{"cmd", "ping"}}, call_timeout)["ok"] == true);
}

TEST_CASE("a client vanishing mid-frame does not hurt the server", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  {
    raw_client client(server.port());
    client.send_bytes(raw_client::length_prefix(1000) + "only part of it");
  }
  CHECK(admin_call("127.0.0.1", server.port(), {{"cmd", "ping"}}, call_timeout)["ok"] == true);
}

TEST_CASE("stop() returns promptly while clients are connected", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  raw_client idle(server.port());
  raw_client half(server.port());
  half.send_bytes(raw_client::length_prefix(100) + "partial");
  idle.send_json({{"cmd", "ping"}});
  REQUIRE(idle.read_frame().has_value());  // both connections are being served

  const auto t0 = steady::now();
  server.stop();
  CHECK(seconds_since(t0) < 1.0);
  CHECK(idle.closed_by_peer());
  server.stop();  // idempotent
}

TEST_CASE("start() on a taken port throws", "[admin_wire]") {
  admin_server first("127.0.0.1", 0, echo_handler());
  first.start();
  admin_server second("127.0.0.1", first.port(), echo_handler());
  try {
    second.start();
    FAIL("second bind succeeded");
  } catch (const admin_wire_error& e) {
    CHECK_THAT(e.what(), Catch::Contains(std::to_string(first.port())));
  }
}

TEST_CASE("localhost resolves and many connections are reaped", "[admin_wire]") {
  admin_server server("localhost", 0, echo_handler());
  server.start();
  for (int i = 0; i < 100; ++i) {
    REQUIRE(admin_call("localhost", server.port(), {{"i", i}}, call_timeout)["echo"]["i"] == i);
  }
}

TEST_CASE("a request without the token never reaches the handler; the client is hung up on and logged",
          "[admin_wire]") {
  std::atomic<int> handled{0};
  std::mutex log_mtx;
  std::vector<std::string> log;
  admin_server_options o;
  o.token = "adm-secret";
  o.log = [&](const std::string& why) {
    std::lock_guard<std::mutex> g{log_mtx};
    log.push_back(why);
  };
  admin_server server("127.0.0.1", 0, [&](const json& req) {
    ++handled;
    return json{{"ok", true}, {"echo", req}};
  }, o);
  server.start();
  for (const json& req : {json{{"cmd", "state"}}, json{{"cmd", "state"}, {"token", "adm-secreT"}},
                          json{{"cmd", "state"}, {"token", 42}}}) {
    raw_client client(server.port());
    client.send_json(req);
    const auto r = client.read_frame();
    REQUIRE(r.has_value());
    CHECK((*r)["ok"] == false);
    CHECK((*r)["error"] == "bad admin token");
    CHECK(client.closed_by_peer());
  }
  CHECK(handled == 0);
  {
    std::lock_guard<std::mutex> g{log_mtx};
    REQUIRE(log.size() == 3);
    CHECK_THAT(log[0], Catch::Contains("bad admin token from 127.0.0.1:"));
    CHECK_THAT(log[1], !Catch::Contains("adm-secreT"));  // what the client sent is not logged
  }
  const json ok = admin_call("127.0.0.1", server.port(), {{"cmd", "state"}, {"token", "adm-secret"}}, call_timeout);
  CHECK(ok["ok"] == true);
  CHECK(handled == 1);
}

TEST_CASE("request frames above the request limit are refused before their body is read", "[admin_wire]") {
  admin_server server("127.0.0.1", 0, echo_handler());
  server.start();
  raw_client client(server.port());
  client.send_bytes(raw_client::length_prefix(64 * 1024 + 1));  // and no body at all
  const auto r = client.read_frame();
  REQUIRE(r.has_value());
  CHECK_THAT((*r)["error"].get<std::string>(), Catch::Contains("65537 bytes exceeds the limit"));
  CHECK(client.closed_by_peer());
}

TEST_CASE("connections beyond the limit are refused, and idle ones are closed", "[admin_wire]") {
  admin_server_options o;
  o.max_connections = 2;
  o.idle_timeout = 300ms;
  std::atomic<int> refusals{0};
  o.log = [&](const std::string&) { ++refusals; };
  admin_server server("127.0.0.1", 0, echo_handler(), o);
  server.start();
  raw_client a(server.port()), b(server.port());
  // Both are served (one round trip each, so both threads exist).
  a.send_json({{"i", 1}});
  b.send_json({{"i", 2}});
  REQUIRE(a.read_frame().has_value());
  REQUIRE(b.read_frame().has_value());
  raw_client c(server.port());
  const auto r = c.read_frame();
  REQUIRE(r.has_value());
  CHECK_THAT((*r)["error"].get<std::string>(), Catch::Contains("too many admin connections"));
  CHECK(c.closed_by_peer());
  CHECK(refusals == 1);
  // Idle past the timeout: closed by the server (the client's own read
  // timeout is 5 s); then a new client is served.
  CHECK(a.closed_by_peer());
  CHECK(b.closed_by_peer());
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {  // the closed connections' threads finish
    served = admin_call("127.0.0.1", server.port(), {{"i", 3}}, call_timeout).value("ok", false);
    if (!served)
      std::this_thread::sleep_for(20ms);
  }
  CHECK(served);
}

TEST_CASE("check_admin_request: a map with the token goes on; anything else is answered", "[admin]") {
  using llmux::net::check_admin_request;
  auto frame = [](const nlohmann::json& j) {
    auto b = nlohmann::json::to_msgpack(j);
    return std::string(b.begin(), b.end());
  };
  auto good = check_admin_request(frame({{"cmd", "state"}, {"token", "t"}}), "t");
  CHECK(good.ok);
  CHECK(good.request["cmd"] == "state");
  CHECK_FALSE(good.hang_up);
  auto open = check_admin_request(frame({{"cmd", "state"}}), "");
  CHECK(open.ok);  // no token configured: none needed
  auto wrong = check_admin_request(frame({{"cmd", "state"}, {"token", "x"}}), "t");
  CHECK_FALSE(wrong.ok);
  CHECK(wrong.hang_up);
  CHECK(wrong.response["error"] == "bad admin token");
  CHECK(wrong.request.is_null());  // nothing of it kept
  auto typed = check_admin_request(frame({{"cmd", "state"}, {"token", 7}}), "t");
  CHECK(typed.hang_up);
  auto list = check_admin_request(frame(nlohmann::json::array({1, 2})), "t");
  CHECK_FALSE(list.ok);
  CHECK_FALSE(list.hang_up);
  CHECK_THAT(list.response["error"].get<std::string>(), Catch::Contains("msgpack map"));
  auto junk = check_admin_request(std::string("\xc1\xff", 2), "t");
  CHECK_FALSE(junk.ok);
  CHECK(junk.response["ok"] == false);
  CHECK_THAT(junk.response["error"].get<std::string>(), Catch::Contains("malformed msgpack"));
}
