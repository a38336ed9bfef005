#pragma once
/// Which models should be awake where, and with what compute, from the
/// rates measured now — the pure core of online re-placement (no CAF, no
/// clock: times are passed in). The controller runs it every `replan_s`
/// and for `llmux admin plan` / `apply-plan`; `llmux simulate` runs the
/// same.
///
/// It sees, per replica, its model's arrivals (from load reports, smoothed
/// into a rate with a half-life), its residency and its queue; per unit, the
/// weights' bytes of each model it lists and its memory_mib.
///
/// **The target.** With a placement planner (`use_planner`: the placement
/// issue's MuxServe search run on the units that exist, `plan::
/// plan_on_units`, where the units have a cost model), the planner says on
/// the measured rates which models each unit should hold awake and their
/// shares (see unit_target). Without one (units without a cost model:
/// cpu), the target is the rate rule: the most popular models that fit, a
/// second replica only for a model whose awake ones have requests waiting.
/// With one, that scale-out stays beside the planner's target: the queues
/// measure what the planner's estimate only predicts.
///
/// **The difference**, with hysteresis and a budget:
///  - a sleeping replica the target wants awake, of a model with at least
///    `min_rate` req/s, is woken if its weights fit in what the awake ones
///    leave; else it takes the place of idle awake replicas (nothing queued
///    or running: a model never sleeps under its requests) the target does
///    not want there (for a scale-out: any), of the least rate, only when
///    its rate is at least
///    `ratio` times each of theirs (two models of like rates do not swap
///    back and forth);
///  - when that model is awake on another unit where the target does not
///    want it, the wake is a *move* (the caller wakes it here, hands the
///    other replica's sequences over and puts that one to sleep), made only
///    when that unit does not keep up for its other models (requests
///    waiting there, none of this model's): a model that is served well
///    stays where it is (no wake), one whose own requests wait stays too
///    and the wake is a second replica;
///  - at most `budget` such moves (a wake and the sleeps that make room for
///    it count as one) per plan, the most popular first;
///  - then share moves toward the target's shares (see unit_target: caps
///    as planned, partitions in the planned proportions of what the awake
///    models hold; the prefill lane and sleeping models keep theirs) —
///    partitions only on units that, once the moves are made, hold awake
///    exactly the models the target names — each where it differs by at
///    least `share_delta`.
/// The caller sends each move's sleeps, then its wake, then the shares.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace llmux::controller {

struct replan_options {
  double ratio = 2.0;        ///< a wake displaces models of at most rate / ratio
  double min_rate = 0.05;    ///< req/s: below it, a model waits for a request to wake
  int budget = 2;            ///< moves per plan
  double half_life_s = 20;   ///< of the rate's smoothing
  double share_delta = 0.05; ///< smaller decode-share differences are left alone
};

struct replan_move {
  std::string unit;
  std::string model;               ///< to wake
  std::string replica;             ///< its replica on `unit`
  double rate = 0;                 ///< its model's rate, req/s
  std::vector<std::string> sleep;  ///< replicas to put to sleep first (on `unit`)
  std::vector<double> sleep_rates; ///< their models' rates
  /// A move: the replica (on another unit) whose sequences are handed over
  /// and that then sleeps; empty for a plain wake.
  std::string from;
};

/// A share toward the planner's: `MODEL/JOB` on `unit` (`MODEL` when `job`
/// is empty: the model's whole share).
struct replan_share {
  std::string unit;
  std::string model;
  std::string replica;
  std::string job;
  double from = 0;
  double to = 0;
};

struct replan_plan {
  std::vector<replan_move> moves;
  std::vector<replan_share> shares;
  bool planner = false;  ///< the target came from the placement planner
  [[nodiscard]] bool empty() const { return moves.empty() && shares.empty(); }
};

/// What the placement planner wants of one unit: the models it should hold
/// awake and their shares: on MuxServe's layout (split jobs, a shared
/// prefill lane) each decode job's (`job` "decode"), elsewhere each model's
/// whole share (`job` empty). Where shares are caps (`caps`: MPS-style,
/// oversubscribed) they are set as planned; where they are partitions, what
/// the awake models hold together is split in the planned proportions (the
/// shares of sleeping models stay booked).
struct unit_target {
  std::vector<std::string> models;
  std::map<std::string, double> shares;
  std::string job;
  bool caps = false;
};
/// The planner, run on the rates (model → req/s) and what each unit holds
/// awake now (unit → models; where choices tie, the planner keeps them
/// there): unit → its target.
using placement_fn = std::function<std::map<std::string, unit_target>(
  const std::map<std::string, double>& rates, const std::map<std::string, std::vector<std::string>>& awake)>;

class replan_policy {
public:
  explicit replan_policy(replan_options opts = {}) : opts_(opts) {}

  /// `cap_bytes` 0: the unit has no memory limit (nothing to plan there).
  void add_unit(const std::string& unit, int64_t cap_bytes);
  /// `share`: what its job the planner shares holds now (its decode job's
  /// on MuxServe's layout, else its whole share; 0: none planned).
  void add_replica(const std::string& unit, const std::string& model, const std::string& replica, int64_t bytes,
                   double share = 0);
  /// The share that job has now (after the caller moved it).
  void set_share(const std::string& replica, double share);
  /// Plans with the placement planner from now on (see above).
  void use_planner(placement_fn planner) { planner_ = std::move(planner); }
  [[nodiscard]] bool has_planner() const { return static_cast<bool>(planner_); }
  /// A load report: the replica's arrivals so far (a count that only
  /// grows; a smaller one starts it over, as after a restart), residency
  /// ("ready", "sleeping", "loading", "unloading") and queue.
  void observe(const std::string& replica, uint64_t arrived, const std::string& residency, int32_t waiting,
               int32_t running, double now_s);

  /// The moves worth making now (see above); books nothing.
  [[nodiscard]] replan_plan plan() const;

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
    double share = 0;          ///< its planned job's share now (see add_replica)
    double last_s = -1;        ///< when it was seen; -1: never
    [[nodiscard]] bool awake() const { return residency != "sleeping"; }
    [[nodiscard]] bool idle() const { return waiting == 0 && running == 0 && residency == "ready"; }
  };
  [[nodiscard]] const std::map<std::string, replica_view>& replicas() const { return replicas_; }
  [[nodiscard]] const std::map<std::string, int64_t>& units() const { return caps_; }

private:
  replan_options opts_;
  placement_fn planner_;
  std::map<std::string, int64_t> caps_;
  std::map<std::string, replica_view> replicas_;
};

}  // namespace llmux::controller
