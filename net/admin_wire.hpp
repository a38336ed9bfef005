#pragma once
/// The admin wire protocol: a tiny msgpack request/response protocol over TCP,
/// spoken between `llmux admin` and each node's admin port.
///
/// Framing: every message is a 4-byte big-endian length N followed by N bytes
/// of msgpack encoding one map. A connection carries any number of
/// request/response pairs, one at a time. Requests look like
/// `{"cmd": "state", "token": "<admin token>", "actor": ""}`; responses are
/// `{"ok": true, "state": {...}}` or `{"ok": false, "error": "..."}`.
/// Request frames larger than 64 KiB and response frames larger than 64 MiB
/// are refused.
///
/// No CAF here: the handler is any callable; the node wires it to its admin
/// actor.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmux::net {

struct admin_wire_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What the admin port lets a client do before it has shown the token.
struct admin_server_options {
  /// Non-empty: every request must carry it (`"token"`, compared in constant
  /// time) before the handler sees it; a wrong one is answered, logged, and
  /// the connection closed.
  std::string token;
  size_t max_connections = 16;  ///< beyond: an error frame and close
  std::chrono::milliseconds idle_timeout{60000};  ///< between requests
  /// Request frames are small ({"cmd", "token", ...}): a larger length
  /// prefix is refused before anything is allocated for it.
  uint32_t max_request_bytes = 64 * 1024;
  std::function<void(const std::string&)> log;  ///< refusals, with the peer's address
};

/// What the server makes of one request frame's body before any handler
/// sees it: a msgpack map carrying the token (when one is set) goes to the
/// handler; anything else is answered with an error map, and a wrong token
/// also closes the connection. Pure: the server and the fuzz target share it.
struct admin_request_check {
  bool ok = false;          ///< hand `request` to the handler
  nlohmann::json request;   ///< the decoded map (ok only)
  nlohmann::json response;  ///< the answer when not ok: {"ok": false, "error": ...}
  bool hang_up = false;     ///< a wrong or missing token
};
[[nodiscard]] admin_request_check check_admin_request(const std::string& body, const std::string& token);

/// Serves the admin protocol on host:port with one thread per connection
/// (admin traffic is rare; at most `max_connections`). The handler runs on a
/// connection thread and may block; a handler exception becomes
/// `{"ok":false,"error":what()}`.
class admin_server {
public:
  using handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  admin_server(std::string host, uint16_t port, handler h, admin_server_options opts = {});
  ~admin_server();  ///< stops and joins all threads
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  /// Binds and starts accepting. Throws admin_wire_error when the port is taken.
  void start();
  /// Stops accepting, disconnects every client and joins all threads. Waits
  /// for handlers already running to return, so it must not be called from
  /// inside the handler. Idempotent.
  void stop();
  /// The bound port (useful when constructed with port 0).
  [[nodiscard]] uint16_t port() const { return port_; }

private:
  void accept_loop();
  void serve(int fd, std::string peer);
  void refuse(const std::string& why);

  admin_server_options opts_;
  std::string host_;
  uint16_t port_;
  handler handler_;
  int listen_fd_ = -1;
  std::atomic<bool> running_{false};
  std::thread acceptor_;
  std::mutex conns_mutex_;
  std::vector<std::thread> conns_;
  std::vector<int> conn_fds_;
  /// Connection threads that have returned, joined and dropped from `conns_`
  /// on the next accept so a long-lived node does not pile up dead threads.
  std::vector<std::thread::id> finished_;
};

/// One request/response round trip. Throws admin_wire_error (connection
/// refused, timeout, bad frame) with a message naming host:port.
[[nodiscard]] nlohmann::json admin_call(const std::string& host, uint16_t port,
                                        const nlohmann::json& request,
                                        std::chrono::milliseconds timeout);

}  // namespace llmux::net
