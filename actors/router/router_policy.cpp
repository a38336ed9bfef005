#include "actors/router/router_policy.hpp"

#include <algorithm>

#include <limits>

namespace llmux::router {

std::optional<policy_kind> parse_policy(const std::string& name) {
  if (name == "least_loaded")
    return policy_kind::least_loaded;
  if (name == "round_robin")
    return policy_kind::round_robin;
  return std::nullopt;
}

void router_policy::replica_up(const std::string& replica, const std::string& model,
                               const std::string& node) {
  auto& r = replicas_[replica];
  r.replica = replica;
  r.model = model;
  r.node = node;
  r.up = true;
  r.waiting = r.running = r.sent_since_report = 0;
}

void router_policy::replica_down(const std::string& replica) {
  auto it = replicas_.find(replica);
  if (it != replicas_.end())
    it->second.up = false;
}

int router_policy::node_down(const std::string& node) {
  int n = 0;
  for (auto& [name, r] : replicas_)
    if (r.node == node && r.up) {
      r.up = false;
      ++n;
    }
  return n;
}

void router_policy::report(const std::string& replica, int32_t waiting, int32_t running,
                           double tokens_per_s) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return;
  it->second.waiting = waiting;
  it->second.running = running;
  it->second.tokens_per_s = tokens_per_s;
  it->second.sent_since_report = 0;
}

bool router_policy::has_model(const std::string& model) const {
  for (const auto& [name, r] : replicas_)
    if (r.model == model)
      return true;
  return false;
}

std::optional<std::string> router_policy::pick(const std::string& model,
                                              const std::vector<std::string>& exclude) {
  std::vector<replica_load*> live;
  for (auto& [name, r] : replicas_)
    if (r.model == model && r.up
        && std::find(exclude.begin(), exclude.end(), name) == exclude.end())
      live.push_back(&r);
  if (live.empty())
    return std::nullopt;
  replica_load* best = nullptr;
  if (kind_ == policy_kind::round_robin) {
    best = live[rr_next_[model]++ % live.size()];
  } else {
    int64_t best_load = std::numeric_limits<int64_t>::max();
    for (auto* r : live) {
      int64_t load = int64_t{r->waiting} + r->running + r->sent_since_report;
      // Ties go to the replica dispatched to least, so equal replicas alternate.
      if (load < best_load || (load == best_load && r->dispatched < best->dispatched)) {
        best = r;
        best_load = load;
      }
    }
  }
  ++best->sent_since_report;
  ++best->dispatched;
  return best->replica;
}

void router_policy::refused(const std::string& replica) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return;
  if (it->second.sent_since_report > 0)
    --it->second.sent_since_report;
}

}  // namespace llmux::router
