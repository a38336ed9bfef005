#pragma once
/// Token sampling from logits, deterministic per (seed, position): the same
/// seed and input give the same output whatever the batch the sequence ran
/// in. Logit processors first (OpenAI presence/frequency penalties over the
/// output, the repetition penalty over prompt and output, logit bias), then
/// the chain of llama.cpp's default: top-k → top-p → min-p → temperature →
/// draw. Temperature <= 0 is greedy (argmax; ties go to the lowest id).
/// Pure functions; thread-safe.

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/engine.hpp"
#include "engine/tokenizer.hpp"

namespace llmux::engine {

struct sampling_params {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;    ///< 0: off
  float min_p = 0.0f;   ///< 0: off
  uint64_t seed = 0;
  float presence_penalty = 0.0f;   ///< logit −= p if the token is in the output
  float frequency_penalty = 0.0f;  ///< logit −= f × its count in the output
  float repetition_penalty = 1.0f; ///< seen tokens: logit / r if > 0, else × r
  const std::vector<int32_t>* bias_tokens = nullptr;  ///< logit += bias (OpenAI logit_bias)
  const std::vector<float>* bias_values = nullptr;

  [[nodiscard]] bool uses_history() const {
    return presence_penalty != 0.0f || frequency_penalty != 0.0f || repetition_penalty != 1.0f;
  }
};

/// What a sequence has produced so far, for the penalties.
struct token_history {
  std::unordered_map<token_id, int32_t> output_counts;  ///< generated tokens
  std::unordered_set<token_id> seen;                    ///< prompt and generated tokens
};

/// Picks a token from `n_vocab` logits for the token at `position`.
/// Penalties (with `history`) and logit bias apply first, then the chain.
[[nodiscard]] token_id sample_token(const float* logits, int32_t n_vocab,
                                    const sampling_params& p, int64_t position,
                                    const token_history* history = nullptr);

/// The one uniform draw in [0, 1) behind the token at `position` of a
/// sequence seeded `seed` (every backend draws the same).
[[nodiscard]] double sample_uniform(uint64_t seed, int64_t position);

/// log-softmax of the logits (natural log), for log-probabilities.
void log_softmax(const float* logits, int32_t n, std::vector<float>& out);

/// The log-prob of `chosen` and the `k` most likely tokens (ties: lower id).
[[nodiscard]] token_logprobs top_logprobs(const float* logits, int32_t n, token_id chosen, int k);

}  // namespace llmux::engine
