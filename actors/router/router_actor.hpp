#pragma once
/// The router actor: a thin shell over `router_policy`. It learns replicas
/// from the controller, monitors their schedulers, takes load reports, and
/// offers each `submit` to the chosen scheduler; a replica that refuses it
/// (429: its queue is full) or cannot be reached is skipped for the next
/// live one, so the client sees 429 only when every replica is full.

#include <string>

#include "actors/protocol/interfaces.hpp"
#include "actors/router/router_policy.hpp"

namespace llmux::router {

struct router_options {
  std::string node;
  std::string name = "router";
  policy_kind policy = policy_kind::least_loaded;
};

protocol::router_actor spawn_router(caf::actor_system& sys, router_options opts);

}  // namespace llmux::router
