#pragma once
/// Where compute should move on each unit — the pure core of the
/// controller's share moves (no CAF, no clock: times are passed in).
///
/// The controller feeds it every scheduler's load report (waiting and
/// running requests of a model on a unit) and asks, on its tick, which
/// shares to move. The rule, with hysteresis so shares do not flap:
///  - a model is *pressed* when its queue has held at least `min_waiting`
///    requests in each of the last `sustain` reports;
///  - a model is *idle* when it had nothing waiting in each of its last
///    `sustain` reports;
///  - on a unit with a pressed model and an idle one whose share is above
///    `min_share`, `step` of the idle model's share moves to the pressed one
///    (the most pressed, from the idle one with the largest share);
///  - after a move a unit waits `cooldown_s` before the next, and the two
///    models' histories start over, so one burst moves one step.
/// Shares on a unit never sum above what they summed to before a move.

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace llmux::controller {

struct share_policy_options {
  double step = 0.125;       ///< share moved at once (an eighth of the unit)
  double min_share = 0.125;  ///< no model goes below this
  int sustain = 3;           ///< consecutive reports a condition must hold
  int32_t min_waiting = 1;   ///< queue length that counts as pressed
  double cooldown_s = 5;     ///< between two moves on one unit
};

struct share_move {
  std::string unit;
  std::string from;   ///< the idle model
  std::string to;     ///< the pressed model
  double from_share;  ///< new shares
  double to_share;
  double from_before;  ///< the shares before: what to book again (`set_share`)
  double to_before;    ///< if the unit refuses the move
};

class share_policy {
public:
  explicit share_policy(share_policy_options opts = {}) : opts_(opts) {}

  /// A model's share on a unit, as the unit has it (from its replica, or
  /// after a move the unit confirmed).
  void set_share(const std::string& unit, const std::string& model, double share);
  /// One load report of `model` on `unit`.
  void observe(const std::string& unit, const std::string& model, int32_t waiting);
  /// The moves to make now (at most one per unit), books them as done and
  /// starts the unit's cooldown. The caller sends them (lower share first)
  /// and, when the unit refuses one, books the shares it kept
  /// (`set_share` with the move's `*_before`).
  [[nodiscard]] std::vector<share_move> decide(double now_s);

  struct model_view {
    double share = 0;
    std::deque<int32_t> waiting;  ///< the last `sustain` reports
  };
  struct unit_view {
    std::map<std::string, model_view> models;
    double last_move_s = -1e18;
    uint64_t moves = 0;
  };
  [[nodiscard]] const std::map<std::string, unit_view>& units() const { return units_; }

private:
  [[nodiscard]] bool pressed(const model_view& m) const;
  [[nodiscard]] bool idle(const model_view& m) const;

  share_policy_options opts_;
  std::map<std::string, unit_view> units_;
};

}  // namespace llmux::controller
