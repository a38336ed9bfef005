#include "actors/gateway/http_edge.hpp"

#include <chrono>
#include <ctime>
#include <random>
#include <stdexcept>

#include <sys/socket.h>

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

void send_error(httplib::Response& res, const net::api_error& e) {
  res.status = e.status;
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

/// OpenAI log-prob entries for the tokens of one event; `offset` is the
/// running byte offset of the choice's text (completions' text_offset).
std::vector<net::logprob_entry> logprob_entries(const engine::tokenizer& tok, const sink_event& ev,
                                                int64_t& offset) {
  std::vector<net::logprob_entry> out;
  for (size_t i = 0; i < ev.tokens.size() && i < ev.logprobs.size(); ++i) {
    net::logprob_entry e;
    e.token = tok.token_bytes(ev.tokens[i]);
    e.logprob = ev.logprobs[i].logprob;
    for (size_t k = 0; k < ev.logprobs[i].top_ids.size(); ++k)
      e.top.emplace_back(tok.token_bytes(ev.logprobs[i].top_ids[k]), ev.logprobs[i].top_logprobs[k]);
    e.text_offset = offset;
    offset += static_cast<int64_t>(e.token.size());
    out.push_back(std::move(e));
  }
  return out;
}

/// State of one streaming response, shared by httplib's provider calls.
struct stream_state {
  uint64_t id = 0;
  std::shared_ptr<request_sink> sink;
  std::vector<sink_event> pending;
  engine::incremental_decoder decoder;
  net::response_meta meta;
  net::usage_counts usage;
  bool include_usage = false;
  bool want_logprobs = false;
  int64_t text_offset = 0;
  const engine::tokenizer* tok = nullptr;
  bool started = false;
  bool finished = false;
  clock_type::time_point deadline;

  explicit stream_state(const engine::tokenizer& t) : decoder(t), tok(&t) {}
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
  server_->set_tcp_nodelay(true);
  // httplib's default adds SO_REUSEPORT, which lets a second (stale or
  // misconfigured) edge bind the same port and silently take a share of the
  // traffic. Bind exclusively: a busy port is an error at start.
  server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });  // small SSE writes must not wait for ACKs (Nagle)
  install_routes();
  if (!server_->bind_to_port(cfg_.gateway.host.c_str(), cfg_.gateway.port))
    throw std::runtime_error("cannot listen on " + cfg_.gateway.host + ":"
                             + std::to_string(cfg_.gateway.port)
                             + " (address in use or not available)");
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

  auto generate = [this, authorized](net::api_kind kind) {
    return [this, authorized, kind](const httplib::Request& req, httplib::Response& res) {
      auto start = clock_type::now();
      if (!authorized(req, res))
        return;
      auto parsed = net::parse_completion_request(req.body, kind);
      if (auto* err = std::get_if<net::api_error>(&parsed)) {
        send_error(res, *err);
        return;
      }
      auto& r = std::get<net::completion_request>(parsed);
      if (!r.stop.empty()) {
        // Refuse rather than ignore: a client relying on stop strings must not
        // silently get text past them. (Stop matching comes with the full
        // OpenAI surface.)
        send_error(res, make_error(400, "'stop' sequences are not supported yet by this server",
                                   "invalid_request_error", "stop", "unsupported_parameter"));
        return;
      }
      auto mit = models_.find(r.model);
      if (mit == models_.end()) {
        send_error(res, make_error(404, "The model '" + r.model + "' does not exist",
                                   "invalid_request_error", "model", "model_not_found"));
        return;
      }
      const auto& model = mit->second;
      const auto& tok = *model.tok;

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
      g.id = registry_->next_id();
      g.model = r.model;
      g.original_prompt_len = static_cast<int32_t>(prompt.size());
      g.prompt = std::move(prompt);
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
      if (r.seed) {
        g.params.seed = *r.seed;
      } else {
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        g.params.seed = rng();
      }

      net::response_meta meta;
      meta.kind = kind;
      meta.id = hex_id(kind == net::api_kind::chat ? "chatcmpl-" : "cmpl-", g.id);
      meta.created = std::time(nullptr);
      meta.model = r.model;
      meta.system_fingerprint = "llmux-" + model.cfg.backend;

      auto id = g.id;
      net::usage_counts usage;
      usage.prompt_tokens = static_cast<int64_t>(g.prompt.size());
      auto deadline = start + std::chrono::milliseconds(cfg_.timeouts.request_ms);
      auto sink = registry_->open(id);
      hooks_.submit(std::move(g));

      // Wait for the first event before committing a status: an error that
      // arrives first (no replica, queue full) becomes a proper HTTP error.
      std::vector<sink_event> first;
      if (!sink->wait_pop(first, deadline)) {
        hooks_.cancel(id);
        registry_->close(id);
        send_error(res, make_error(504, "request deadline of " + std::to_string(cfg_.timeouts.request_ms)
                                          + " ms exceeded before the first token",
                                   "timeout_error"));
        return;
      }
      if (first.front().finish == finish_reason::error) {
        registry_->close(id);
        send_error(res, event_error(first.front()));
        return;
      }

      if (!r.stream) {
        std::vector<int32_t> out;
        std::vector<net::logprob_entry> lps;
        int64_t offset = 0;
        std::vector<sink_event> evs = std::move(first);
        finish_reason why = finish_reason::none;
        while (true) {
          for (auto& ev : evs) {
            out.insert(out.end(), ev.tokens.begin(), ev.tokens.end());
            if (r.logprobs >= 0)
              for (auto& e : logprob_entries(tok, ev, offset))
                lps.push_back(std::move(e));
            if (ev.finish == finish_reason::error) {
              registry_->close(id);
              send_error(res, event_error(ev));
              return;
            }
            if (ev.finish != finish_reason::none)
              why = ev.finish;
          }
          evs.clear();
          if (why != finish_reason::none)
            break;
          if (!sink->wait_pop(evs, deadline)) {
            hooks_.cancel(id);
            registry_->close(id);
            send_error(res, make_error(504, "request deadline of "
                                              + std::to_string(cfg_.timeouts.request_ms)
                                              + " ms exceeded",
                                       "timeout_error"));
            return;
          }
        }
        registry_->close(id);
        usage.completion_tokens = static_cast<int64_t>(out.size());
        engine::incremental_decoder dec{tok};
        std::string text;
        for (auto t : out)
          text += dec.push(t);
        text += dec.flush();
        res.set_content(net::render_completion(meta, text, protocol::to_string(why), usage,
                                               r.logprobs >= 0 ? &lps : nullptr),
                        "application/json");
        spdlog::info("request {} model={} prompt_tokens={} completion_tokens={} finish={} ms={}",
                     meta.id, meta.model, usage.prompt_tokens, usage.completion_tokens,
                     protocol::to_string(why),
                     std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
        return;
      }

      auto st = std::make_shared<stream_state>(tok);
      st->id = id;
      st->sink = sink;
      st->pending = std::move(first);
      st->meta = meta;
      st->usage = usage;
      st->include_usage = r.include_usage;
      st->want_logprobs = r.logprobs >= 0;
      st->deadline = deadline;
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
        "text/event-stream",
        [this, st, start](size_t, httplib::DataSink& out) {
          auto write = [&](const std::string& s) { return out.write(s.data(), s.size()); };
          if (!st->started) {
            st->started = true;
            // OpenAI opens a chat stream with the assistant role and empty content.
            if (st->meta.kind == net::api_kind::chat
                && !write(net::sse_event(net::render_chunk(st->meta, "", true, ""))))
              return false;
          }
          if (st->pending.empty() && !st->sink->wait_pop(st->pending, st->deadline)) {
            net::api_error e = make_error(504, "request deadline exceeded", "timeout_error");
            write(net::sse_event(net::error_body(e)));
            write(net::sse_done());
            hooks_.cancel(st->id);
            st->finished = true;
            out.done();
            return true;
          }
          for (auto& ev : st->pending) {
            std::string text;
            for (auto t : ev.tokens)
              text += st->decoder.push(t);
            std::vector<net::logprob_entry> lps;
            if (st->want_logprobs)
              lps = logprob_entries(*st->tok, ev, st->text_offset);
            const auto* lp = st->want_logprobs && !lps.empty() ? &lps : nullptr;
            st->usage.completion_tokens += static_cast<int64_t>(ev.tokens.size());
            if (ev.finish == finish_reason::error) {
              write(net::sse_event(net::error_body(event_error(ev))));
              write(net::sse_done());
              st->finished = true;
              out.done();
              return true;
            }
            if (ev.finish != finish_reason::none) {
              text += st->decoder.flush();
              if ((!text.empty() || lp) && !write(net::sse_event(net::render_chunk(st->meta, text, false, "", lp))))
                return false;
              if (!write(net::sse_event(net::render_chunk(st->meta, "", false,
                                                          protocol::to_string(ev.finish)))))
                return false;
              if (st->include_usage
                  && !write(net::sse_event(net::render_usage_chunk(st->meta, st->usage))))
                return false;
              write(net::sse_done());
              st->finished = true;
              spdlog::info("request {} model={} prompt_tokens={} completion_tokens={} finish={} "
                           "stream ms={}",
                           st->meta.id, st->meta.model, st->usage.prompt_tokens,
                           st->usage.completion_tokens, protocol::to_string(ev.finish),
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                             clock_type::now() - start).count());
              out.done();
              return true;
            }
            if ((!text.empty() || lp)
                && !write(net::sse_event(net::render_chunk(st->meta, text, false, "", lp))))
              return false;  // client gone: the releaser cancels
          }
          st->pending.clear();
          return true;
        },
        [this, st](bool success) {
          if (!success || !st->finished)
            hooks_.cancel(st->id);
          registry_->close(st->id);
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
