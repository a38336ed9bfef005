#pragma once
/// The kv_manager actor: one per unit, a thin shell over `kv_block_pool`.

#include <string>
#include <vector>

#include "actors/kv_manager/kv_block_pool.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::kv {

struct kv_model_shape {
  std::string model;
  int layers = 0;
  int kv_heads = 0;
  double expected_rate = 1.0;  ///< req/s, from the config: ADBS's starting point
  /// Its engine keeps KV in the unit's blocks: grants carry the block ids.
  bool tables = false;
  /// Values per head. Every block has room for the largest head of the
  /// unit's models (one free list for all shapes); a smaller head leaves the
  /// rest of each of its blocks empty, which admin state reports.
  int head_dim = 0;
};

struct kv_manager_options {
  std::string node;
  std::string name;  ///< "<unit>/kv"
  int64_t total_blocks = 0;
  int block_tokens = 16;
  std::vector<kv_model_shape> models;
  /// "adbs": per-model quotas from unit::quota_planner, moved every
  /// `quota_period_ms`; "fcfs"/"round_robin": every model may use the pool.
  std::string policy = "adbs";
  int quota_period_ms = 5000;
  int64_t floor_tokens = 512;  ///< adbs: room every model keeps, tokens
};

protocol::kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts);

}  // namespace llmux::kv
