#include "actors/gateway/http_edge.hpp"

#include "actors/gateway/choice_text.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "engine/chat_template.hpp"
#include "engine/engine_factory.hpp"
#include "net/openai_schema.hpp"

namespace llmux::gateway {

using clock_type = std::chrono::steady_clock;
using protocol::finish_reason;

namespace {

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

/// Numeric host and port of a socket address, as httplib reports them.
std::pair<std::string, int> host_port(const sockaddr_storage& a, socklen_t len) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return {{}, -1};
  return {host, std::atoi(serv)};
}

/// The socket `req` arrived on, or -1. httplib 0.11 hands handlers no socket
/// (and no "connection closed" probe), so it is found by matching the
/// request's peer address and ports against this process's sockets, once
/// per connection: httplib serves a connection on one pool thread, so the
/// answer is cached per thread and re-checked on use.
int connection_socket(const httplib::Request& req) {
  auto matches = [&req](int fd) {
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0
        || getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0)
      return false;
    auto [host, port] = host_port(peer, pl);
    return port == req.remote_port && host_port(local, ll).second == req.local_port
           && host == req.remote_addr;
  };
  thread_local int cached = -1;
  if (cached >= 0 && matches(cached))
    return cached;
  cached = -1;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (const dirent* e = readdir(dir)) {
      const int fd = std::atoi(e->d_name);
      struct stat st {};
      if (e->d_name[0] == '.' || fd == dirfd(dir) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        continue;
      if (matches(fd)) {
        cached = fd;
        break;
      }
    }
    closedir(dir);
  }
  return cached;
}

/// The client closed its end or the connection broke. Polls without
/// reading, so request bytes are left alone. (A client that half-closes
/// after sending its request would look gone: HTTP clients do not.)
bool peer_closed(int fd) {
  if (fd < 0)
    return false;
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void send_error(httplib::Response& res, const net::api_error& e) {
  res.status = e.status;
  // Overloaded or no replica: worth retrying soon (OpenAI's clients honour it).
  if (e.status == 429 || e.status == 503)
    res.set_header("Retry-After", "1");
  res.set_content(net::error_body(e), "application/json");
}

net::api_error make_error(int status, std::string message, std::string type,
                          std::string param = {}, std::string code = {}) {
  net::api_error e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

/// The error an HTTP client sees for a sink error event.
net::api_error event_error(const sink_event& ev) {
  int status = ev.status > 0 ? ev.status : 500;
  const char* type = status == 429   ? "rate_limit_error"
                     : status == 503 ? "service_unavailable_error"
                     : status == 504 ? "timeout_error"
                     : status >= 500 ? "server_error"
                                     : "invalid_request_error";
  return make_error(status, ev.message, type);
}

std::string bearer_token(const httplib::Request& req) {
  auto h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (h.compare(0, prefix.size(), prefix) == 0)
    return h.substr(prefix.size());
  return {};
}

std::string hex_id(const char* prefix, uint64_t id) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s%016llx", prefix, static_cast<unsigned long long>(id));
  return buf;
}

/// One choice of a request: its own sequence (request id) at the unit.
struct choice_state {
  uint64_t id = 0;
  choice_text text;
  std::string finish;  ///< finish_reason once ended; empty while running
  std::string out;     ///< non-streaming: the text so far
  std::vector<net::logprob_entry> lps;  ///< non-streaming: the log-probs so far
  clock_type::time_point last_token;    ///< for inter-token latency
};

/// What one event did to its choice.
struct choice_update {
  int index = 0;
  std::string text;
  std::vector<net::logprob_entry> lps;
  std::string finish;  ///< set when the choice ended with this event
};

/// A request's choices and their shared sink (events carry their id), the
/// state shared by httplib's provider calls when streaming.
struct completion_job {
  std::vector<choice_state> choices;
  std::shared_ptr<request_sink> sink;
  std::vector<sink_event> pending;
  clock_type::time_point start, deadline;
  net::response_meta meta;
  net::usage_counts usage;
  std::string echo;  ///< completions with echo: the prompt text
  bool include_usage = false;
  bool started = false;
  bool finished = false;
  bool first_token_seen = false;
  std::function<void(uint64_t)> cancel;
  std::shared_ptr<edge_metrics> metrics;

  [[nodiscard]] bool done() const {
    return std::all_of(choices.begin(), choices.end(), [](const auto& c) { return !c.finish.empty(); });
  }

  void cancel_running() {
    for (auto& c : choices)
      if (c.finish.empty())
        cancel(c.id);
  }

  /// Feeds a (non-error) event to its choice. A stop string ends the choice
  /// here and cancels its sequence at the unit. Nothing for events of a
  /// choice that has already ended (tokens in flight after a stop string).
  std::optional<choice_update> apply(const sink_event& ev) {
    for (size_t i = 0; i < choices.size(); ++i) {
      auto& c = choices[i];
      if (c.id != ev.id)
        continue;
      if (!c.finish.empty())
        return std::nullopt;
      if (!ev.tokens.empty()) {
        const auto now = clock_type::now();
        if (!first_token_seen) {
          first_token_seen = true;
          metrics->first_token(meta.model, seconds(now - start));
        }
        if (c.last_token != clock_type::time_point{})
          metrics->tokens_after(meta.model, seconds(now - c.last_token),
                                static_cast<int64_t>(ev.tokens.size()));
        c.last_token = now;
      }
      auto d = c.text.push(ev);
      choice_update u{static_cast<int>(i), std::move(d.text), std::move(d.logprobs), {}};
      if (c.text.stopped()) {
        c.finish = "stop";
        cancel(c.id);
      } else if (ev.finish != finish_reason::none) {
        u.text += c.text.finish();
        c.finish = protocol::to_string(ev.finish);
      }
      u.finish = c.finish;
      return u;
    }
    return std::nullopt;
  }

  void close(request_registry& registry) const {
    for (const auto& c : choices)
      registry.close(c.id);
  }

  [[nodiscard]] int64_t completion_tokens() const {
    int64_t n = 0;
    for (const auto& c : choices)
      n += c.text.tokens();
    return n;
  }

  /// The request is complete: metrics and its one info line.
  void log(bool stream) const {
    std::string why;
    std::vector<std::string> reasons;
    for (const auto& c : choices) {
      why += (why.empty() ? "" : ",") + c.finish;
      reasons.push_back(c.finish);
    }
    metrics->finished(meta.model, seconds(clock_type::now() - start), usage.prompt_tokens,
                      usage.completion_tokens, reasons);
    spdlog::info("request {} model={} n={} prompt_tokens={} completion_tokens={} finish={} {}ms={}",
                 meta.id, meta.model, choices.size(), usage.prompt_tokens, usage.completion_tokens,
                 why, stream ? "stream " : "",
                 std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start)
                   .count());
  }
};

}  // namespace

http_edge::http_edge(const config::cluster_config& cfg,
                     std::shared_ptr<request_registry> registry, edge_hooks hooks)
  : cfg_(cfg), registry_(std::move(registry)), hooks_(std::move(hooks)),
    server_(std::make_unique<httplib::Server>()) {
  for (const auto& m : cfg_.models) {
    auto front = engine::make_frontend(m);
    models_[m.name] = model_entry{m, std::move(front.tok), front.chat};
  }
}

http_edge::~http_edge() {
  stop();
}

void http_edge::start() {
  int threads = std::max(4, cfg_.gateway.http_threads);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(cfg_.gateway.max_body_bytes);
  server_->set_keep_alive_max_count(100000);
  server_->set_tcp_nodelay(true);  // small SSE writes must not wait for ACKs (Nagle)
  // httplib's default adds SO_REUSEPORT, which lets a second (stale or
  // misconfigured) edge bind the same port and silently take a share of the
  // traffic. Bind exclusively: a busy port is an error at start.
  int listen_sock = -1;
  server_->set_socket_options([&listen_sock](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_sock = sock;
  });
  install_routes();
  if (!server_->bind_to_port(cfg_.gateway.host.c_str(), cfg_.gateway.port))
    throw std::runtime_error("cannot listen on " + cfg_.gateway.host + ":"
                             + std::to_string(cfg_.gateway.port)
                             + " (address in use or not available)");
  // httplib 0.11 listens with a backlog of 5: a burst of new connections
  // overflows it and the kernel drops SYNs, which clients resend after 1 s
  // (seen as 1 s time-to-first-token at 8 concurrent clients). listen()
  // again on the bound socket raises the backlog.
  if (listen_sock >= 0)
    ::listen(listen_sock, SOMAXCONN);
  port_ = cfg_.gateway.port;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void http_edge::stop() {
  if (server_)
    server_->stop();
  if (thread_.joinable())
    thread_.join();
}

void http_edge::install_routes() {
  auto& svr = *server_;
  const auto& gw = cfg_.gateway;

  auto authorized = [this](const httplib::Request& req, httplib::Response& res) {
    if (cfg_.gateway.api_keys.empty())
      return true;
    auto key = bearer_token(req);
    for (const auto& k : cfg_.gateway.api_keys)
      if (key == k)
        return true;
    send_error(res, make_error(401,
                               key.empty() ? "Missing API key: send 'Authorization: Bearer <key>'"
                                           : "Incorrect API key provided",
                               "invalid_request_error", "", "invalid_api_key"));
    return false;
  };

  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });

  svr.Get("/v1/models", [this, authorized](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res))
      return;
    auto live = registry_->live_replicas();
    std::vector<net::model_card> cards;
    for (const auto& [name, m] : models_)
      cards.push_back({name, m.cfg.backend, live.count(name) ? live[name] : 0});
    res.set_content(net::render_models(cards, std::time(nullptr)), "application/json");
  });

  svr.Get(R"(/v1/models/(.+))", [this, authorized](const httplib::Request& req,
                                                   httplib::Response& res) {
    if (!authorized(req, res))
      return;
    auto id = req.matches[1].str();
    auto it = models_.find(id);
    if (it == models_.end()) {
      send_error(res, make_error(404, "The model '" + id + "' does not exist",
                                 "invalid_request_error", "model", "model_not_found"));
      return;
    }
    auto live = registry_->live_replicas();
    auto one = nlohmann::json::parse(net::render_models(
      {{id, it->second.cfg.backend, live.count(id) ? live[id] : 0}}, std::time(nullptr)));
    res.set_content(one["data"][0].dump(), "application/json");
  });

  // Readiness: every configured model has a live replica (liveness is /health).
  svr.Get("/ready", [this](const httplib::Request&, httplib::Response& res) {
    auto live = registry_->live_replicas();
    nlohmann::json missing = nlohmann::json::array();
    for (const auto& [name, m] : models_)
      if (live.count(name) == 0 || live[name] == 0)
        missing.push_back(name);
    res.status = missing.empty() ? 200 : 503;
    res.set_content(nlohmann::json{{"ready", missing.empty()}, {"models_without_replica", missing}}.dump(),
                    "application/json");
  });

  // Tokenizer endpoints (vLLM's shapes): the edge owns the tokenizers. Both
  // take {"model": string, FIELD: ...}; `tokenizer_request` checks that
  // much and finds the model (null after answering with the error).
  auto tokenizer_request = [this](const httplib::Request& req, httplib::Response& res,
                                  const char* field, bool array, nlohmann::json& body)
    -> const model_entry* {
    body = nlohmann::json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()
        || !body.contains(field) || (array ? !body[field].is_array() : !body[field].is_string())) {
      send_error(res, make_error(400, std::string{"expected {\"model\": string, \""} + field
                                        + (array ? "\": [int]}" : "\": string}"),
                                 "invalid_request_error", body.is_object() ? field : ""));
      return nullptr;
    }
    auto it = models_.find(body["model"].get<std::string>());
    if (it == models_.end()) {
      send_error(res, make_error(404, "The model '" + body["model"].get<std::string>()
                                        + "' does not exist",
                                 "invalid_request_error", "model", "model_not_found"));
      return nullptr;
    }
    return &it->second;
  };

  svr.Post("/tokenize", [authorized, tokenizer_request](const httplib::Request& req,
                                                       httplib::Response& res) {
    if (!authorized(req, res))
      return;
    nlohmann::json body;
    const auto* model = tokenizer_request(req, res, "prompt", false, body);
    if (model == nullptr)
      return;
    bool add_special = body.value("add_special_tokens", true);
    auto ids = model->tok->encode(body["prompt"].get<std::string>(), add_special);
    res.set_content(nlohmann::json{{"tokens", ids}, {"count", ids.size()},
                                   {"max_model_len", model->cfg.arch.context_length}}
                      .dump(),
                    "application/json");
  });

  svr.Post("/detokenize", [authorized, tokenizer_request](const httplib::Request& req,
                                                         httplib::Response& res) {
    if (!authorized(req, res))
      return;
    nlohmann::json body;
    const auto* model = tokenizer_request(req, res, "tokens", true, body);
    if (model == nullptr)
      return;
    const auto& tok = *model->tok;
    std::vector<engine::token_id> ids;
    for (const auto& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size()) {
        send_error(res, make_error(400, "tokens must be ids in 0.." + std::to_string(tok.vocab_size() - 1),
                                   "invalid_request_error", "tokens"));
        return;
      }
      ids.push_back(static_cast<engine::token_id>(t.get<int64_t>()));
    }
    engine::incremental_decoder dec{tok};
    std::string text;
    for (auto id : ids)
      text += dec.push(id);
    text += dec.flush();
    res.set_content(nlohmann::json{{"prompt", text}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace),
                    "application/json");
  });

  svr.Get("/admin/state", [this, gw](const httplib::Request& req, httplib::Response& res) {
    if (!gw.admin_token.empty() && bearer_token(req) != gw.admin_token) {
      send_error(res, make_error(401, "Admin endpoints need 'Authorization: Bearer <admin_token>'",
                                 "invalid_request_error", "", "invalid_admin_token"));
      return;
    }
    try {
      res.set_content(hooks_.admin_state(), "application/json");
    } catch (const std::exception& e) {
      send_error(res, make_error(503, std::string{"admin state unavailable: "} + e.what(),
                                 "service_unavailable_error"));
    }
  });

  // Prometheus metrics (open, as vLLM's: no key needed to scrape). The
  // cluster gauges come from the admin state of every actor.
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    cluster_gauges gauges;
    try {
      gauges = gauges_from_admin_state(hooks_.admin_state());
    } catch (const std::exception& e) {
      spdlog::warn("/metrics: cluster state unavailable: {}", e.what());
    }
    res.set_content(metrics_->render(gauges), "text/plain; version=0.0.4; charset=utf-8");
  });

  auto generate = [this, authorized](net::api_kind kind) {
    return [this, authorized, kind](const httplib::Request& req, httplib::Response& res) {
      // Every answer counts once, by model (known models only) and status.
      std::string label;
      struct count_on_exit {
        const std::shared_ptr<edge_metrics>& m;
        const std::string& model;
        const httplib::Response& res;
        ~count_on_exit() {
          // httplib fills in 200 after the handler when it set none.
          m->request_done(model, res.status > 0 ? res.status : 200);
          if (res.status == 429)
            m->queue_rejection(model);
        }
      } counter{metrics_, label, res};
      auto start = clock_type::now();
      if (!authorized(req, res))
        return;
      auto parsed = net::parse_completion_request(req.body, kind);
      if (auto* err = std::get_if<net::api_error>(&parsed)) {
        send_error(res, *err);
        return;
      }
      auto& r = std::get<net::completion_request>(parsed);
      auto mit = models_.find(r.model);
      if (mit == models_.end()) {
        send_error(res, make_error(404, "The model '" + r.model + "' does not exist",
                                   "invalid_request_error", "model", "model_not_found"));
        return;
      }
      const auto& model = mit->second;
      const auto& tok = *model.tok;
      label = r.model;

      // Tokenize at the edge: units only ever see token ids.
      std::vector<int32_t> prompt;
      const char* prompt_param = kind == net::api_kind::chat ? "messages" : "prompt";
      if (kind == net::api_kind::chat) {
        std::vector<engine::chat_turn> turns;
        for (auto& m : r.messages)
          turns.push_back({m.role, m.content});
        // The rendered template spells special tokens (<|im_start|>): parse them.
        prompt = tok.encode_with_specials(engine::apply_chat_template(model.chat, turns), true);
      } else if (r.prompt_is_tokens) {
        for (auto t : r.prompt_tokens)
          if (t < 0 || t >= tok.vocab_size()) {
            send_error(res, make_error(400,
                                       "token id " + std::to_string(t) + " is outside the vocabulary"
                                         " (0.." + std::to_string(tok.vocab_size() - 1) + ")",
                                       "invalid_request_error", "prompt"));
            return;
          }
        prompt = r.prompt_tokens;
      } else {
        prompt = tok.encode(r.prompt, true);
      }
      int ctx = model.cfg.arch.context_length;
      if (prompt.empty() || (ctx > 0 && static_cast<int>(prompt.size()) >= ctx)) {
        send_error(res, make_error(400,
                                   "This model's maximum context length is " + std::to_string(ctx)
                                     + " tokens. However, your prompt has "
                                     + std::to_string(prompt.size()) + " tokens.",
                                   "invalid_request_error", prompt_param,
                                   "context_length_exceeded"));
        return;
      }

      protocol::gen_request g;
      g.model = r.model;
      g.original_prompt_len = static_cast<int32_t>(prompt.size());
      g.params.max_tokens = r.max_tokens.value_or(model.cfg.max_tokens_default);
      g.params.temperature = r.temperature;
      g.params.top_p = r.top_p;
      g.params.top_k = r.top_k;
      g.params.min_p = r.min_p;
      g.params.presence_penalty = r.presence_penalty;
      g.params.frequency_penalty = r.frequency_penalty;
      g.params.repetition_penalty = r.repetition_penalty;
      g.params.logprobs = r.logprobs;
      for (const auto& [tok_id, b] : r.logit_bias) {
        if (tok_id >= tok.vocab_size()) {
          send_error(res, make_error(400, "logit_bias: token id " + std::to_string(tok_id)
                                            + " is outside the vocabulary (0.."
                                            + std::to_string(tok.vocab_size() - 1) + ")",
                                     "invalid_request_error", "logit_bias"));
          return;
        }
        g.params.bias_tokens.push_back(tok_id);
        g.params.bias_values.push_back(b);
      }

      auto job = std::make_shared<completion_job>();
      job->start = start;
      job->deadline = start + std::chrono::milliseconds(cfg_.timeouts.request_ms);
      job->sink = std::make_shared<request_sink>();
      job->cancel = hooks_.cancel;
      job->metrics = metrics_;
      job->include_usage = r.include_usage;
      job->usage.prompt_tokens = static_cast<int64_t>(prompt.size());
      if (r.echo) {
        if (r.prompt_is_tokens) {
          engine::incremental_decoder dec{tok};
          for (auto t : prompt)
            job->echo += dec.push(t);
          job->echo += dec.flush();
        } else {
          job->echo = r.prompt;
        }
      }
      // Each choice is a sequence of its own; with a seed, choice i samples
      // with seed + i, so the choices differ and a request is reproducible.
      static thread_local std::mt19937_64 rng{std::random_device{}()};
      const uint64_t seed = r.seed ? *r.seed : rng();
      std::vector<protocol::gen_request> submits;
      for (int i = 0; i < r.n; ++i) {
        protocol::gen_request gi = g;
        gi.id = registry_->next_id();
        gi.prompt = prompt;
        gi.params.seed = seed + static_cast<uint64_t>(i);
        registry_->attach(gi.id, job->sink);
        job->choices.push_back(choice_state{gi.id, choice_text{tok, r.stop, r.logprobs >= 0}, {}, {}, {}, {}});
        submits.push_back(std::move(gi));
      }
      auto& meta = job->meta;
      meta.kind = kind;
      meta.id = hex_id(kind == net::api_kind::chat ? "chatcmpl-" : "cmpl-", job->choices[0].id);
      meta.created = std::time(nullptr);
      meta.model = r.model;
      meta.system_fingerprint = "llmux-" + model.cfg.backend;
      for (auto& gi : submits)
        hooks_.submit(std::move(gi));

      // Before the answer is committed, a failure cancels what still runs,
      // releases the ids and becomes a proper HTTP error.
      auto fail = [&](const net::api_error& e) {
        job->cancel_running();
        job->close(*registry_);
        send_error(res, e);
      };
      // Wait for the first event before committing a status: an error that
      // arrives first (no replica, queue full) becomes a proper HTTP error.
      if (!job->sink->wait_pop(job->pending, job->deadline)) {
        fail(make_error(504, "request deadline of " + std::to_string(cfg_.timeouts.request_ms)
                               + " ms exceeded before the first token",
                        "timeout_error"));
        return;
      }
      if (job->pending.front().finish == finish_reason::error) {
        fail(event_error(job->pending.front()));
        return;
      }

      if (!r.stream) {
        // Waits in short slices, so a client that goes away (which httplib
        // does not tell a handler) cancels its request within ~100 ms.
        const int sock = connection_socket(req);
        auto next_check = clock_type::now() + std::chrono::milliseconds(100);
        while (true) {
          for (auto& ev : job->pending) {
            if (ev.finish == finish_reason::error) {
              fail(event_error(ev));
              return;
            }
            if (auto u = job->apply(ev)) {
              auto& c = job->choices[static_cast<size_t>(u->index)];
              c.out += u->text;
              for (auto& e : u->lps)
                c.lps.push_back(std::move(e));
            }
          }
          job->pending.clear();
          if (job->done())
            break;
          const auto now = clock_type::now();
          if (now >= next_check) {
            next_check = now + std::chrono::milliseconds(100);
            if (peer_closed(sock)) {
              job->cancel_running();
              job->close(*registry_);
              res.status = 499;  // nginx's "client closed request": nobody reads this answer
              spdlog::info("request {} model={} cancelled: the client closed the connection",
                           meta.id, meta.model);
              return;
            }
          }
          if (job->sink->wait_pop(job->pending, std::min(job->deadline, next_check)))
            continue;
          if (clock_type::now() >= job->deadline) {
            fail(make_error(504, "request deadline of " + std::to_string(cfg_.timeouts.request_ms)
                                   + " ms exceeded",
                            "timeout_error"));
            return;
          }
        }
        job->close(*registry_);
        job->usage.completion_tokens = job->completion_tokens();
        std::vector<net::choice_result> choices;
        for (auto& c : job->choices)
          choices.push_back({job->echo + c.out, c.finish, r.logprobs >= 0 ? &c.lps : nullptr});
        res.set_content(net::render_completion(meta, choices, job->usage), "application/json");
        job->log(false);
        return;
      }

      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
        "text/event-stream",
        [job](size_t, httplib::DataSink& out) {
          auto write = [&](const std::string& s) { return out.write(s.data(), s.size()); };
          auto chunk = [&](const std::string& text, bool first, const std::string& finish,
                           const std::vector<net::logprob_entry>* lps, int index) {
            return write(net::sse_event(net::render_chunk(job->meta, text, first, finish, lps, index)));
          };
          if (!job->started) {
            job->started = true;
            // OpenAI opens each chat choice with the assistant role and empty
            // content; a completion with echo opens with the prompt.
            for (size_t i = 0; i < job->choices.size(); ++i) {
              const int index = static_cast<int>(i);
              if (job->meta.kind == net::api_kind::chat && !chunk("", true, "", nullptr, index))
                return false;
              if (!job->echo.empty() && !chunk(job->echo, false, "", nullptr, index))
                return false;
            }
          }
          // After the 200 is sent, a failure is an error event, then [DONE].
          auto fail = [&](const net::api_error& e) {
            write(net::sse_event(net::error_body(e)));
            write(net::sse_done());
            job->cancel_running();
            job->finished = true;
            out.done();
            return true;
          };
          if (job->pending.empty() && !job->sink->wait_pop(job->pending, job->deadline))
            return fail(make_error(504, "request deadline exceeded", "timeout_error"));
          for (auto& ev : job->pending) {
            if (ev.finish == finish_reason::error)
              return fail(event_error(ev));
            auto u = job->apply(ev);
            if (!u)
              continue;
            if ((!u->text.empty() || !u->lps.empty())
                && !chunk(u->text, false, "", u->lps.empty() ? nullptr : &u->lps, u->index))
              return false;  // client gone: the releaser cancels
            if (!u->finish.empty() && !chunk("", false, u->finish, nullptr, u->index))
              return false;
          }
          job->pending.clear();
          if (job->done()) {
            job->usage.completion_tokens = job->completion_tokens();
            if (job->include_usage && !write(net::sse_event(net::render_usage_chunk(job->meta, job->usage))))
              return false;
            write(net::sse_done());
            job->finished = true;
            job->log(true);
            out.done();
          }
          return true;
        },
        [this, job](bool success) {
          if (!success || !job->finished)
            job->cancel_running();
          job->close(*registry_);
        });
    };
  };

  svr.Post("/v1/completions", generate(net::api_kind::completions));
  svr.Post("/v1/chat/completions", generate(net::api_kind::chat));

  // Anything httplib answers by itself (404 route, 413 payload) gets OpenAI's shape.
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty())
      return;
    std::string msg = res.status == 404   ? "Unknown path " + req.path
                      : res.status == 413 ? std::string{"Request body too large"}
                                          : "HTTP error " + std::to_string(res.status);
    send_error(res, make_error(res.status, msg, "invalid_request_error"));
  });
}

}  // namespace llmux::gateway
