#pragma once
/// When a unit of k devices should run its model as one replica across all
/// k, and when as k replicas of one device each — the pure core of the
/// controller's layout switching (ScaleLLM's balancer, built).
///
/// One replica on the whole unit takes every request in one batch: a step
/// of c sequences on all k devices. k replicas take c/k each: a step of c/k
/// sequences on one device. At low concurrency the whole unit is faster per
/// step (more compute for a step bound by reading the weights once); at
/// high concurrency the small replicas are (a step of c/k on one device
/// costs less than a step of c on k, once parallelism stops scaling). The
/// concurrency where the two step times cross, found from the cost model
/// (`crossover`), is where the layout should switch, with hysteresis
/// around it and a cooldown between switches, so noise cannot make it
/// flap. The caller measures concurrency (waiting + running requests over
/// the unit's replicas) and carries out each move; this core only decides.
///
/// Single-threaded: the owning actor calls everything.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace llmux::controller {

enum class layout_kind { single, replicas };

[[nodiscard]] const char* to_string(layout_kind k);
[[nodiscard]] std::optional<layout_kind> parse_layout(const std::string& name);

/// A decode step's seconds for `batch` sequences on `share` of the unit.
using step_time_fn = std::function<double(double batch, double share)>;

/// The smallest concurrency c in [1, max_c] from which k replicas (a step
/// of c/k sequences on share 1/k each) step at least `margin` faster than
/// one replica (a step of c on share 1) at every concurrency up to 2c (or
/// max_c); 0 when there is none. The margin and the 2c window keep noise in
/// a measured profile (one point out of line) from placing the switch where
/// the two layouts are equal or cross back.
[[nodiscard]] double crossover(const step_time_fn& step, int k, int max_c = 4096, double margin = 0.02);

struct layout_unit_options {
  int k = 2;                ///< devices (cpu: threads) of the unit
  double switch_at = 0;     ///< concurrency of the crossover; 0: never switch automatically
  double hysteresis = 0.25; ///< replicas above switch_at·(1+h), single below switch_at·(1−h)
  double cooldown_s = 5;    ///< between switches
  double smoothing = 0.3;   ///< weight of the newest concurrency in its moving average
  bool automatic = true;    ///< decide() moves it (layout "dynamic"); else only forced
};

struct layout_move {
  std::string unit;
  layout_kind to = layout_kind::single;
  double concurrency = 0;  ///< the smoothed concurrency that decided it
};

class layout_policy {
public:
  struct unit_state {
    layout_unit_options opts;
    layout_kind layout = layout_kind::single;
    bool switching = false;
    double concurrency = 0;  ///< smoothed
    std::map<std::string, double> per_replica;  ///< latest waiting + running of each
    double last_switch_s = -1e18;
    double switch_started_s = 0;
    double switching_s = 0;  ///< total time spent switching
    uint64_t switches = 0;
    uint64_t failed = 0;
  };

  void add_unit(const std::string& unit, layout_unit_options opts, layout_kind initial);
  /// One replica's waiting + running requests, from its load report.
  void observe(const std::string& unit, const std::string& replica, double load);
  /// Smooths each unit's concurrency and returns the switches due now
  /// (automatic units, outside their cooldown, not already switching).
  [[nodiscard]] std::vector<layout_move> decide(double now);
  /// A switch began (decided or forced); false if one is in progress.
  bool begin(const std::string& unit, double now);
  /// It ended: on success the unit is laid out as `to`.
  void end(const std::string& unit, layout_kind to, bool ok, double now);

  [[nodiscard]] const std::map<std::string, unit_state>& units() const { return units_; }
  [[nodiscard]] const unit_state* find(const std::string& unit) const;

private:
  std::map<std::string, unit_state> units_;
};

}  // namespace llmux::controller
