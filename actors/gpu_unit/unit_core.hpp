#pragma once
/// The engines of one unit and their compute shares — the pure core of the
/// gpu_unit actor.
///
/// Each co-located model runs on its own partition of the unit (SM share on
/// a GPU, worker threads on CPU); a share change applies between steps.
/// For the sim backend, a step's modelled time (× time_scale) is how long the
/// actor holds the reply; real engines spend the time computing.
///
/// Threads: the sim's steps and every share change run on the owning actor.
/// A real engine's steps run on its partition's own thread (a partition
/// actor per model), so models step at the same time: `step` touches only
/// that model's slot, whose counters are atomics, and the map never changes
/// after setup. No lock, except around the steps of an engine that takes
/// one at a time anyway (so the counts stay true).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.hpp"

namespace llmux::unit {

class unit_core {
public:
  explicit unit_core(double time_scale) : time_scale_(time_scale) {}

  /// `decode_share` > 0: the model runs split jobs, its prefill job on
  /// `share` and its decode job on `decode_share`; otherwise one mixed job.
  /// With a shared prefill lane, `share` is ignored: the prefill job runs on
  /// the lane.
  /// `make` builds the engine again after the model slept (empty: it
  /// cannot sleep); `e` may be null when the model starts asleep, then
  /// `backend` names what `make` builds.
  using engine_maker = std::function<std::unique_ptr<engine::engine>()>;
  void add_model(const std::string& model, std::unique_ptr<engine::engine> e, double share,
                 double decode_share = 0, engine_maker make = {}, const std::string& backend = {});

  /// Sleep and wake: drops the model's engine (its device memory, buffers,
  /// threads and the weights' mapping; the KV blocks are the kv_manager's),
  /// or builds it again on the job partitions the unit's books give it.
  /// The caller makes sure no step of the model runs meanwhile (its
  /// scheduler agreed to sleep and sends none until it is awake). `load`
  /// throws what the engine's maker throws.
  void unload(const std::string& model);
  void load(const std::string& model);
  [[nodiscard]] bool loaded(const std::string& model) const;
  /// Before any model: the models' prefill jobs take turns on one lane of
  /// `share` at the start of the unit (the owner runs one prefill step at a
  /// time there); decode jobs are laid out after it. The lane counts once in
  /// the unit's books; only decode shares move (a MODEL target's share is
  /// the lane plus its decode job's, as the model's config share is).
  void set_prefill_lane(double share) { lane_ = share; }
  /// Shares are caps that may sum above 1 (CUDA MPS, simulated): the books
  /// stop checking the sum.
  void set_oversubscribed(bool on) { oversubscribed_ = on; }
  [[nodiscard]] double prefill_lane() const { return lane_; }

  /// Runs one step; throws std::out_of_range for a model not on this unit.
  [[nodiscard]] engine::step_output step(const std::string& model, const engine::step_input& in);

  /// How long to hold the reply of a step that took `out.seconds`: the
  /// modelled time for sim, zero for real engines (they already spent it).
  [[nodiscard]] double hold_seconds(const std::string& model, const engine::step_output& out) const;

  /// What a share move gives each job it touches.
  struct share_change {
    std::string model;
    std::vector<std::pair<engine::job_kind, double>> jobs;
    /// Every job whose partition moved: the moved model's jobs, and the
    /// jobs laid out after them (their offsets shift).
    struct placed {
      std::string model;
      engine::job_kind job;
      double offset;
      double share;
    };
    std::vector<placed> places;
  };
  /// Moves a job to a partition of `share` (0, 1]. `target` is a model
  /// (its whole share: a split model's two jobs keep their proportion) or
  /// one job of a split model, "MODEL/prefill" or "MODEL/decode". Returns an
  /// error text when the target is unknown, the share out of range, or the
  /// unit's shares (every job's) would sum above 1.
  [[nodiscard]] std::optional<std::string> set_share(const std::string& target, double share);
  /// The same in two halves, for a model whose engine runs on partition
  /// threads: `take_share` checks and records the new shares (the unit's
  /// books) and says which jobs change; each job's partition then calls
  /// `engine.set_job_share` between its steps.
  [[nodiscard]] std::optional<std::string> take_share(const std::string& target, double share,
                                                      share_change* change = nullptr);
  [[nodiscard]] engine::engine& engine_of(const std::string& model);
  /// Moves a job of the model's engine to its partition, if it has an
  /// engine now (a sleeping one gets its partitions when it loads).
  void place_job(const std::string& model, engine::job_kind job, double offset, double share);
  /// Where a job's partition starts, as a fraction of the unit: the unit's
  /// jobs are laid out back to back, models in name order, each model's
  /// prefill (or mixed) job before its decode job.
  [[nodiscard]] double offset_of(const std::string& model, engine::job_kind job) const;
  /// Sim: `n` steps of `model` are in flight at once (their replies held).
  void note_running(const std::string& model, int n);

  struct model_slot {
    std::unique_ptr<engine::engine> engine;  ///< null while the model sleeps
    engine_maker make;
    std::string backend;
    /// Held while the engine is swapped (load, unload) and while a share
    /// move reaches it, which may come from another partition's thread.
    std::unique_ptr<std::mutex> engine_mu = std::make_unique<std::mutex>();
    bool split = false;                 ///< prefill and decode jobs (else one mixed job)
    std::atomic<double> share{1.0};     ///< the mixed job's, or the prefill job's
    std::atomic<double> decode_share{0};  ///< split: the decode job's
    std::atomic<uint64_t> decode_steps{0};  ///< split: steps of the decode job
    std::atomic<uint64_t> decode_busy_ns{0};
    [[nodiscard]] double total_share() const { return share.load() + decode_share.load(); }
    std::atomic<int> running{0};      ///< this model's steps feeding tokens now (real engines)
    std::atomic<int> running_max{0};  ///< the most at once: 2 when its jobs overlapped
    std::atomic<uint64_t> steps{0};
    std::atomic<uint64_t> tokens_in{0};    ///< tokens fed (prefill + decode)
    std::atomic<uint64_t> busy_ns{0};      ///< modelled or measured step time, summed
    std::atomic<uint64_t> share_moves{0};
    /// Engines that take one step at a time (`steps_at_once` false): the
    /// unit takes this before counting a step as running, so running_max
    /// says what computed at once, not what waited at the engine's door.
    std::unique_ptr<std::mutex> one_at_a_time;
    [[nodiscard]] double busy_seconds() const { return static_cast<double>(busy_ns.load()) * 1e-9; }
  };

  [[nodiscard]] const std::map<std::string, model_slot>& models() const { return models_; }
  [[nodiscard]] uint64_t total_steps() const;
  [[nodiscard]] double time_scale() const { return time_scale_; }

private:
  /// Recomputes every job's offset; returns the jobs whose offset changed.
  std::vector<share_change::placed> relayout();

  double time_scale_;
  double lane_ = 0;  ///< shared prefill lane's share; 0: none
  bool oversubscribed_ = false;
  std::map<std::string, model_slot> models_;
  std::map<std::pair<std::string, engine::job_kind>, double> offsets_;
};

}  // namespace llmux::unit
