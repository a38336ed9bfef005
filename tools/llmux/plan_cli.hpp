#pragma once
/// `llmux plan --spec F [--workload W] [--out C.toml] [--baselines]`: where
/// models go (plan/placement.hpp), printed as a table and written as a
/// launchable config; the spatial and temporal baselines from the same input.

#include <string>

namespace llmux::tools {

struct plan_options {
  std::string spec;
  std::string workload;  ///< rates and mean lengths from these arrivals
  std::string out;       ///< llmux's config; baselines beside it (-spatial, -temporal)
  std::string backend;   ///< overrides the spec's [plan] backend
  bool baselines = false;
  bool no_replicas = false;  ///< each model on one unit, as MuxServe places
  double slo_scale = -1;     ///< >= 0: overrides the spec's [plan] slo_scale
  int http_port = 8080;      ///< the written config's gateway port
  int base_port = 7400;      ///< node i's middleman port: base_port + i
  bool json = false;
};

int run_plan(const plan_options& opts);

}  // namespace llmux::tools
