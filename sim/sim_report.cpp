#include "sim/sim_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace llmux::sim {

std::vector<double> default_slo_scales() {
  return {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
}

namespace {

group_report group_of(const std::string& name, const std::vector<const request_outcome*>& rs,
                      const std::vector<double>& scales) {
  group_report g;
  g.name = name;
  g.requests = rs.size();
  g.attainment.assign(scales.size(), 0);
  std::vector<double> ttft, tpot, e2e;
  double first_arrival = std::numeric_limits<double>::infinity(), last_done = 0;
  double tokens = 0;
  for (const auto* r : rs) {
    first_arrival = std::min(first_arrival, r->arrival_s);
    if (!r->ok()) {
      (r->finish_s >= 0 ? g.failed : g.unfinished) += 1;
      continue;
    }
    ++g.ok;
    last_done = std::max(last_done, r->finish_s);
    tokens += r->generated;
    const double latency = r->finish_s - r->arrival_s;
    e2e.push_back(latency);
    if (r->first_token_s >= 0) {
      ttft.push_back(r->first_token_s - r->arrival_s);
      if (r->generated > 1)
        tpot.push_back((r->finish_s - r->first_token_s) / (r->generated - 1));
    }
    for (size_t k = 0; k < scales.size(); ++k)
      if (latency <= scales[k] * r->reference_s)
        g.attainment[k] += 1;
  }
  for (auto& a : g.attainment)
    a = g.requests > 0 ? a / static_cast<double>(g.requests) : 0;
  const double span = last_done - first_arrival;
  if (g.ok > 0 && span > 0) {
    g.throughput_rps = static_cast<double>(g.ok) / span;
    g.output_tokens_per_s = tokens / span;
  }
  g.ttft = loadgen::stats_of(std::move(ttft));
  g.tpot = loadgen::stats_of(std::move(tpot));
  g.e2e = loadgen::stats_of(std::move(e2e));
  return g;
}

std::string slo_label(double scale) {
  char b[32];
  std::snprintf(b, sizeof b, "SLO@%g", scale);
  return b;
}

}  // namespace

sim_report summarize(const sim_result& r, const std::vector<std::string>& model_order,
                     const std::vector<double>& scales, double window_s) {
  sim_report out;
  out.slo_scales = scales;
  out.end_s = r.end_s;
  out.wall_s = r.wall_s;
  out.events = r.events;
  out.preemptions = r.preemptions;
  out.units = r.units;
  out.replan_wakes = r.replan_wakes;
  out.replan_moves = r.replan_moves;
  out.replan_share_moves = r.replan_share_moves;
  out.violations = r.violations;
  std::map<std::string, std::vector<const request_outcome*>> by_model;
  std::vector<const request_outcome*> all;
  for (const auto& q : r.requests) {
    by_model[q.model].push_back(&q);
    all.push_back(&q);
  }
  double weighted = 0;
  size_t weight = 0;
  for (const auto& name : model_order) {
    auto it = by_model.find(name);
    if (it == by_model.end())
      continue;
    out.models.push_back(group_of(name, it->second, scales));
    weighted += out.models.back().throughput_rps * static_cast<double>(it->second.size());
    weight += it->second.size();
  }
  out.all = group_of("all", all, scales);
  out.system_throughput_rps = weight > 0 ? weighted / static_cast<double>(weight) : 0;
  out.aggregate_rps = out.all.throughput_rps;
  auto& rt = out.routing;
  rt.replicas = r.replicas;
  uint64_t admitted = 0, cached = 0, sent = 0, affine = 0;
  std::map<std::string, std::vector<double>> per_model;
  for (const auto& x : r.replicas) {
    admitted += x.prompt_tokens;
    cached += x.cached_tokens;
    sent += x.dispatched;
    affine += x.affinity_hits;
    per_model[x.model].push_back(static_cast<double>(x.dispatched));
  }
  rt.prefix_hit_rate = admitted > 0 ? static_cast<double>(cached) / static_cast<double>(admitted) : 0;
  rt.affinity_rate = sent > 0 ? static_cast<double>(affine) / static_cast<double>(sent) : 0;
  auto max_over_mean = [](const std::vector<double>& v) {
    double sum = 0, most = 0;
    for (double x : v) {
      sum += x;
      most = std::max(most, x);
    }
    return sum > 0 ? most / (sum / static_cast<double>(v.size())) : 1.0;
  };
  for (const auto& [model, v] : per_model)
    rt.dispatch_imbalance = std::max(rt.dispatch_imbalance, max_over_mean(v));
  std::vector<double> busy;
  for (const auto& u : r.units)
    busy.push_back(u.busy_s);
  rt.busy_imbalance = max_over_mean(busy);
  if (window_s > 0) {
    size_t done = 0;
    for (const auto& q : r.requests)
      done += q.ok() && q.finish_s <= window_s ? 1 : 0;
    out.window_rps = static_cast<double>(done) / window_s;
  }
  return out;
}

std::string to_table(const sim_report& r, double shown) {
  // The column of the scale asked for, else of the nearest one summarized.
  size_t k = 0;
  for (size_t i = 0; i < r.slo_scales.size(); ++i)
    if (std::fabs(r.slo_scales[i] - shown) < std::fabs(r.slo_scales[k] - shown))
      k = i;
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%-16s %6s %6s %6s %9s %9s %9s %9s %9s %8s\n", "model", "reqs", "ok",
                "failed", "req/s", "TTFT p50", "TTFT p99", "TPOT p50", "E2E p99",
                (r.slo_scales.empty() ? std::string{"SLO"} : slo_label(r.slo_scales[k])).c_str());
  o << line;
  auto row = [&](const group_report& g) {
    const double att = g.attainment.empty() ? 0 : g.attainment[k];
    std::snprintf(line, sizeof line, "%-16s %6zu %6zu %6zu %9.2f %8.0fms %8.0fms %8.1fms %8.1fs %7.1f%%\n",
                  g.name.c_str(), g.requests, g.ok, g.failed + g.unfinished, g.throughput_rps, g.ttft.p50 * 1e3,
                  g.ttft.p99 * 1e3, g.tpot.p50 * 1e3, g.e2e.p99, att * 100);
    o << line;
  };
  for (const auto& g : r.models)
    row(g);
  row(r.all);
  std::snprintf(line, sizeof line,
                "system throughput %.2f req/s (request-weighted mean over models), aggregate %.2f req/s, "
                "%.2f req/s completed while arrivals lasted; %.0f s simulated in %.2f s wall, %llu events, "
                "%llu preemptions\n",
                r.system_throughput_rps, r.aggregate_rps, r.window_rps, r.end_s, r.wall_s,
                static_cast<unsigned long long>(r.events), static_cast<unsigned long long>(r.preemptions));
  o << line;
  std::string policies;
  for (const auto& x : r.routing.replicas)
    if (policies.find(x.policy) == std::string::npos)
      policies += (policies.empty() ? "" : ", ") + x.policy;
  std::snprintf(line, sizeof line,
                "routing (%s): prefix cache hit rate %.1f%% of prompt tokens, affinity %.1f%% of requests, "
                "dispatch imbalance %.2f (max/mean per model), busy imbalance %.2f (max/mean per unit)\n",
                policies.c_str(), 100 * r.routing.prefix_hit_rate, 100 * r.routing.affinity_rate,
                r.routing.dispatch_imbalance, r.routing.busy_imbalance);
  o << line;
  uint64_t wakes = 0, sleeps = 0, refusals = 0;
  double wake_s = 0;
  for (const auto& u : r.units) {
    wakes += u.wakes;
    sleeps += u.sleeps;
    refusals += u.wake_refusals;
    wake_s += u.wake_s;
  }
  if (wakes + sleeps + refusals > 0) {
    std::snprintf(line, sizeof line,
                  "sleep and wake: %llu wakes (%.1f s waking; %llu by re-placement), %llu sleeps, %llu wakes refused "
                  "for want of room\n",
                  static_cast<unsigned long long>(wakes), wake_s, static_cast<unsigned long long>(r.replan_wakes),
                  static_cast<unsigned long long>(sleeps), static_cast<unsigned long long>(refusals));
    o << line;
  }
  if (r.replan_moves + r.replan_share_moves > 0) {
    std::snprintf(line, sizeof line, "re-placement: %llu model moves between units, %llu decode-share moves\n",
                  static_cast<unsigned long long>(r.replan_moves),
                  static_cast<unsigned long long>(r.replan_share_moves));
    o << line;
  }
  return o.str();
}

nlohmann::json to_json(const sim_report& r) {
  auto stats = [](const loadgen::latency_stats& l) {
    return nlohmann::json{{"mean_ms", l.mean * 1e3}, {"p50_ms", l.p50 * 1e3}, {"p90_ms", l.p90 * 1e3},
                          {"p99_ms", l.p99 * 1e3}, {"n", l.n}};
  };
  auto group = [&](const group_report& g) {
    return nlohmann::json{{"name", g.name},
                          {"requests", g.requests},
                          {"ok", g.ok},
                          {"failed", g.failed},
                          {"unfinished", g.unfinished},
                          {"throughput_rps", g.throughput_rps},
                          {"output_tokens_per_s", g.output_tokens_per_s},
                          {"ttft", stats(g.ttft)},
                          {"tpot", stats(g.tpot)},
                          {"e2e", stats(g.e2e)},
                          {"slo_attainment", g.attainment}};
  };
  auto models = nlohmann::json::array();
  for (const auto& g : r.models)
    models.push_back(group(g));
  auto reps = nlohmann::json::array();
  for (const auto& x : r.routing.replicas)
    reps.push_back({{"replica", x.name}, {"model", x.model}, {"unit", x.unit}, {"policy", x.policy},
                    {"dispatched", x.dispatched}, {"affinity_hits", x.affinity_hits},
                    {"prompt_tokens", x.prompt_tokens}, {"cached_tokens", x.cached_tokens}});
  auto units = nlohmann::json::array();
  for (const auto& u : r.units)
    units.push_back({{"unit", u.name}, {"steps", u.steps}, {"busy_s", u.busy_s}, {"quota_moves", u.quota_moves},
                     {"share_moves", u.share_moves}, {"wakes", u.wakes}, {"sleeps", u.sleeps},
                     {"wake_refusals", u.wake_refusals}, {"wake_s", u.wake_s}});
  nlohmann::json routing{{"prefix_hit_rate", r.routing.prefix_hit_rate},
                         {"affinity_rate", r.routing.affinity_rate},
                         {"dispatch_imbalance", r.routing.dispatch_imbalance},
                         {"busy_imbalance", r.routing.busy_imbalance},
                         {"replicas", reps}};
  return {{"simulated", true},
          {"slo_scales", r.slo_scales},
          {"models", models},
          {"all", group(r.all)},
          {"system_throughput_rps", r.system_throughput_rps},
          {"aggregate_rps", r.aggregate_rps},
          {"window_rps", r.window_rps},
          {"end_s", r.end_s},
          {"wall_s", r.wall_s},
          {"events", r.events},
          {"preemptions", r.preemptions},
          {"routing", routing},
          {"units", units},
          {"replan_wakes", r.replan_wakes},
          {"replan_moves", r.replan_moves},
          {"replan_share_moves", r.replan_share_moves},
          {"violations", r.violations}};
}

std::vector<timeline_point> timeline(const sim_result& r, double window_s, double slo_scale) {
  std::vector<timeline_point> out;
  if (window_s <= 0)
    return out;
  double end = 0;
  for (const auto& q : r.requests)
    end = std::max({end, q.arrival_s, q.finish_s});
  const auto n = static_cast<size_t>(end / window_s) + 1;
  std::vector<double> done(n, 0), arrived(n, 0), met(n, 0);
  for (const auto& q : r.requests) {
    const auto a = static_cast<size_t>(q.arrival_s / window_s);
    arrived[a] += 1;
    if (!q.ok())
      continue;
    done[static_cast<size_t>(q.finish_s / window_s)] += 1;
    if (q.finish_s - q.arrival_s <= slo_scale * q.reference_s)
      met[a] += 1;
  }
  for (size_t i = 0; i < n; ++i)
    out.push_back({static_cast<double>(i) * window_s, done[i] / window_s, static_cast<size_t>(arrived[i]),
                   arrived[i] > 0 ? met[i] / arrived[i] : 0});
  return out;
}

}  // namespace llmux::sim
