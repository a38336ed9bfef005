#pragma once
/// The kv_manager actor: one per unit, a thin shell over `kv_manager_core`
/// (the unit's `kv_block_pool` and, under ADBS, its quota planner).

#include <string>
#include <vector>

#include "actors/kv_manager/kv_manager_core.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::kv {

protocol::kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts);

}  // namespace llmux::kv
