#pragma once
/// The scheduler actor: one per model replica, a thin shell over
/// `batch_scheduler`. Per step: (growth: one `kv_grow` to the kv_manager
/// when running sequences need a block; admission: one `kv_open` when
/// requests wait) → one `step` to the gpu_unit → one `token_batch` per
/// gateway with that step's tokens for all its requests, `kv_commit` for new
/// full blocks (prefix sharing) and `kv_close` for ended sequences.

#include <string>

#include "actors/protocol/interfaces.hpp"
#include "actors/scheduler/batch_scheduler.hpp"

namespace llmux::scheduler {

struct scheduler_actor_options {
  std::string node;
  std::string unit;
  std::string model;    ///< its key in the unit and the KV pool
  std::string served;   ///< the model it serves (empty: `model`)
  std::string replica;  ///< "<unit>/<model>"
  scheduler_options core;
  int load_report_ms = 100;
  int step_timeout_ms = 30000;
  /// Sleep and wake: the unit can drop and rebuild this model's engine.
  bool can_sleep = false;
  bool start_asleep = false;  ///< not loaded at start: the first request wakes it
  double idle_sleep_s = 0;    ///< sleeps after this long without work; 0: never
};

protocol::scheduler_actor spawn_scheduler(caf::actor_system& sys, scheduler_actor_options opts,
                                          protocol::gpu_unit_actor unit,
                                          protocol::kv_manager_actor kv);

}  // namespace llmux::scheduler
