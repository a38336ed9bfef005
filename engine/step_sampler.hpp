#pragma once
/// The sampling half of an engine step, shared by the backends that compute
/// logits (cpu, cuda): each sequence's token history for penalties, and the
/// sampled token and log-probabilities of every row that samples.
///
/// Threads: a model's prefill and decode jobs may step at once over disjoint
/// sequences; the history map is locked, and an entry is used by the one
/// step feeding its sequence.

#include <mutex>
#include <unordered_map>

#include "engine/engine.hpp"
#include "engine/sampler.hpp"

namespace llmux::engine {

/// One token's logit processors in one row, for a sampler that applies
/// them elsewhere (the cuda engine's device sampler).
struct token_adjust {
  int32_t token = 0;
  bool seen = false;   ///< in prompt or output: the repetition penalty applies
  int32_t count = 0;   ///< times in the output: presence and frequency penalties
  float bias = 0.0f;   ///< the request's logit bias for it, summed
};

class step_sampler {
public:
  /// Forgets ended sequences.
  void release(const std::vector<uint64_t>& ids);
  /// Records what each penalised sequence feeds this step (its prompt, and
  /// its own sampled tokens coming back one step later).
  void feed(const step_input& in);
  /// Samples every row of `in` with `sample` set: `logits` holds n_vocab
  /// floats for each of them, in order. Fills out.tokens (-1 for the rest)
  /// and out.logprobs where asked.
  void sample(const step_input& in, const float* logits, int32_t n_vocab, step_output& out);

  /// The processors of `w`'s row, one entry per token (penalties from its
  /// history, as sample() applies them, and its logit bias), in `out`
  /// (cleared first).
  void processors(const seq_work& w, std::vector<token_adjust>& out);

private:
  std::unordered_map<uint64_t, token_history> history_;
  std::mutex mu_;
};

}  // namespace llmux::engine
