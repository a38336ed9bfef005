#pragma once
/// Token sampling from logits, deterministic per (seed, position): the same
/// seed and input give the same output whatever the batch the sequence ran
/// in. Chain as llama.cpp's default: top-k → top-p → min-p → temperature →
/// draw. Temperature <= 0 is greedy (argmax; ties go to the lowest id).
/// Pure functions; thread-safe.

#include <cstdint>
#include <vector>

#include "engine/tokenizer.hpp"

namespace llmux::engine {

struct sampling_params {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;    ///< 0: off
  float min_p = 0.0f;   ///< 0: off
  uint64_t seed = 0;
};

/// Picks a token from `n_vocab` logits for the token at `position`.
[[nodiscard]] token_id sample_token(const float* logits, int32_t n_vocab,
                                    const sampling_params& p, int64_t position);

/// log-softmax of the logits (natural log), for log-probabilities.
void log_softmax(const float* logits, int32_t n, std::vector<float>& out);

}  // namespace llmux::engine
