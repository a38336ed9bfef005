#pragma once
/// Boots one node of a cluster: spawns the actors the config places on it, in
/// dependency order, publishes its admin actor, serves its admin port (and
/// the HTTP edge where the gateway runs), then waits for SIGINT/SIGTERM.

#include <memory>
#include <string>

#include "actors/gateway/http_edge.hpp"
#include "config/cluster_config.hpp"

namespace llmux::tools {

struct node_run_options {
  bool publish = true;       ///< publish the admin actor on the node's middleman port
  bool admin_port = true;    ///< serve the admin wire protocol on the node's admin port
  bool http = true;          ///< serve the HTTP edge where the gateway runs
};

/// One booted node, held by its owner: the actors, the admin port, and where
/// the gateway runs, its request registry and the hooks the HTTP edge uses
/// (so an in-process caller such as `llmux bench gateway` can submit
/// requests exactly as the edge does, without HTTP). The destructor ends
/// open requests with 503, stops the servers and then every actor.
class node_runtime {
public:
  /// Boots `node_name` of `cfg`. Throws std::runtime_error naming what failed.
  node_runtime(const config::cluster_config& cfg, const std::string& node_name,
               const node_run_options& opts);
  ~node_runtime();
  node_runtime(const node_runtime&) = delete;
  node_runtime& operator=(const node_runtime&) = delete;

  /// The edge's hooks and registry (empty unless the gateway is on this node).
  [[nodiscard]] const gateway::edge_hooks& hooks() const;
  [[nodiscard]] std::shared_ptr<gateway::request_registry> registry() const;
  /// Prints the "node up" and "edge listening" lines.
  void print_banner() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Runs until a termination signal; returns the process exit code. The
/// caller must have blocked SIGINT/SIGTERM in every thread (see main.cpp).
int run_node(const config::cluster_config& cfg, const std::string& node_name,
             const node_run_options& opts);

}  // namespace llmux::tools
