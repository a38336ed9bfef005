#pragma once
/// The gateway actor: bridges HTTP threads (via `request_registry`) and the
/// cluster. It sends submissions to the router, relays token batches from
/// schedulers into request sinks, forwards cancels, and re-submits the
/// requests of a replica that died (request migration) with the tokens
/// generated so far.

#include <memory>
#include <string>

#include "actors/gateway/request_registry.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::gateway {

struct gateway_options {
  std::string node;
  std::string name = "gateway";
  int request_timeout_ms = 30000;
  int replica_poll_ms = 500;   ///< how often live replicas are refreshed for /v1/models
  int max_migrations = 2;      ///< re-submissions per request after replica failures
};

protocol::gateway_actor spawn_gateway(caf::actor_system& sys, gateway_options opts,
                                      std::shared_ptr<request_registry> registry,
                                      protocol::router_actor router);

}  // namespace llmux::gateway
