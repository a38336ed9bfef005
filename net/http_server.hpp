#pragma once
/// The edge's HTTP/1.1 server: one epoll event loop thread owns every
/// connection (non-blocking sockets), so an idle keep-alive connection or a
/// stream waiting for its next token costs memory, not a thread.
///
/// Handlers run on the loop thread and must not block: they answer at once
/// (`/health`) or hand the exchange to a thread of their own, which answers
/// later through the same `http_exchange` from any thread (which sends on
/// the socket itself when nothing is pending, else queues the bytes for the
/// loop; an eventfd wakes it). The loop tells a handler
/// that its client went away (`on_close`) at any moment before the answer
/// ends. Linux only (epoll, eventfd, accept4).
///
/// Why not cpp-httplib's server: it serves a connection on one pool thread
/// for its whole life, polling idle keep-alive sockets every 10 ms, and a
/// stream holds its thread while it waits (measured in docs/benchmarks.md).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "net/http_parser.hpp"

namespace llmux::net {

class http_server;
struct http_channel;
struct http_conn_io;
using header_list = std::vector<std::pair<std::string, std::string>>;

/// One request and its answer. Thread-safe: any thread may answer; the
/// first of `respond` / `start_stream` wins, later calls are ignored.
class http_exchange {
public:
  using clock_type = std::chrono::steady_clock;

  [[nodiscard]] const http_request& request() const { return req_; }
  /// When the request's last byte was read: the start of its latency.
  [[nodiscard]] clock_type::time_point arrived() const { return arrived_; }
  [[nodiscard]] const std::string& peer() const { return peer_; }

  /// The whole answer. `close` closes the connection after it.
  void respond(int status, std::string_view content_type, std::string body,
               header_list headers = {}, bool close = false);
  /// Starts a streamed answer (chunked on HTTP/1.1, close-delimited on
  /// 1.0); then `write` pieces and `end`. False when the client is gone.
  bool start_stream(int status, std::string_view content_type, header_list headers = {});
  bool write(std::string_view data);
  void end();

  /// The client went away (or the server stopped) before the answer ended.
  [[nodiscard]] bool closed() const { return closed_.load(std::memory_order_acquire); }
  /// Runs `fn` once when the client goes away before the answer ends (on
  /// the loop thread: keep it short), or at once when it already has. An
  /// empty `fn` drops the one set before (and what it holds).
  void on_close(std::function<void()> fn);

private:
  friend class http_server;
  void post(std::string bytes, bool finish, bool close_after);
  void mark_closed();  ///< loop thread

  std::shared_ptr<http_channel> channel_;
  std::shared_ptr<http_conn_io> io_;  ///< the socket: answers are sent from the answering thread
  uint64_t conn_ = 0;
  bool close_after_ = false;
  http_request req_;
  clock_type::time_point arrived_;
  std::string peer_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> answered_{false};
  std::atomic<bool> ended_{false};
  bool chunked_ = false;
  std::mutex close_mtx_;
  std::function<void()> on_close_;
};

using http_handler = std::function<void(std::shared_ptr<http_exchange>)>;

struct http_server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  ///< 0: any free port
  size_t max_connections = 16384;   ///< beyond: a 503 and close
  double keep_alive_s = 75;         ///< idle keep-alive connections close after this
  double request_read_s = 30;       ///< a started request must arrive within this (else 408)
  parse_limits limits;
  size_t max_unsent_bytes = 8 << 20;  ///< a client that reads nothing is dropped beyond this
};

struct http_server_stats {
  uint64_t connections = 0;  ///< open now
  uint64_t in_request = 0;   ///< connections with a request being answered
  uint64_t accepted = 0;
  uint64_t refused = 0;      ///< over max_connections
  uint64_t idle_closed = 0;  ///< keep-alive timeouts
  uint64_t client_gone = 0;  ///< closed by the client before its answer ended
  uint64_t requests = 0;
  uint64_t bad_requests = 0;
};

class http_server {
public:
  explicit http_server(http_server_options opts);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Exact path match for `method`; with `prefix`, any path that starts with `path`.
  void route(const std::string& method, const std::string& path, http_handler h, bool prefix = false);
  /// For requests no route matches (default: a plain 404 / 405).
  void set_fallback(http_handler h) { fallback_ = std::move(h); }
  /// For requests the parser refuses: (status, message) → body and content type.
  void set_error_renderer(std::function<std::pair<std::string, std::string>(int, const std::string&)> f) {
    render_error_ = std::move(f);
  }

  /// Binds and listens (throws std::runtime_error naming host:port), then
  /// serves on the loop thread.
  void start();
  void stop();
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] http_server_stats stats() const;

private:
  friend class http_exchange;
  struct connection;
  struct route_entry {
    std::string method, path;
    bool prefix;
    http_handler handler;
  };

  void loop();
  void accept_all();
  void on_readable(connection& c);
  void on_writable(connection& c);
  void try_parse(connection& c);
  void flush(connection& c);
  void close_conn(uint64_t id, bool client_gone);
  void update_interest(connection& c);
  void apply_ops();
  void sweep();
  void dispatch(connection& c, http_request req);
  void answer_parse_error(connection& c, int status, const std::string& message);

  http_server_options opts_;
  std::vector<route_entry> routes_;
  http_handler fallback_;
  std::function<std::pair<std::string, std::string>(int, const std::string&)> render_error_;

  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int spare_fd_ = -1;  ///< closed to accept-and-close when out of descriptors
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> running_{false};

  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<connection>> conns_;
  uint64_t next_conn_ = 1;
  std::chrono::steady_clock::time_point next_sweep_;

  /// Shared with exchanges (which may outlive the server): queued writes.
  std::shared_ptr<http_channel> channel_;

  mutable std::mutex stats_mtx_;
  http_server_stats stats_;
};

}  // namespace llmux::net
