#include "actors/gpu_unit/residency.hpp"

#include <algorithm>
#include <stdexcept>

namespace llmux::unit {

namespace {

std::string mib(int64_t bytes) {
  return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB";
}

}  // namespace

const char* to_string(residency_state s) {
  switch (s) {
    case residency_state::ready: return "ready";
    case residency_state::loading: return "loading";
    case residency_state::sleeping: return "sleeping";
    case residency_state::unloading: return "unloading";
  }
  return "";
}

residency_state residency::add(const std::string& model, int64_t bytes, bool awake) {
  if (models_.count(model))
    throw std::logic_error("residency: model '" + model + "' added twice");
  entry e;
  e.bytes = std::max<int64_t>(0, bytes);
  e.order = next_order_++;
  const bool fits = cap_ <= 0 || bytes_awake() + e.bytes <= cap_;
  e.state = awake && fits ? residency_state::ready : residency_state::sleeping;
  return models_.emplace(model, e).first->second.state;
}

int64_t residency::bytes_awake() const {
  int64_t n = 0;
  for (const auto& [name, e] : models_)
    if (e.state != residency_state::sleeping)
      n += e.bytes;
  return n;
}

residency::wake_plan residency::plan_wake(const std::string& model, const std::set<std::string>& exclude) const {
  wake_plan plan;
  const auto& me = models_.at(model);
  if (me.state == residency_state::ready)
    return plan;
  if (me.state != residency_state::sleeping) {
    plan.kind = wake_plan::busy;
    return plan;
  }
  const int64_t awake = bytes_awake();
  if (cap_ <= 0 || awake + me.bytes <= cap_) {
    plan.kind = wake_plan::fits;
    return plan;
  }
  if (me.bytes > cap_) {
    plan.kind = wake_plan::too_big;
    plan.why = "model '" + model + "' needs " + mib(me.bytes) + ", more than the unit's memory_mib (" + mib(cap_)
               + ")";
    return plan;
  }
  // Least recently used first; among those never used, the last added first.
  std::vector<std::pair<const std::string*, const entry*>> ready;
  for (const auto& [name, e] : models_)
    if (e.state == residency_state::ready && exclude.count(name) == 0)
      ready.emplace_back(&name, &e);
  std::sort(ready.begin(), ready.end(), [](const auto& a, const auto& b) {
    if (a.second->last_used != b.second->last_used)
      return a.second->last_used < b.second->last_used;
    return a.second->order > b.second->order;
  });
  int64_t after = awake;
  for (const auto& [name, e] : ready) {
    if (after + me.bytes <= cap_)
      break;
    plan.victims.push_back(*name);
    after -= e->bytes;
  }
  if (after + me.bytes <= cap_) {
    // Only what must sleep: a victim whose memory the others already free
    // is kept (a small model taken first in LRU order beside a large one
    // that alone makes room), the most recently used considered first.
    for (size_t i = plan.victims.size(); i-- > 0;) {
      const int64_t b = models_.at(plan.victims[i]).bytes;
      if (after + b + me.bytes <= cap_) {
        after += b;
        plan.victims.erase(plan.victims.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    plan.kind = wake_plan::evict;
    return plan;
  }
  plan.victims.clear();
  plan.kind = wake_plan::no_room;
  std::string held;
  for (const auto& [name, e] : models_)
    if (e.state != residency_state::sleeping)
      held += (held.empty() ? "" : ", ") + name + " (" + to_string(e.state)
              + (exclude.count(name) ? ", busy" : "") + ", " + mib(e.bytes) + ")";
  plan.why = "model '" + model + "' needs " + mib(me.bytes) + " and " + mib(cap_ - awake) + " of memory_mib ("
             + mib(cap_) + ") is free; the models holding the rest cannot sleep now: " + held;
  return plan;
}

void residency::set_state(const std::string& model, residency_state s) {
  models_.at(model).state = s;
}

void residency::touch(const std::string& model, double now) {
  auto it = models_.find(model);
  if (it != models_.end())
    it->second.last_used = std::max(it->second.last_used, now);
}

void residency::woke(const std::string& model, double seconds) {
  auto& e = models_.at(model);
  e.state = residency_state::ready;
  ++e.wakes;
  e.wake_seconds_total += seconds;
  e.wake_seconds_max = std::max(e.wake_seconds_max, seconds);
  e.last_wake_seconds = seconds;
}

void residency::slept(const std::string& model) {
  auto& e = models_.at(model);
  e.state = residency_state::sleeping;
  ++e.sleeps;
}

}  // namespace llmux::unit
