#pragma once
/// `llmux simulate --config F --workload W`: the cluster of F serving W in
/// virtual time (sim/cluster_sim.hpp), printed as a table (and JSON, a PNG
/// of SLO attainment against SLO scale, a trace of the workload).
/// Everything it prints is labelled simulated.

#include <string>
#include <vector>

namespace llmux::tools {

struct simulate_options {
  std::string config;
  std::string workload;
  bool json = false;
  std::string json_out;   ///< also write the JSON report here
  std::string plot;       ///< PNG: SLO attainment vs SLO scale, per model
  std::string trace_out;  ///< the workload's requests as a .jsonl trace
  double slo_scale = 5;   ///< the attainment column of the table
  bool no_contention = false;
  double drain_s = 1800;
  double timeline_s = 0;  ///< > 0: also print throughput and attainment per window
  std::string router_policy;  ///< non-empty: every model routed by this policy
};

int run_simulate(const simulate_options& opts);

}  // namespace llmux::tools
