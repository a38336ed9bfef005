#pragma once
/// The controller actor: one per cluster. Connects to every node's admin
/// actor through the middleman (retrying until it answers), learns its
/// replicas and tells the router; a node that dies (monitor → down_msg, also
/// raised by middleman heartbeats for a frozen node) has its replicas marked
/// down at once and is reconnected when it returns.

#include <string>
#include <vector>

#include "actors/controller/node_table.hpp"
#include "actors/protocol/interfaces.hpp"

namespace llmux::controller {

struct controller_options {
  std::string node;  ///< the node it runs on
  std::string name = "controller";
  std::vector<config::node_config> nodes;
  int connect_ms = 2000;
  int reconnect_ms = 1000;
};

protocol::controller_actor spawn_controller(caf::actor_system& sys, controller_options opts,
                                            protocol::admin_actor local_admin,
                                            protocol::router_actor router);

}  // namespace llmux::controller
