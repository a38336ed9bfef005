#include "actors/gpu_unit/unit_core.hpp"

#include <stdexcept>

namespace llmux::unit {

void unit_core::add_model(const std::string& model, std::unique_ptr<engine::engine> e,
                          double share) {
  auto& slot = models_[model];
  slot.engine = std::move(e);
  slot.share = share;
  slot.engine->set_share(share);
}

engine::step_output unit_core::step(const std::string& model, const engine::step_input& in) {
  auto it = models_.find(model);
  if (it == models_.end())
    throw std::out_of_range("model '" + model + "' is not on this unit");
  auto& slot = it->second;
  auto out = slot.engine->step(in);
  ++slot.steps;
  uint64_t fed = 0;
  for (const auto& s : in.seqs)
    fed += s.tokens.size();
  slot.tokens_in += fed;
  slot.busy_ns += static_cast<uint64_t>(out.seconds * 1e9);
  return out;
}

double unit_core::hold_seconds(const std::string& model, const engine::step_output& out) const {
  auto it = models_.find(model);
  if (it == models_.end() || it->second.engine->backend() != "sim")
    return 0;
  return out.seconds * time_scale_;
}

std::optional<std::string> unit_core::set_share(const std::string& model, double share) {
  auto err = take_share(model, share);
  if (!err)
    models_.at(model).engine->set_share(share);
  return err;
}

std::optional<std::string> unit_core::take_share(const std::string& model, double share) {
  auto it = models_.find(model);
  if (it == models_.end())
    return "model '" + model + "' is not on this unit";
  if (!(share > 0 && share <= 1))
    return "share must be in (0, 1], got " + std::to_string(share);
  double others = 0;
  for (const auto& [name, slot] : models_)
    if (name != model)
      others += slot.share;
  if (others + share > 1 + 1e-9)
    return "shares would sum to " + std::to_string(others + share) + " (> 1)";
  it->second.share = share;
  ++it->second.share_moves;
  return std::nullopt;
}

engine::engine& unit_core::engine_of(const std::string& model) {
  auto it = models_.find(model);
  if (it == models_.end())
    throw std::out_of_range("model '" + model + "' is not on this unit");
  return *it->second.engine;
}

uint64_t unit_core::total_steps() const {
  uint64_t n = 0;
  for (const auto& [name, slot] : models_)
    n += slot.steps;
  return n;
}

}  // namespace llmux::unit
