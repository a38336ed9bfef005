#pragma once
/// Where models go and how much of a GPU each job gets — MuxServe's
/// placement (Duan et al., ICML 2024, §3.2, Algorithm 1) as a pure core, on
/// llmux's cost model (engine/cost_model.hpp: a measured profile, else the
/// roofline). No CAF, no clock, no I/O.
///
/// **The search.** A cluster of `nodes` × `gpus_per_node` GPUs is cut into
/// LLM units: each node into groups of power-of-two GPUs (8 → {8}, {4,4},
/// {4,2,2}, ... {1×8}), nodes cut independently (combinations with
/// repetition, since nodes are alike). For each cut, models are placed
/// greedily in order of computation demand (rate × parameters, largest
/// first), each on the unit where the estimated served rate grows most
/// (ties: the smaller unit), if its weights and one sequence of KV fit. The
/// cut with the largest estimated served rate wins. A unit of g GPUs runs
/// each of its models tensor-parallel over all g.
///
/// **The unit estimator** (llmux's layout: `jobs = "split"`,
/// `prefill = "shared"`): each model's decode job has its own partition of
/// share d_i; the models' prefill steps take turns on one lane of share
/// p = 1 − Σ d_i. So
/// - the lane is busy ρ = Σ_i rate_i · prefill(1 prompt, p) of the time:
///   every co-located model's prefills count against the lane, and above
///   ρ = 1 only 1/ρ of each model's requests can start;
/// - model i decodes with batch b at b / (output_i · decode(b, context_i, d_i))
///   requests/s, b at most what its KV share holds (the unit's KV memory
///   split in proportion to rate × KV bytes per token, as ADBS starts it);
/// - decodes computing at once share the unit's memory bandwidth: when the
///   bytes they read per second sum above the bandwidth, each slows in
///   proportion (as `llmux simulate` models it);
/// - a model's served rate is min(rate, decode capacity, rate / max(1, ρ));
/// - with an SLO (`slo_scale`), only what meets it counts: a request's
///   estimated latency is its prompt on the lane (with an M/M/1 wait) plus
///   its output tokens at the decode step time of its batch; past
///   slo_scale × its reference latency the served rate counts less, with
///   the square of the overshoot.
/// Shares are on a grid of `share_step` (0.1 for MuxServe's MPS profile;
/// 8 of 132 SMs on an H100; one thread on a CPU). Each model starts with
/// the smallest decode share that serves its rate, the lane with the
/// smallest that keeps ρ under `lane_load`; what is left goes to the lane;
/// then a local search moves one step at a time between jobs while the
/// served rate grows.
///
/// **The objective.** Any placement that serves the expected rates looks
/// alike to a served rate, so when they can be served the search maximises
/// headroom instead: it runs at the largest load scale s (every rate × s,
/// the same popularity) at which the best placement still serves 99% of the
/// load, found by bisection, and plans shares for that load. When they
/// cannot, it maximises the served rate at the expected rates (MuxServe's
/// objective) and reports the load scale it would sustain.
///
/// **Baselines** from the same input: spatial partitioning (each model on
/// GPUs of its own, the fewest that hold it; with `replicas`, spare GPUs
/// become extra replicas of the most under-served models) and temporal
/// multiplexing (llmux's units, one step at a time on the whole unit,
/// first come first served).

#include <cstdint>
#include <string>
#include <vector>

#include "config/cluster_config.hpp"

namespace llmux::plan {

/// A model to place and the load it is expected to carry.
struct model_demand {
  config::model_config model;  ///< name, backend, arch (preset or read from its file)
  double rate = 1;             ///< requests/s expected
  double mean_prompt = 161;    ///< tokens
  double mean_output = 337;    ///< tokens
};

struct cluster_shape {
  int nodes = 1;
  int gpus_per_node = 8;
  std::string gpu_name = "a100";  ///< a key of `gpus`
  config::gpu_spec gpu;           ///< its constants, memory and profile
};

struct plan_options {
  /// Compute shares are multiples of this (what the device can split).
  double share_step = 0.1;
  /// The smallest share a job may have.
  double min_share = 0.1;
  /// The lane's target load: prefill steps queue up past it.
  double lane_load = 0.8;
  /// Of each GPU's memory, what weights and KV may use.
  double memory_fraction = 0.9;
  int max_running = 256;  ///< sequences per model per unit (the scheduler's cap)
  int block_tokens = 16;
  /// Cut each node into power-of-two groups only (as MuxServe); otherwise
  /// any sizes.
  bool power_of_two_units = true;
  /// Place an under-served model again on another unit (the router splits
  /// its load), as MuxServe never does. Off: MuxServe's own placement.
  bool replicas = true;
  /// The SLO: a request should finish within this many times its latency
  /// alone on its model's reference GPUs (as `llmux simulate` measures
  /// attainment). The estimator counts only what meets it; 0: no SLO
  /// (served rate alone, MuxServe's estimator).
  double slo_scale = 5;
};

struct planned_model {
  std::string name;
  double rate = 0;            ///< expected requests/s on this unit (a replica's part of the model's)
  double decode_share = 0;    ///< its decode job's partition (llmux); 1 in one-step-at-a-time units
  double served_rps = 0;      ///< estimated
  double batch = 0;           ///< estimated decode batch at that rate
  double tpot_s = 0;          ///< estimated time per output token at that batch
  int64_t kv_quota_blocks = 0;  ///< ADBS's starting quota (physical blocks)
};

struct planned_unit {
  std::string name;  ///< plan_on_units: the unit's name
  int node = 0;
  int first_gpu = 0;  ///< on its node
  int gpus = 1;       ///< tensor-parallel size of its models
  double prefill_share = 0;  ///< llmux: the shared prefill lane; else 1
  double lane_load = 0;      ///< estimated ρ of the lane (or of the whole unit)
  int64_t kv_blocks = 0;
  std::vector<planned_model> models;
  [[nodiscard]] double served_rps() const;
};

enum class system_kind { llmux, spatial, temporal };
[[nodiscard]] const char* system_name(system_kind s);

struct placement_plan {
  system_kind system = system_kind::llmux;
  std::vector<planned_unit> units;
  std::vector<std::string> unplaced;  ///< models that fit nowhere
  double rate_rps = 0;                ///< Σ expected rates
  double served_rps = 0;              ///< Σ estimated served rates
  int cuts_tried = 0;                 ///< cluster cuts searched
  /// llmux: the largest multiple of the expected rates the plan serves
  /// (estimated); the search maximises it.
  double load_scale = 0;
  [[nodiscard]] int replicas_of(const std::string& model) const;
};

/// MuxServe's placement with llmux's unit layout. Throws
/// std::invalid_argument for an empty input or a GPU type without memory.
[[nodiscard]] placement_plan plan_llmux(const std::vector<model_demand>& models, const cluster_shape& cluster,
                                        const plan_options& opts = {});
/// A unit that exists, for online re-placement: its shape, the models it
/// may hold (those its config lists) and a cap on the bytes of weights it
/// holds at once (its memory_mib; 0: only the GPU's memory limits it).
struct fixed_unit {
  std::string name;
  int node = 0;
  int gpus = 1;
  std::vector<std::string> models;
  double weight_cap_bytes = 0;
  /// The models it holds awake now: where two units serve a model about as
  /// well (within 2% of its rate), the planner keeps it where it is, so
  /// that like rates do not move models back and forth.
  std::vector<std::string> awake;
};

/// MuxServe's placement on units that exist (the controller's re-placement
/// on measured rates): the same greedy in order of computation demand, each
/// model only on a unit that lists it and whose cap its weights fit beside
/// those placed there, then replicas and local moves and swaps, shares
/// searched per unit, all at the given rates (no cut to search, no load
/// scale). A model that fits nowhere is `unplaced` (it sleeps) instead of
/// failing the plan. The plan's units are the given ones, in order, with
/// their names (a unit may be left empty).
[[nodiscard]] placement_plan plan_on_units(const std::vector<model_demand>& models,
                                           const std::vector<fixed_unit>& units, const cluster_shape& cluster,
                                           const plan_options& opts = {});
/// Spatial partitioning: a unit per model (and extra replicas), sized by need.
[[nodiscard]] placement_plan plan_spatial(const std::vector<model_demand>& models, const cluster_shape& cluster,
                                          const plan_options& opts = {});
/// Temporal multiplexing: `llmux`'s units, one step at a time, FCFS.
[[nodiscard]] placement_plan plan_temporal(const placement_plan& llmux, const std::vector<model_demand>& models,
                                           const cluster_shape& cluster, const plan_options& opts = {});

/// The estimated served rate of `unit` hosting `models` (llmux's layout,
/// shares as given in `unit`); fills each planned model's estimate. For
/// tests and the exhaustive check; the planner uses it throughout.
double estimate_unit(planned_unit& unit, const std::vector<const model_demand*>& models,
                     const cluster_shape& cluster, const plan_options& opts);

/// Every way to cut `gpus` into groups (power-of-two sizes, or any),
/// largest group first, each cut sorted descending.
[[nodiscard]] std::vector<std::vector<int>> node_cuts(int gpus, bool power_of_two);

/// How `plan` is launched: a cluster config (TOML text) for `backend`
/// ("sim": the GPU's cost model and profile; "cuda": the unit's devices are
/// CUDA ordinals; "cpu": `threads` per unit). The shared prefill lane runs
/// on sim units only for now, so for cuda and cpu a unit of several models
/// is written as a temporal unit (one step at a time, ADBS order).
/// Node i is "node<i>" on 127.0.0.1, middleman port `base_port` + i; the
/// gateway (and router, controller) run on node0 at `http_port`.
struct config_options {
  std::string backend = "sim";
  std::string cluster_name = "planned";
  uint16_t base_port = 7400;
  uint16_t http_port = 8080;
};
[[nodiscard]] std::string to_config_toml(const placement_plan& plan, const std::vector<model_demand>& models,
                                         const cluster_shape& cluster, const config_options& co = {});

/// A fixed-width table of the plan: units, models, shares, estimates.
[[nodiscard]] std::string to_table(const placement_plan& plan);

}  // namespace llmux::plan
