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
};

struct kv_manager_options {
  std::string node;
  std::string name;  ///< "<unit>/kv"
  int64_t total_blocks = 0;
  int block_tokens = 16;
  std::vector<kv_model_shape> models;
};

protocol::kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts);

}  // namespace llmux::kv
