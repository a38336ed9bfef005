#pragma once
/// The gpu_unit actor: one per GPU group (or CPU socket), a thin shell over
/// `unit_core`. Steps of different models run independently (each in its own
/// partition: for real engines a partition actor on its own thread; for the
/// sim, a step's reply is held for its modelled time with a timer, never by
/// blocking a thread).

#include <map>
#include <memory>
#include <string>

#include "actors/gpu_unit/residency.hpp"
#include "actors/gpu_unit/unit_core.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::unit {

struct gpu_unit_options {
  std::string node;
  std::string name;
  std::string backend;
  std::string gpu;
  /// Sim only: one step at a time on the whole unit (temporal multiplexing),
  /// the next chosen by `policy`'s unit_arbiter; otherwise steps of
  /// different models run at once, each on its share.
  bool temporal = false;
  /// Sim only: the models' prefill steps take turns on the unit's shared
  /// prefill lane (unit_core::set_prefill_lane), the next chosen by
  /// `policy`; decode steps run at once, each on its decode share.
  bool shared_prefill = false;
  std::string policy = "adbs";  ///< "adbs" | "fcfs" | "round_robin"
  /// adbs, temporal: after this many prefill steps in a row, a waiting
  /// decode-only step goes next (MuxServe runs decodes beside prefills in
  /// spare SMs; one step at a time, pure prefill-first would starve them).
  int max_prefill_streak = 0;
  /// Which models are awake, and the unit's memory_mib for their weights
  /// (node_runtime fills it as it builds the engines of those that start
  /// awake). A model it does not list never sleeps.
  residency memory{0};
  /// Sim: seconds a model's wake takes (its weights over the GPU type's
  /// load_gbs), × time_scale; real engines take what loading takes.
  std::map<std::string, double> sim_wake_s{};
};

/// `partitions`: real engines block for a step, so each model gets a
/// partition: a detached actor (its own thread) that runs its steps and its
/// share changes, so co-located models compute at the same time. The unit
/// delegates to them and keeps the books (shares, counters). Without, steps
/// run on the unit actor (sim: modelled time, replies held by timers).
protocol::gpu_unit_actor spawn_gpu_unit(caf::actor_system& sys, gpu_unit_options opts,
                                        std::shared_ptr<unit_core> core, bool partitions = false);

}  // namespace llmux::unit
