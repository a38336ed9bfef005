#pragma once
/// The engines of one unit and their compute shares — the pure core of the
/// gpu_unit actor.
///
/// Each co-located model runs on its own partition of the unit (SM share on
/// a GPU, worker threads on CPU); a share change applies between steps.
/// For the sim backend, a step's modelled time (× time_scale) is how long the
/// actor holds the reply; real engines spend the time computing.
/// Single-threaded: the owning actor calls everything.

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.hpp"

namespace llmux::unit {

class unit_core {
public:
  explicit unit_core(double time_scale) : time_scale_(time_scale) {}

  void add_model(const std::string& model, std::unique_ptr<engine::engine> e, double share);

  /// Runs one step; throws std::out_of_range for a model not on this unit.
  [[nodiscard]] engine::step_output step(const std::string& model, const engine::step_input& in);

  /// How long to hold the reply of a step that took `out.seconds`: the
  /// modelled time for sim, zero for real engines (they already spent it).
  [[nodiscard]] double hold_seconds(const std::string& model, const engine::step_output& out) const;

  /// Moves `model` to a partition of `share` (0, 1]. Returns an error text
  /// when the model is unknown, the share out of range, or the unit's shares
  /// would sum above 1.
  [[nodiscard]] std::optional<std::string> set_share(const std::string& model, double share);

  struct model_slot {
    std::unique_ptr<engine::engine> engine;
    double share = 1.0;
    uint64_t steps = 0;
    uint64_t tokens_in = 0;   ///< tokens fed (prefill + decode)
    double busy_seconds = 0;  ///< modelled or measured step time, summed
    uint64_t share_moves = 0;
  };

  [[nodiscard]] const std::map<std::string, model_slot>& models() const { return models_; }
  [[nodiscard]] uint64_t total_steps() const;
  [[nodiscard]] double time_scale() const { return time_scale_; }

private:
  double time_scale_;
  std::map<std::string, model_slot> models_;
};

}  // namespace llmux::unit
