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
///   The split uses a measured rate only where it differs from the expected
///   one by more than `rate_z` (2) standard deviations of the estimate: a
///   1 req/s estimate wanders ±22%, and a split by raw estimates moved
///   quota on that noise alone (see the ablation below).
/// - Each model keeps a floor (`floor_tokens`: at least one max-length
///   sequence, so it can always serve something); the rate-proportional
///   split applies above the floors (water-filling).
/// - "Low utilisation" is usage under `use_threshold` (90%) of the quota.
///   A lender keeps max(floor, ceil(usage / use_threshold)) — it is left at
///   most at the threshold, so it does not turn borrower next period — and a
///   borrower gets at most what its backlog lacks. Borrowers are served in
///   order of quota / rate-target (poorest first), lenders in the reverse.
///   Where the pool lends idle quota itself (`pool_lends_idle`; the
///   kv_manager under adbs), a lender also keeps its rate share: the backlog
///   borrows the rest from the pool and it comes back as the borrowed
///   sequences end, while a moved quota stayed with the borrower (the
///   ratchet below). Only quota above a lender's rate share moves.
/// - Without backlog anywhere, quotas drift back toward the rate-proportional
///   split of the measured rates (as above): each period closes
///   `retarget_step` (25%) of every gap larger than `retarget_deadband` (2%)
///   of the pool, lenders bound as above. Otherwise a split shaped by an old burst would persist,
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
/// (This model keeps quotas as caps, so backlog moves are its only lending;
/// the runtime's pool lends idle guarantees itself, with `pool_lends_idle`.)
///
/// ## What the ADBS ablation showed (issue 13, bench/muxserve/adbs_ablation.py)
///
/// MuxServe's pair — LLaMA-65B at 1 req/s (prompts ~778 tokens) beside
/// LLaMA-30B at 4/8/12 req/s (~128) — on one simulated 4-GPU A100 unit,
/// 120 s, SLO 5× the request's time alone, mean of 6 seeds; layouts
/// "temporal" (one step at a time) and "shared" (decode partitions, one
/// prefill lane). Before the changes below adbs trailed fcfs at 30B 8 req/s:
/// 3.67 vs 3.79 req/s temporal, 88.6% vs 93.7% of requests within SLO shared.
/// - Step order was not the cause: with two models the lane never holds two
///   steps when it frees (the model whose step ended submits its next one
///   after the next grant), so every policy alternates; adbs with the fcfs
///   arbiter gave identical results in both layouts.
/// - Quota refusals that preempted were: a waiting model's guarantee came
///   back by refusing borrowers' growth, each refusal a preemption by
///   recompute (temporal, 8 req/s: 1546 preemptions against fcfs's 1390).
///   kv_block_pool now holds borrowers' new sequences instead and lets their
///   running ones grow: 818 preemptions, 39.1% within SLO against 31.7%
///   (fcfs 30.8%). In the integration fairness test cold's p90 stays within
///   1.6× its time alone, though its sequences are preempted 4–6 times a
///   run instead of once: hot's running sequences now grow into cold's idle
///   guarantee, the slack cold's own admissions used to overcommit into.
/// - Backlog moves ratcheted: at 30B 4 req/s the 65B, backlogged while the
///   30B dipped, grew its quota by 42% and kept it (it never fell under 90%
///   again). With lenders keeping their rate share the 30B meets its SLO
///   for 95.5% (89.4% with the growth change alone, 85.9% before; fcfs
///   90.5%).
/// - A split by request length and time held (Little's law: the 65B's
///   sequences hold ~3× the tokens, so ×2–3 its rate share) did not pay:
///   at 8 req/s, shared, the 65B rose to 94–99% within SLO but the 30B fell
///   to 82–84% and all requests to 83–85% (90.0% at the rate split): the
///   30B, with 9 of 10 requests, has the least slack (under fcfs 15–23% of
///   its requests end within 2× their time alone, 48–64% of the 65B's).
///   Temporal aggregate req/s rose (4.03 vs 3.80 at ×3) as the 65B's tail
///   shortened. We keep rate × per-token KV.
/// - Left as is: shared at 8 req/s, 90.0% within SLO against fcfs's 93.7%
///   (6.05 vs 5.97 req/s). That is the price of guaranteeing the 65B its
///   rate share of a saturated pool: its attainment rises (81.5% vs 78.4%),
///   the 30B's admissions wait (TTFT p90 3–7 s vs 1.3–2.3 s). Smaller
///   guarantees never reached fcfs's trade-off (best 92.8% at half the rate
///   share), since one first-come pool multiplexes both models' bursts. And temporal
///   at 4 req/s: 3.03 vs 3.08 req/s, and the 65B, whose rate share (29%)
///   is less than its long sequences hold, at 72.6% vs 79.5% within SLO.
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

/// The steps waiting for a unit that runs one at a time (a temporally
/// multiplexed unit, or the shared prefill lane of a unit with
/// `prefill = "shared"`): one step per model at most (a scheduler has one
/// step of a job in flight), granted in the order of a `unit_arbiter` when
/// the lane frees up. Steps are opaque tickets: the owner (the gpu_unit
/// actor, or the cluster simulator) keeps what each stands for.
class step_queue {
public:
  step_queue(policy_kind kind, int max_prefill_streak);

  void add_model(const std::string& model) { arbiter_.add_model(model); }
  /// Queues `ticket`, `model`'s next step, a prefill job or not, arriving at
  /// `now_s`. Returns the ticket it replaces: a step of the same model still
  /// queued, which its scheduler has given up on (its request timed out).
  [[nodiscard]] std::optional<uint64_t> submit(const std::string& model, uint64_t ticket, bool prefill,
                                               double now_s);

  struct grant {
    std::string model;
    uint64_t ticket = 0;
    bool prefill = false;
    uint64_t waited = 0;  ///< grants to other steps between its arrival and its own
  };
  /// While the lane is free: the step to run now, and the lane is busy until
  /// `finish`. nullopt when the lane is busy or nothing waits.
  [[nodiscard]] std::optional<grant> start_next();
  /// The running step ended (or was answered at once): the lane is free.
  void finish() { running_ = false; }

  [[nodiscard]] bool running() const { return running_; }
  [[nodiscard]] size_t queued() const { return queued_.size(); }
  [[nodiscard]] uint64_t grants() const { return grants_; }
  [[nodiscard]] const unit_arbiter& arbiter() const { return arbiter_; }
  /// Per model: the most grants its prefill (first) and decode (second)
  /// steps waited behind, from arrival to their own grant.
  [[nodiscard]] const std::map<std::string, std::pair<uint64_t, uint64_t>>& waited_max() const {
    return waited_max_;
  }
  /// The last grants, newest last (at most 32).
  [[nodiscard]] const std::vector<grant>& recent() const { return recent_; }

private:
  struct entry {
    uint64_t ticket = 0;
    bool prefill = false;
    uint64_t grants_at_ready = 0;
  };
  unit_arbiter arbiter_;
  std::map<std::string, entry> queued_;
  bool running_ = false;
  uint64_t grants_ = 0;
  std::map<std::string, std::pair<uint64_t, uint64_t>> waited_max_;
  std::vector<grant> recent_;
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
  /// The split trusts a measured rate over the expected one only when they
  /// differ by more than this many standard deviations of the estimate
  /// (sqrt(rate / (2·rate_tau_s))); 0: always the measured rate.
  double rate_z = 2.0;
  /// The pool lends idle quota itself (kv_block_pool borrowing with
  /// lend_idle), so a backlog move never takes a lender below its share of
  /// the rate split: only quota above it moves.
  bool pool_lends_idle = false;
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
