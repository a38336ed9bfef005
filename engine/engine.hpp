#pragma once
/// The engine interface: one call runs one step of a batch that mixes prefill
/// chunks and decode tokens of many sequences (continuous batching).
///
/// An engine belongs to one gpu_unit and is called from one thread at a time
/// per job: with split jobs, a prefill step and a decode step of the same
/// engine may run at once on two threads, always over disjoint sequences.
/// Backends: `sim` (here), `cpu` and `cuda` (later issues).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer.hpp"

namespace llmux::engine {

/// Which of a model's jobs a step belongs to. `mixed`: one step feeds
/// decodes and prefill chunks together (chunked prefill). A unit with split
/// jobs runs each model's `prefill` steps (prompt chunks, recomputes) and
/// `decode` steps (one token per running sequence) as two jobs, each in its
/// own partition, at the same time. Values travel on the wire: append only.
enum class job_kind : uint8_t { mixed = 0, prefill = 1, decode = 2 };

[[nodiscard]] inline const char* job_name(job_kind j) {
  return j == job_kind::prefill ? "prefill" : j == job_kind::decode ? "decode" : "mixed";
}

/// One sequence's slice of a step.
struct seq_work {
  uint64_t seq_id = 0;
  std::vector<token_id> tokens;  ///< fed this step: a prefill chunk, or the last sampled token
  int32_t context_len = 0;       ///< tokens already in the KV cache before this step
  int32_t prompt_len = 0;        ///< length of the prompt (for the sim's output length)
  bool sample = false;           ///< produce a token after this step (last chunk or decode)
  uint64_t seed = 0;             ///< per-request seed
  float temperature = 1.0f;      ///< <= 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;             ///< 0: off
  float min_p = 0.0f;            ///< 0: off
  float presence_penalty = 0.0f;   ///< OpenAI: − p for each token already in the output
  float frequency_penalty = 0.0f;  ///< OpenAI: − f × its count in the output
  float repetition_penalty = 1.0f; ///< CTRL-style, over prompt and output; 1: off
  std::vector<int32_t> bias_tokens;  ///< logit_bias
  std::vector<float> bias_values;
  int32_t logprobs = -1;  ///< -1: none; k >= 0: the sampled token's log-prob and the top k
  /// Structured outputs: the GBNF every sampled token of this sequence must
  /// follow. Sent on a sequence's first step only (the engine keeps the
  /// matcher; `constrained` says so on the later ones), with the output
  /// tokens it already has that this engine will not sample itself (after a
  /// preemption or a migration) in `grammar_prefix`.
  std::string grammar;
  std::vector<token_id> grammar_prefix;
  bool constrained = false;
  /// Engines that keep KV in the unit's shared blocks: physical block ids
  /// appended to the sequence's table before this step (token-block-major,
  /// then layer, then KV head), as the unit's kv_manager granted them. A
  /// sequence's first step carries its whole table, cached prefix included.
  std::vector<int32_t> kv_blocks;
};

/// Log-probabilities (natural log, of the model's raw distribution) at one
/// sampled position.
struct token_logprobs {
  float logprob = 0;                 ///< of the sampled token
  std::vector<int32_t> top_ids;      ///< most likely tokens, best first
  std::vector<float> top_logprobs;
};

struct step_input {
  std::vector<seq_work> seqs;
  std::vector<uint64_t> released;  ///< sequences that ended since the last step: free their KV
  job_kind job = job_kind::mixed;  ///< the partition it runs in
};

struct step_output {
  std::vector<token_id> tokens;  ///< one per seq, -1 where `sample` was false
  /// One per seq when any asked for log-probs (empty entries for the others);
  /// empty otherwise.
  std::vector<token_logprobs> logprobs;
  double seconds = 0;            ///< modelled (sim) or measured step time
};

class engine {
public:
  virtual ~engine() = default;
  [[nodiscard]] virtual step_output step(const step_input& in) = 0;
  /// Changes the compute share the engine runs on, between steps.
  virtual void set_share(double share) = 0;
  /// Changes the share of one job (split jobs), between that job's steps.
  /// `mixed` is `set_share`.
  virtual void set_job_share(job_kind job, double share) {
    (void)job;
    set_share(share);
  }
  /// The same with where the job's partition starts: the unit lays its jobs
  /// out back to back, `offset` and `share` being fractions of the unit.
  /// Backends whose partitions are places (SM ranges of a GPU) use it;
  /// others need only the share.
  virtual void set_job_partition(job_kind job, double offset, double share) {
    (void)offset;
    set_job_share(job, share);
  }
  /// Whether two of its jobs' steps (split jobs) compute at the same time;
  /// false for engines that take one step at a time (the unit then counts
  /// a step as running only once the engine has it).
  [[nodiscard]] virtual bool steps_at_once() const { return true; }
  [[nodiscard]] virtual std::string backend() const = 0;
  [[nodiscard]] virtual const tokenizer& vocab() const = 0;
};

}  // namespace llmux::engine
