#pragma once
/// Boots one node of a cluster: spawns the actors the config places on it, in
/// dependency order, publishes its admin actor, serves its admin port (and
/// the HTTP edge where the gateway runs), then waits for SIGINT/SIGTERM.

#include <string>

#include "config/cluster_config.hpp"

namespace llmux::tools {

struct node_run_options {
  bool publish = true;       ///< publish the admin actor on the node's middleman port
  bool admin_port = true;    ///< serve the admin wire protocol on the node's admin port
};

/// Runs until a termination signal; returns the process exit code. The
/// caller must have blocked SIGINT/SIGTERM in every thread (see main.cpp).
int run_node(const config::cluster_config& cfg, const std::string& node_name,
             const node_run_options& opts);

}  // namespace llmux::tools
