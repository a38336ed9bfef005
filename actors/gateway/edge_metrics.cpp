#include "actors/gateway/edge_metrics.hpp"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace llmux::gateway {

histogram::histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}

void histogram::observe(double v) {
  const auto i = static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
  ++counts[i];
  sum += v;
  ++count;
}

namespace {

/// A label value with \, " and newline escaped.
std::string esc(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void histograms(std::string& out, const char* name, const char* help,
                const std::map<std::string, histogram>& hs) {
  header(out, name, "histogram", help);
  for (const auto& [model, h] : hs) {
    const std::string label = "model=\"" + esc(model) + "\"";
    uint64_t cum = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      cum += h.counts[i];
      out += std::string{name} + "_bucket{" + label + ",le=\"" + num(h.bounds[i]) + "\"} " +
             std::to_string(cum) + "\n";
    }
    out += std::string{name} + "_bucket{" + label + ",le=\"+Inf\"} " + std::to_string(h.count) + "\n";
    out += std::string{name} + "_sum{" + label + "} " + num(h.sum) + "\n";
    out += std::string{name} + "_count{" + label + "} " + std::to_string(h.count) + "\n";
  }
}

template <class Map>
void per_label(std::string& out, const char* name, const char* type, const char* help,
               const char* label, const Map& m) {
  header(out, name, type, help);
  for (const auto& [k, v] : m)
    out += std::string{name} + "{" + label + "=\"" + esc(k) + "\"} " + std::to_string(v) + "\n";
}

histogram& slot(std::map<std::string, histogram>& m, const std::string& model,
                const std::vector<double>& bounds) {
  auto it = m.find(model);
  if (it == m.end())
    it = m.emplace(model, histogram{bounds}).first;
  return it->second;
}

}  // namespace

edge_metrics::edge_metrics()
  // vLLM's buckets, with finer low ends: llmux's edge and sim backend answer
  // in well under a millisecond.
  : ttft_bounds_{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0},
    itl_bounds_{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                0.4, 0.5, 0.75, 1.0, 2.5},
    e2e_bounds_{0.001, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                30.0, 40.0, 50.0, 60.0, 120.0} {}

void edge_metrics::request_done(const std::string& model, int status) {
  std::lock_guard<std::mutex> g{mtx_};
  ++requests_[{model, status}];
}

void edge_metrics::queue_rejection(const std::string& model) {
  std::lock_guard<std::mutex> g{mtx_};
  ++rejections_[model];
}

void edge_metrics::aborted(const std::string& model, const std::string& stage, int64_t prompt_tokens) {
  std::lock_guard<std::mutex> g{mtx_};
  ++aborted_[{model, stage}];
  aborted_prompt_tokens_[model] += static_cast<uint64_t>(std::max<int64_t>(prompt_tokens, 0));
}

void edge_metrics::first_token(const std::string& model, double seconds) {
  std::lock_guard<std::mutex> g{mtx_};
  slot(ttft_, model, ttft_bounds_).observe(seconds);
}

void edge_metrics::tokens_after(const std::string& model, double seconds, int64_t tokens) {
  if (tokens <= 0)
    return;
  std::lock_guard<std::mutex> g{mtx_};
  auto& h = slot(itl_, model, itl_bounds_);
  for (int64_t i = 0; i < tokens; ++i)
    h.observe(seconds / static_cast<double>(tokens));
}

void edge_metrics::finished(const std::string& model, double seconds, int64_t prompt_tokens,
                            int64_t generation_tokens, const std::vector<std::string>& finish_reasons) {
  std::lock_guard<std::mutex> g{mtx_};
  slot(e2e_, model, e2e_bounds_).observe(seconds);
  prompt_tokens_[model] += static_cast<uint64_t>(prompt_tokens);
  generation_tokens_[model] += static_cast<uint64_t>(generation_tokens);
  for (const auto& why : finish_reasons)
    ++success_[{model, why}];
}

std::string edge_metrics::render(const cluster_gauges& gauges) const {
  std::string out;
  {
    std::lock_guard<std::mutex> g{mtx_};
    header(out, "llmux:requests_total", "counter",
           "Answers of the generation endpoints by model and HTTP status.");
    for (const auto& [key, v] : requests_)
      out += "llmux:requests_total{model=\"" + esc(key.first) + "\",status=\"" +
             std::to_string(key.second) + "\"} " + std::to_string(v) + "\n";
    header(out, "llmux:request_success_total", "counter",
           "Finished requests (choices) by model and finish reason.");
    for (const auto& [key, v] : success_)
      out += "llmux:request_success_total{model=\"" + esc(key.first) + "\",finished_reason=\"" +
             esc(key.second) + "\"} " + std::to_string(v) + "\n";
    per_label(out, "llmux:queue_rejections_total", "counter",
              "Requests refused with 429 because a model's queue was full.", "model", rejections_);
    header(out, "llmux:requests_aborted_total", "counter",
           "Requests their client left before they ended, by model and stage (queued, prefill, decode).");
    for (const auto& [key, v] : aborted_)
      out += "llmux:requests_aborted_total{model=\"" + esc(key.first) + "\",stage=\"" + esc(key.second)
             + "\"} " + std::to_string(v) + "\n";
    per_label(out, "llmux:aborted_prompt_tokens_total", "counter",
              "Prompt tokens of requests their client left (prefill spent for nobody).", "model",
              aborted_prompt_tokens_);
    per_label(out, "llmux:prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
              "model", prompt_tokens_);
    per_label(out, "llmux:generation_tokens_total", "counter",
              "Generated tokens of finished requests.", "model", generation_tokens_);
    histograms(out, "llmux:time_to_first_token_seconds",
               "Time from request arrival at the edge to its first token.", ttft_);
    histograms(out, "llmux:inter_token_latency_seconds", "Time between successive tokens.", itl_);
    histograms(out, "llmux:e2e_request_latency_seconds",
               "Time from request arrival at the edge to its last token.", e2e_);
  }
  per_label(out, "llmux:num_requests_running", "gauge", "Sequences in a running batch.", "model",
            gauges.running);
  per_label(out, "llmux:num_requests_waiting", "gauge", "Requests waiting in a scheduler queue.",
            "model", gauges.waiting);
  per_label(out, "llmux:kv_blocks_used", "gauge", "KV blocks held by sequences, per unit.", "unit",
            gauges.kv_used);
  per_label(out, "llmux:kv_blocks_free", "gauge",
            "KV blocks free, per unit (cached prefixes nobody uses included: they are reclaimed on demand).",
            "unit", gauges.kv_free);
  per_label(out, "llmux:kv_blocks_evictable", "gauge",
            "Free KV blocks that still hold a cached prefix, per unit.", "unit", gauges.kv_evictable);
  auto per_unit_model = [&](const char* name, const char* help,
                            const std::map<std::pair<std::string, std::string>, int64_t>& m) {
    header(out, name, "gauge", help);
    for (const auto& [key, v] : m)
      out += std::string{name} + "{unit=\"" + esc(key.first) + "\",model=\"" + esc(key.second)
             + "\"} " + std::to_string(v) + "\n";
  };
  per_unit_model("llmux:kv_model_blocks_used", "KV blocks a model holds on a unit.",
                 gauges.kv_model_used);
  per_unit_model("llmux:kv_model_blocks_quota", "KV blocks a model may hold on a unit.",
                 gauges.kv_model_quota);
  std::map<std::string, std::map<std::string, int64_t>> totals;  // metric → label → total
  {
    std::lock_guard lock{mtx_};
    for (const auto& [key, v] : counters_.update(gauges.counters))
      totals[key.first][key.second] = v;
  }
  auto counter = [&](const char* name, const char* help, const char* label) {
    per_label(out, name, "counter", help, label, totals[name]);
  };
  counter("llmux:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", "model");
  counter("llmux:prefix_cache_hits_total", "Prompt tokens found in the prefix cache (their prefill skipped).",
          "model");
  counter("llmux:kv_quota_moves_total", "KV quota moves between a unit's models (ADBS), per unit.", "unit");
  counter("llmux:share_moves_total", "Compute-share moves the controller made toward growing queues.",
          "controller");
  per_label(out, "llmux:unit_layout_replicas", "gauge",
            "Replicas a unit laid out as several runs its model as now (1: one on the whole unit).", "unit",
            gauges.layout_replicas);
  counter("llmux:unit_layout_switches_total", "Layout switches of a unit.", "unit");
  counter("llmux:unit_layout_switching_milliseconds_total",
          "Time a unit spent switching layout (routing off, handing sequences back, moving shares).", "unit");
  counter("llmux:num_preemptions_total", "Sequences preempted (by recompute) when the KV pool refused a block.",
          "model");
  header(out, "llmux:actor_mailbox_size", "gauge", "Messages waiting in each actor's mailbox.");
  for (const auto& [key, v] : gauges.mailbox)
    out += "llmux:actor_mailbox_size{node=\"" + esc(std::get<0>(key)) + "\",kind=\"" +
           esc(std::get<1>(key)) + "\",name=\"" + esc(std::get<2>(key)) + "\"} " +
           std::to_string(v) + "\n";
  return out;
}

std::map<std::pair<std::string, std::string>, int64_t> counter_book::update(
  const std::map<std::tuple<std::string, std::string, std::string>, int64_t>& readings) {
  for (const auto& [key, v] : readings) {
    auto& src = sources_[key];
    if (v < src.last)
      src.carried += src.last;
    src.last = v;
  }
  std::map<std::pair<std::string, std::string>, int64_t> totals;
  for (const auto& [key, src] : sources_)
    totals[{std::get<0>(key), std::get<1>(key)}] += src.carried + src.last;
  return totals;
}

cluster_gauges gauges_from_admin_state(const std::string& json_text) {
  cluster_gauges g;
  auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_array())
    return g;
  // Each node's admin says which run of the node process this is.
  std::map<std::string, std::string> incarnation;
  for (const auto& a : j)
    if (a.is_object() && a.value("kind", std::string{}) == "admin" && a.contains("state")
        && a["state"].is_object())
      incarnation[a.value("node", std::string{})] = a["state"].value("incarnation", std::string{});
  for (const auto& a : j) {
    if (!a.is_object())
      continue;
    const auto node = a.value("node", std::string{});
    const auto kind = a.value("kind", std::string{});
    const auto name = a.value("name", std::string{});
    g.mailbox[{node, kind, name}] = a.value("mailbox", uint64_t{0});
    const auto it = a.find("state");
    if (it == a.end() || !it->is_object())
      continue;
    const auto& st = *it;
    const auto source = node + "@" + incarnation[node] + "/" + kind + "/" + name;
    auto count = [&](const char* metric, const std::string& label, int64_t v) {
      g.counters[{metric, label, source}] += v;
    };
    if (kind == "scheduler") {
      // A replica of a unit laid out as several counts for the model it serves.
      const auto model = st.value("served_model", st.value("model", std::string{}));
      g.running[model] += st.value("running", int64_t{0});
      g.waiting[model] += st.value("waiting", int64_t{0});
      count("llmux:num_preemptions_total", model, st.value("preemptions", int64_t{0}));
    } else if (kind == "controller") {
      if (st.value("move_shares", false))
        count("llmux:share_moves_total", name, st.value("share_moves", int64_t{0}));
      const auto lay = st.find("layouts");
      if (lay != st.end() && lay->is_object())
        for (const auto& [unit, u] : lay->items()) {
          if (!u.is_object())
            continue;
          g.layout_replicas[unit] = u.value("replicas", int64_t{1});
          count("llmux:unit_layout_switches_total", unit, u.value("switches", int64_t{0}));
          count("llmux:unit_layout_switching_milliseconds_total", unit,
                static_cast<int64_t>(u.value("switching_s", 0.0) * 1e3));
        }
    } else if (kind == "kv_manager") {
      g.kv_used[name] = st.value("blocks_used", int64_t{0});
      g.kv_free[name] = st.value("blocks_free", int64_t{0});
      g.kv_evictable[name] = st.value("blocks_evictable", int64_t{0});
      count("llmux:kv_quota_moves_total", name, st.value("quota_moves", int64_t{0}));
      const auto block_tokens = st.value("block_tokens", int64_t{0});
      const auto models = st.find("models");
      if (models == st.end() || !models->is_object())
        continue;
      for (const auto& [model, m] : models->items()) {
        if (!m.is_object())
          continue;
        g.kv_model_used[{name, model}] = m.value("used", int64_t{0});
        g.kv_model_quota[{name, model}] = m.value("quota", int64_t{0});
        count("llmux:prefix_cache_queries_total", model, m.value("prefix_queries", int64_t{0}) * block_tokens);
        count("llmux:prefix_cache_hits_total", model, m.value("prefix_hits", int64_t{0}) * block_tokens);
      }
    }
  }
  return g;
}

}  // namespace llmux::gateway
