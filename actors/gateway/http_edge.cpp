#include "actors/gateway/http_edge.hpp"

#include "actors/gateway/choice_text.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/tool_calls.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "engine/chat_template.hpp"
#include "engine/jinja.hpp"
#include "engine/engine_factory.hpp"
#include "net/http_server.hpp"
#include "net/openai_schema.hpp"
#include "net/secret.hpp"

namespace llmux::gateway {

using clock_type = std::chrono::steady_clock;
using net::http_exchange;
using protocol::finish_reason;
using exchange_ptr = std::shared_ptr<http_exchange>;

namespace {

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

/// Generation requests with bodies up to this are handled on the loop thread.
constexpr size_t inline_body_bytes = 2048;
/// ... at most this many a millisecond (the rest go to the workers).
constexpr int inline_per_ms = 4;

/// Fixed worker threads over a task queue. The queue is bounded by
/// admission (a generation request is queued only with its slot), not here.
class task_pool {
public:
  explicit task_pool(int threads) {
    for (int i = 0; i < threads; ++i)
      threads_.emplace_back([this] { run(); });
  }
  ~task_pool() { stop(); }

  /// False when the pool has stopped (the task is dropped).
  bool post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (stopped_)
        return false;
      tasks_.push_back(std::move(fn));
    }
    cv_.notify_one();
    return true;
  }
  void stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (stopped_)
        return;
      stopped_ = true;
      dropped.swap(tasks_);
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }
  [[nodiscard]] size_t queued() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return tasks_.size();
  }

private:
  void run() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> guard{mtx_};
        cv_.wait(guard, [this] { return stopped_ || !tasks_.empty(); });
        if (stopped_)
          return;
        fn = std::move(tasks_.front());
        tasks_.pop_front();
      }
      try {
        fn();
      } catch (const std::exception& e) {
        spdlog::error("edge worker: {}", e.what());
      }
    }
  }

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

/// Runs callbacks at their time on one thread; a callback can be cancelled.
class deadline_timer {
public:
  using key = std::pair<clock_type::time_point, uint64_t>;
  deadline_timer() : thread_([this] { run(); }) {}
  ~deadline_timer() { stop(); }

  key at(clock_type::time_point when, std::function<void()> fn) {
    key k;
    bool earliest = false;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      k = {when, next_++};
      earliest = timers_.empty() || when < timers_.begin()->first.first;
      timers_.emplace(k, std::move(fn));
    }
    if (earliest)
      cv_.notify_one();
    return k;
  }
  void cancel(const key& k) {
    std::lock_guard<std::mutex> guard{mtx_};
    timers_.erase(k);
  }
  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (stopped_)
        return;
      stopped_ = true;
      timers_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable())
      thread_.join();
  }

private:
  void run() {
    std::unique_lock<std::mutex> guard{mtx_};
    while (!stopped_) {
      if (timers_.empty()) {
        cv_.wait(guard);
        continue;
      }
      auto first = timers_.begin();
      // A copy: wait_until reads its deadline again after waking, and a
      // cancel() meanwhile may have erased the node it lives in (found by
      // AddressSanitizer: heap-use-after-free).
      const auto due = first->first.first;
      if (clock_type::now() < due) {
        cv_.wait_until(guard, due);
        continue;
      }
      auto fn = std::move(first->second);
      timers_.erase(first);
      guard.unlock();
      fn();
      guard.lock();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::map<key, std::function<void()>> timers_;
  uint64_t next_ = 0;
  bool stopped_ = false;
  std::thread thread_;
};

/// The cluster's admin state, fetched on one thread of its own and shared
/// by every scrape that asks while a fetch runs: a scrape never does the
/// fan-out itself and waits for one only as long as it says.
class state_cache {
public:
  struct snapshot {
    std::string json;   ///< empty until a fetch succeeded
    std::string error;  ///< the last fetch's error, if it failed
    clock_type::time_point started;  ///< when the fetch behind it began
    bool fresh = false;  ///< began after the time asked for
  };

  explicit state_cache(std::function<std::string()> fetch)
    : fetch_(std::move(fetch)), thread_([this] { run(); }) {}
  ~state_cache() { stop(); }

  /// The snapshot of a fetch begun at or after `after`, waiting up to
  /// `wait` for one; otherwise the latest there is.
  snapshot get(clock_type::time_point after, clock_type::duration wait) {
    std::unique_lock<std::mutex> guard{mtx_};
    if (!(have_ && started_ >= after)) {
      wanted_ = true;
      cv_.notify_all();
      cv_.wait_until(guard, clock_type::now() + wait,
                     [&] { return stopped_ || (have_ && started_ >= after); });
    }
    snapshot s;
    s.json = json_;
    s.error = error_;
    s.started = started_;
    s.fresh = have_ && started_ >= after;
    return s;
  }
  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (stopped_)
        return;
      stopped_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
      thread_.join();
  }

private:
  void run() {
    std::unique_lock<std::mutex> guard{mtx_};
    while (true) {
      cv_.wait(guard, [this] { return stopped_ || wanted_; });
      if (stopped_)
        return;
      wanted_ = false;
      const auto began = clock_type::now();
      guard.unlock();
      std::string json, error;
      try {
        json = fetch_();
      } catch (const std::exception& e) {
        error = e.what();
      }
      guard.lock();
      started_ = began;
      have_ = true;
      error_ = error;
      if (error.empty())
        json_ = std::move(json);
      cv_.notify_all();
    }
  }

  std::function<std::string()> fetch_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::string json_, error_;
  clock_type::time_point started_;
  bool have_ = false;
  bool wanted_ = false;
  bool stopped_ = false;
  std::thread thread_;
};

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

net::header_list error_headers(int status) {
  // Overloaded or no replica: worth retrying soon (OpenAI's clients honour it).
  if (status == 429 || status == 503)
    return {{"Retry-After", "1"}};
  return {};
}

void send_error(http_exchange& ex, const net::api_error& e) {
  ex.respond(e.status, "application/json", net::error_body(e), error_headers(e.status));
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

std::string bearer_token(const net::http_request& req) {
  auto h = req.header("authorization");
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
  std::optional<engine::tool_call_parser> tools;  ///< chat with tools: finds the calls in the text
  std::vector<net::function_call> calls;          ///< the calls found so far
};

/// What one event did to its choice.
struct choice_update {
  int index = 0;
  std::string text;
  std::vector<net::logprob_entry> lps;
  std::string finish;  ///< set when the choice ended with this event
  std::vector<net::function_call> calls;  ///< tool calls completed by this event
  int first_call = 0;                     ///< index of the first of them in the choice
};

}  // namespace

/// What the edge's threads share; jobs hold it, so a late event after the
/// edge stopped finds stopped pools rather than freed ones.
struct http_edge::runtime {
  explicit runtime(int workers, std::function<std::string()> fetch_state)
    : pool(workers), state(std::move(fetch_state)) {}
  task_pool pool;          ///< parse, tokenize, render
  deadline_timer timer;    ///< request deadlines
  state_cache state;       ///< cluster admin state for /metrics and /admin/state
  task_pool slow{2};       ///< waits on `state` (scrapes, /admin/state)
  void stop() {
    timer.stop();
    pool.stop();
    slow.stop();
    state.stop();
  }
};

namespace {

/// One generation request from its admission to its last byte: its
/// choices, their shared sink (events carry their id), its slots. Events
/// are rendered on a worker when the sink says some came (`schedule`); the
/// client going away, the deadline and the last event each end it once.
struct completion_job : std::enable_shared_from_this<completion_job> {
  exchange_ptr ex;
  std::shared_ptr<http_edge::runtime> rt;
  std::shared_ptr<request_registry> registry;
  std::shared_ptr<edge_metrics> metrics;
  std::function<void(uint64_t)> cancel;
  admission_slot slot;
  std::vector<choice_state> choices;
  std::shared_ptr<request_sink> sink;
  clock_type::time_point start, deadline;
  int request_ms = 0;
  deadline_timer::key timer_key{};
  net::response_meta meta;
  net::usage_counts usage;
  std::string echo;  ///< completions with echo: the prompt text
  bool stream = false;
  bool include_usage = false;
  bool continuous_usage = false;  ///< vLLM's continuous_usage_stats: usage in every chunk
  bool want_logprobs = false;

  std::mutex mtx;                  ///< everything below, and the rendering
  std::atomic<bool> scheduled{false};
  std::atomic<bool> expired{false};
  bool started = false;   ///< streaming: the 200 and the first chunks are out
  bool finished = false;
  bool first_token_seen = false;

  [[nodiscard]] bool done() const {
    return std::all_of(choices.begin(), choices.end(), [](const auto& c) { return !c.finish.empty(); });
  }

  void cancel_running() {
    for (auto& c : choices)
      if (c.finish.empty())
        cancel(c.id);
  }

  /// Something came (or the deadline passed): render it on a worker, once at a time.
  void schedule() {
    if (scheduled.exchange(true))
      return;
    auto self = shared_from_this();
    if (!rt->pool.post([self] {
          self->scheduled = false;
          self->pump();
        }))
      scheduled = false;
  }

  /// The client went away (loop thread): cancel what runs, give the slots back.
  void client_gone() {
    std::lock_guard<std::mutex> guard{mtx};
    if (finished)
      return;
    cancel_running();
    spdlog::info("request {} model={} cancelled: the client closed the connection", meta.id,
                 meta.model);
    finish(count_gone());
  }

  /// How a request its client left counts: 499 (nginx's "client closed
  /// request") unless a stream's 200 was already sent. Counted as aborted,
  /// by stage, with its prompt tokens.
  [[nodiscard]] int count_gone() {
    metrics->aborted(meta.model, first_token_seen ? "decode" : "prefill", usage.prompt_tokens);
    return stream && started ? 200 : 499;
  }

  /// Ends the request (under `mtx`): ids, notifier, timer, slots, metrics.
  void finish(int status) {
    finished = true;
    for (const auto& c : choices)
      registry->close(c.id);
    sink->set_notify(nullptr);
    ex->on_close(nullptr);  // the exchange held this job: let both go
    rt->timer.cancel(timer_key);
    slot.release();
    metrics->request_done(meta.model, status);
    if (status == 429)
      metrics->queue_rejection(meta.model);
  }

  /// Before the answer is committed: a failure cancels what still runs and
  /// becomes a proper HTTP error; after (streaming), an error event and [DONE].
  void fail(const net::api_error& e) {
    cancel_running();
    if (stream && started) {
      ex->write(net::sse_event(net::error_body(e)) + net::sse_done());
      ex->end();
      finish(200);
      return;
    }
    send_error(*ex, e);
    finish(e.status);
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
      choice_update u{static_cast<int>(i), std::move(d.text), std::move(d.logprobs), {}, {}, 0};
      if (c.text.stopped()) {
        c.finish = "stop";
        cancel(c.id);
      } else if (ev.finish != finish_reason::none) {
        u.text += c.text.finish();
        c.finish = protocol::to_string(ev.finish);
      }
      if (c.tools) {
        // The text goes through the tool-call parser: calls leave it.
        u.first_call = static_cast<int>(c.calls.size());
        auto found = c.tools->push(u.text);
        if (!c.finish.empty()) {
          auto rest = c.tools->finish();
          found.content += rest.content;
          found.calls.insert(found.calls.end(), rest.calls.begin(), rest.calls.end());
        }
        u.text = std::move(found.content);
        for (auto& call : found.calls) {
          net::function_call fc{engine::tool_call_id(c.tools->format(), c.id, c.calls.size()), std::move(call.name),
                                std::move(call.arguments)};
          c.calls.push_back(fc);
          u.calls.push_back(std::move(fc));
        }
        if (c.finish == "stop" && !c.calls.empty())
          c.finish = "tool_calls";
      }
      u.finish = c.finish;
      return u;
    }
    return std::nullopt;
  }

  [[nodiscard]] int64_t completion_tokens() const {
    int64_t n = 0;
    for (const auto& c : choices)
      n += c.text.tokens();
    return n;
  }

  /// The request is complete: metrics and its one info line.
  void log() const {
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

  std::string chunk(const std::string& text, bool first, const std::string& finish,
                    const std::vector<net::logprob_entry>* lps, int index,
                    const std::vector<net::function_call>* calls = nullptr, int first_call = 0) const {
    net::usage_counts so_far{usage.prompt_tokens, completion_tokens()};
    return net::sse_event(net::render_chunk(meta, text, first, finish, lps, index,
                                            continuous_usage ? &so_far : nullptr, calls, first_call));
  }

  /// Renders what the sink holds (worker thread).
  void pump() {
    std::lock_guard<std::mutex> guard{mtx};
    if (finished)
      return;
    std::vector<sink_event> events;
    sink->try_pop(events);
    if (ex->closed()) {
      cancel_running();
      finish(count_gone());
      return;
    }
    // Past the deadline, the client is told so: an error that comes at
    // the same time (a step that timed out below) is the deadline's doing.
    const bool late = expired || clock_type::now() >= deadline;
    auto deadline_error = [&] {
      return make_error(504, "request deadline of " + std::to_string(request_ms) + " ms exceeded"
                               + (first_token_seen ? "" : " before the first token"),
                        "timeout_error");
    };
    auto error_of = [&](const sink_event& ev) { return late ? deadline_error() : event_error(ev); };
    if (events.empty() && expired) {
      fail(deadline_error());
      return;
    }
    if (events.empty())
      return;
    // An error that arrives first (no replica, queue full) is an HTTP error.
    std::string out;
    if (!started) {
      if (events.front().finish == finish_reason::error) {
        fail(error_of(events.front()));
        return;
      }
      if (stream) {
        started = true;
        ex->start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
        // OpenAI opens each chat choice with the assistant role and empty
        // content; a completion with echo opens with the prompt.
        for (size_t i = 0; i < choices.size(); ++i) {
          const int index = static_cast<int>(i);
          if (meta.kind == net::api_kind::chat)
            out += chunk("", true, "", nullptr, index);
          if (!echo.empty())
            out += chunk(echo, false, "", nullptr, index);
        }
      }
    }
    for (auto& ev : events) {
      if (ev.finish == finish_reason::error) {
        if (!out.empty())
          ex->write(out);
        fail(error_of(ev));
        return;
      }
      auto u = apply(ev);
      if (!u)
        continue;
      auto& c = choices[static_cast<size_t>(u->index)];
      if (stream) {
        if (!u->text.empty() || !u->lps.empty())
          out += chunk(u->text, false, "", u->lps.empty() ? nullptr : &u->lps, u->index);
        if (!u->calls.empty())
          out += chunk("", false, "", nullptr, u->index, &u->calls, u->first_call);
        if (!u->finish.empty())
          out += chunk("", false, u->finish, nullptr, u->index);
      } else {
        c.out += u->text;
        for (auto& e : u->lps)
          c.lps.push_back(std::move(e));
      }
    }
    if (!done()) {
      if (stream && !out.empty() && !ex->write(out)) {
        cancel_running();
        finish(count_gone());
      } else if (late) {
        fail(deadline_error());
      }
      return;
    }
    usage.completion_tokens = completion_tokens();
    if (stream) {
      if (include_usage)
        out += net::sse_event(net::render_usage_chunk(meta, usage));
      out += net::sse_done();
      ex->write(out);
      ex->end();
    } else {
      std::vector<net::choice_result> results;
      for (auto& c : choices)
        results.push_back({echo + c.out, c.finish, want_logprobs ? &c.lps : nullptr, c.tools ? &c.calls : nullptr});
      ex->respond(200, "application/json", net::render_completion(meta, results, usage));
    }
    finish(200);
    log();
  }
};

}  // namespace

namespace {

/// A chat request's conversation, and the tools it offers, as the model's
/// prompt tokens: the model's chat template renders them (engine/tool_calls,
/// render_chat) and the special tokens it spells are parsed. An error for
/// tools the model's call format cannot be read back from, or a
/// conversation its template refuses.
std::variant<std::vector<int32_t>, net::api_error> chat_prompt_tokens(const http_edge::model_entry& model,
                                                                      const net::completion_request& r) {
  const bool use_tools = !r.tools.empty() && r.tool_choice != net::tool_choice_kind::none;
  std::vector<engine::tool_function> fns;  // the tools offered (none with tool_choice "none")
  if (use_tools)
    for (const auto& t : r.tools)
      fns.push_back({t.name, t.description, t.parameters});
  bool history_tools = false;
  std::vector<engine::tool_turn> turns;
  for (const auto& m : r.messages) {
    engine::tool_turn t{m.role, m.content, {}, m.tool_call_id};
    for (const auto& c : m.tool_calls)
      t.calls.push_back({c.id, c.name, c.arguments});
    history_tools = history_tools || !t.calls.empty() || m.role == "tool";
    turns.push_back(std::move(t));
  }
  if ((use_tools || history_tools) && !engine::tools_supported(model.chat))
    return make_error(400,
                      "tool calls are read as Hermes-style <tool_call> blocks, Llama 3.1's JSON or Mistral's [TOOL_CALLS] so far; '"
                        + r.model + "' has a chat template that asks for calls in another form",
                      "invalid_request_error", use_tools ? "tools" : "messages");
  engine::chat_prompt rendered;
  try {
    rendered = engine::render_chat(model.chat, turns, fns, r.chat_template_kwargs);
  } catch (const engine::jinja::template_error& e) {
    // The template refuses the conversation (say, roles that do not
    // alternate): vLLM's 400 with the template's own words.
    return make_error(400, std::string("the model's chat template refused the conversation: ") + e.what(),
                      "invalid_request_error", "messages");
  }
  if (!rendered.fallback.empty())
    spdlog::warn("model {}: its chat template failed ({}); the built-in {} format rendered the conversation",
                 r.model, rendered.fallback, engine::chat_format_name(model.chat.format));
  // The rendered template spells special tokens (<|im_start|>): parse them.
  // A template that writes BOS itself gets no second one.
  return model.tok->encode_with_specials(rendered.text, !rendered.starts_with_bos);
}

}  // namespace

http_edge::http_edge(const config::cluster_config& cfg,
                     std::shared_ptr<request_registry> registry, edge_hooks hooks)
  : cfg_(cfg), registry_(std::move(registry)), hooks_(std::move(hooks)) {
  std::map<std::string, int> limits;
  for (const auto& m : cfg_.models) {
    auto front = engine::make_frontend(m);
    if (!front.chat.template_error.empty())
      spdlog::warn("model {}: its chat template is not Jinja this engine reads ({}); the built-in {} format renders "
                   "its conversations",
                   m.name, front.chat.template_error, engine::chat_format_name(front.chat.format));
    models_[m.name] = model_entry{m, std::move(front.tok), front.chat};
    if (m.max_in_flight > 0)
      limits[m.name] = m.max_in_flight;
  }
  admission_ = std::make_unique<admission>(cfg_.gateway.max_in_flight, std::move(limits));
}

http_edge::~http_edge() {
  stop();
}

void http_edge::start() {
  net::http_server_options o;
  o.host = cfg_.gateway.host;
  o.port = cfg_.gateway.port;
  o.max_connections = static_cast<size_t>(cfg_.gateway.max_connections);
  o.keep_alive_s = cfg_.gateway.keep_alive_s;
  o.limits.max_body_bytes = cfg_.gateway.max_body_bytes;
  server_ = std::make_unique<net::http_server>(o);
  if (cfg_.gateway.ops_port != 0) {
    auto ops = o;
    ops.host = cfg_.gateway.ops_host.empty() ? cfg_.gateway.host : cfg_.gateway.ops_host;
    ops.port = cfg_.gateway.ops_port;
    ops_server_ = std::make_unique<net::http_server>(ops);
  }
  int workers = cfg_.gateway.http_threads;
  if (workers <= 0)
    workers = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  auto fetch = hooks_.admin_state;
  rt_ = std::make_shared<runtime>(workers, [fetch] {
    if (!fetch)
      throw std::runtime_error("no cluster state hook");
    return fetch();
  });
  install_routes();
  server_->start();  // throws naming host:port
  port_ = server_->port();
  if (ops_server_)
    ops_server_->start();
  // The edge's own figures in the gateway's admin state.
  registry_->set_edge_probe([this, srv = server_.get(), rt = rt_.get()] {
    auto st = srv->stats();
    nlohmann::json models = nlohmann::json::object();
    for (const auto& [name, m] : models_)
      models[name] = {{"in_flight", admission_->in_flight(name)},
                      {"max_in_flight", admission_->model_limit(name)},
                      {"rejected", admission_->model_rejections(name)}};
    return nlohmann::json{{"connections", st.connections},
                          {"answering", st.in_request},
                          {"accepted", st.accepted},
                          {"refused_connections", st.refused},
                          {"idle_closed", st.idle_closed},
                          {"client_gone", st.client_gone},
                          {"http_requests", st.requests},
                          {"bad_requests", st.bad_requests},
                          {"in_flight", admission_->in_flight()},
                          {"max_in_flight", admission_->edge_limit()},
                          {"rejected", admission_->edge_rejections()},
                          {"worker_queue", rt->pool.queued()},
                          {"models", models}}
      .dump();
  });
}

void http_edge::stop() {
  if (!server_)
    return;
  registry_->set_edge_probe(nullptr);
  // Closing every connection ends every request (their clients are told by
  // the close); then the threads that render them stop.
  server_->stop();
  if (ops_server_)
    ops_server_->stop();
  if (rt_)
    rt_->stop();
  server_.reset();
  ops_server_.reset();
}

void http_edge::install_routes() {
  const auto& gw = cfg_.gateway;
  // /metrics and /admin/* go to the ops address when one is set (and the
  // public port no longer serves them); /health and /ready are on both.
  auto known = std::make_shared<std::map<net::http_server*, std::vector<std::string>>>();
  auto add = [known](net::http_server& srv, const std::string& method, const std::string& path,
                     net::http_handler h, bool prefix = false) {
    srv.route(method, path, std::move(h), prefix);
    (*known)[&srv].push_back(path);
  };
  auto& svr = *server_;
  auto& ops = ops_server_ ? *ops_server_ : *server_;

  for (auto* srv : {server_.get(), ops_server_.get()})
    if (srv)
      srv->set_error_renderer([](int status, const std::string& message) {
        return std::make_pair(net::error_body(make_error(status, message, "invalid_request_error")),
                              std::string{"application/json"});
      });

  auto authorized = [this](http_exchange& ex) {
    if (cfg_.gateway.api_keys.empty())
      return true;
    auto key = bearer_token(ex.request());
    if (net::key_accepted(key, cfg_.gateway.api_keys))
      return true;
    send_error(ex, make_error(401,
                              key.empty() ? "Missing API key: send 'Authorization: Bearer <key>'"
                                          : "Incorrect API key provided",
                              "invalid_request_error", "", "invalid_api_key"));
    return false;
  };

  // Cheap answers run on the loop thread: they stay fast under any load.
  auto health = [](exchange_ptr ex) { ex->respond(200, "application/json", R"({"status":"ok"})"); };
  add(svr, "GET", "/health", health);
  if (&ops != &svr)
    add(ops, "GET", "/health", health);

  add(svr, "GET", "/v1/models", [this, authorized](exchange_ptr ex) {
    if (!authorized(*ex))
      return;
    auto live = registry_->live_replicas();
    auto states = registry_->model_states();
    std::vector<net::model_card> cards;
    for (const auto& [name, m] : models_)
      cards.push_back({name, m.cfg.backend, live.count(name) ? live[name] : 0, m.cfg.arch.context_length,
                       states.count(name) ? states[name] : std::string{}});
    ex->respond(200, "application/json", net::render_models(cards, std::time(nullptr)));
  });

  add(svr, "GET", "/v1/models/", [this, authorized](exchange_ptr ex) {
    if (!authorized(*ex))
      return;
    auto id = ex->request().path.substr(std::string{"/v1/models/"}.size());
    auto it = models_.find(id);
    if (it == models_.end()) {
      send_error(*ex, make_error(404, "The model '" + id + "' does not exist",
                                 "invalid_request_error", "model", "model_not_found"));
      return;
    }
    auto live = registry_->live_replicas();
    auto states = registry_->model_states();
    auto one = nlohmann::json::parse(net::render_models(
      {{id, it->second.cfg.backend, live.count(id) ? live[id] : 0, it->second.cfg.arch.context_length,
        states.count(id) ? states[id] : std::string{}}},
      std::time(nullptr)));
    ex->respond(200, "application/json", one["data"][0].dump());
  }, true);

  // Readiness: every configured model has a live replica (liveness is /health).
  auto ready = [this](exchange_ptr ex) {
    auto live = registry_->live_replicas();
    nlohmann::json missing = nlohmann::json::array();
    for (const auto& [name, m] : models_)
      if (live.count(name) == 0 || live[name] == 0)
        missing.push_back(name);
    ex->respond(missing.empty() ? 200 : 503, "application/json",
                nlohmann::json{{"ready", missing.empty()}, {"models_without_replica", missing}}.dump());
  };
  add(svr, "GET", "/ready", ready);
  if (&ops != &svr)
    add(ops, "GET", "/ready", ready);

  // Tokenizer endpoints (vLLM's shapes): the edge owns the tokenizers. Both
  // take {"model": string, FIELD: ...}; `tokenizer_request` checks that
  // much and finds the model (null after answering with the error).
  auto find_model = [this](http_exchange& ex, const std::string& name) -> const model_entry* {
    auto it = models_.find(name);
    if (it == models_.end()) {
      send_error(ex, make_error(404, "The model '" + name + "' does not exist", "invalid_request_error", "model",
                                "model_not_found"));
      return nullptr;
    }
    return &it->second;
  };
  auto tokenizer_request = [find_model](http_exchange& ex, const char* field, bool array,
                                        nlohmann::json& body) -> const model_entry* {
    body = nlohmann::json::parse(ex.request().body, nullptr, false);
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()
        || !body.contains(field) || (array ? !body[field].is_array() : !body[field].is_string())) {
      send_error(ex, make_error(400, std::string{"expected {\"model\": string, \""} + field
                                       + (array ? "\": [int]}" : "\": string}"),
                                "invalid_request_error", body.is_object() ? field : ""));
      return nullptr;
    }
    return find_model(ex, body["model"].get<std::string>());
  };

  auto on_pool = [this](std::function<void(exchange_ptr)> fn) {
    return [this, fn = std::move(fn)](exchange_ptr ex) {
      if (!rt_->pool.post([fn, ex] {
            if (!ex->closed())
              fn(ex);
          }))
        send_error(*ex, make_error(503, "the edge is stopping", "service_unavailable_error"));
    };
  };

  add(svr, "POST", "/tokenize", on_pool([authorized, tokenizer_request, find_model](exchange_ptr ex) {
    if (!authorized(*ex))
      return;
    nlohmann::json body;
    std::vector<engine::token_id> ids;
    const model_entry* model = nullptr;
    auto probe = nlohmann::json::parse(ex->request().body, nullptr, false);
    if (probe.is_object() && probe.contains("messages")) {
      // vLLM's chat form, {"model", "messages", "tools"?, ...}: the prompt
      // a chat completion of the same body would run.
      auto parsed = net::parse_completion_request(ex->request().body, net::api_kind::chat);
      if (auto* err = std::get_if<net::api_error>(&parsed)) {
        send_error(*ex, *err);
        return;
      }
      const auto& r = std::get<net::completion_request>(parsed);
      model = find_model(*ex, r.model);
      if (model == nullptr)
        return;
      auto rendered = chat_prompt_tokens(*model, r);
      if (auto* err = std::get_if<net::api_error>(&rendered)) {
        send_error(*ex, *err);
        return;
      }
      ids = std::move(std::get<std::vector<int32_t>>(rendered));
    } else {
      model = tokenizer_request(*ex, "prompt", false, body);
      if (model == nullptr)
        return;
      bool add_special = body.value("add_special_tokens", true);
      ids = model->tok->encode(body["prompt"].get<std::string>(), add_special);
    }
    ex->respond(200, "application/json",
                nlohmann::json{{"tokens", ids}, {"count", ids.size()},
                               {"max_model_len", model->cfg.arch.context_length}}
                  .dump());
  }));

  add(svr, "POST", "/detokenize", on_pool([authorized, tokenizer_request](exchange_ptr ex) {
    if (!authorized(*ex))
      return;
    nlohmann::json body;
    const auto* model = tokenizer_request(*ex, "tokens", true, body);
    if (model == nullptr)
      return;
    const auto& tok = *model->tok;
    std::vector<engine::token_id> ids;
    for (const auto& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.vocab_size()) {
        send_error(*ex, make_error(400, "tokens must be ids in 0.." + std::to_string(tok.vocab_size() - 1),
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
    ex->respond(200, "application/json",
                nlohmann::json{{"prompt", text}}.dump(-1, ' ', false,
                                                      nlohmann::json::error_handler_t::replace));
  }));

  // Cluster state: fetched by the state thread, waited for on the slow pool.
  add(ops, "GET", "/admin/state", [this, gw](exchange_ptr ex) {
    if (!gw.admin_token.empty() && !net::constant_time_equal(bearer_token(ex->request()), gw.admin_token)) {
      send_error(*ex, make_error(401, "Admin endpoints need 'Authorization: Bearer <admin_token>'",
                                 "invalid_request_error", "", "invalid_admin_token"));
      return;
    }
    auto rt = rt_;
    rt->slow.post([rt, ex] {
      auto s = rt->state.get(ex->arrived(), std::chrono::seconds(10));
      if (s.fresh && s.error.empty())
        ex->respond(200, "application/json", s.json);
      else
        send_error(*ex, make_error(503, "admin state unavailable: "
                                          + (s.error.empty() ? std::string{"no answer within 10 s"} : s.error),
                                   "service_unavailable_error"));
    });
  });

  // Prometheus metrics (open, as vLLM's: no key needed to scrape). The
  // cluster gauges come from the admin state of every actor, fetched for
  // this scrape if that takes under 250 ms, else the last fetch's (its age
  // is a gauge): a scrape under load is never slow.
  add(ops, "GET", "/metrics", [this](exchange_ptr ex) {
    auto rt = rt_;
    rt->slow.post([this, rt, ex] {
      auto s = rt->state.get(ex->arrived(), std::chrono::milliseconds(250));
      cluster_gauges gauges;
      try {
        if (!s.json.empty())
          gauges = gauges_from_admin_state(s.json);
      } catch (const std::exception& e) {
        spdlog::warn("/metrics: cluster state unreadable: {}", e.what());
      }
      if (!s.error.empty())
        spdlog::warn("/metrics: cluster state unavailable: {}", s.error);
      auto text = metrics_->render(gauges);
      const auto st = server_ ? server_->stats() : net::http_server_stats{};
      char extra[1024];
      std::snprintf(
        extra, sizeof extra,
        "# HELP llmux:http_connections Open client connections at the edge.\n"
        "# TYPE llmux:http_connections gauge\nllmux:http_connections %llu\n"
        "# HELP llmux:edge_requests_in_flight Generation requests admitted at the edge and not yet answered.\n"
        "# TYPE llmux:edge_requests_in_flight gauge\nllmux:edge_requests_in_flight %d\n"
        "# HELP llmux:edge_rejections_total Requests refused with 429 because the edge was full.\n"
        "# TYPE llmux:edge_rejections_total counter\nllmux:edge_rejections_total %llu\n"
        "# HELP llmux:cluster_state_age_seconds Age of the cluster state behind the gauges.\n"
        "# TYPE llmux:cluster_state_age_seconds gauge\nllmux:cluster_state_age_seconds %.3f\n",
        static_cast<unsigned long long>(st.connections), admission_->in_flight(),
        static_cast<unsigned long long>(admission_->edge_rejections()),
        s.json.empty() ? -1.0 : seconds(clock_type::now() - s.started));
      ex->respond(200, "text/plain; version=0.0.4; charset=utf-8", text + extra);
    });
  });

  add(svr, "POST", "/v1/completions", [this](exchange_ptr ex) {
    generate(std::move(ex), static_cast<int>(net::api_kind::completions));
  });
  add(svr, "POST", "/v1/chat/completions", [this](exchange_ptr ex) {
    generate(std::move(ex), static_cast<int>(net::api_kind::chat));
  });

  // Unknown paths and methods get OpenAI's shape.
  for (auto* srv : {server_.get(), ops_server_.get()}) {
    if (!srv)
      continue;
    srv->set_fallback([paths = (*known)[srv]](exchange_ptr ex) {
      const auto& path = ex->request().path;
      bool is_known = std::find(paths.begin(), paths.end(), path) != paths.end();
      send_error(*ex, make_error(is_known ? 405 : 404,
                                 is_known ? "Method " + ex->request().method + " is not allowed on " + path
                                          : "Unknown path " + path,
                                 "invalid_request_error"));
    });
  }
}

void http_edge::generate(exchange_ptr ex, int kind_value) {
  const auto kind = static_cast<net::api_kind>(kind_value);
  // Admission at the door (loop thread): a full edge answers 429 at once.
  if (!admission_->try_edge()) {
    metrics_->request_done("", 429);
    send_error(*ex, make_error(429, "the server is overloaded: " + std::to_string(admission_->edge_limit())
                                      + " requests are in flight at this edge (gateway.max_in_flight);"
                                        " retry later",
                               "rate_limit_error"));
    return;
  }
  auto slot = std::make_shared<admission_slot>(admission_.get());
  auto work = [this, ex, kind, slot] {
    // Every answer counts once, by model (known models only) and status.
    std::string label;
    auto answer_error = [&](const net::api_error& e) {
      metrics_->request_done(label, e.status);
      if (e.status == 429)
        metrics_->queue_rejection(label);
      send_error(*ex, e);
    };
    if (ex->closed()) {
      metrics_->request_done("", 499);  // went away while queued: its slot is back
      metrics_->aborted("", "queued", 0);
      return;
    }
    const auto start = ex->arrived();
    const auto deadline = start + std::chrono::milliseconds(cfg_.timeouts.request_ms);
    if (!cfg_.gateway.api_keys.empty()) {
      auto key = bearer_token(ex->request());
      if (!net::key_accepted(key, cfg_.gateway.api_keys)) {
        answer_error(make_error(401,
                                key.empty() ? "Missing API key: send 'Authorization: Bearer <key>'"
                                            : "Incorrect API key provided",
                                "invalid_request_error", "", "invalid_api_key"));
        return;
      }
    }
    auto parsed = net::parse_completion_request(ex->request().body, kind);
    if (auto* err = std::get_if<net::api_error>(&parsed)) {
      answer_error(*err);
      return;
    }
    auto& r = std::get<net::completion_request>(parsed);
    auto mit = models_.find(r.model);
    if (mit == models_.end()) {
      answer_error(make_error(404, "The model '" + r.model + "' does not exist",
                              "invalid_request_error", "model", "model_not_found"));
      return;
    }
    const auto& model = mit->second;
    const auto& tok = *model.tok;
    label = r.model;
    if (!slot->take_model(r.model)) {
      answer_error(make_error(429, "model '" + r.model + "' is overloaded: "
                                     + std::to_string(admission_->model_limit(r.model))
                                     + " of its requests are in flight at this edge (its max_in_flight);"
                                       " retry later",
                              "rate_limit_error"));
      return;
    }

    // Tokenize at the edge: units only ever see token ids.
    std::vector<int32_t> prompt;
    const char* prompt_param = kind == net::api_kind::chat ? "messages" : "prompt";
    const bool use_tools = !r.tools.empty() && r.tool_choice != net::tool_choice_kind::none;
    std::vector<engine::tool_function> fns;  // the tools offered (none with tool_choice "none")
    if (use_tools)
      for (const auto& t : r.tools)
        fns.push_back({t.name, t.description, t.parameters});
    if (kind == net::api_kind::chat) {
      auto ids = chat_prompt_tokens(model, r);
      if (auto* err = std::get_if<net::api_error>(&ids)) {
        answer_error(*err);
        return;
      }
      prompt = std::move(std::get<std::vector<int32_t>>(ids));
    } else if (r.prompt_is_tokens) {
      for (auto t : r.prompt_tokens)
        if (t < 0 || t >= tok.vocab_size()) {
          answer_error(make_error(400,
                                  "token id " + std::to_string(t) + " is outside the vocabulary"
                                    " (0.." + std::to_string(tok.vocab_size() - 1) + ")",
                                  "invalid_request_error", "prompt"));
          return;
        }
      prompt = r.prompt_tokens;
    } else {
      prompt = tok.encode(r.prompt, true);
    }
    // vLLM's truncate_prompt_tokens: the prompt's last k tokens.
    if (r.truncate_prompt_tokens && static_cast<int>(prompt.size()) > *r.truncate_prompt_tokens)
      prompt.erase(prompt.begin(), prompt.end() - *r.truncate_prompt_tokens);
    int ctx = model.cfg.arch.context_length;
    if (prompt.empty() || (ctx > 0 && static_cast<int>(prompt.size()) >= ctx)) {
      answer_error(make_error(400,
                              "This model's maximum context length is " + std::to_string(ctx)
                                + " tokens. However, your prompt has "
                                + std::to_string(prompt.size()) + " tokens.",
                              "invalid_request_error", prompt_param, "context_length_exceeded"));
      return;
    }

    // What the context leaves for the output: asking for more is vLLM's 400
    // (not a silent cut); the default fits itself to it, and grows to
    // min_tokens (vLLM's default is the whole context, so min_tokens alone
    // never fails there).
    int max_tokens = r.max_tokens.value_or(std::max(model.cfg.max_tokens_default, r.min_tokens));
    if (ctx > 0) {
      const int room = ctx - static_cast<int>(prompt.size());
      if (r.max_tokens && *r.max_tokens > room) {
        answer_error(make_error(400,
                                "This model's maximum context length is " + std::to_string(ctx)
                                  + " tokens. However, you requested "
                                  + std::to_string(prompt.size() + static_cast<size_t>(*r.max_tokens))
                                  + " tokens (" + std::to_string(prompt.size()) + " in the "
                                  + (kind == net::api_kind::chat ? "messages" : "prompt") + ", "
                                  + std::to_string(*r.max_tokens)
                                  + " in the completion). Please reduce the length of the "
                                  + (kind == net::api_kind::chat ? "messages" : "prompt")
                                  + " or completion.",
                                "invalid_request_error", "max_tokens", "context_length_exceeded"));
        return;
      }
      max_tokens = std::min(max_tokens, room);
    }
    if (r.min_tokens > max_tokens) {
      answer_error(make_error(400, "'min_tokens' (" + std::to_string(r.min_tokens)
                                     + ") must be at most the output's maximum length ("
                                     + std::to_string(max_tokens) + " tokens)",
                              "invalid_request_error", "min_tokens"));
      return;
    }
    // Token ids a field names must be in the vocabulary.
    auto outside_vocab = [&](int32_t id, const char* param) {
      if (id < tok.vocab_size())
        return false;
      answer_error(make_error(400, std::string(param) + ": token id " + std::to_string(id)
                                     + " is outside the vocabulary (0.." + std::to_string(tok.vocab_size() - 1)
                                     + ")",
                              "invalid_request_error", param));
      return true;
    };
    for (auto t : r.stop_token_ids)
      if (outside_vocab(t, "stop_token_ids"))
        return;

    // Structured outputs: the constraint becomes a grammar here, so a schema
    // the converter cannot express is a 400 naming the feature, before any
    // unit sees the request.
    std::string grammar;
    const bool call_required =
      use_tools && (r.tool_choice == net::tool_choice_kind::required || r.tool_choice == net::tool_choice_kind::named);
    if (call_required) {
      // A required call is held to the tools' schemas by the same grammar machinery.
      try {
        grammar = engine::tool_call_grammar(fns, r.tool_choice_name,
                                            r.tool_choice == net::tool_choice_kind::required && r.parallel_tool_calls,
                                            engine::tool_format_of(model.chat));
        (void)engine::grammar::parse(grammar);
      } catch (const engine::schema_error& e) {
        answer_error(make_error(400, std::string("a tool's parameters: ") + e.what(), "invalid_request_error", "tools",
                                "unsupported_schema"));
        return;
      }
      if (model.cfg.backend == "sim") {
        answer_error(make_error(400, "a required tool call needs a model that computes logits; '" + r.model
                                       + "' runs on the simulated backend",
                                "invalid_request_error", "tool_choice"));
        return;
      }
    }
    if (r.constraint.kind != net::constraint_kind::none) {
      if (model.cfg.backend == "sim") {
        answer_error(make_error(400, "structured outputs need a model that computes logits; '" + r.model
                                       + "' runs on the simulated backend",
                                "invalid_request_error", r.constraint.param));
        return;
      }
      try {
        using ck = net::constraint_kind;
        switch (r.constraint.kind) {
          case ck::json_object: grammar = engine::json_object_grammar(); break;
          case ck::json_schema: grammar = engine::json_schema_grammar(r.constraint.text); break;
          case ck::choice: grammar = engine::choice_grammar(r.constraint.choices); break;
          case ck::grammar: grammar = r.constraint.text; break;
          case ck::regex: grammar = engine::regex_grammar(r.constraint.text); break;
          case ck::none: break;
        }
        (void)engine::grammar::parse(grammar);
      } catch (const engine::schema_error& e) {
        answer_error(make_error(400, e.what(), "invalid_request_error", r.constraint.param, "unsupported_schema"));
        return;
      } catch (const engine::grammar_error& e) {
        answer_error(make_error(400, e.what(), "invalid_request_error", r.constraint.param, "invalid_grammar"));
        return;
      }
    }

    protocol::gen_request g;
    g.model = r.model;
    g.params.grammar = std::move(grammar);
    g.original_prompt_len = static_cast<int32_t>(prompt.size());
    g.params.max_tokens = max_tokens;
    g.params.min_tokens = r.min_tokens;
    g.params.ignore_eos = r.ignore_eos;
    g.params.stop_tokens = r.stop_token_ids;
    g.params.temperature = r.temperature;
    g.params.top_p = r.top_p;
    g.params.top_k = r.top_k;
    g.params.min_p = r.min_p;
    g.params.presence_penalty = r.presence_penalty;
    g.params.frequency_penalty = r.frequency_penalty;
    g.params.repetition_penalty = r.repetition_penalty;
    g.params.logprobs = r.logprobs;
    for (const auto& [tok_id, b] : r.logit_bias) {
      if (outside_vocab(tok_id, "logit_bias"))
        return;
      g.params.bias_tokens.push_back(tok_id);
      g.params.bias_values.push_back(b);
    }
    // Routing hints: the session (header, else `user`) and the TTFT the
    // request can still wait (the model's SLO, within the deadline).
    g.session = ex->request().header(cfg_.router.session_header);
    if (g.session.empty())
      g.session = r.user;
    {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
      int64_t budget = std::max<int64_t>(left, 1);
      if (model.cfg.ttft_slo_ms > 0)
        budget = std::min<int64_t>(budget, model.cfg.ttft_slo_ms);
      g.ttft_budget_ms = static_cast<int32_t>(budget);
    }
    // Time queued at the edge counts: the deadline runs from arrival.
    if (clock_type::now() >= deadline) {
      answer_error(make_error(504, "request deadline of " + std::to_string(cfg_.timeouts.request_ms)
                                     + " ms exceeded before the request could be sent",
                              "timeout_error"));
      return;
    }

    auto job = std::make_shared<completion_job>();
    job->ex = ex;
    job->rt = rt_;
    job->registry = registry_;
    job->metrics = metrics_;
    job->cancel = hooks_.cancel;
    job->slot = std::move(*slot);
    job->start = start;
    job->deadline = deadline;
    job->request_ms = cfg_.timeouts.request_ms;
    job->sink = std::make_shared<request_sink>();
    job->stream = r.stream;
    job->include_usage = r.include_usage;
    job->continuous_usage = r.include_usage && r.continuous_usage_stats;
    job->want_logprobs = r.logprobs >= 0;
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
      job->choices.push_back(choice_state{gi.id, choice_text{tok, r.stop, r.logprobs >= 0,
                                                    {r.include_stop_str_in_output, !r.skip_special_tokens}}, {}, {}, {}, {},
                                          {}, {}});
      if (use_tools)
        job->choices.back().tools.emplace(engine::tool_format_of(model.chat));
      submits.push_back(std::move(gi));
    }
    auto& meta = job->meta;
    meta.kind = kind;
    meta.id = hex_id(kind == net::api_kind::chat ? "chatcmpl-" : "cmpl-", job->choices[0].id);
    meta.created = std::time(nullptr);
    meta.model = r.model;
    meta.system_fingerprint = "llmux-" + model.cfg.backend;

    // The exchange holds the job (its close callback) until the answer
    // ends; a client already gone is told at once and nothing is sent.
    ex->on_close([job] { job->client_gone(); });
    std::weak_ptr<completion_job> weak = job;
    std::lock_guard<std::mutex> guard{job->mtx};
    if (job->finished)
      return;
    job->timer_key = rt_->timer.at(deadline, [weak] {
      if (auto j = weak.lock()) {
        j->expired = true;
        j->schedule();
      }
    });
    job->sink->set_notify([weak] {
      if (auto j = weak.lock())
        j->schedule();
    });
    for (auto& gi : submits)
      hooks_.submit(std::move(gi));
  };
  // A small request is parsed and tokenized right here on the loop thread
  // (tens of microseconds: cheaper than waking a worker for it); a large
  // one goes to a worker, so a long prompt never stalls other connections.
  // A budget keeps a burst from holding the loop: beyond it, workers parse.
  thread_local clock_type::time_point window;
  thread_local int inlined = 0;
  const auto now = clock_type::now();
  if (now - window > std::chrono::milliseconds(1)) {
    window = now;
    inlined = 0;
  }
  if (ex->request().body.size() <= inline_body_bytes && inlined < inline_per_ms) {
    ++inlined;
    work();
    return;
  }
  if (!rt_->pool.post(std::move(work))) {
    slot->release();
    send_error(*ex, make_error(503, "the edge is stopping", "service_unavailable_error"));
  }
}

}  // namespace llmux::gateway
