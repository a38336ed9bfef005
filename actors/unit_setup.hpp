#pragma once
/// How a `[[units]]` entry of the config becomes the pure cores of a unit:
/// its kv_manager's options, each hosted model's scheduler options and
/// engine context, and how its steps share the unit. One translation for
/// both drivers: `run_node` (tools/llmux/node_runtime.cpp) spawns actors
/// around these cores, `llmux simulate` (sim/cluster_sim.cpp) drives them in
/// virtual time, so a unit behaves the same in both. No CAF.

#include <string>
#include <vector>

#include "actors/controller/layout_policy.hpp"
#include "actors/gpu_unit/unit_core.hpp"
#include "actors/kv_manager/kv_manager_core.hpp"
#include "actors/router/router_policy.hpp"
#include "actors/scheduler/batch_scheduler.hpp"
#include "config/cluster_config.hpp"
#include "engine/engine_factory.hpp"

namespace llmux::setup {

/// One engine + scheduler of a unit: a model's replica on that unit. A
/// unit with layout "replicas" or "dynamic" runs its model as k of them
/// (k = its threads), keyed "MODEL" and "MODEL#1" .. "MODEL#k-1" in the
/// unit, its KV pool and the replica names ("UNIT/MODEL#1"); the router
/// serves them all as MODEL.
struct instance {
  std::string key;    ///< the engine's name in the unit and the KV pool
  std::string model;  ///< the model it serves
  int index = 0;      ///< 0 .. count-1
  int count = 1;      ///< instances of the model on the unit (k)
  double share = 1;   ///< of the unit; 0: parked (its threads lent to instance 0)
  [[nodiscard]] bool parked() const { return share <= 0; }
};
/// Every instance of `unit`, in the layout it starts in ("dynamic" starts
/// as one replica on the whole unit, the others parked).
[[nodiscard]] std::vector<instance> instances(const config::unit_config& unit);
/// The instance key of `model`'s `index`-th instance.
[[nodiscard]] std::string instance_key(const std::string& model, int index);

/// How the controller switches a unit laid out as several replicas: k, and
/// the concurrency where k replicas start to step faster than one (the
/// unit's `layout_switch_at`, else the crossover of the cost model's decode
/// step times at a 512-token context: the unit's GPU type's profile, which
/// a cpu unit must name). Throws std::runtime_error for a dynamic cpu unit
/// with neither.
[[nodiscard]] controller::layout_unit_options layout_options(const config::cluster_config& cfg,
                                                              const config::unit_config& unit);

/// The unit's KV pool: its size (`kv_blocks`, or sized from memory), block
/// size, ADBS quota settings, and each hosted model's shape.
[[nodiscard]] kv::kv_manager_options kv_options(const config::cluster_config& cfg,
                                                const config::unit_config& unit);

/// The scheduler of `model` on `unit`; `eos_id` is its engine's.
[[nodiscard]] scheduler::scheduler_options scheduler_options(const config::unit_config& unit,
                                                             const config::model_config& model,
                                                             engine::token_id eos_id);

/// What the unit gives `um`'s engine (the arena and device KV are the
/// caller's: they belong to a running node).
[[nodiscard]] engine::engine_context engine_context(const config::cluster_config& cfg,
                                                    const config::unit_config& unit,
                                                    const config::unit_model& um, int64_t kv_blocks);

/// The router's policies and their parameters from `[router]` and each
/// model's `router_policy`; prefix hashes cut prompts at the first unit's
/// `block_tokens` (where the units' KV blocks cut them).
[[nodiscard]] router::routing_options routing(const config::cluster_config& cfg);

/// What the cost model says `um` prefills on `unit` (its share, the unit's
/// devices as the tensor-parallel size), tokens/s for a 512-token prompt:
/// the router's TTFT prediction before the replica's scheduler has
/// measured one. 0 for the cpu backend (no cost model of this CPU) and
/// when the GPU's profile does not know the model.
[[nodiscard]] double prefill_rate(const config::cluster_config& cfg, const config::unit_config& unit,
                                  const config::unit_model& um);

/// The unit's books before any model is added: its shared prefill lane
/// (prefill = "shared") and whether shares are caps that may overlap
/// (oversubscribe).
void configure_core(unit::unit_core& core, const config::unit_config& unit);

/// How the unit's steps share it.
struct step_sharing {
  /// One step at a time on the whole unit, the next chosen by `policy`.
  bool temporal = false;
  /// The models' prefill steps take turns on one lane of `prefill_share`
  /// (chosen by `policy`); decode steps run at once on their own shares.
  bool shared_prefill = false;
  std::string policy = "adbs";
  /// adbs: after this many prefill grants in a row, a waiting decode step
  /// goes next (temporal units: one step at a time, pure prefill-first
  /// would starve decodes).
  int max_prefill_streak = 0;
};
[[nodiscard]] step_sharing sharing(const config::unit_config& unit);

/// Bytes of a model's weights, what it holds in the unit's memory while
/// awake (memory_mib): the model file (a Hugging Face directory's
/// safetensors), else its architecture's parameters at its dtype (sim,
/// dummy weights).
[[nodiscard]] int64_t weight_bytes(const config::model_config& model);

/// Sim: seconds a wake of `model` takes on `unit`, its weights copied back
/// over the GPU type's load_gbs (one copy per device of the unit, in
/// parallel); 0 for other backends (they measure their load).
[[nodiscard]] double sim_wake_seconds(const config::cluster_config& cfg, const config::unit_config& unit,
                                      const config::model_config& model);

}  // namespace llmux::setup
