#include "actors/controller/replan_policy.hpp"

#include <algorithm>
#include <cmath>

namespace llmux::controller {

void replan_policy::add_unit(const std::string& unit, int64_t cap_bytes) {
  caps_[unit] = cap_bytes;
}

void replan_policy::add_replica(const std::string& unit, const std::string& model, const std::string& replica,
                                int64_t bytes) {
  auto& r = replicas_[replica];
  r.unit = unit;
  r.model = model;
  r.bytes = bytes;
}

void replan_policy::observe(const std::string& replica, uint64_t arrived, const std::string& residency,
                            int32_t waiting, int32_t running, double now_s) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return;
  auto& r = it->second;
  r.residency = residency;
  r.waiting = waiting;
  r.running = running;
  if (r.last_s >= 0 && now_s > r.last_s && arrived >= r.arrived) {
    // An exponentially weighted rate over the gaps between reports.
    const double dt = now_s - r.last_s;
    const double inst = static_cast<double>(arrived - r.arrived) / dt;
    const double keep = std::exp2(-dt / opts_.half_life_s);
    r.rate = keep * r.rate + (1 - keep) * inst;
  }
  if (r.last_s < 0 || now_s > r.last_s || arrived < r.arrived) {
    r.arrived = arrived;
    r.last_s = now_s;
  }
}

double replan_policy::rate(const std::string& model) const {
  double sum = 0;
  for (const auto& [name, r] : replicas_)
    if (r.model == model)
      sum += r.rate;
  return sum;
}

std::vector<replan_move> replan_policy::plan() const {
  std::vector<replan_move> moves;
  // Each model's rate once (the sorts below compare them often).
  std::map<std::string, double> rates;
  for (const auto& [name, r] : replicas_)
    rates[r.model] += r.rate;
  auto rate = [&rates](const std::string& model) { return rates.at(model); };
  // Models awake on some replica that keeps up (nothing waiting): another
  // replica of theirs need not wake ahead of requests.
  std::map<std::string, bool> served;
  for (const auto& [name, r] : replicas_)
    if (r.awake() && r.waiting == 0)
      served[r.model] = true;
  // Candidates, most popular first.
  std::vector<const std::pair<const std::string, replica_view>*> asleep;
  for (const auto& entry : replicas_) {
    const auto& r = entry.second;
    auto cap = caps_.find(r.unit);
    if (cap == caps_.end() || cap->second <= 0 || r.residency != "sleeping" || served.count(r.model))
      continue;
    if (rate(r.model) >= opts_.min_rate)
      asleep.push_back(&entry);
  }
  std::stable_sort(asleep.begin(), asleep.end(),
                   [&rate](const auto* a, const auto* b) { return rate(a->second.model) > rate(b->second.model); });
  // What each unit holds awake, as the moves planned so far leave it.
  std::map<std::string, int64_t> awake_bytes;
  for (const auto& [name, r] : replicas_)
    if (r.awake())
      awake_bytes[r.unit] += r.bytes;
  std::map<std::string, bool> planned;  ///< replicas woken or put to sleep by an earlier move
  for (const auto* c : asleep) {
    if (static_cast<int>(moves.size()) >= opts_.budget)
      break;
    const auto& [replica, r] = *c;
    if (served.count(r.model))
      continue;  // an earlier move wakes it elsewhere
    const int64_t cap = caps_.at(r.unit);
    const double want = rate(r.model);
    replan_move mv{r.unit, r.model, replica, want, {}, {}};
    int64_t free = cap - awake_bytes[r.unit];
    if (r.bytes > free) {
      // Idle awake replicas of this unit, the least popular first.
      std::vector<const std::pair<const std::string, replica_view>*> idle;
      for (const auto& entry : replicas_)
        if (entry.second.unit == r.unit && entry.second.idle() && !planned.count(entry.first))
          idle.push_back(&entry);
      std::stable_sort(idle.begin(), idle.end(), [&rate](const auto* a, const auto* b) {
        return rate(a->second.model) < rate(b->second.model);
      });
      for (const auto* v : idle) {
        if (r.bytes <= free)
          break;
        const double theirs = rate(v->second.model);
        if (want < opts_.ratio * theirs)
          break;  // the rest are at least as popular
        mv.sleep.push_back(v->first);
        mv.sleep_rates.push_back(theirs);
        free += v->second.bytes;
      }
      if (r.bytes > free)
        continue;  // no room worth making now
    }
    for (const auto& s : mv.sleep) {
      planned[s] = true;
      awake_bytes[r.unit] -= replicas_.at(s).bytes;
    }
    planned[replica] = true;
    awake_bytes[r.unit] += r.bytes;
    served[r.model] = true;
    moves.push_back(std::move(mv));
  }
  return moves;
}

}  // namespace llmux::controller
