#pragma once
/// `llmux admin`: over the msgpack admin protocol, asks a node's admin port
/// for the cluster state (printed as a table or JSON), or moves a model's
/// compute share on a unit (`set-share`, a message to the unit).

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/cluster_config.hpp"

namespace llmux::tools {

struct admin_cli_options {
  std::string command = "state";
  bool json = false;
  /// state: [FILTER] (a kind, a name, or a node; none = all);
  /// set-share: UNIT MODEL SHARE.
  std::vector<std::string> args;
  std::string node;   ///< ask this node (default: the controller's node)
  int timeout_ms = 8000;
};

int run_admin(const config::cluster_config& cfg, const admin_cli_options& opts);

/// The human-readable table of a state array (one block per actor).
[[nodiscard]] std::string render_state_table(const nlohmann::json& states);

}  // namespace llmux::tools
