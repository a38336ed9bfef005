#pragma once
/// The controller actor: one per cluster. Connects to every node's admin
/// actor through the middleman (retrying until it answers), learns its
/// replicas and tells the router; a node that dies (monitor → down_msg, also
/// raised by middleman heartbeats for a frozen node) has its replicas marked
/// down at once and is reconnected when it returns. With `move_shares` it
/// also moves compute shares between the models of a unit (share_policy).
/// Units laid out as several replicas ("replicas"/"dynamic") are switched
/// between one replica on the whole unit and k replicas by `set_layout`
/// (admin) or, for "dynamic" units, when layout_policy decides: to k
/// replicas, the whole unit's share is split, the parked replicas are
/// routed to, and the first hands (k-1)/k of its sequences back to be
/// spread over them (waiting ones first, then the least advanced); to one, the others stop being routed to, hand their
/// sequences back to their gateways to continue on the remaining replica
/// (finish "migrate"), and lend it their share.

#include <map>
#include <string>
#include <vector>

#include "actors/controller/layout_policy.hpp"
#include "actors/controller/node_table.hpp"
#include "actors/controller/replan_policy.hpp"
#include "actors/controller/share_policy.hpp"
#include "actors/protocol/interfaces.hpp"

#include <caf/io/middleman_actor.hpp>

namespace llmux::controller {

struct controller_options {
  std::string node;  ///< the node it runs on
  std::string name = "controller";
  std::vector<config::node_config> nodes;
  int connect_ms = 2000;
  int reconnect_ms = 1000;
  /// Connects to nodes through it: the TLS middleman with `[tls]`; invalid
  /// (default): CAF's plain one.
  caf::io::middleman_actor middleman;
  /// Move compute shares toward models whose queues stay long: the
  /// controller subscribes to every scheduler's load reports and sends the
  /// units `set_share` messages (share_policy decides).
  bool move_shares = false;
  share_policy_options shares;
  int share_tick_ms = 500;  ///< how often it decides
  /// Units laid out as several replicas, by name, and how each starts.
  std::map<std::string, layout_unit_options> layouts;
  std::map<std::string, layout_kind> initial_layouts;
  int layout_tick_ms = 500;  ///< how often it decides layouts
  /// Online re-placement: the units with a memory_mib (bytes) and each
  /// model's weights (bytes). The controller hears their replicas' load
  /// reports; `plan`/`apply_plan` work on them, and every `replan_s` (0:
  /// only when asked) it applies the plan itself.
  std::map<std::string, int64_t> unit_memory;
  std::map<std::string, int64_t> model_bytes;
  replan_options replan;
  double replan_s = 0;
  /// The placement planner re-placement plans with (plan::online_planner);
  /// empty: the rate rule.
  placement_fn planner;
  /// Replicas ("unit/model") of those units: the share of the job the
  /// planner shares at start (its decode job's on MuxServe's layout, else
  /// its whole share).
  std::map<std::string, double> planned_shares;
};

protocol::controller_actor spawn_controller(caf::actor_system& sys, controller_options opts,
                                            protocol::admin_actor local_admin,
                                            protocol::router_actor router);

}  // namespace llmux::controller
