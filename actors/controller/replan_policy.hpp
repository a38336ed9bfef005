#pragma once
/// Which models should be awake where, from the rates measured now — the
/// pure core of online re-placement (no CAF, no clock: times are passed in).
/// The controller runs it every `replan_s` and for `llmux admin plan` /
/// `apply-plan`; `llmux simulate` runs the same.
///
/// It sees, per replica, its model's arrivals (from load reports, smoothed
/// into a rate with a half-life), its residency and its queue; per unit, the
/// weights' bytes of each model it lists and its memory_mib. On a unit with
/// a cap, the awake models should be those with the most traffic that fit:
///  - a sleeping replica whose model has at least `min_rate` req/s, and no
///    awake replica elsewhere that keeps up (nothing waiting), is woken if
///    its weights fit in what the awake ones leave;
///  - else it takes the place of idle awake replicas (nothing queued or
///    running: a model never sleeps under its requests) of the least rate,
///    only when its rate is at least `ratio` times each of theirs
///    (hysteresis: two models of like rates do not swap back and forth);
///  - at most `budget` such moves (a wake and the sleeps that make room for
///    it count as one) per plan, the most popular first.
/// The caller sends each move's sleeps, then its wake.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace llmux::controller {

struct replan_options {
  double ratio = 2.0;        ///< a wake displaces models of at most rate / ratio
  double min_rate = 0.05;    ///< req/s: below it, a model waits for a request to wake
  int budget = 2;            ///< moves per plan
  double half_life_s = 20;   ///< of the rate's smoothing
};

struct replan_move {
  std::string unit;
  std::string model;               ///< to wake
  std::string replica;             ///< its replica on `unit`
  double rate = 0;                 ///< its model's rate, req/s
  std::vector<std::string> sleep;  ///< replicas to put to sleep first (on `unit`)
  std::vector<double> sleep_rates; ///< their models' rates
};

class replan_policy {
public:
  explicit replan_policy(replan_options opts = {}) : opts_(opts) {}

  /// `cap_bytes` 0: the unit has no memory limit (nothing to plan there).
  void add_unit(const std::string& unit, int64_t cap_bytes);
  void add_replica(const std::string& unit, const std::string& model, const std::string& replica, int64_t bytes);
  /// A load report: the replica's arrivals so far (a count that only
  /// grows; a smaller one starts it over, as after a restart), residency
  /// ("ready", "sleeping", "loading", "unloading") and queue.
  void observe(const std::string& replica, uint64_t arrived, const std::string& residency, int32_t waiting,
               int32_t running, double now_s);

  /// The moves worth making now (see above); books nothing.
  [[nodiscard]] std::vector<replan_move> plan() const;

  /// A model's rate, req/s: the sum over its replicas.
  [[nodiscard]] double rate(const std::string& model) const;

  struct replica_view {
    std::string unit;
    std::string model;
    int64_t bytes = 0;
    std::string residency = "ready";
    int32_t waiting = 0;
    int32_t running = 0;
    double rate = 0;           ///< smoothed arrivals, req/s
    uint64_t arrived = 0;      ///< the count last seen
    double last_s = -1;        ///< when it was seen; -1: never
    [[nodiscard]] bool awake() const { return residency != "sleeping"; }
    [[nodiscard]] bool idle() const { return waiting == 0 && running == 0 && residency == "ready"; }
  };
  [[nodiscard]] const std::map<std::string, replica_view>& replicas() const { return replicas_; }
  [[nodiscard]] const std::map<std::string, int64_t>& units() const { return caps_; }

private:
  replan_options opts_;
  std::map<std::string, int64_t> caps_;
  std::map<std::string, replica_view> replicas_;
};

}  // namespace llmux::controller
