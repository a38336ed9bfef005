#pragma once
/// What a simulated run adds up to, per model and in total: throughput,
/// TTFT/TPOT/E2E percentiles, and SLO attainment at SLO scales, as a table,
/// JSON, and a timeline for plots. Pure.
///
/// Definitions (MuxServe's, so the figures compare with its paper):
/// - a model's **throughput** is its completed requests over the time from
///   its first arrival to its last completion (req/s);
/// - the **system throughput** is the mean of the models' throughputs
///   weighted by their requests (what MuxServe reports for a cluster);
/// - **aggregate** req/s is every completed request over the whole run;
/// - a request meets its SLO at scale s when its end-to-end latency is at
///   most s × its reference latency (alone on its model's reference
///   devices, `request_outcome::reference_s`); attainment is over all
///   requests, so failed and unfinished ones miss.

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/cluster_sim.hpp"
#include "tools/loadgen/load_plan.hpp"

namespace llmux::sim {

struct group_report {
  std::string name;  ///< a model, or "all"
  size_t requests = 0, ok = 0, failed = 0, unfinished = 0;
  double throughput_rps = 0;      ///< ok / (last completion − first arrival)
  double output_tokens_per_s = 0; ///< over the same span
  loadgen::latency_stats ttft, tpot, e2e;  ///< seconds, completed requests
  std::vector<double> attainment;  ///< per SLO scale, fraction of `requests`
};

/// How the router spread the load, and what its choices saved.
struct routing_report {
  /// Prompt tokens found in the prefix cache over prompt tokens admitted.
  double prefix_hit_rate = 0;
  /// Requests sent where their session or cached prefix was, of all sent.
  double affinity_rate = 0;
  /// Requests dispatched to the busiest replica over the mean, for the
  /// model whose replicas are least even (1: perfectly even).
  double dispatch_imbalance = 1;
  /// The busiest unit's computing time over the units' mean (1: even).
  double busy_imbalance = 1;
  std::vector<replica_outcome> replicas;
};

struct sim_report {
  routing_report routing;
  std::vector<double> slo_scales;
  std::vector<group_report> models;  ///< in the workload's model order
  group_report all;
  double system_throughput_rps = 0;  ///< request-weighted mean of the models' throughputs
  double aggregate_rps = 0;          ///< all.ok over the whole run's span
  /// Requests completed while requests still arrived, per second of the
  /// arrivals (`window_s`): at overload the capacity, free of how long the
  /// backlog takes to drain after the last arrival (which the two above
  /// include). 0 without a window.
  double window_rps = 0;
  double end_s = 0;
  double wall_s = 0;
  uint64_t events = 0;
  uint64_t preemptions = 0;
  std::vector<unit_outcome> units;
  uint64_t replan_wakes = 0;
  uint64_t replan_moves = 0;
  uint64_t replan_share_moves = 0;
  std::vector<std::string> violations;
};

/// Default SLO scales: 1 to 10.
[[nodiscard]] std::vector<double> default_slo_scales();

/// `window_s`: how long requests arrived (the workload's duration) for `window_rps`; 0: none.
[[nodiscard]] sim_report summarize(const sim_result& r, const std::vector<std::string>& model_order,
                                   const std::vector<double>& slo_scales = default_slo_scales(),
                                   double window_s = 0);

/// A fixed-width table: one row per model and a total row; the attainment
/// column is at `slo_scale_shown` (or the nearest scale summarized).
[[nodiscard]] std::string to_table(const sim_report& r, double slo_scale_shown = 5);
[[nodiscard]] nlohmann::json to_json(const sim_report& r);

/// Completions and SLO hits (at `slo_scale`) per window of `window_s`,
/// by arrival window: for plots of a run whose load changes over time.
struct timeline_point {
  double t_s = 0;         ///< window start
  double completed_rps = 0;
  size_t arrived = 0;     ///< requests that arrived in the window
  double attainment = 0;  ///< of those (0 when none arrived)
};
[[nodiscard]] std::vector<timeline_point> timeline(const sim_result& r, double window_s, double slo_scale);

}  // namespace llmux::sim
