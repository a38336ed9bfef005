#pragma once
/// `llmux admin`: asks a node's admin port for the cluster state over the
/// msgpack admin protocol and prints it as a table or JSON.

#include <string>

#include <nlohmann/json.hpp>

#include "config/cluster_config.hpp"

namespace llmux::tools {

struct admin_cli_options {
  std::string command = "state";
  bool json = false;
  std::string actor;  ///< filter: a kind, a name, or a node; empty = all
  std::string node;   ///< ask this node (default: the controller's node)
  int timeout_ms = 8000;
};

int run_admin(const config::cluster_config& cfg, const admin_cli_options& opts);

/// The human-readable table of a state array (one block per actor).
[[nodiscard]] std::string render_state_table(const nlohmann::json& states);

}  // namespace llmux::tools
