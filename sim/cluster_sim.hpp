#pragma once
/// `llmux simulate`: a cluster config served in virtual time — a
/// discrete-event simulation that drives the runtime's own pure cores, with
/// no actor system, no threads and no sleeping:
///
/// - the router's `router_policy` (load reports every `load_report_ms`;
///   prompts share prefixes and sessions as the workload says),
/// - each replica's `batch_scheduler`, pumped as the scheduler actor pumps
///   it (growth, admission, steps),
/// - each unit's `kv_manager_core` (the head-wise block pool, ADBS quotas
///   rebalanced every `quota_period_ms`),
/// - each unit's `unit_core` over `sim_engine`s (step times from the cost
///   model: the GPU type's profile, else the roofline) and its
///   `unit::step_queue` (temporal units; a shared prefill lane),
/// - the controller's `share_policy` when `[controller] move_shares` is on,
/// - each unit's `unit::residency` (sleep and wake under `memory_mib`,
///   `idle_sleep_s`; a wake takes the weights over the GPU type's
///   `load_gbs`), and the controller's `replan_policy` every
///   `[controller] replan_s`.
///
/// Every unit is configured by actors/unit_setup, as `run_node` configures
/// it, so a decision changed in a core changes the runtime and the
/// simulation at once. Units must have backend = "sim" (the cost model is
/// what makes time). Everything it reports is simulated.
///
/// Time on a GPU: each step computes for its cost model's time alone on its
/// job's share. Jobs of one unit that compute at once share the unit's
/// memory bandwidth: while the bandwidth the memory-bound ones would use
/// alone (roofline bytes over their time, as a fraction of the unit's)
/// sums above 1, each of them progresses that many times slower. Compute
/// is not shared: partitions are disjoint (shares on a unit sum to at most
/// 1), except on a unit with `oversubscribe` (CUDA MPS caps, to simulate
/// MuxServe's runtime), where while the shares of the jobs computing sum
/// above 1, every job progresses that many times slower. Each event time is
/// exact for this model, not a tick.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "actors/controller/replan_policy.hpp"
#include "config/cluster_config.hpp"
#include "sim/workload.hpp"

namespace llmux::sim {

struct sim_options {
  /// Share each GPU's memory bandwidth between concurrent jobs (above).
  bool bandwidth_contention = true;
  /// After the last arrival, stop once this much virtual time has passed;
  /// requests unfinished then are reported unfinished.
  double drain_s = 1800;
  /// Called with the fraction of arrivals processed, about every 1%.
  std::function<void(double)> progress;
  /// Check every unit's KV pool invariants every this many events (0:
  /// only at the end); the pool walk is O(pool), so keep it sparse.
  uint64_t check_every_events = 0;
  /// Re-placement's target ([controller] replan_s): the placement planner
  /// (plan::online_planner of the same config); empty: the rate rule.
  controller::placement_fn planner;
};

/// What happened to one request, in virtual seconds from the start.
struct request_outcome {
  std::string model;
  std::string replica;  ///< "<unit>/<model>"; empty when refused before one
  double arrival_s = 0;
  double first_token_s = -1;  ///< -1: none yet
  double finish_s = -1;       ///< -1: unfinished when the run stopped
  int prompt_tokens = 0;
  int output_tokens = 0;  ///< asked for
  int generated = 0;
  int status = 0;          ///< 0: fine; else the HTTP status the runtime would answer
  std::string error;
  /// The request's latency alone on its model's reference devices (the
  /// smallest tensor-parallel size its profile measured, else the fewest
  /// GPUs that hold its weights twice over), at full share: SLO scale 1.
  double reference_s = 0;

  [[nodiscard]] bool ok() const { return status == 0 && finish_s >= 0; }
};

struct unit_outcome {
  std::string name;
  int gpus = 1;
  int64_t kv_blocks = 0;
  int64_t kv_peak_used = 0;
  uint64_t steps = 0;
  uint64_t quota_moves = 0;
  uint64_t share_moves = 0;
  double max_share_sum = 0;  ///< the most the unit's shares summed to at any time
  double busy_s = 0;         ///< virtual time with any step computing
  // Sleep and wake (memory_mib, idle_sleep_s).
  uint64_t wakes = 0;
  uint64_t sleeps = 0;
  uint64_t wake_refusals = 0;  ///< wakes with no room then (asked again a tick later)
  double wake_s = 0;           ///< virtual time spent waking models
};

/// What the router sent one replica, and what its prefix cache saved.
struct replica_outcome {
  std::string name;  ///< "<unit>/<model>"
  std::string model;
  std::string unit;
  std::string policy;         ///< its model's router policy
  uint64_t dispatched = 0;    ///< requests routed there
  uint64_t affinity_hits = 0; ///< of them, for a session or cached prefix there
  uint64_t prompt_tokens = 0; ///< prompt tokens of the requests it admitted
  uint64_t cached_tokens = 0; ///< of them, found in its unit's prefix cache
};

struct sim_result {
  std::vector<request_outcome> requests;  ///< in workload order
  std::vector<unit_outcome> units;
  std::vector<replica_outcome> replicas;
  uint64_t preemptions = 0;
  uint64_t replan_wakes = 0;  ///< wakes the controller's re-placement started ([controller] replan_s)
  uint64_t replan_moves = 0;  ///< of them, moves: the model left another unit (drained there, then asleep)
  uint64_t replan_share_moves = 0;  ///< decode shares it moved toward the planner's
  double end_s = 0;      ///< virtual time of the last event
  uint64_t events = 0;
  double wall_s = 0;     ///< real seconds the run took
  /// Broken invariants (every request accounted for once, KV pool
  /// consistent and never over its size, shares ≤ 1 per unit, no KV held
  /// after every request ended). Empty: none.
  std::vector<std::string> violations;
};

/// Runs `w` against `cfg`. Throws std::invalid_argument for a config it
/// cannot simulate (a unit that is not sim; a workload model no unit
/// hosts), std::runtime_error for a cost model that cannot be built.
[[nodiscard]] sim_result simulate(const config::cluster_config& cfg, const workload& w,
                                  const sim_options& opts = {});

}  // namespace llmux::sim
