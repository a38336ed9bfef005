#pragma once
/// Replica choice — the pure core of the router actor.
///
/// The router knows each replica's last load report (waiting + running) and
/// counts what it sent there since, so a burst between two reports spreads
/// across replicas instead of piling onto the one that looked idle.
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace llmux::router {

enum class policy_kind { least_loaded, round_robin };

[[nodiscard]] std::optional<policy_kind> parse_policy(const std::string& name);

struct replica_load {
  std::string replica;  ///< "<unit>/<model>"
  std::string model;
  std::string node;
  bool up = true;
  int32_t waiting = 0;         ///< from the last load report
  int32_t running = 0;         ///< from the last load report
  int32_t sent_since_report = 0;
  double tokens_per_s = 0;
  uint64_t dispatched = 0;     ///< total requests sent there
};

class router_policy {
public:
  explicit router_policy(policy_kind kind) : kind_(kind) {}

  /// Adds a replica, or marks a known one up again (load reset).
  void replica_up(const std::string& replica, const std::string& model, const std::string& node);
  void replica_down(const std::string& replica);
  /// Marks every replica of `node` down; returns how many changed.
  int node_down(const std::string& node);
  void report(const std::string& replica, int32_t waiting, int32_t running, double tokens_per_s);

  /// Picks a live replica of `model`, not one of `exclude` (those that
  /// already refused this request), and counts the dispatch; nullopt when
  /// no such replica is live.
  [[nodiscard]] std::optional<std::string> pick(const std::string& model,
                                                const std::vector<std::string>& exclude = {});
  /// A dispatch that the replica refused (queue full): it is not counted
  /// against the replica's load.
  void refused(const std::string& replica);

  [[nodiscard]] bool has_model(const std::string& model) const;
  [[nodiscard]] const std::map<std::string, replica_load>& replicas() const { return replicas_; }
  [[nodiscard]] policy_kind kind() const { return kind_; }

private:
  policy_kind kind_;
  std::map<std::string, replica_load> replicas_;
  std::map<std::string, uint64_t> rr_next_;  ///< per model
};

}  // namespace llmux::router
