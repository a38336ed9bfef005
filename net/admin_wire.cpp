#include "net/admin_wire.hpp"

#include "net/secret.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace llmux::net {
namespace {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using deadline = std::optional<steady::time_point>;  ///< nullopt: wait forever

constexpr uint32_t max_frame_bytes = 64u << 20;
/// Once a request's length prefix has arrived, the rest must follow within
/// this; a client stalled mid-frame should not pin a thread forever.
constexpr std::chrono::seconds server_io_timeout{30};

/// Owns one socket; closes it on every exit path of admin_call.
class unique_fd {
public:
  explicit unique_fd(int fd) : fd_(fd) {}
  ~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

private:
  int fd_;
};

enum class io_status { ok, eof, timeout, error };

std::string errno_text(int err) { return std::strerror(err); }

/// Waits for `events` on fd. 1: ready (including error/hangup, which the
/// next recv/send reports), 0: deadline passed, -1: poll failed (errno set).
int wait_fd(int fd, short events, const deadline& until) {
  for (;;) {
    int timeout_ms = -1;
    if (until) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*until - steady::now());
      if (left.count() <= 0) return 0;
      timeout_ms = static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX));
    }
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r > 0) return 1;
    if (r == 0) {
      if (until && steady::now() >= *until) return 0;
      continue;  // rounding woke us a hair early
    }
    if (errno != EINTR) return -1;
  }
}

/// Reads exactly n bytes. MSG_DONTWAIT makes every socket behave as
/// non-blocking here, so all waiting happens in poll under the deadline.
io_status read_exact(int fd, char* buf, size_t n, const deadline& until, int& err) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return io_status::eof;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      err = errno;
      return io_status::error;
    }
    const int w = wait_fd(fd, POLLIN, until);
    if (w == 0) return io_status::timeout;
    if (w < 0) {
      err = errno;
      return io_status::error;
    }
  }
  return io_status::ok;
}

/// Writes all n bytes. MSG_NOSIGNAL: a peer that hung up yields EPIPE, not a
/// process-killing SIGPIPE.
io_status write_all(int fd, const char* buf, size_t n, const deadline& until, int& err) {
  size_t sent = 0;
  while (sent < n) {
    const ssize_t r = ::send(fd, buf + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) {
      sent += static_cast<size_t>(r);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      err = errno;
      return io_status::error;
    }
    const int w = wait_fd(fd, POLLOUT, until);
    if (w == 0) return io_status::timeout;
    if (w < 0) {
      err = errno;
      return io_status::error;
    }
  }
  return io_status::ok;
}

/// Length prefix + msgpack body in one buffer, so it goes out in one send.
std::string encode_frame(const json& message) {
  const std::vector<uint8_t> body = json::to_msgpack(message);
  if (body.size() > max_frame_bytes) {
    throw admin_wire_error("admin frame of " + std::to_string(body.size()) + " bytes exceeds the 64 MiB limit");
  }
  const auto n = static_cast<uint32_t>(body.size());
  std::string frame;
  frame.reserve(4 + body.size());
  frame.push_back(static_cast<char>((n >> 24) & 0xff));
  frame.push_back(static_cast<char>((n >> 16) & 0xff));
  frame.push_back(static_cast<char>((n >> 8) & 0xff));
  frame.push_back(static_cast<char>(n & 0xff));
  frame.append(reinterpret_cast<const char*>(body.data()), body.size());
  return frame;
}

uint32_t decode_length(const unsigned char* h) {
  return (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | uint32_t{h[3]};
}

/// IPv4 only. An empty host means any interface for a server and loopback
/// for a client. Names go through getaddrinfo, which the call timeout does
/// not bound; admin hosts are addresses or /etc/hosts names in practice.
bool resolve_ipv4(const std::string& host, uint16_t port, bool passive, sockaddr_in& out, std::string& err) {
  out = sockaddr_in{};
  out.sin_family = AF_INET;
  out.sin_port = htons(port);
  if (host.empty()) {
    out.sin_addr.s_addr = htonl(passive ? INADDR_ANY : INADDR_LOOPBACK);
    return true;
  }
  if (::inet_pton(AF_INET, host.c_str(), &out.sin_addr) == 1) return true;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    err = std::string("cannot resolve host: ") + ::gai_strerror(rc);
    return false;
  }
  out.sin_addr = reinterpret_cast<const sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return true;
}

/// Request/response pairs are tiny; Nagle plus delayed ACKs would add ~40 ms each.
void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Closing a socket with unread input makes the kernel send RST, which can
/// destroy the reply we just sent before the client reads it. Send FIN first,
/// then discard whatever the client still sends, for a bounded time.
void close_gracefully(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto until = steady::now() + std::chrono::seconds(1);
  char sink[4096];
  for (;;) {
    const ssize_t r = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (r > 0) {
      if (steady::now() >= until) return;  // a client that never stops sending
      continue;
    }
    if (r == 0) return;
    if (errno == EINTR) continue;
    if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_fd(fd, POLLIN, until) != 1) return;
  }
}

json error_response(std::string message) { return json{{"ok", false}, {"error", std::move(message)}}; }

/// "host:port" of a connected socket's peer (for the log).
std::string peer_text(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  char host[INET_ADDRSTRLEN] = "?";
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "?";
  ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
  return std::string{host} + ":" + std::to_string(ntohs(a.sin_port));
}

}  // namespace

admin_server::admin_server(std::string host, uint16_t port, handler h, admin_server_options opts)
    : opts_(std::move(opts)), host_(std::move(host)), port_(port), handler_(std::move(h)) {}

void admin_server::refuse(const std::string& why) {
  if (opts_.log) opts_.log(why);
}

admin_server::~admin_server() { stop(); }

void admin_server::start() {
  if (running_.load()) return;
  const std::string where = host_ + ":" + std::to_string(port_);
  sockaddr_in addr{};
  std::string err;
  if (!resolve_ipv4(host_, port_, /*passive=*/true, addr, err)) {
    throw admin_wire_error("admin server " + where + ": " + err);
  }
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw admin_wire_error("admin server " + where + ": socket: " + errno_text(errno));
  // Lets a restarted node rebind while old connections sit in TIME_WAIT.
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw admin_wire_error("admin server cannot bind " + where + ": " + errno_text(errno));
  }
  if (::listen(fd.get(), 16) != 0) {
    throw admin_wire_error("admin server cannot listen on " + where + ": " + errno_text(errno));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0) port_ = ntohs(bound.sin_port);

  listen_fd_ = fd.release();
  running_.store(true);
  acceptor_ = std::thread([this] { accept_loop(); });
}

void admin_server::stop() {
  running_.store(false);
  if (listen_fd_ >= 0) {
    // shutdown, not close: it wakes the blocked accept() without letting the
    // fd number be reused under the acceptor's feet.
    ::shutdown(listen_fd_, SHUT_RDWR);
  }
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // The acceptor is gone, so no connection can be added from here on.
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(conns_mutex_);
    // Each connection thread closes its own fd; shutdown only wakes its recv.
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(conns_);
    finished_.clear();
  }
  for (auto& t : threads) {
    if (t.joinable()) t.join();
  }
}

void admin_server::accept_loop() {
  while (running_.load()) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (!running_.load()) break;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of fds or memory: back off instead of spinning, then retry.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    set_nodelay(fd);
    const std::string peer = peer_text(fd);
    std::lock_guard<std::mutex> lock(conns_mutex_);
    if (!running_.load()) {
      ::close(fd);
      break;
    }
    if (conn_fds_.size() >= opts_.max_connections) {
      refuse("admin port: refused a connection from " + peer + ": " + std::to_string(opts_.max_connections)
             + " are open");
      // Answer without a thread: the frame is small and the socket's buffer empty.
      const std::string frame = encode_frame(error_response(
          "too many admin connections (" + std::to_string(opts_.max_connections) + " open)"));
      [[maybe_unused]] auto w = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    // Reap threads that have finished; each pushed its id as its last act
    // under this mutex, so join() returns at once.
    for (auto id : finished_) {
      auto it = std::find_if(conns_.begin(), conns_.end(), [&](const std::thread& t) { return t.get_id() == id; });
      if (it != conns_.end()) {
        it->join();
        conns_.erase(it);
      }
    }
    finished_.clear();
    try {
      conn_fds_.push_back(fd);
      conns_.emplace_back([this, fd, peer] { serve(fd, peer); });
    } catch (...) {
      conn_fds_.erase(std::remove(conn_fds_.begin(), conn_fds_.end(), fd), conn_fds_.end());
      ::close(fd);
    }
  }
}

admin_request_check check_admin_request(const std::string& body, const std::string& token) {
  admin_request_check out;
  try {
    out.request = json::from_msgpack(body);
  } catch (const json::exception& e) {
    out.response = error_response(std::string("malformed msgpack request: ") + e.what());
    return out;
  }
  if (!out.request.is_object()) {
    out.response = error_response(std::string("request must be a msgpack map, got ") + out.request.type_name());
    out.request = json{};
    return out;
  }
  if (!token.empty()
      && !(out.request.contains("token") && out.request["token"].is_string()
           && constant_time_equal(out.request["token"].get_ref<const std::string&>(), token))) {
    // Before the handler sees anything: answered, logged, and hung up.
    out.response = error_response("bad admin token");
    out.request = json{};
    out.hang_up = true;
    return out;
  }
  out.ok = true;
  return out;
}

void admin_server::serve(int fd, std::string peer) {
  try {
    for (;;) {
      unsigned char header[4];
      int err = 0;
      // An idle connection is closed after idle_timeout; stop() wakes it sooner.
      if (read_exact(fd, reinterpret_cast<char*>(header), 4, steady::now() + opts_.idle_timeout, err)
          != io_status::ok)
        break;
      const uint32_t n = decode_length(header);
      if (n > opts_.max_request_bytes) {
        // The stream cannot be resynchronised without reading the body; answer and hang up.
        const std::string frame = encode_frame(error_response(
            "request frame of " + std::to_string(n) + " bytes exceeds the limit of "
            + std::to_string(opts_.max_request_bytes) + " bytes"));
        refuse("admin port: refused a request frame of " + std::to_string(n) + " bytes from " + peer);
        if (write_all(fd, frame.data(), frame.size(), steady::now() + server_io_timeout, err) == io_status::ok) {
          close_gracefully(fd);
        }
        break;
      }
      std::string body(n, '\0');
      if (read_exact(fd, body.data(), n, steady::now() + server_io_timeout, err) != io_status::ok) break;

      auto checked = check_admin_request(body, opts_.token);
      json response = std::move(checked.response);
      const bool bad_token = checked.hang_up;
      if (bad_token)
        refuse("admin port: bad admin token from " + peer);
      if (checked.ok) {
        const json& request = checked.request;
        try {
          response = handler_(request);
          if (!response.is_object()) {
            response = error_response(std::string("handler returned a non-map response: ") + response.type_name());
          }
        } catch (const std::exception& e) {
          response = error_response(e.what());
        } catch (...) {
          response = error_response("unknown error in admin handler");
        }
      }
      std::string frame;
      try {
        frame = encode_frame(response);
      } catch (const std::exception& e) {
        frame = encode_frame(error_response(e.what()));
      }
      if (write_all(fd, frame.data(), frame.size(), steady::now() + server_io_timeout, err) != io_status::ok) break;
      if (bad_token) {
        close_gracefully(fd);
        break;
      }
    }
  } catch (...) {
    // Nothing may escape a connection thread (std::terminate); dropping the
    // connection is the right answer to anything unexpected here.
  }
  std::lock_guard<std::mutex> lock(conns_mutex_);
  conn_fds_.erase(std::remove(conn_fds_.begin(), conn_fds_.end(), fd), conn_fds_.end());
  ::close(fd);
  finished_.push_back(std::this_thread::get_id());
}

nlohmann::json admin_call(const std::string& host, uint16_t port, const nlohmann::json& request,
                          std::chrono::milliseconds timeout) {
  const std::string where = host + ":" + std::to_string(port);
  const auto fail = [&](const std::string& what) { return admin_wire_error("admin call to " + where + ": " + what); };
  const steady::time_point until = steady::now() + timeout;
  const std::string timeout_text = std::to_string(timeout.count()) + " ms";

  sockaddr_in addr{};
  std::string err_text;
  if (!resolve_ipv4(host, port, /*passive=*/false, addr, err_text)) throw fail(err_text);

  // Non-blocking from the start so connect() too is bounded by the timeout.
  unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) throw fail("socket: " + errno_text(errno));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno != EINPROGRESS) throw fail(errno_text(errno));
    const int w = wait_fd(fd.get(), POLLOUT, until);
    if (w == 0) throw fail("timed out after " + timeout_text + " connecting");
    if (w < 0) throw fail("poll: " + errno_text(errno));
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0) throw fail(errno_text(so_error));
  }
  set_nodelay(fd.get());

  std::string frame;
  try {
    frame = encode_frame(request);
  } catch (const std::exception& e) {
    throw fail(e.what());
  }
  int err = 0;
  switch (write_all(fd.get(), frame.data(), frame.size(), until, err)) {
    case io_status::ok: break;
    case io_status::timeout: throw fail("timed out after " + timeout_text + " sending the request");
    default: throw fail("send: " + errno_text(err));
  }

  const auto read_or_throw = [&](char* buf, size_t n) {
    switch (read_exact(fd.get(), buf, n, until, err)) {
      case io_status::ok: return;
      case io_status::eof: throw fail("connection closed before a complete response");
      case io_status::timeout: throw fail("timed out after " + timeout_text + " waiting for a response");
      case io_status::error: throw fail("recv: " + errno_text(err));
    }
  };
  unsigned char header[4];
  read_or_throw(reinterpret_cast<char*>(header), 4);
  const uint32_t n = decode_length(header);
  if (n > max_frame_bytes) {
    throw fail("response frame of " + std::to_string(n) + " bytes exceeds the 64 MiB limit");
  }
  std::string body(n, '\0');
  read_or_throw(body.data(), n);
  try {
    return json::from_msgpack(body);
  } catch (const json::exception& e) {
    throw fail(std::string("malformed msgpack response: ") + e.what());
  }
}

}  // namespace llmux::net
