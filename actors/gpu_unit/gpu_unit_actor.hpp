#pragma once
/// The gpu_unit actor: one per GPU group (or CPU socket), a thin shell over
/// `unit_core`. Steps of different models run independently (each in its own
/// partition); a sim step's reply is held for its modelled time with a timer,
/// never by blocking a thread.

#include <memory>
#include <string>

#include "actors/gpu_unit/unit_core.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::unit {

struct gpu_unit_options {
  std::string node;
  std::string name;
  std::string backend;
  std::string gpu;
};

/// `own_thread`: run the actor detached (real engines block for a step).
protocol::gpu_unit_actor spawn_gpu_unit(caf::actor_system& sys, gpu_unit_options opts,
                                        std::shared_ptr<unit_core> core, bool own_thread = false);

}  // namespace llmux::unit
