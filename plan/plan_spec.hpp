#pragma once
/// The input of `llmux plan`: a cluster shape, the models and the load each
/// should carry, from one TOML file (and optionally a workload file, whose
/// arrivals give each model's rate and mean lengths). Pure apart from
/// reading the files named.
///
///     [cluster]
///     nodes = 4
///     gpus_per_node = 8
///     gpu = "a100"                  # h100, h200, a100, or one defined below
///     [gpus.a100]                   # a cluster config's [gpus.*] keys
///     profile = "builtin:a100"
///     [plan]
///     backend = "sim"               # what the written config runs: sim, cuda, cpu
///     share_step = 0.1              # default: 0.1 with a profile (MPS percent steps),
///                                   # 8/132 on h100/h200 (green contexts split 8 SMs), else 0.1
///     min_share = 0.1
///     replicas = true               # false: each model on one unit (MuxServe)
///     slo_scale = 5                 # requests within 5x their latency alone; 0: no SLO
///     [[models]]
///     name = "llm-0"
///     architecture = "llama-7b"     # a preset, or file = "model.gguf"
///     rate = 20                     # req/s; mean lengths in tokens
///     prompt = 161
///     output = 337

#include <string>
#include <vector>

#include "plan/placement.hpp"
#include "sim/workload.hpp"

namespace llmux::plan {

struct plan_spec {
  cluster_shape cluster;
  plan_options options;
  std::string backend = "sim";
  std::vector<model_demand> models;
  std::string source;
};

/// Parses a plan spec; errors are "FILE:LINE: key 'KEY': REASON" as
/// std::invalid_argument. Models with `file` keep its path (resolved
/// against `base_dir`); the caller reads their shape.
[[nodiscard]] plan_spec parse_plan_spec(const std::string& toml_text, const std::string& source,
                                        const std::string& base_dir = ".");
[[nodiscard]] plan_spec load_plan_spec(const std::string& path);

/// Each model's rate (its requests over the workload's duration) and mean
/// prompt and output lengths, measured on the workload's arrivals. Models
/// the workload does not name keep their spec values; a workload model the
/// spec lacks is an error (std::invalid_argument).
void apply_workload(plan_spec& spec, const sim::workload& w);

}  // namespace llmux::plan
