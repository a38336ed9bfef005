#pragma once
/// Continuous batching for one model replica — the pure core of the
/// scheduler actor (no CAF, no threads, no clock).
///
/// Why continuous batching: a decode step costs about as much for 1 sequence
/// as for 64 (it is bound by reading the weights), so throughput comes from
/// keeping many sequences in every step. Sequences therefore join and leave
/// the batch between steps, instead of a batch running until its longest
/// member finishes. Each step feeds every running sequence's last token
/// (decodes first) and fills the rest of the token budget with prefill
/// chunks, so a long prompt is split across steps and never stalls decodes.
///
/// KV memory (`kv_growth`), in token-blocks of `block_tokens`, granted by the
/// unit's kv_manager:
///  - on_demand (the default, as vLLM): a sequence is admitted with blocks
///    for its prompt plus one token, and grows one block at a time before
///    the step that needs it (`growth_candidates` / `apply_growth`). When
///    the pool or the model's quota refuses, the newest running sequence is
///    preempted by recompute: its blocks and engine KV are dropped, it waits
///    ahead of new requests, and on re-admission its prompt and every token
///    it generated are prefilled again, so its next sampled token is the one
///    it would have sampled (same KV, same position: greedy outputs do not
///    change). A preempted sequence that can no longer fit at all ends with
///    "length".
///  - reserve: admission takes blocks for prompt + max_tokens at once, so a
///    running sequence never runs out and nothing is preempted.
///
/// Split jobs (`split_jobs`): the model's prefill and decode run as two jobs
/// in two partitions of the unit, each with its own step in flight:
/// `next_step(job_kind::decode)` feeds every running sequence's last token,
/// `next_step(job_kind::prefill)` prompt chunks (and recomputes). A sequence
/// is in at most one step at a time: when its prefill step samples its first
/// token it moves to the decode job. KV growth, admission and preemption go
/// on while steps are in flight, among the sequences in none; a preempted
/// sequence is re-admitted only after the step that tells the engine to drop
/// its old KV has returned (the two jobs' steps are not ordered).
///
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/protocol/generation.hpp"
#include "engine/engine.hpp"

namespace llmux::scheduler {

/// How a sequence's KV blocks are obtained (see above).
enum class kv_growth { on_demand, reserve };

struct scheduler_options {
  kv_growth growth = kv_growth::on_demand;
  int max_running = 256;        ///< sequences admitted at once
  int max_batch_tokens = 4096;  ///< tokens fed per step (>= max_running for decodes)
  int max_waiting = 1024;       ///< queued requests before refusing (429)
  int block_tokens = 16;        ///< tokens per KV block
  int context_length = 4096;    ///< prompt + output limit, tokens
  engine::token_id eos_id = -1; ///< end-of-sequence token of the model
  /// Share KV prefixes through the unit's prefix cache: admission looks the
  /// prompt up (a hit skips that much prefill) and computed full blocks are
  /// committed. Only for engines that read KV from the unit's shared blocks.
  bool share_prefix = false;
  /// Prefill and decode as two jobs with a step each in flight (see above);
  /// otherwise one mixed step at a time.
  bool split_jobs = false;
};

enum class enqueue_status { accepted, queue_full, prompt_too_long, empty_prompt, duplicate_id };

/// A delta for the gateway behind `sink` (an index the actor maps to a handle).
struct routed_delta {
  uint32_t sink = 0;
  protocol::token_delta delta;
};

struct step_events {
  std::vector<routed_delta> deltas;
  int64_t freed_blocks = 0;        ///< token-blocks given back (informational)
  std::vector<uint64_t> closed;    ///< sequences whose tables go back: `kv_close`
  /// Sequences with newly computed full blocks, and their computed tokens:
  /// `kv_commit` (share_prefix only).
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> commits;
  int64_t new_tokens = 0;          ///< output tokens produced by this step
};

class batch_scheduler {
public:
  explicit batch_scheduler(scheduler_options opts);

  /// Queues a request. Never blocks; refuses when the queue is full or the
  /// prompt alone fills the context window.
  [[nodiscard]] enqueue_status enqueue(protocol::gen_request req, uint32_t sink);

  /// Drops a request wherever it is. A sequence inside the in-flight step is
  /// dropped when that step's result arrives. Returns token-blocks freed now.
  int64_t cancel(uint64_t id);
  /// Cancels every request that streams to `sink` (its gateway went away).
  /// Returns token-blocks freed now; the number of requests in `*n`, and the
  /// sequences whose tables must be closed now in `*closed`.
  int64_t cancel_sink(uint32_t sink, size_t* n = nullptr, std::vector<uint64_t>* closed = nullptr);

  /// Gives every sequence up (waiting, preempted, running): one delta each
  /// with finish "migrate" (no tokens: those already delivered stand), and
  /// its blocks back (`closed`, `freed_blocks`). A sequence inside the
  /// in-flight step is dropped when that step returns, its token unsent.
  [[nodiscard]] step_events migrate_all();
  /// The same for `n` sequences only, those that lose least by moving:
  /// waiting ones first (no KV yet, newest first), then running ones in
  /// reverse admission order (the least progress to recompute). For
  /// spreading a replica's load onto replicas that just joined.
  [[nodiscard]] step_events migrate_some(size_t n);

  /// Token-blocks each of the next waiting requests needs, in queue order
  /// (preempted sequences first), for as many as could be admitted (bounded
  /// by max_running). None after a preemption until a sequence ends (or none
  /// runs): the pool is short, and re-admitting would thrash.
  [[nodiscard]] std::vector<protocol::kv_need> admission_candidates() const;
  /// Moves the first `n` waiting requests to running (their blocks granted).
  void admit(size_t n);
  /// The same, with each one's cached prefix (tokens whose KV the unit's
  /// prefix cache already holds: their prefill is skipped).
  void admit(const std::vector<int32_t>& cached);
  /// The same from the kv_manager's grant: the first `granted`, with their
  /// cached prefixes and (engines reading the unit's blocks) their tables,
  /// which go to the engine with each sequence's next step.
  void admit(const protocol::kv_grant& grant);
  /// Ends the first waiting request (it can never get its blocks): a fresh
  /// one fails with `why` and status 400 (too large for this deployment, as
  /// a prompt over the context window); a preempted one, which has already
  /// streamed tokens, ends with "length".
  [[nodiscard]] routed_delta reject_first_waiting(const std::string& why);
  /// Ends the waiting (not yet admitted) request `id` with `why` as an
  /// error of HTTP `status`; nothing when it does not wait.
  [[nodiscard]] std::optional<routed_delta> reject_waiting(uint64_t id, const std::string& why, int32_t status);

  /// on_demand: the longer tables (one more block each) that running
  /// sequences need before the next step can feed them, oldest first. Empty when none do,
  /// in reserve mode, or while a step is in flight. Remembers whom it asked
  /// for, for `apply_growth`.
  [[nodiscard]] std::vector<protocol::kv_need> growth_candidates();
  /// The first `granted` of the last candidates got their block. For each
  /// one refused, the newest running sequence (perhaps the refused one
  /// itself) is preempted by recompute; its blocks are in `freed_blocks`.
  [[nodiscard]] step_events apply_growth(int32_t granted);
  /// The same from the kv_manager's grant (its new block ids, if any, go to
  /// the engine with each sequence's next step).
  [[nodiscard]] step_events apply_growth(const protocol::kv_grant& grant);

  /// True when a step can run (something admitted, no step in flight).
  [[nodiscard]] bool can_step() const { return can_step(engine::job_kind::mixed); }
  /// Split jobs: true when `job` has no step in flight and has work (for
  /// mixed: as above).
  [[nodiscard]] bool can_step(engine::job_kind job) const;
  /// Sequences that ended (finished, cancelled, failed) since the engine was
  /// last told: it frees their KV. `next_step` hands them over itself; an
  /// idle scheduler takes them with `take_released` and sends them alone.
  [[nodiscard]] bool has_released() const { return !released_.empty(); }
  [[nodiscard]] std::vector<uint64_t> take_released();
  /// Builds the next step and marks it in flight.
  [[nodiscard]] engine::step_input next_step() { return next_step(engine::job_kind::mixed); }
  /// Split jobs: the next step of `job`. One that feeds nothing but carries
  /// released sequences is still in flight until it returns.
  [[nodiscard]] engine::step_input next_step(engine::job_kind job);
  /// Applies the in-flight step's output: stop rules, deltas per sink.
  [[nodiscard]] step_events apply(const engine::step_output& out) {
    return apply(out, engine::job_kind::mixed);
  }
  [[nodiscard]] step_events apply(const engine::step_output& out, engine::job_kind job);
  /// The in-flight step failed (unit unreachable): every sequence in it ends
  /// with an error delta and its blocks are freed.
  [[nodiscard]] step_events fail_step(const std::string& why) {
    return fail_step(why, engine::job_kind::mixed);
  }
  [[nodiscard]] step_events fail_step(const std::string& why, engine::job_kind job);
  /// The in-flight step outlived its deadline, and the unit may still be
  /// computing it: every sequence in it ends now with an error delta (its
  /// client is not kept waiting), but the step stays in flight and the
  /// sequences keep their KV blocks, which the engine may still be writing,
  /// until the step's output arrives: `apply` then retires them as cancelled
  /// and frees the blocks. An engine that never answers keeps them.
  [[nodiscard]] step_events abandon_step(const std::string& why, engine::job_kind job);

  [[nodiscard]] size_t waiting() const { return waiting_.size() + preempted_.size(); }
  [[nodiscard]] size_t preempted_waiting() const { return preempted_.size(); }
  [[nodiscard]] uint64_t preemptions() const { return preemptions_; }
  [[nodiscard]] size_t running() const { return running_.size(); }
  /// Any step in flight (either job's).
  [[nodiscard]] bool step_in_flight() const { return in_flight_[0] || in_flight_[1]; }
  [[nodiscard]] bool step_in_flight(engine::job_kind job) const { return in_flight_[slot(job)]; }
  [[nodiscard]] uint64_t finished() const { return finished_; }
  [[nodiscard]] uint64_t generated_tokens() const { return generated_total_; }
  [[nodiscard]] uint64_t steps() const { return steps_; }
  [[nodiscard]] int64_t blocks_held() const { return blocks_held_; }
  /// Tokens still to process for everything queued and running: prompt
  /// (or recompute) tokens not yet fed plus max_tokens not yet generated.
  /// What `least_tokens` routing weighs.
  [[nodiscard]] int64_t outstanding_tokens() const;
  /// Prompt (or recompute) tokens not yet fed, queued and running: the
  /// prefill ahead of a new request (`slo_aware` routing).
  [[nodiscard]] int64_t queued_prefill_tokens() const;
  /// Prompt tokens fed per second by the steps that carried any
  /// (step_output's seconds), smoothed; 0 before the first such step.
  [[nodiscard]] double prefill_tokens_per_s() const { return prefill_tok_s_; }
  /// Prompt tokens of admitted requests, and how many of them came from the
  /// prefix cache (share_prefix): the prefix hit rate.
  [[nodiscard]] uint64_t admitted_prompt_tokens() const { return admitted_prompt_tokens_; }
  [[nodiscard]] uint64_t cached_prompt_tokens() const { return cached_prompt_tokens_; }
  [[nodiscard]] const scheduler_options& options() const { return opts_; }

private:
  struct sequence {
    protocol::gen_request req;
    uint32_t sink = 0;
    std::vector<engine::token_id> generated;
    int32_t computed = 0;  ///< tokens whose KV is in the cache
    int64_t blocks = 0;    ///< token-blocks reserved
    int64_t committed_blocks = 0;  ///< full blocks committed to the prefix cache
    std::vector<int32_t> new_blocks;  ///< granted block ids the engine has not been given
    bool cancelled = false;
    bool busy = false;  ///< in a step in flight
    bool grammar_sent = false;  ///< the engine has this admission's grammar matcher
  };
  struct planned {
    uint64_t id;
    int32_t fed;
    bool sample;
  };

  [[nodiscard]] int64_t blocks_for_tokens(int64_t tokens) const;
  /// Tokens `s` may not sample yet: EOS (unless ignored) and its stop
  /// tokens while fewer than min_tokens are out.
  [[nodiscard]] std::vector<int32_t> banned(const sequence& s) const;
  /// Structured outputs: the grammar (and the output the engine did not
  /// sample itself) on the first work of an admission, `constrained` on all.
  static void attach_grammar(engine::seq_work& w, sequence& s);
  [[nodiscard]] int64_t admission_blocks(const protocol::gen_request& r) const;
  [[nodiscard]] int32_t total_len(const sequence& s) const;
  /// Tokens the cache may hold for `s` (its blocks × block_tokens).
  [[nodiscard]] int64_t capacity(const sequence& s) const;
  void retire(uint64_t id, step_events& ev);
  void preempt(uint64_t id, step_events& ev);
  /// The plan slot of a job: 0 for mixed and prefill, 1 for decode.
  [[nodiscard]] static int slot(engine::job_kind job) { return job == engine::job_kind::decode ? 1 : 0; }
  /// Whether `s` has prompt (or recompute) tokens the next prefill can feed,
  /// or a decode token the next decode can.
  [[nodiscard]] bool prefill_ready(const sequence& s) const;
  [[nodiscard]] bool decode_ready(const sequence& s) const;
  /// Split jobs: whether the engine may still hold KV of an earlier life of `id`.
  [[nodiscard]] bool release_pending(uint64_t id) const;

  scheduler_options opts_;
  std::deque<std::pair<protocol::gen_request, uint32_t>> waiting_;
  std::unordered_map<uint64_t, sequence> running_;
  std::vector<uint64_t> order_;  ///< running ids in admission order (stable batches)
  std::vector<planned> plans_[2];  ///< the in-flight steps (slot 0: mixed/prefill, 1: decode)
  /// Split jobs: released ids each in-flight step carries to the engine.
  std::vector<uint64_t> releasing_[2];
  std::vector<uint64_t> released_;  ///< ended since the engine was last told
  std::deque<sequence> preempted_;  ///< wait for re-admission, oldest first
  std::vector<uint64_t> growth_ids_;  ///< whom the last growth_candidates asked for
  uint64_t preemptions_ = 0;
  bool hold_admission_ = false;  ///< preempted since a sequence last ended
  bool in_flight_[2] = {false, false};
  uint64_t finished_ = 0;
  uint64_t generated_total_ = 0;
  uint64_t admitted_prompt_tokens_ = 0;
  uint64_t cached_prompt_tokens_ = 0;
  double prefill_tok_s_ = 0;
  uint64_t steps_ = 0;
  int64_t blocks_held_ = 0;
};

}  // namespace llmux::scheduler
