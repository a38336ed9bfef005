#include "actors/controller/layout_policy.hpp"

#include <algorithm>
#include <vector>

namespace llmux::controller {

const char* to_string(layout_kind k) {
  return k == layout_kind::single ? "single" : "replicas";
}

std::optional<layout_kind> parse_layout(const std::string& name) {
  if (name == "single")
    return layout_kind::single;
  if (name == "replicas")
    return layout_kind::replicas;
  return std::nullopt;
}

double crossover(const step_time_fn& step, int k, int max_c, double margin) {
  if (k < 2 || max_c < 1)
    return 0;
  const double share = 1.0 / k;
  std::vector<char> faster(static_cast<size_t>(max_c) + 1, 0);
  for (int c = 1; c <= max_c; ++c)
    faster[static_cast<size_t>(c)] = step(static_cast<double>(c) / k, share) * (1 + margin) < step(c, 1.0);
  for (int c = 1; c <= max_c; ++c) {
    bool holds = true;
    for (int d = c; d <= std::min(2 * c, max_c) && holds; ++d)
      holds = faster[static_cast<size_t>(d)] != 0;
    if (holds)
      return c;
  }
  return 0;
}

void layout_policy::add_unit(const std::string& unit, layout_unit_options opts, layout_kind initial) {
  auto& u = units_[unit];
  u.opts = opts;
  u.layout = initial;
}

void layout_policy::observe(const std::string& unit, const std::string& replica, double load) {
  auto it = units_.find(unit);
  if (it != units_.end())
    it->second.per_replica[replica] = std::max(load, 0.0);
}

std::vector<layout_move> layout_policy::decide(double now) {
  std::vector<layout_move> out;
  for (auto& [name, u] : units_) {
    double sum = 0;
    for (const auto& [r, load] : u.per_replica)
      sum += load;
    const double a = std::clamp(u.opts.smoothing, 0.0, 1.0);
    u.concurrency = (1 - a) * u.concurrency + a * sum;
    if (!u.opts.automatic || u.switching || u.opts.switch_at <= 0
        || now - u.last_switch_s < u.opts.cooldown_s)
      continue;
    const double up = u.opts.switch_at * (1 + u.opts.hysteresis);
    const double down = u.opts.switch_at * (1 - u.opts.hysteresis);
    if (u.layout == layout_kind::single && u.concurrency > up)
      out.push_back({name, layout_kind::replicas, u.concurrency});
    else if (u.layout == layout_kind::replicas && u.concurrency < down)
      out.push_back({name, layout_kind::single, u.concurrency});
  }
  return out;
}

bool layout_policy::begin(const std::string& unit, double now) {
  auto it = units_.find(unit);
  if (it == units_.end() || it->second.switching)
    return false;
  it->second.switching = true;
  it->second.switch_started_s = now;
  return true;
}

void layout_policy::end(const std::string& unit, layout_kind to, bool ok, double now) {
  auto it = units_.find(unit);
  if (it == units_.end())
    return;
  auto& u = it->second;
  u.switching = false;
  u.switching_s += std::max(0.0, now - u.switch_started_s);
  u.last_switch_s = now;
  if (ok) {
    u.layout = to;
    ++u.switches;
  } else {
    ++u.failed;
  }
}

const layout_policy::unit_state* layout_policy::find(const std::string& unit) const {
  auto it = units_.find(unit);
  return it == units_.end() ? nullptr : &it->second;
}

}  // namespace llmux::controller
