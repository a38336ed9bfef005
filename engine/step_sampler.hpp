#pragma once
/// The sampling half of an engine step, shared by the backends that compute
/// logits (cpu, cuda): each sequence's token history for penalties, and the
/// sampled token and log-probabilities of every row that samples.
///
/// Threads: a model's prefill and decode jobs may step at once over disjoint
/// sequences; the history map is locked, and an entry is used by the one
/// step feeding its sequence.

#include <memory>
#include <mutex>
#include <unordered_map>

#include "engine/engine.hpp"
#include "engine/grammar.hpp"
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
  /// The vocabulary structured outputs are matched against (its token
  /// bytes and EOS); without it a grammar is ignored. The token trie is
  /// built on the first constrained sequence.
  void set_vocab(std::shared_ptr<const tokenizer> tok);

  /// Forgets ended sequences.
  void release(const std::vector<uint64_t>& ids);
  /// Records what each penalised sequence feeds this step (its prompt, and
  /// its own sampled tokens coming back one step later), and starts the
  /// grammar matcher of a constrained sequence's first step.
  void feed(const step_input& in);
  /// Samples every row of `in` with `sample` set: `logits` holds n_vocab
  /// floats for each of them, in order. Fills out.tokens (-1 for the rest)
  /// and out.logprobs where asked. A constrained row samples among the
  /// tokens its grammar allows (EOS once the grammar is complete), and its
  /// matcher advances over the token.
  void sample(const step_input& in, const float* logits, int32_t n_vocab, step_output& out);

  /// The processors of `w`'s row, one entry per token (penalties from its
  /// history, as sample() applies them, its logit bias, and -inf for every
  /// token its grammar does not allow), in `out` (cleared first).
  void processors(const seq_work& w, std::vector<token_adjust>& out);
  /// For a sampler elsewhere (the cuda engine's device): advances the
  /// constrained rows' matchers over the tokens sampled (`out.tokens`).
  void advance(const step_input& in, const step_output& out);

private:
  /// Whether `tok` may come next for `m` (EOS once it can end).
  [[nodiscard]] bool allowed(const grammar_matcher& m, token_id tok) const;
  /// The constrained row's token: a plain draw when the grammar allows it
  /// and the chain is temperature only (then the masked draw would give the
  /// same distribution), else a draw among the allowed tokens.
  token_id sample_constrained(grammar_matcher& m, const float* lg, int32_t n_vocab, const sampling_params& p,
                              int64_t pos, const token_history* hist);
  [[nodiscard]] grammar_matcher* matcher(uint64_t id);
  [[nodiscard]] const vocab_trie& trie();

  std::unordered_map<uint64_t, token_history> history_;
  std::unordered_map<uint64_t, std::unique_ptr<grammar_matcher>> matchers_;
  std::shared_ptr<const tokenizer> tok_;
  std::unique_ptr<vocab_trie> trie_;
  grammar_cache grammars_;
  mutable std::mutex mu_;
};

}  // namespace llmux::engine
