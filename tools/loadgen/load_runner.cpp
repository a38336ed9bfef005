#include "tools/loadgen/load_runner.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace llmux::loadgen {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

httplib::Headers headers_for(const target& t) {
  httplib::Headers h;
  if (!t.api_key.empty())
    h.emplace("Authorization", "Bearer " + t.api_key);
  return h;
}

void configure(httplib::Client& cli, const target& t) {
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  const auto secs = static_cast<time_t>(t.timeout_s);
  cli.set_read_timeout(secs, 0);
  cli.set_write_timeout(secs, 0);
  cli.set_connection_timeout(10, 0);
}

// A stock text for /tokenize: varied words, so prompts are not one token repeated.
constexpr const char* stock_text =
  "The history of computing is a story of ideas that were tried, measured and kept when they "
  "worked. Early machines filled rooms; later ones fit in a pocket. Along the way people "
  "learned to share processors between many programs, to cache what is used often, and to "
  "move work to where the data lives. Serving language models repeats that story: many "
  "models, one pool of memory, and schedulers that decide who runs next. ";

/// The JSON body of planned request `index`.
std::string request_json(const target& t, const std::vector<int32_t>& source, const planned_request& p,
                         size_t index) {
  nlohmann::json prompt = nlohmann::json::array();
  // Distinct prompts open with the request's index spelt in two digits of
  // base (distinct source ids): no two requests share a first block.
  std::vector<int32_t> digits;
  if (t.distinct_prompts) {
    digits = source;
    std::sort(digits.begin(), digits.end());
    digits.erase(std::unique(digits.begin(), digits.end()), digits.end());
  }
  for (int i = 0; i < p.prompt_tokens && !source.empty(); ++i) {
    if (!digits.empty() && i < 2) {
      prompt.push_back(digits[(i == 0 ? index : index / digits.size()) % digits.size()]);
      continue;
    }
    prompt.push_back(source[(index * 7 + static_cast<size_t>(i)) % source.size()]);
  }
  if (source.empty())
    prompt = t.text_prompt;
  nlohmann::json body{{"model", p.model.empty() ? t.model : p.model},
                      {"prompt", std::move(prompt)},
                      {"max_tokens", p.output_tokens},
                      {"temperature", t.temperature},
                      {"seed", index},
                      {"stream", t.stream}};
  if (t.stream)
    body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

/// Reads a response body as it arrives: SSE events (times of text chunks,
/// usage, [DONE], error events) or, not streaming, the whole JSON answer.
struct answer_reader {
  const target& t;
  request_result& r;
  clock_type::time_point t0;
  std::string buf;
  double last = -1;
  bool saw_done = false;

  /// False to stop reading (an unparsable or error event).
  bool feed(const char* data, size_t len) {
    buf.append(data, len);
    if (!t.stream)
      return true;
    for (size_t end; (end = buf.find("\n\n")) != std::string::npos; buf.erase(0, end + 2)) {
      const std::string ev = buf.substr(0, end);
      if (ev.compare(0, 6, "data: ") != 0)
        continue;
      const std::string payload = ev.substr(6);
      if (payload == "[DONE]") {
        saw_done = true;
        continue;
      }
      auto j = nlohmann::json::parse(payload, nullptr, false);
      if (j.is_discarded()) {
        r.error = "unparsable event: " + payload.substr(0, 200);
        return false;
      }
      if (j.contains("error")) {
        r.error = "error event: " + j["error"].value("message", std::string{});
        return false;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        r.output_tokens = j["usage"].value("completion_tokens", 0);
        r.prompt_tokens = j["usage"].value("prompt_tokens", 0);
      }
      if (j.contains("choices") && !j["choices"].empty()
          && !j["choices"][0].value("text", std::string{}).empty()) {
        const double now = since(t0);
        if (last < 0)
          r.ttft_s = now;
        else
          r.itl_s.push_back(now - last);
        last = now;
      }
    }
    return true;
  }

  /// The answer ended (`status` 0: none came, `why` says what happened).
  void finish(int status, const std::string& why) {
    r.e2e_s = since(t0);
    r.status = status;
    if (!t.stream && status == 200) {
      // One answer: its arrival is the first (and only) text.
      auto j = nlohmann::json::parse(buf, nullptr, false);
      if (j.is_discarded() || !j.contains("choices"))
        r.error = "unparsable answer: " + buf.substr(0, 200);
      else {
        saw_done = true;
        last = r.ttft_s = r.e2e_s;
        if (j.contains("usage") && j["usage"].is_object()) {
          r.output_tokens = j["usage"].value("completion_tokens", 0);
          r.prompt_tokens = j["usage"].value("prompt_tokens", 0);
        }
      }
    }
    if (status == 0 && r.error.empty())
      r.error = "no answer: " + why;
    else if (status != 0 && status != 200 && r.error.empty())
      r.error = "HTTP " + std::to_string(status) + ": " + buf.substr(0, 300);
    else if (status != 0 && r.error.empty() && !saw_done)
      r.error = "the stream ended without [DONE]";
    r.ok = r.error.empty() && last >= 0;
    if (r.error.empty() && last < 0)
      r.error = "no text came back";
  }
};

request_result run_one(httplib::Client& cli, const target& t, const std::vector<int32_t>& source,
                       const planned_request& p, size_t index) {
  request_result r;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = headers_for(t);
  req.headers.emplace("Content-Type", "application/json");
  req.body = request_json(t, source, p, index);
  answer_reader reader{t, r, clock_type::now(), {}, -1, false};
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    return reader.feed(data, len);
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool sent = cli.send(req, res, err);
  reader.finish(sent ? res.status : 0, httplib::to_string(err));
  return r;
}

}  // namespace

std::vector<int32_t> prompt_source(const target& t) {
  httplib::Client cli{t.url};
  configure(cli, t);
  nlohmann::json body{{"model", t.model}, {"prompt", stock_text}, {"add_special_tokens", false}};
  auto res = cli.Post("/tokenize", headers_for(t), body.dump(), "application/json");
  if (!res)
    throw std::runtime_error("POST " + t.url + "/tokenize: " + httplib::to_string(res.error()));
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status != 200 || !j.is_object() || !j.contains("tokens") || j["tokens"].empty())
    throw std::runtime_error("POST " + t.url + "/tokenize answered " + std::to_string(res->status)
                             + ": " + res->body.substr(0, 300));
  return j["tokens"].get<std::vector<int32_t>>();
}

std::vector<request_result> run_plan(const target& t, const std::vector<planned_request>& plan,
                                     int workers, const std::vector<int32_t>& source,
                                     double& duration_s) {
  return run_plan(t, plan, workers, std::map<std::string, std::vector<int32_t>>{{t.model, source}}, duration_s);
}

std::vector<request_result> run_plan(const target& t, const std::vector<planned_request>& plan, int workers,
                                     const std::map<std::string, std::vector<int32_t>>& sources,
                                     double& duration_s) {
  static const std::vector<int32_t> none;
  auto source_of = [&](const planned_request& p) -> const std::vector<int32_t>& {
    auto it = sources.find(p.model.empty() ? t.model : p.model);
    return it == sources.end() ? none : it->second;
  };
  std::vector<request_result> results(plan.size());
  std::atomic<size_t> next{0};
  // Connections are shared, most recently used first: a request takes one
  // only when it is due, so the connections opened track the real
  // concurrency rather than the worker count (a thread-per-connection
  // server would otherwise hold a thread for every idle one).
  std::mutex mtx;
  std::vector<std::unique_ptr<httplib::Client>> idle;
  auto take = [&] {
    std::lock_guard<std::mutex> g{mtx};
    if (idle.empty()) {
      auto cli = std::make_unique<httplib::Client>(t.url);
      configure(*cli, t);
      return cli;
    }
    auto cli = std::move(idle.back());
    idle.pop_back();
    return cli;
  };
  const auto start = clock_type::now();
  std::vector<std::thread> pool;
  for (int w = 0; w < std::max(1, workers); ++w)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < plan.size();) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<clock_type::duration>(
                                                std::chrono::duration<double>(plan[i].at_s)));
        auto cli = take();
        results[i] = run_one(*cli, t, source_of(plan[i]), plan[i], i);
        std::lock_guard<std::mutex> g{mtx};
        idle.push_back(std::move(cli));
      }
    });
  for (auto& th : pool)
    th.join();
  duration_s = since(start);
  return results;
}

namespace {

/// One HTTP/1.1 client connection of the event-loop runner.
struct async_conn {
  int fd = -1;
  bool connected = false;
  bool busy = false;
  std::string out;
  size_t out_off = 0;
  std::string in;  ///< response bytes not yet consumed
  // The response being read.
  int status = 0;
  bool head_done = false, chunked = false, until_close = false, keep_alive = true;
  long long remaining = -1;   ///< Content-Length left, or the current chunk's bytes left
  bool chunk_trailer = false; ///< chunked: reading the CRLF after a chunk / the trailers
  size_t index = 0;           ///< the planned request it carries
  std::unique_ptr<answer_reader> reader;
  clock_type::time_point deadline;
};

/// Parses what `c.in` holds of its response; true when the response is complete.
bool parse_response(async_conn& c) {
  if (!c.head_done) {
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos)
      return false;
    const std::string head = c.in.substr(0, end);
    c.in.erase(0, end + 4);
    c.head_done = true;
    c.status = head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
    std::string lower = head;
    for (auto& ch : lower)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    c.chunked = lower.find("transfer-encoding: chunked") != std::string::npos;
    c.keep_alive = lower.find("connection: close") == std::string::npos && head.rfind("HTTP/1.1", 0) == 0;
    auto cl = lower.find("content-length:");
    c.remaining = cl == std::string::npos ? -1 : std::atoll(lower.c_str() + cl + 15);
    c.until_close = !c.chunked && c.remaining < 0;
    if (c.chunked)
      c.remaining = -1;
  }
  if (c.until_close) {
    if (!c.in.empty()) {
      c.reader->feed(c.in.data(), c.in.size());
      c.in.clear();
    }
    return false;  // ends when the server closes
  }
  if (!c.chunked) {
    const auto take = static_cast<size_t>(std::min<long long>(c.remaining, static_cast<long long>(c.in.size())));
    c.reader->feed(c.in.data(), take);
    c.in.erase(0, take);
    c.remaining -= static_cast<long long>(take);
    return c.remaining == 0;
  }
  while (true) {
    if (c.remaining > 0) {
      const auto take = static_cast<size_t>(std::min<long long>(c.remaining, static_cast<long long>(c.in.size())));
      if (take == 0)
        return false;
      c.reader->feed(c.in.data(), take);
      c.in.erase(0, take);
      c.remaining -= static_cast<long long>(take);
      if (c.remaining > 0)
        return false;
      c.chunk_trailer = true;
    }
    if (c.chunk_trailer) {
      if (c.in.size() < 2)
        return false;
      c.in.erase(0, 2);
      c.chunk_trailer = false;
      c.remaining = -1;
    }
    auto eol = c.in.find("\r\n");
    if (eol == std::string::npos)
      return false;
    const long long size = std::strtoll(c.in.c_str(), nullptr, 16);
    c.in.erase(0, eol + 2);
    if (size == 0) {
      // The last chunk: its (empty) trailers end with a blank line.
      auto blank = c.in.find("\r\n");
      if (blank == std::string::npos)
        return false;
      c.in.erase(0, blank + 2);
      return true;
    }
    c.remaining = size;
  }
}

}  // namespace

std::vector<request_result> run_plan_async(const target& t, const std::vector<planned_request>& plan,
                                           int max_in_flight, const std::vector<int32_t>& source,
                                           double& duration_s) {
  std::vector<request_result> results(plan.size());
  // The server's address.
  std::string rest = t.url.rfind("http://", 0) == 0 ? t.url.substr(7) : t.url;
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  const std::string host = colon == std::string::npos ? rest : rest.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &ai) != 0 || !ai)
    throw std::runtime_error("cannot resolve " + host);
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> ai_guard{ai, freeaddrinfo};
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::unordered_map<int, std::unique_ptr<async_conn>> conns;
  std::vector<int> idle;  // keep-alive connections, most recently used last
  std::string auth;
  if (!t.api_key.empty())
    auth = "Authorization: Bearer " + t.api_key + "\r\n";
  const std::string host_header = "Host: " + rest + "\r\n";

  auto close_conn = [&](int fd) {
    ::close(fd);
    conns.erase(fd);
    idle.erase(std::remove(idle.begin(), idle.end(), fd), idle.end());
  };
  auto finish = [&](async_conn& c, int status, const std::string& why) {
    c.reader->finish(status, why);
    c.reader.reset();
    c.busy = false;
  };
  auto want = [&](async_conn& c, bool out) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0u);
    ev.data.fd = c.fd;
    epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
  };
  auto flush = [&](async_conn& c) {
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        want(c, true);
        return true;
      }
      return false;
    }
    want(c, false);
    return true;
  };
  auto send_request = [&](size_t i) {
    async_conn* c = nullptr;
    while (!idle.empty() && !c) {
      int fd = idle.back();
      idle.pop_back();
      c = conns.at(fd).get();
    }
    if (!c) {
      int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      int yes = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
      if (fd < 0 || (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)) {
        results[i].error = std::string{"no answer: connect: "} + std::strerror(errno);
        if (fd >= 0)
          ::close(fd);
        return;
      }
      auto owned = std::make_unique<async_conn>();
      owned->fd = fd;
      c = owned.get();
      conns.emplace(fd, std::move(owned));
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT;
      ev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    const std::string body = request_json(t, source, plan[i], i);
    c->out = "POST /v1/completions HTTP/1.1\r\n" + host_header + auth
             + "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size())
             + "\r\n\r\n" + body;
    c->out_off = 0;
    c->busy = true;
    c->index = i;
    c->status = 0;
    c->head_done = c->chunked = c->until_close = c->chunk_trailer = false;
    c->keep_alive = true;
    c->remaining = -1;
    c->in.clear();
    c->reader = std::make_unique<answer_reader>(answer_reader{t, results[i], clock_type::now(), {}, -1, false});
    c->deadline = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                        std::chrono::duration<double>(t.timeout_s));
    if (!flush(*c)) {
      finish(*c, 0, "send failed");
      close_conn(c->fd);
    }
  };

  const auto start = clock_type::now();
  size_t next = 0, done = 0;
  int in_flight = 0;
  const int cap = std::max(1, max_in_flight);
  std::vector<epoll_event> events(1024);
  auto next_deadline_check = start;
  while (done < plan.size()) {
    // Send what is due, within the cap.
    const double now_s = since(start);
    while (next < plan.size() && in_flight < cap && plan[next].at_s <= now_s) {
      send_request(next);
      ++next;
      if (results[next - 1].error.empty())
        ++in_flight;
      else
        ++done;
    }
    int timeout_ms = 50;
    if (next < plan.size() && in_flight < cap)
      timeout_ms = std::clamp(static_cast<int>((plan[next].at_s - since(start)) * 1e3), 0, 50);
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), timeout_ms);
    for (int k = 0; k < n; ++k) {
      const int fd = events[static_cast<size_t>(k)].data.fd;
      auto it = conns.find(fd);
      if (it == conns.end())
        continue;
      auto& c = *it->second;
      const auto evs = events[static_cast<size_t>(k)].events;
      if ((evs & EPOLLOUT) && c.busy && !flush(c)) {
        finish(c, 0, "send failed");
        --in_flight;
        ++done;
        close_conn(fd);
        continue;
      }
      if (!(evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        continue;
      char buf[65536];
      bool eof = false;
      while (true) {
        ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got > 0) {
          c.in.append(buf, static_cast<size_t>(got));
          continue;
        }
        if (got < 0 && errno == EINTR)
          continue;
        eof = got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        break;
      }
      if (c.busy && parse_response(c)) {
        finish(c, c.status, "");
        --in_flight;
        ++done;
        if (c.keep_alive && !eof)
          idle.push_back(fd);
        else
          close_conn(fd);
        continue;
      }
      if (eof) {
        if (c.busy) {
          // Close-delimited bodies end here; anything else ended early.
          finish(c, c.head_done && c.until_close ? c.status : 0,
                 c.head_done ? "the connection closed mid-answer" : "the connection closed");
          --in_flight;
          ++done;
        }
        close_conn(fd);
      }
    }
    // Deadlines, checked every 100 ms (a scan of every connection).
    const auto now = clock_type::now();
    if (now < next_deadline_check)
      continue;
    next_deadline_check = now + std::chrono::milliseconds(100);
    std::vector<int> late;
    for (auto& [fd, c] : conns)
      if (c->busy && now > c->deadline)
        late.push_back(fd);
    for (int fd : late) {
      finish(*conns.at(fd), 0, "timed out");
      --in_flight;
      ++done;
      close_conn(fd);
    }
  }
  duration_s = since(start);
  for (auto& [fd, c] : conns)
    ::close(fd);
  ::close(ep);
  return results;
}

}  // namespace llmux::loadgen
