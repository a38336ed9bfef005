#pragma once
/// The admin actor: one per node, published on the node's middleman port.
/// It is the node's agent: every local actor registers with it at boot, it
/// answers `get_state` for them (fan-out with a timeout, so one stuck actor
/// cannot hang the answer), and where the controller runs it assembles the
/// whole cluster's state from every node's admin actor.

#include <string>

#include "actors/protocol/interfaces.hpp"

namespace llmux::admin {

struct admin_options {
  std::string node;
  int state_timeout_ms = 2000;  ///< per-actor answer deadline
};

protocol::admin_actor spawn_admin(caf::actor_system& sys, admin_options opts);

}  // namespace llmux::admin
