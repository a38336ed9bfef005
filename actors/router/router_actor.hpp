#pragma once
/// The router actor: a thin shell over `router_policy`. It learns replicas
/// from the controller, monitors their schedulers, takes load reports, and
/// offers each `submit` to the chosen scheduler; a replica that refuses it
/// (429: its queue is full) or cannot be reached is skipped for the next
/// live one, so the client sees 429 only when every replica is full. A
/// request for a model with no replica yet waits for the first to join.
/// A slo_aware model's request that no replica is predicted to start
/// within its TTFT budget gets 429 at once.

#include <string>

#include "actors/protocol/interfaces.hpp"
#include "actors/router/router_policy.hpp"

namespace llmux::router {

struct router_options {
  std::string node;
  std::string name = "router";
  routing_options routing;  ///< policies (per model) and their parameters
  /// A request for a model none of whose replicas has joined yet (a cluster
  /// still starting) waits this long for one, then gets 503; 0: 503 at once.
  int join_wait_ms = 0;
};

protocol::router_actor spawn_router(caf::actor_system& sys, router_options opts);

}  // namespace llmux::router
