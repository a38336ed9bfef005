#include "net/http_server.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace llmux::net {

using clock_type = std::chrono::steady_clock;

/// What answering threads tell the loop (an answer ended, or bytes wait for
/// the socket to take them), and the eventfd that wakes it.
/// Exchanges hold it, so one that outlives the server posts into nothing.
struct http_channel {
  struct op {
    uint64_t conn;
    bool finish;       ///< the answer ended: the connection may read its next request
    bool close_after;  ///< and then it closes
  };
  std::mutex mtx;
  std::vector<op> ops;
  std::atomic<bool> wake_pending{false};
  int event_fd = -1;
  bool open = true;

  void post(op o) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (!open)
        return;
      ops.push_back(std::move(o));
    }
    if (!wake_pending.exchange(true, std::memory_order_acq_rel)) {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(event_fd, &one, sizeof one);
    }
  }
};

/// A connection's socket and the bytes not yet sent on it, shared by the
/// loop and the thread answering: whoever holds `mtx` may send, and the loop
/// closes the socket only under it (so nobody sends on a reused descriptor).
struct http_conn_io {
  std::mutex mtx;
  int fd = -1;
  bool closed = false;
  std::string out;
  size_t off = 0;

  [[nodiscard]] size_t pending() const { return out.size() - off; }
  /// Sends what is pending (under `mtx`). False when the socket failed.
  bool send_pending() {
    while (off < out.size()) {
      ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
      return false;  // EPIPE, ECONNRESET: the client is gone
    }
    out.clear();
    off = 0;
    if (out.capacity() > 65536)
      std::string{}.swap(out);
    return true;
  }
};

struct http_server::connection {
  uint64_t id = 0;
  int fd = -1;
  std::string peer;
  std::string in;
  std::shared_ptr<http_conn_io> io = std::make_shared<http_conn_io>();
  clock_type::time_point last_activity;
  clock_type::time_point request_started;  ///< first byte of the request being read
  std::shared_ptr<http_exchange> ex;       ///< the request being answered
  bool close_after_flush = false;
  bool sent_continue = false;
  bool want_out = false;     ///< EPOLLOUT is registered
  bool pending_out = false;  ///< bytes wait in io->out (as of the last flush)
};

namespace {

constexpr uint64_t listen_tag = 0;
constexpr uint64_t wake_tag = 1;

std::string peer_name(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
    port = ntohs(in->sin6_port);
  }
  return std::string{host} + ":" + std::to_string(port);
}

}  // namespace

// ---- http_exchange ---------------------------------------------------------

void http_exchange::post(std::string bytes, bool finish, bool close_after) {
  // Send at once when nothing waits before these bytes; the loop is told
  // only to finish the answer or to send what the socket would not take.
  bool need_loop = finish;
  {
    std::lock_guard<std::mutex> guard{io_->mtx};
    if (io_->closed)
      return;
    io_->out += bytes;
    if (!io_->send_pending() || io_->pending() > 0)
      need_loop = true;
  }
  if (need_loop)
    channel_->post({conn_, finish, close_after});
}

void http_exchange::respond(int status, std::string_view content_type, std::string body,
                            header_list headers, bool close) {
  if (answered_.exchange(true))
    return;
  ended_ = true;
  const bool keep = req_.keep_alive && !close;
  std::string bytes = response_head(status, req_.minor_version, content_type, headers,
                                     static_cast<long long>(body.size()), false, keep);
  if (req_.method != "HEAD")
    bytes += body;
  post(std::move(bytes), true, !keep);
}

bool http_exchange::start_stream(int status, std::string_view content_type, header_list headers) {
  if (answered_.exchange(true))
    return false;
  chunked_ = req_.minor_version >= 1;
  close_after_ = !(req_.keep_alive && chunked_);
  post(response_head(status, req_.minor_version, content_type, headers, -1, chunked_, !close_after_),
       false, false);
  return !closed();
}

bool http_exchange::write(std::string_view data) {
  if (closed())
    return false;
  if (!answered_ || ended_ || data.empty())
    return !closed();
  post(chunked_ ? chunk(data) : std::string{data}, false, false);
  return !closed();
}

void http_exchange::end() {
  if (!answered_ || ended_.exchange(true))
    return;
  post(chunked_ ? std::string{last_chunk()} : std::string{}, true, close_after_);
}

void http_exchange::on_close(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> guard{close_mtx_};
    if (!closed()) {
      on_close_ = std::move(fn);
      return;
    }
  }
  if (fn)
    fn();
}

void http_exchange::mark_closed() {
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> guard{close_mtx_};
    if (closed())
      return;
    closed_.store(true, std::memory_order_release);
    fn = std::move(on_close_);
  }
  if (fn)
    fn();
}

// ---- http_server -----------------------------------------------------------

http_server::http_server(http_server_options opts)
  : opts_(std::move(opts)), channel_(std::make_shared<http_channel>()) {}

http_server::~http_server() {
  stop();
}

void http_server::route(const std::string& method, const std::string& path, http_handler h,
                        bool prefix) {
  routes_.push_back({method, path, prefix, std::move(h)});
}

void http_server::start() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string where = opts_.host + ":" + std::to_string(opts_.port);
  if (getaddrinfo(opts_.host.c_str(), std::to_string(opts_.port).c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("cannot listen on " + where + " (address not resolvable)");
  int fd = -1;
  std::string why = "address not available";
  for (auto* ai = res; ai; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
      continue;
    // Exclusive bind (no SO_REUSEPORT): a second edge on the port is an error.
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0)
      break;
    why = errno == EADDRINUSE ? "address in use" : std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    throw std::runtime_error("cannot listen on " + where + " (" + why + ")");
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  port_ = local.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  listen_fd_ = fd;
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  channel_->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (epoll_fd_ < 0 || channel_->event_fd < 0)
    throw std::runtime_error("cannot create the edge's event loop: " + std::string{std::strerror(errno)});
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = listen_tag;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.u64 = wake_tag;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, channel_->event_fd, &ev);
  next_conn_ = 2;  // 0 and 1 tag the listener and the eventfd
  next_sweep_ = clock_type::now() + std::chrono::seconds(1);
  running_ = true;
  thread_ = std::thread([this] { loop(); });
}

void http_server::stop() {
  if (!running_.exchange(false)) {
    if (thread_.joinable())
      thread_.join();
    return;
  }
  {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(channel_->event_fd, &one, sizeof one);
  }
  if (thread_.joinable())
    thread_.join();
  {
    std::lock_guard<std::mutex> guard{channel_->mtx};
    channel_->open = false;
    channel_->ops.clear();
  }
  std::vector<uint64_t> ids;
  for (auto& [id, c] : conns_)
    ids.push_back(id);
  for (auto id : ids)
    close_conn(id, true);
  for (int* fd : {&listen_fd_, &epoll_fd_, &channel_->event_fd, &spare_fd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

http_server_stats http_server::stats() const {
  std::lock_guard<std::mutex> guard{stats_mtx_};
  return stats_;
}

void http_server::loop() {
  std::vector<epoll_event> events(512);
  while (running_.load(std::memory_order_acquire)) {
    auto now = clock_type::now();
    int timeout_ms = static_cast<int>(std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep_ - now).count() + 1));
    int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0 && errno != EINTR)
      break;
    for (int i = 0; i < n; ++i) {
      const auto& ev = events[static_cast<size_t>(i)];
      if (ev.data.u64 == listen_tag) {
        accept_all();
        continue;
      }
      if (ev.data.u64 == wake_tag) {
        uint64_t v;
        [[maybe_unused]] auto r = ::read(channel_->event_fd, &v, sizeof v);
        channel_->wake_pending.store(false, std::memory_order_release);
        continue;
      }
      auto it = conns_.find(ev.data.u64);
      if (it == conns_.end())
        continue;
      auto& c = *it->second;
      if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        on_readable(c);
        if (conns_.find(ev.data.u64) == conns_.end())
          continue;
      }
      if (ev.events & EPOLLOUT)
        on_writable(c);
    }
    apply_ops();
    if (clock_type::now() >= next_sweep_)
      sweep();
  }
}

void http_server::accept_all() {
  while (true) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
        // Out of descriptors: take the connection with the spare one and
        // close it at once, or the listener stays readable forever.
        ::close(spare_fd_);
        int dropped = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (dropped >= 0) {
          {
            // Counted before the close: a client that sees it closed sees it counted.
            std::lock_guard<std::mutex> guard{stats_mtx_};
            ++stats_.refused;
          }
          ::close(dropped);
        }
        spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      return;  // EAGAIN, or nothing to do about it now
    }
    if (conns_.size() >= opts_.max_connections) {
      static const std::string busy = [] {
        std::string body =
          R"({"error":{"message":"too many open connections","type":"service_unavailable_error","param":null,"code":null}})";
        return response_head(503, 1, "application/json", {{"Retry-After", "1"}},
                             static_cast<long long>(body.size()), false, false)
               + body;
      }();
      {
        // Counted before the answer goes: a client that has read it sees it counted.
        std::lock_guard<std::mutex> guard{stats_mtx_};
        ++stats_.refused;
      }
      [[maybe_unused]] auto w = ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    int yes = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);  // small SSE writes go at once
    auto c = std::make_unique<connection>();
    c->id = next_conn_++;
    c->fd = fd;
    c->io->fd = fd;
    c->peer = peer_name(addr);
    c->last_activity = clock_type::now();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->id;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    {
      std::lock_guard<std::mutex> guard{stats_mtx_};
      ++stats_.accepted;
      ++stats_.connections;
    }
    conns_.emplace(c->id, std::move(c));
  }
}

void http_server::on_readable(connection& c) {
  char buf[16384];
  const size_t cap = opts_.limits.max_head_bytes + opts_.limits.max_body_bytes + 65536;
  bool eof = false;
  while (true) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (c.in.empty() && !c.ex)
        c.request_started = clock_type::now();
      c.in.append(buf, static_cast<size_t>(n));
      c.last_activity = clock_type::now();
      if (c.in.size() > cap) {
        close_conn(c.id, true);  // more than one request's worth unread: not a client we serve
        return;
      }
      continue;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      eof = true;
    break;
  }
  if (eof) {
    // The client closed (or reset): what it was being answered is cancelled.
    close_conn(c.id, c.ex != nullptr);
    return;
  }
  if (!c.ex)
    try_parse(c);
}

void http_server::try_parse(connection& c) {
  while (!c.ex && !c.close_after_flush && !c.in.empty()) {
    http_request req;
    auto r = parse_request(c.in, opts_.limits, req);
    if (r.st == parse_result::state::need_more) {
      if (r.head_complete && req.expect_continue && !c.sent_continue) {
        c.sent_continue = true;
        {
          std::lock_guard<std::mutex> guard{c.io->mtx};
          c.io->out += "HTTP/1.1 100 Continue\r\n\r\n";
        }
        flush(c);
      }
      return;
    }
    if (r.st == parse_result::state::error) {
      answer_parse_error(c, r.status, r.message);
      return;
    }
    c.in.erase(0, r.consumed);
    c.sent_continue = false;
    if (!c.in.empty())
      c.request_started = clock_type::now();
    else if (c.in.capacity() > 4096)
      std::string{}.swap(c.in);  // an idle connection keeps no large buffer
    dispatch(c, std::move(req));
    return;  // the next pipelined request waits for this answer
  }
}

void http_server::answer_parse_error(connection& c, int status, const std::string& message) {
  {
    std::lock_guard<std::mutex> guard{stats_mtx_};
    ++stats_.bad_requests;
  }
  std::string body = message + "\n";
  std::string type = "text/plain; charset=utf-8";
  if (render_error_) {
    auto [b, t] = render_error_(status, message);
    body = std::move(b);
    type = std::move(t);
  }
  c.in.clear();
  {
    std::lock_guard<std::mutex> guard{c.io->mtx};
    c.io->out += response_head(status, 1, type, {}, static_cast<long long>(body.size()), false, false);
    c.io->out += body;
  }
  c.close_after_flush = true;
  flush(c);
}

void http_server::dispatch(connection& c, http_request req) {
  auto ex = std::make_shared<http_exchange>();
  ex->channel_ = channel_;
  ex->io_ = c.io;
  ex->conn_ = c.id;
  ex->req_ = std::move(req);
  ex->arrived_ = clock_type::now();
  ex->peer_ = c.peer;
  c.ex = ex;
  {
    std::lock_guard<std::mutex> guard{stats_mtx_};
    ++stats_.requests;
    ++stats_.in_request;
  }
  const auto& r = ex->req_;
  const route_entry* match = nullptr;
  bool path_known = false;
  for (const auto& rt : routes_) {
    bool path_ok = rt.prefix ? r.path.compare(0, rt.path.size(), rt.path) == 0 && r.path.size() > rt.path.size()
                             : r.path == rt.path;
    if (!path_ok)
      continue;
    path_known = true;
    if (rt.method == r.method || (r.method == "HEAD" && rt.method == "GET")) {
      match = &rt;
      break;
    }
  }
  try {
    if (match) {
      match->handler(ex);
    } else if (fallback_) {
      fallback_(ex);
    } else {
      ex->respond(path_known ? 405 : 404, "text/plain; charset=utf-8",
                  path_known ? "method not allowed\n" : "not found\n");
    }
  } catch (const std::exception& e) {
    ex->respond(500, "text/plain; charset=utf-8", std::string{"internal error: "} + e.what() + "\n");
  }
}

void http_server::on_writable(connection& c) {
  flush(c);
}

void http_server::flush(connection& c) {
  bool ok;
  size_t pending;
  {
    std::lock_guard<std::mutex> guard{c.io->mtx};
    ok = c.io->send_pending();
    pending = c.io->pending();
  }
  if (!ok) {
    close_conn(c.id, c.ex != nullptr);  // the client is gone
    return;
  }
  if (pending == 0) {
    if (c.close_after_flush && !c.ex) {
      close_conn(c.id, false);
      return;
    }
  } else if (pending > opts_.max_unsent_bytes) {
    close_conn(c.id, c.ex != nullptr);  // a client that does not read
    return;
  }
  c.pending_out = pending > 0;
  update_interest(c);
}

void http_server::update_interest(connection& c) {
  bool want = c.pending_out;
  if (want == c.want_out)
    return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void http_server::apply_ops() {
  std::vector<http_channel::op> ops;
  {
    std::lock_guard<std::mutex> guard{channel_->mtx};
    ops.swap(channel_->ops);
  }
  for (auto& o : ops) {
    auto it = conns_.find(o.conn);
    if (it == conns_.end())
      continue;  // the client went away meanwhile
    auto& c = *it->second;
    if (!c.ex)
      continue;  // not answering anything (a late write after the end)
    c.last_activity = clock_type::now();
    if (o.finish) {
      c.ex.reset();
      {
        std::lock_guard<std::mutex> guard{stats_mtx_};
        --stats_.in_request;
      }
      if (o.close_after)
        c.close_after_flush = true;
    }
    const uint64_t id = c.id;
    flush(c);
    it = conns_.find(id);
    if (it != conns_.end() && o.finish && !o.close_after)
      try_parse(*it->second);  // a pipelined request waited for this answer
  }
}

void http_server::sweep() {
  const auto now = clock_type::now();
  next_sweep_ = now + std::chrono::seconds(1);
  const auto keep = std::chrono::duration_cast<clock_type::duration>(
    std::chrono::duration<double>(opts_.keep_alive_s));
  const auto read = std::chrono::duration_cast<clock_type::duration>(
    std::chrono::duration<double>(opts_.request_read_s));
  std::vector<uint64_t> idle, slow;
  for (auto& [id, c] : conns_) {
    if (!c->ex && c->pending_out && now - c->last_activity > keep) {
      idle.push_back(id);  // an answer nobody reads
      continue;
    }
    if (c->ex || c->pending_out || c->close_after_flush)
      continue;
    if (c->in.empty() && now - c->last_activity > keep)
      idle.push_back(id);
    else if (!c->in.empty() && now - c->request_started > read)
      slow.push_back(id);
  }
  for (auto id : idle) {
    {
      // Counted before the close: whoever sees the connection gone sees why.
      std::lock_guard<std::mutex> guard{stats_mtx_};
      ++stats_.idle_closed;
    }
    close_conn(id, false);
  }
  for (auto id : slow)
    if (auto it = conns_.find(id); it != conns_.end())
      answer_parse_error(*it->second, 408, "the request did not arrive within "
                                             + std::to_string(static_cast<int>(opts_.request_read_s))
                                             + " s");
}

void http_server::close_conn(uint64_t id, bool client_gone) {
  auto it = conns_.find(id);
  if (it == conns_.end())
    return;
  auto c = std::move(it->second);
  conns_.erase(it);
  {
    // Under the lock: no answering thread sends on a descriptor reused later.
    std::lock_guard<std::mutex> guard{c->io->mtx};
    c->io->closed = true;
    ::close(c->fd);  // also leaves the epoll set
    c->io->fd = -1;
  }
  {
    std::lock_guard<std::mutex> guard{stats_mtx_};
    --stats_.connections;
    if (c->ex) {
      --stats_.in_request;
      if (client_gone)
        ++stats_.client_gone;
    }
  }
  if (c->ex)
    c->ex->mark_closed();
}

}  // namespace llmux::net
