#pragma once
/// Replica choice — the pure core of the router actor, and of the cluster
/// simulator's router (one decision code, two drivers).
///
/// The router knows each replica's last load report (waiting + running
/// requests, their outstanding tokens, the prompt tokens still to prefill,
/// the measured prefill rate) and counts what it sent there since, so a
/// burst between two reports spreads across replicas instead of piling onto
/// the one that looked idle. Policies, chosen per model:
///
/// - `least_loaded`: fewest requests (waiting + running + sent since).
/// - `round_robin`: in rotation.
/// - `power_of_two`: two distinct live replicas drawn at random, the less
///   loaded of them (Mitzenmacher): near least-loaded balance without
///   every router herding onto one replica between reports.
/// - `least_tokens`: fewest outstanding tokens — prompt + max_tokens of
///   what waits, the prompt still to prefill and the tokens still to
///   generate of what runs — so one 4k-token prompt weighs more than ten
///   short chats.
/// - `prefix_aware`: where the prompt's leading KV blocks are cached. The
///   router keeps, per replica, the block hashes (the KV manager's chain
///   hash over `block_tokens`-token blocks) of the prompts it sent there,
///   LRU-bounded to `prefix_cache_blocks`; a replica's copy is an estimate
///   (the unit may have evicted them). Only replicas within the affinity
///   cap (below) compete on matched blocks, so a hot prefix spills onto
///   more replicas as its first one fills; no match: least_tokens.
/// - `session`: a request naming a session (the `X-Session-ID` header or
///   the OpenAI `user` field) goes where its session went before, while
///   that replica is live and within the affinity cap; otherwise (and for
///   a new session) the least_tokens replica, which the session then
///   follows. Sessions are LRU-bounded to `max_sessions`.
/// - `slo_aware`: predicted TTFT of each replica = (prompt tokens queued
///   to prefill there + this prompt) / its prefill rate (measured by its
///   scheduler; before the first measurement the cost model's); the
///   lowest wins. When the request carries a TTFT budget and no replica is
///   predicted to meet it, nothing is picked: the router answers 429 at
///   once instead of queueing a request that will miss its deadline.
///
/// Sleeping replicas: while any live replica of the model is awake, the
/// policy chooses among the awake ones only (a sleeping one would make the
/// request wait for a wake); when all sleep, among all, and the request
/// wakes the one chosen.
///
/// Affinity cap: a replica is "full" for an affinity choice when its load
/// exceeds the least loaded live replica's by more than `affinity_slack`
/// requests and by more than `affinity_ratio` times (both, as SGLang's
/// cache-aware router's balance thresholds).
///
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace llmux::router {

enum class policy_kind { least_loaded, round_robin, power_of_two, least_tokens, prefix_aware, session, slo_aware };

[[nodiscard]] std::optional<policy_kind> parse_policy(const std::string& name);
[[nodiscard]] const char* to_string(policy_kind kind);
/// Every policy name, for config validation and help texts.
[[nodiscard]] std::vector<std::string> policy_names();

struct routing_options {
  policy_kind policy = policy_kind::least_loaded;    ///< models without their own
  std::map<std::string, policy_kind> model_policy;   ///< per model
  int block_tokens = 16;             ///< prefix hashing granularity: the units' block size
  size_t prefix_cache_blocks = 1 << 16;  ///< block hashes remembered per replica
  int affinity_slack = 16;           ///< see "Affinity cap"
  double affinity_ratio = 1.5;
  size_t max_sessions = 100000;
  uint64_t seed = 1;                 ///< power_of_two's draws
};

/// What a policy may look at of one request.
struct route_request {
  std::string model;
  const std::vector<int32_t>* prompt = nullptr;  ///< prefix_aware hashes it; may be null
  int32_t prompt_tokens = 0;  ///< when `prompt` is null
  int32_t max_tokens = 0;
  std::string session;        ///< empty: none
  double ttft_budget_ms = 0;  ///< slo_aware: 0 = no deadline
};

struct route_choice {
  std::optional<std::string> replica;  ///< none: no live replica, or over_deadline
  /// slo_aware: every live replica's predicted TTFT exceeds the budget.
  bool over_deadline = false;
  double predicted_ttft_ms = -1;  ///< slo_aware; -1 when no rate is known
  int32_t prefix_blocks = 0;      ///< prefix_aware: blocks matched where it goes
  bool affinity = false;          ///< a session/prefix target was honoured
  int64_t tokens = 0;             ///< what it counted against the replica (for refused)
  int64_t prefill = 0;
};

struct replica_load {
  std::string replica;  ///< "<unit>/<model>"
  std::string model;
  std::string node;
  bool up = true;
  /// New requests may go here (false: parked or draining while its unit
  /// changes layout; it still finishes what it has).
  bool routable = true;
  int32_t waiting = 0;         ///< from the last load report
  int32_t running = 0;         ///< from the last load report
  int32_t sent_since_report = 0;
  int64_t outstanding_tokens = 0;   ///< from the last load report
  int64_t queued_prefill = 0;       ///< prompt tokens still to prefill, last report
  int64_t tokens_since_report = 0;  ///< outstanding tokens of what was sent since
  int64_t prefill_since_report = 0;
  double prefill_tok_s = 0;         ///< measured (reports), else the cost model's
  double model_prefill_tok_s = 0;   ///< the cost model's, from replica_up
  double tokens_per_s = 0;
  uint64_t dispatched = 0;     ///< total requests sent there
  uint64_t affinity_hits = 0;  ///< sent there because its session/prefix was there
  uint64_t prefix_blocks_matched = 0;
  /// Its model's residency: "ready" or "draining" (awake), or "sleeping",
  /// "loading" (waking), "unloading": a request there then waits for a
  /// wake, so awake replicas of the model are preferred.
  std::string residency = "ready";
  [[nodiscard]] bool asleep() const {
    return residency == "sleeping" || residency == "loading" || residency == "unloading";
  }
  [[nodiscard]] int64_t load() const { return int64_t{waiting} + running + sent_since_report; }
  [[nodiscard]] int64_t tokens() const { return outstanding_tokens + tokens_since_report; }
};

/// What a load report says of one replica.
struct load_sample {
  int32_t waiting = 0;
  int32_t running = 0;
  double tokens_per_s = 0;
  int64_t outstanding_tokens = 0;
  int64_t queued_prefill = 0;
  double prefill_tok_s = 0;  ///< 0: not measured yet
  std::string residency = "ready";  ///< its model's (sleep and wake)
};

class router_policy {
public:
  explicit router_policy(policy_kind kind) { opts_.policy = kind; }
  explicit router_policy(routing_options opts) : opts_(std::move(opts)) {}

  /// Adds a replica, or marks a known one up again (load reset; its prefix
  /// estimate dropped: a restarted unit's cache is empty).
  /// `prefill_tok_s`: the cost model's prefill rate (0: unknown).
  void replica_up(const std::string& replica, const std::string& model, const std::string& node,
                  double prefill_tok_s = 0);
  void replica_down(const std::string& replica);
  /// Whether new requests may go to `replica`; false when it is unknown.
  bool set_routable(const std::string& replica, bool routable);
  /// Marks every replica of `node` down; returns how many changed.
  int node_down(const std::string& node);
  void report(const std::string& replica, int32_t waiting, int32_t running, double tokens_per_s);
  void report(const std::string& replica, const load_sample& s);

  /// Picks a live replica of the request's model, not one of `exclude`
  /// (those that already refused this request), by the model's policy, and
  /// counts the dispatch.
  [[nodiscard]] route_choice choose(const route_request& req,
                                    const std::vector<std::string>& exclude = {});
  /// `choose` of a bare request (no prompt, no session).
  [[nodiscard]] std::optional<std::string> pick(const std::string& model,
                                                const std::vector<std::string>& exclude = {});
  /// A dispatch that the replica refused (queue full): it is not counted
  /// against the replica's load.
  void refused(const std::string& replica, const route_choice& choice = {});

  [[nodiscard]] bool has_model(const std::string& model) const;
  [[nodiscard]] const std::map<std::string, replica_load>& replicas() const { return replicas_; }
  [[nodiscard]] policy_kind kind() const { return opts_.policy; }
  [[nodiscard]] policy_kind kind_of(const std::string& model) const;
  [[nodiscard]] const routing_options& options() const { return opts_; }
  [[nodiscard]] size_t sessions() const { return sessions_.size(); }
  /// Block hashes the router remembers for `replica`.
  [[nodiscard]] size_t prefix_entries(const std::string& replica) const;
  /// The chain hashes of `prompt`'s full blocks of `block_tokens`.
  [[nodiscard]] static std::vector<uint64_t> block_hashes(const std::vector<int32_t>& prompt,
                                                          int block_tokens);

private:
  struct prefix_index {
    std::list<uint64_t> lru;  ///< front: most recent
    std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where;
  };
  struct session_entry {
    std::string replica;
    std::list<std::string>::iterator lru;
  };

  [[nodiscard]] bool within_cap(const replica_load& r, int64_t min_load) const;
  [[nodiscard]] static replica_load* least_tokens(const std::vector<replica_load*>& live);
  [[nodiscard]] size_t matched_blocks(const std::string& replica, const std::vector<uint64_t>& hashes) const;
  void remember_prefix(const std::string& replica, const std::vector<uint64_t>& hashes);
  void bind_session(const std::string& session, const std::string& replica);
  [[nodiscard]] uint64_t next_random();

  routing_options opts_;
  std::map<std::string, replica_load> replicas_;
  std::map<std::string, uint64_t> rr_next_;  ///< per model
  std::unordered_map<std::string, prefix_index> prefixes_;  ///< per replica
  std::unordered_map<std::string, session_entry> sessions_;
  std::list<std::string> session_lru_;  ///< front: most recent
  uint64_t rng_ = 0;
};

}  // namespace llmux::router
