#pragma once
/// Which of a unit's models are in memory — the pure core of sleep and wake.
///
/// A model is `ready` (its engine built: weights on the device, or mapped
/// and paged in on CPU), `sleeping` (no engine, no KV; its weights kept in
/// host memory or the page cache, so a wake is a copy, not a file read),
/// or on its way between the two (`loading`, `unloading`). The unit's
/// `memory_mib` caps the weights of the models not asleep; waking a model
/// that does not fit puts the least recently used ready models to sleep
/// first (only as many as it takes: one that the others already make room
/// without stays awake) — each only if its scheduler agrees (it has nothing queued or
/// running), so nothing in flight is lost. The gpu_unit actor drives this
/// (and `llmux simulate` will), asking the victims in the planned order.
///
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace llmux::unit {

enum class residency_state : int { ready = 0, loading = 1, sleeping = 2, unloading = 3 };
[[nodiscard]] const char* to_string(residency_state s);

class residency {
public:
  /// `cap_bytes`: the unit's memory for weights; 0: no limit.
  explicit residency(int64_t cap_bytes = 0) : cap_(cap_bytes) {}

  /// Registers a model of `bytes` of weights. `awake` models start ready
  /// while they fit under the cap (in the order added); the rest start
  /// asleep. Returns its starting state.
  residency_state add(const std::string& model, int64_t bytes, bool awake);

  /// What waking `model` takes now.
  struct wake_plan {
    enum kind_t {
      ready,     ///< awake already
      busy,      ///< loading or unloading: wait for that to end
      fits,      ///< load it now
      evict,     ///< put `victims` to sleep first (in order, least recently used first)
      no_room,   ///< the ready models that could sleep would not free enough (`why`)
      too_big,   ///< larger than the whole cap (`why`)
    } kind = ready;
    std::vector<std::string> victims;
    std::string why;
  };
  /// `exclude`: ready models that refused to sleep just now (busy).
  [[nodiscard]] wake_plan plan_wake(const std::string& model, const std::set<std::string>& exclude = {}) const;

  void set_state(const std::string& model, residency_state s);
  /// A step of `model` ran at `now` (seconds on any monotonic clock).
  void touch(const std::string& model, double now);
  /// A wake finished, taking `seconds`.
  void woke(const std::string& model, double seconds);
  void slept(const std::string& model);

  struct entry {
    int64_t bytes = 0;
    residency_state state = residency_state::ready;
    double last_used = 0;
    uint64_t order = 0;  ///< when added: the tie-break of equal last_used
    uint64_t wakes = 0;
    uint64_t sleeps = 0;
    double wake_seconds_total = 0;
    double wake_seconds_max = 0;
    double last_wake_seconds = 0;
  };
  [[nodiscard]] residency_state state(const std::string& model) const { return models_.at(model).state; }
  [[nodiscard]] const std::map<std::string, entry>& models() const { return models_; }
  [[nodiscard]] bool has(const std::string& model) const { return models_.count(model) > 0; }
  /// Weights of the models not asleep (loading and unloading ones count:
  /// their memory is taken until the unload ends).
  [[nodiscard]] int64_t bytes_awake() const;
  [[nodiscard]] int64_t cap() const { return cap_; }

private:
  int64_t cap_;
  uint64_t next_order_ = 0;
  std::map<std::string, entry> models_;
};

}  // namespace llmux::unit
