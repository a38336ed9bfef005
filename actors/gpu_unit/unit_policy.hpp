#pragma once
/// How the models co-located on one unit share it over time and memory —
/// MuxServe's adaptive batch scheduling (ADBS) as a pure core: no CAF, no
/// threads, no clock (every time is passed in, in seconds, from any monotonic
/// origin the caller picks). Two parts, used by different owners:
///
/// - `unit_arbiter` decides which model's job runs next when the unit frees
///   up (the gpu_unit actor owns it; schedulers announce ready jobs).
/// - `quota_planner` splits the unit's KV block pool into per-model quotas
///   and moves quota between models every few seconds (the kv_manager actor
///   owns it and applies its output with `kv_block_pool::set_quota`).
///
/// Both are single-threaded: the owning actor calls everything. Neither
/// blocks or allocates beyond its small per-model tables.
///
/// Wiring: the kv_manager owns a `quota_planner` (unit `policy = "adbs"`);
/// a sim gpu_unit with `multiplex = "temporal"` orders steps with a
/// `unit_arbiter` of the unit's `policy`.
///
/// ## What MuxServe defines (Duan et al., ICML 2024, §3.3, Algorithm 2)
///
/// - Prefill and decode of each model are separate jobs. Prefill jobs go
///   first, round-robin over the unit's models; decode jobs, round-robin over
///   models, fill what the prefill leaves.
/// - A KV quota per model, initially proportional to its request rate times
///   its per-token KV size, so each model's share of memory matches its share
///   of the work.
/// - Periodically, quota moves from models with low KV utilisation to models
///   with high utilisation (requests waiting for blocks).
///
/// ## What we chose where the paper is silent
///
/// - Time, not space: one job (or one step) runs at a time per partition.
///   A scheduler announces its prefill job (prompt tokens to compute) and its
///   decode job separately; an adbs grant is one job. A scheduler that can
///   only build one mixed step (decodes + prompt chunk, as batch_scheduler
///   does today) may announce it as a prefill job; its decodes then ride on
///   prefill priority. In the fairness model below the split is no
///   consistent win for the cold model (better at 65% KV use with quotas,
///   worse at 85%).
/// - Prefill and decode keep separate round-robin cursors, as in Algorithm 2.
///   Prefill-first can starve decode jobs while prompts keep arriving;
///   `max_prefill_streak` (off by default, as in the paper) bounds how many
///   prefill grants run in a row while a decode job waits.
/// - fcfs and round_robin grant all of a model's ready jobs at once (one
///   mixed step), as a plain continuous-batching server would.
/// - A re-announced job replaces the previous announcement.
/// - Rates are measured online with an exponentially decaying counter
///   (`rate_estimator`, tau 10 s), starting at the config's expected rate.
/// - Each model keeps a floor (`floor_tokens`: at least one max-length
///   sequence, so it can always serve something); the rate-proportional
///   split applies above the floors (water-filling).
/// - "Low utilisation" is usage under `use_threshold` (90%) of the quota.
///   A lender keeps max(floor, ceil(usage / use_threshold)) — it is left at
///   most at the threshold, so it does not turn borrower next period — and a
///   borrower gets at most what its backlog lacks. Borrowers are served in
///   order of quota / rate-target (poorest first), lenders in the reverse.
/// - Without backlog anywhere, quotas drift back toward the rate-proportional
///   split of the measured rates: each period closes `retarget_step` (25%) of
///   every gap larger than `retarget_deadband` (2%) of the pool, lenders
///   bound as above. Otherwise a split shaped by an old burst would persist,
///   and a model whose rate grew would first have to build a backlog and
///   wait a period. Gradual steps keep rate noise from shuffling memory.
///
/// ## What the fairness model showed (tests/actors/unit_policy_test.cpp)
///
/// Two models at 10 and 1 req/s on one simulated unit, KV reserved for
/// prompt + output at admission:
/// - Arbitration (one shared pool): adbs and round_robin keep short cold
///   requests within 5× their time alone more often than fcfs, which lets
///   them wait behind long hot ones — 100% vs 87% at 65% KV use, 94% vs 84%
///   at 85%. Once the unit is overloaded fcfs does better (73% vs 59%).
/// - Quotas cost a low-rate model statistical multiplexing: its
///   rate-proportional share holds only a few requests, which its Poisson
///   bursts exceed. With floors of one sequence, at 85% KV use the cold
///   model meets its SLO for 32% of requests against 94% in a shared pool.
/// - Lending ratchets: what a model lends in a quiet period to a model that
///   stays above 90% (overloaded) never comes back, since only models under
///   90% lend and no quota drops below usage. When the hot model surged to
///   2.5× its rate, the cold one sat at its floor for the whole surge.
/// - Floors that hold a model's usual concurrency fix both: with floors of
///   four max-length sequences the cold model kept 92–98% within SLO in every
///   scenario, hot surge included, at the hot model's expense. So size
///   `floor_tokens` for a low-rate model's concurrency, not one sequence.
///
/// Units: quotas, usage, backlog and floors are physical blocks (one head of
/// one layer for `block_tokens` tokens, as in kv_block_pool); a model with L
/// layers and H KV heads takes L·H physical blocks per token-block. Rates are
/// requests per second. A quota that is not a multiple of L·H strands fewer
/// than L·H blocks of it; we accept that rather than round every move.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmux::unit {

// ---------------------------------------------------------------------------
// Step arbitration

enum class policy_kind { adbs, fcfs, round_robin };

/// "adbs", "fcfs" or "round_robin" (exact, lower case); nullopt otherwise.
[[nodiscard]] std::optional<policy_kind> parse_policy(const std::string& name);
[[nodiscard]] std::string_view policy_name(policy_kind kind);
/// The message for a name `parse_policy` refused, listing the known ones.
[[nodiscard]] std::string unknown_policy_text(const std::string& name);

/// What the unit runs next: one model's prefill job, its decode job, or both
/// in one step.
struct step_grant {
  std::string model;
  bool prefill = false;  ///< compute prompt chunks of its admitted sequences
  bool decode = false;   ///< one token for each sequence past its prompt
};

/// Which model's step goes next when the unit frees up. A model announces
/// up to two jobs: a prefill job (some admitted sequence still has prompt
/// tokens) and a decode job (some sequence is generating).
///
/// - adbs: prefill jobs first, round-robin over the models that have one;
///   then decode jobs, round-robin over models. A grant is one job.
/// - fcfs: the model whose oldest waiting work arrived first (ties: the
///   model added first); the grant covers all its ready jobs.
/// - round_robin: rotation over models with any ready job; the grant
///   covers all its ready jobs.
///
/// Models join the rotation in the order of `add_model` (or of their first
/// `ready`); each rotation resumes after the model it served last.
class unit_arbiter {
public:
  /// `max_prefill_streak` (adbs only): after this many prefill grants in a
  /// row, a waiting decode job goes next; 0 = never (MuxServe).
  explicit unit_arbiter(policy_kind kind, int max_prefill_streak = 0);

  /// Places `model` in the rotation (no-op if known).
  void add_model(const std::string& model);
  /// `model` has its prefill job (`prefill`) or its decode job ready;
  /// `oldest_arrival_s` is the arrival of the oldest request that job serves
  /// (fcfs orders by it). Replaces an earlier announcement of the same job.
  void ready(const std::string& model, bool prefill, double oldest_arrival_s);
  /// Drops both of `model`'s jobs (e.g. its requests were cancelled).
  void withdraw(const std::string& model);
  /// What runs now, the granted jobs' entries removed; nullopt when no job
  /// is ready.
  [[nodiscard]] std::optional<step_grant> next();

  struct job {
    bool ready = false;
    double oldest_arrival_s = 0;
    uint64_t granted = 0;  ///< grants so far, for metrics
  };
  struct model_slot {
    std::string name;
    job prefill;
    job decode;
  };

  /// In rotation order.
  [[nodiscard]] const std::vector<model_slot>& models() const { return slots_; }
  /// Jobs ready now (a model counts up to two).
  [[nodiscard]] size_t ready_count() const;
  [[nodiscard]] policy_kind kind() const { return kind_; }

private:
  /// Index of a model's slot, creating it at the end of the rotation.
  size_t slot_of(const std::string& model);
  /// The first slot after `cursor` in rotation order that `want` accepts;
  /// moves the cursor there.
  template <typename Pred>
  std::optional<size_t> rotate(size_t& cursor, Pred want);
  /// Grants slot `i` its prefill and/or decode job.
  step_grant grant(size_t i, bool prefill, bool decode);

  policy_kind kind_;
  int max_prefill_streak_;
  int prefill_streak_ = 0;
  std::vector<model_slot> slots_;
  std::map<std::string, size_t> index_;
  // Position of the model served last, per rotation; SIZE_MAX: none yet.
  size_t prefill_cursor_ = SIZE_MAX;
  size_t decode_cursor_ = SIZE_MAX;  ///< also round_robin's rotation
};

// ---------------------------------------------------------------------------
// KV quotas

/// Request rate measured online: an exponentially decaying counter. Each
/// arrival adds 1/tau; between arrivals the value decays as exp(-dt/tau).
/// For Poisson arrivals at rate λ its mean is λ and its standard deviation
/// sqrt(λ / (2·tau)) (a sliding window of 2·tau seconds has the same
/// noise); after a step change the old rate's weight decays as exp(-t/tau).
/// It starts at `initial_rate` when its clock starts.
class rate_estimator {
public:
  rate_estimator(double initial_rate, double tau_s);

  /// Starts the clock at `now_s` (no-op once started).
  void start(double now_s);
  /// Counts one arrival; starts the clock if needed. Times before the last
  /// one seen count as the last one.
  void on_arrival(double now_s);
  /// Estimated rate at `now_s` (req/s); `initial_rate` before the clock starts.
  [[nodiscard]] double rate(double now_s) const;

private:
  double tau_s_;
  double value_;    ///< rate at `last_s_`
  double last_s_ = 0;
  bool started_ = false;
};

struct quota_options {
  int block_tokens = 16;           ///< tokens per block (kv_block_pool's)
  double period_s = 5.0;           ///< seconds between rebalances
  double use_threshold = 0.9;      ///< below this usage / quota a model may lend
  double rate_tau_s = 10.0;        ///< rate_estimator time constant, seconds
  double retarget_step = 0.25;     ///< share of a gap to the rate split closed per period
  double retarget_deadband = 0.02; ///< gaps under this share of the pool stay
};

using block_map = std::map<std::string, int64_t>;  ///< model → physical blocks

/// A split of the pool, or why there is none.
struct quota_split {
  block_map quotas;
  std::string error;  ///< empty on success
  explicit operator bool() const { return error.empty(); }
};

enum class move_reason { backlog, rate_target };
[[nodiscard]] std::string_view reason_name(move_reason reason);

struct quota_move {
  std::string from;
  std::string to;
  int64_t blocks = 0;  ///< physical blocks
  move_reason reason = move_reason::backlog;
};

struct rebalance_result {
  block_map quotas;               ///< every model's new quota; same sum as before
  std::vector<quota_move> moves;  ///< in the order applied; empty: nothing moved
};

/// Per-model KV quotas for one unit's block pool.
class quota_planner {
public:
  explicit quota_planner(quota_options opts = {});

  /// Declares a model: `blocks_per_token_block` = layers × kv_heads;
  /// `expected_rate` (req/s, from the config) starts its rate estimate;
  /// `floor_tokens` = tokens it always keeps room for: at least its longest
  /// sequence (prompt + output, normally its context length), more for a
  /// low-rate model (see the fairness findings above). Returns an error text for a
  /// duplicate name, a non-positive block size, or a negative rate or floor.
  [[nodiscard]] std::optional<std::string> add_model(const std::string& name,
                                                     int64_t blocks_per_token_block,
                                                     double expected_rate, int64_t floor_tokens);
  /// Counts a request of `name` arriving at `now_s` (unknown names: ignored).
  void on_arrival(const std::string& name, double now_s);

  /// The split of `total_blocks` by expected rates: every model gets its
  /// floor, the rest is shared in proportion to rate × blocks_per_token_block
  /// (models whose share would fall below their floor stay at the floor).
  /// Largest remainders round it so the quotas sum to `total_blocks`. With
  /// every rate zero, the rest is shared by blocks_per_token_block alone.
  /// Fails when there are no models or the floors exceed the total.
  [[nodiscard]] quota_split initial_quotas(int64_t total_blocks) const;
  /// The same split by the rates measured at `now_s`.
  [[nodiscard]] quota_split target_quotas(int64_t total_blocks, double now_s) const;

  /// Moves quota, at most once per `period_s`; nullopt when called before
  /// the period elapsed (the period runs from the planner's first time seen,
  /// arrival or rebalance, then from the last run). Inputs in physical
  /// blocks; names missing from `usage` or `backlog` count as 0.
  ///  - `usage`: blocks each model holds. Pass the peak since the last
  ///    rebalance: an instant reading lends away what a bursty model needed.
  ///  - `backlog`: blocks its waiting requests need but could not get.
  ///  - `current`: every model's quota now (exactly the declared models,
  ///    else std::invalid_argument).
  /// With any backlog, only backlog moves happen; without, rate_target ones.
  /// No model ends below its floor or its usage; the sum never changes.
  [[nodiscard]] std::optional<rebalance_result> rebalance(double now_s, const block_map& usage,
                                                          const block_map& backlog,
                                                          const block_map& current);

  struct model_info {
    int64_t blocks_per_token_block = 0;
    double expected_rate = 0;
    int64_t floor_blocks = 0;  ///< floor_tokens in physical blocks
    rate_estimator rate;
    int64_t blocks_in = 0;     ///< moved to it, all rebalances
    int64_t blocks_out = 0;    ///< moved from it, all rebalances
  };

  [[nodiscard]] const std::map<std::string, model_info>& models() const { return models_; }
  /// Measured rate of `name` at `now_s`; 0 for an unknown name.
  [[nodiscard]] double rate(const std::string& name, double now_s) const;
  [[nodiscard]] uint64_t rebalances() const { return rebalances_; }
  [[nodiscard]] const quota_options& options() const { return opts_; }

private:
  /// Starts the clock (and every estimator) at the first time seen.
  void see_time(double now_s);
  [[nodiscard]] quota_split split(int64_t total_blocks,
                                  const std::map<std::string, double>& rates) const;

  quota_options opts_;
  std::map<std::string, model_info> models_;
  bool clock_started_ = false;
  double now_s_ = 0;
  double period_start_s_ = 0;
  uint64_t rebalances_ = 0;
};

}  // namespace llmux::unit
