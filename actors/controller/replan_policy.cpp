#include "actors/controller/replan_policy.hpp"

#include <algorithm>
#include <cmath>

namespace llmux::controller {

void replan_policy::add_unit(const std::string& unit, int64_t cap_bytes) {
  caps_[unit] = cap_bytes;
}

void replan_policy::add_replica(const std::string& unit, const std::string& model, const std::string& replica,
                                int64_t bytes, double share) {
  auto& r = replicas_[replica];
  r.unit = unit;
  r.model = model;
  r.bytes = bytes;
  r.share = share;
}

void replan_policy::set_share(const std::string& replica, double share) {
  auto it = replicas_.find(replica);
  if (it != replicas_.end())
    it->second.share = share;
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

replan_plan replan_policy::plan() const {
  replan_plan out;
  auto& moves = out.moves;
  using entry = std::pair<const std::string, replica_view>;
  // Each model's rate once (the sorts below compare them often).
  std::map<std::string, double> rates;
  for (const auto& [name, r] : replicas_)
    rates[r.model] += r.rate;
  auto rate = [&rates](const std::string& model) { return rates.at(model); };
  // The target: the planner's, else the rate rule's (below).
  std::map<std::string, unit_target> target;
  if (planner_) {
    // Awake and staying: a replica handing its sequences over (a move) or
    // going to sleep is leaving, whatever memory it holds until then.
    std::map<std::string, std::vector<std::string>> awake;
    for (const auto& [name, r] : replicas_)
      if (r.awake() && r.residency != "draining" && r.residency != "unloading")
        awake[r.unit].push_back(r.model);
    target = planner_(rates, awake);
    out.planner = true;
  }
  auto wanted = [&](const std::string& unit, const std::string& model) {
    auto it = target.find(unit);
    return it != target.end()
           && std::find(it->second.models.begin(), it->second.models.end(), model) != it->second.models.end();
  };
  // Models awake on some replica that keeps up (nothing waiting): under the
  // rate rule another replica of theirs need not wake ahead of requests.
  std::map<std::string, bool> served;
  for (const auto& [name, r] : replicas_)
    if (r.awake() && r.waiting == 0)
      served[r.model] = true;
  // Units with requests waiting on an awake replica: they do not keep up.
  std::map<std::string, bool> pressed;
  for (const auto& [name, r] : replicas_)
    if (r.awake() && r.waiting > 0)
      pressed[r.unit] = true;
  // Candidates, most popular first.
  std::vector<const entry*> asleep;
  for (const auto& e : replicas_) {
    const auto& r = e.second;
    if (r.residency != "sleeping" || rate(r.model) < opts_.min_rate)
      continue;
    // The rate rule's: on a unit with a cap, a model whose awake replicas
    // do not keep up (requests waiting on each). The planner's: where it
    // places the model, and also (the queues measure what its estimate
    // only predicts) where the rule would scale a model out.
    bool scale_out = caps_.count(r.unit) && caps_.at(r.unit) > 0 && !served.count(r.model);
    if (planner_ && scale_out)
      // Beside the planner, only a model awake somewhere with requests
      // waiting there: one it left asleep waits for a request to wake it.
      scale_out = std::any_of(replicas_.begin(), replicas_.end(), [&](const auto& o) {
        return o.second.model == r.model && o.second.awake() && o.second.waiting > 0;
      });
    if (!(scale_out || (planner_ && wanted(r.unit, r.model))))
      continue;
    asleep.push_back(&e);
  }
  std::stable_sort(asleep.begin(), asleep.end(),
                   [&rate](const auto* a, const auto* b) { return rate(a->second.model) > rate(b->second.model); });
  // What each unit holds awake, as the moves planned so far leave it.
  std::map<std::string, int64_t> awake_bytes;
  for (const auto& [name, r] : replicas_)
    if (r.awake())
      awake_bytes[r.unit] += r.bytes;
  std::map<std::string, bool> planned;  ///< replicas woken or put to sleep by an earlier move
  std::map<std::string, bool> woken;    ///< models an earlier move wakes
  for (const auto* c : asleep) {
    if (static_cast<int>(moves.size()) >= opts_.budget)
      break;
    const auto& [replica, r] = *c;
    if (woken.count(r.model) || (!(planner_ && wanted(r.unit, r.model)) && served.count(r.model)))
      continue;  // an earlier move wakes it elsewhere
    const auto cap_it = caps_.find(r.unit);
    const int64_t cap = cap_it == caps_.end() ? 0 : cap_it->second;
    const double want = rate(r.model);
    replan_move mv{r.unit, r.model, replica, want, {}, {}, {}};
    const bool placed = planner_ && wanted(r.unit, r.model);  ///< else a scale-out
    if (placed) {
      // Awake where the planner no longer wants it: this wake is a move,
      // worth its hand-over only where that unit does not keep up (requests
      // waiting there) for its other models; a unit that keeps up keeps it
      // (no wake); one where its own requests wait keeps it too, and the
      // wake here is a second replica (the router splits its load).
      bool stays = false;
      for (const auto& [name, o] : replicas_)
        if (o.model == r.model && o.unit != r.unit && o.awake() && o.residency != "unloading"
            && o.residency != "draining" && !planned.count(name) && !wanted(o.unit, o.model)) {
          if (!pressed.count(o.unit)) {
            stays = true;
            continue;
          }
          if (o.waiting == 0) {
            mv.from = name;
            stays = false;
            break;
          }
        }
      if (stays && mv.from.empty())
        continue;
    }
    int64_t free = cap > 0 ? cap - awake_bytes[r.unit] : r.bytes;
    if (r.bytes > free) {
      // Idle awake replicas of this unit, the least popular first; for a
      // wake the planner placed, only those it does not keep there.
      std::vector<const entry*> idle;
      for (const auto& e : replicas_)
        if (e.second.unit == r.unit && e.second.idle() && !planned.count(e.first)
            && !(placed && wanted(e.second.unit, e.second.model)))
          idle.push_back(&e);
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
    if (!mv.from.empty()) {
      planned[mv.from] = true;
      awake_bytes[replicas_.at(mv.from).unit] -= replicas_.at(mv.from).bytes;
    }
    planned[replica] = true;
    awake_bytes[r.unit] += r.bytes;
    woken[r.model] = true;
    served[r.model] = true;
    moves.push_back(std::move(mv));
  }
  // Shares toward the planner's, for the replicas awake once the moves are
  // made (those woken by them included): caps as planned; partitions, what
  // their jobs hold now split between them in the planner's proportions
  // (the unit's prefill lane and the shares of models not in the plan stay
  // as they are).
  std::map<std::string, bool> waking;  ///< replicas the moves wake
  for (const auto& m : moves)
    waking[m.replica] = true;
  std::map<std::string, std::vector<const entry*>> planned_jobs;  ///< unit → its jobs the planner shares
  for (const auto& e : replicas_) {
    const auto& [name, r] = e;
    auto t = target.find(r.unit);
    if (t == target.end() || r.share <= 0 || !t->second.shares.count(r.model))
      continue;
    const bool will_wake = waking.count(name) > 0;
    const bool will_sleep = planned.count(name) && !will_wake;
    if ((r.awake() || will_wake) && !will_sleep)
      planned_jobs[r.unit].push_back(&e);
  }
  // Models awake on each unit once the moves are made.
  std::map<std::string, std::vector<std::string>> staying;
  for (const auto& [name, r] : replicas_) {
    const bool will_wake = waking.count(name) > 0;
    if (will_wake || (r.awake() && !planned.count(name) && r.residency != "draining" && r.residency != "unloading"))
      staying[r.unit].push_back(r.model);
  }
  for (const auto& [unit, jobs] : planned_jobs) {
    const auto& t = target.at(unit);
    // Only where the unit holds what the planner planned it for: its
    // shares are for those models and no others. Caps may sum above the
    // unit: there, an idle model of no traffic left awake beside them keeps
    // its own.
    auto holds = staying[unit];
    auto want = t.models;
    std::sort(holds.begin(), holds.end());
    std::sort(want.begin(), want.end());
    bool others_busy = false;
    for (const auto& [name, r] : replicas_)
      if (r.unit == unit && r.awake() && !std::binary_search(want.begin(), want.end(), r.model)
          && (!r.idle() || rate(r.model) >= opts_.min_rate))
        others_busy = true;
    if (t.caps ? others_busy : holds != want)
      continue;
    if (jobs.size() < 2 && !t.caps)
      continue;  // one partition alone keeps what it has
    double held = 0, asked = 0;
    for (const auto* j : jobs) {
      held += j->second.share;
      asked += t.shares.at(j->second.model);
    }
    if (!(asked > 0))
      continue;
    for (const auto* j : jobs) {
      const auto& [name, r] = *j;
      const double share = t.shares.at(r.model);
      const double to = t.caps ? share : held * share / asked;
      if (to > 0 && std::fabs(to - r.share) >= opts_.share_delta)
        out.shares.push_back({r.unit, r.model, name, t.job, r.share, to});
    }
  }
  // Lower shares first: the unit's shares never sum above 1 on the way.
  std::stable_sort(out.shares.begin(), out.shares.end(),
                   [](const auto& a, const auto& b) { return a.to - a.from < b.to - b.from; });
  return out;
}

}  // namespace llmux::controller
