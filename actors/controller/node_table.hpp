#pragma once
/// The controller's view of the cluster's nodes — pure core of the
/// controller actor. Every node of the config is in the table from the
/// start; connection attempts and failures move it between states.
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <string>
#include <vector>

#include "config/cluster_config.hpp"

namespace llmux::controller {

enum class node_status { connecting, up, down };

[[nodiscard]] const char* to_string(node_status s);

struct node_row {
  config::node_config node;
  node_status status = node_status::connecting;
  bool attempt_in_flight = false;
  uint64_t attempts = 0;
  uint64_t failures = 0;      ///< lost after being up
  double since_s = 0;         ///< time of the last status change (caller's clock)
  std::string last_error;
};

class node_table {
public:
  node_table(const std::vector<config::node_config>& nodes, std::string self);

  /// Nodes that should get a connection attempt now (not up, none in flight);
  /// marks them in flight.
  [[nodiscard]] std::vector<std::string> start_attempts(double now_s);
  void connected(const std::string& name, double now_s);
  void attempt_failed(const std::string& name, const std::string& why, double now_s);
  /// A node that was up went away (monitor fired). Returns false if it was
  /// not up (a stale notification).
  bool lost(const std::string& name, const std::string& why, double now_s);

  [[nodiscard]] const node_row* find(const std::string& name) const;
  [[nodiscard]] const std::vector<node_row>& rows() const { return rows_; }
  [[nodiscard]] const std::string& self() const { return self_; }
  [[nodiscard]] size_t up_count() const;

private:
  node_row* find_mut(const std::string& name);
  std::vector<node_row> rows_;
  std::string self_;
};

}  // namespace llmux::controller
