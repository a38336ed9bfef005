#include "actors/controller/share_policy.hpp"

#include <algorithm>

namespace llmux::controller {

void share_policy::set_share(const std::string& unit, const std::string& model, double share) {
  units_[unit].models[model].share = share;
}

void share_policy::observe(const std::string& unit, const std::string& model, int32_t waiting) {
  auto& w = units_[unit].models[model].waiting;
  w.push_back(waiting);
  while (static_cast<int>(w.size()) > opts_.sustain)
    w.pop_front();
}

bool share_policy::pressed(const model_view& m) const {
  return static_cast<int>(m.waiting.size()) >= opts_.sustain
         && std::all_of(m.waiting.begin(), m.waiting.end(),
                        [&](int32_t w) { return w >= opts_.min_waiting; });
}

bool share_policy::idle(const model_view& m) const {
  return static_cast<int>(m.waiting.size()) >= opts_.sustain
         && std::all_of(m.waiting.begin(), m.waiting.end(), [](int32_t w) { return w == 0; });
}

std::vector<share_move> share_policy::decide(double now_s) {
  std::vector<share_move> out;
  for (auto& [unit, u] : units_) {
    if (now_s - u.last_move_s < opts_.cooldown_s || u.models.size() < 2)
      continue;
    const std::string* to = nullptr;
    const std::string* from = nullptr;
    int32_t most_waiting = -1;
    double most_share = -1;
    for (const auto& [name, m] : u.models) {
      if (pressed(m) && m.waiting.back() > most_waiting) {
        most_waiting = m.waiting.back();
        to = &name;
      }
      if (idle(m) && m.share - opts_.step >= opts_.min_share - 1e-9 && m.share > most_share) {
        most_share = m.share;
        from = &name;
      }
    }
    if (to == nullptr || from == nullptr)
      continue;
    auto& donor = u.models.at(*from);
    auto& taker = u.models.at(*to);
    donor.share -= opts_.step;
    taker.share += opts_.step;
    out.push_back({unit, *from, *to, donor.share, taker.share, donor.share + opts_.step,
                   taker.share - opts_.step});
    // Hysteresis: the next move on this unit needs a fresh, sustained signal.
    donor.waiting.clear();
    taker.waiting.clear();
    u.last_move_s = now_s;
    ++u.moves;
  }
  return out;
}

}  // namespace llmux::controller
