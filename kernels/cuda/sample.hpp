#pragma once
/// Sampling and log-probabilities on the device, with the CPU sampler's
/// semantics (engine/sampler.hpp): logit processors (repetition penalty over
/// what the sequence has seen, presence and frequency penalties over its
/// output, logit bias), then top-k → top-p → min-p → temperature → one draw
/// of the row's uniform `u`, walking the candidates in the CPU's order
/// (logit descending, ties by lower id). Temperature <= 0 is greedy.
///
/// No sort: each cut is found by a radix select over the logits' order-
/// preserving 32-bit keys (4 rounds of 8 bits, most significant first), by
/// count for top-k and by probability mass for top-p and the draw. Masses
/// are fixed point (2^40 for the row's maximum) summed in 64-bit integers,
/// so a row's result does not depend on the order threads add in: the same
/// seed gives the same token run after run. Against the CPU's double
/// arithmetic a pick can differ only where u (or top_p) falls within about
/// 1e-6 (relative; f32 expf and the fixed point) of a candidate's
/// cumulative-probability boundary. A row whose logits are all -inf or NaN
/// picks id 0.
///
/// One block per row; rows are independent. Every pointer is device memory.

#include <cstdint>

#include "kernels/cuda/ops.hpp"

namespace llmux::cuda {

/// OpenAI's limit on top log-probabilities per token.
inline constexpr int sample_max_top = 20;

/// How one row samples.
struct sample_params {
  float temperature = 1.0f;  ///< <= 0: greedy
  int32_t top_k = 0;         ///< 0: off
  float top_p = 1.0f;        ///< 1: off
  float min_p = 0.0f;        ///< 0: off
  double u = 0.0;            ///< the draw in [0, 1) (engine::sample_uniform(seed, position))
  int32_t n_top = -1;        ///< -1: no log-probabilities; k >= 0: the pick's and the top k (k <= 20)
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t adjust_begin = 0;  ///< this row's entries of the adjustment list: [begin, end)
  int32_t adjust_end = 0;
};

/// One token's processors in one row (one entry per token per row).
struct logit_adjust {
  int32_t token = 0;
  int32_t seen = 0;    ///< in the prompt or the output: the repetition penalty applies
  int32_t count = 0;   ///< times in the output: presence and frequency penalties
  float bias = 0.0f;   ///< logit bias, summed over the request's entries for the token
};

/// What one row picked. top_ids/top_logprobs hold n_top entries in no
/// particular order (the caller sorts them: at most 20).
struct sample_result {
  int32_t token = -1;
  float logprob = 0.0f;  ///< of `token`, log-softmax of the raw logits
  int32_t n_top = 0;
  int32_t top_ids[sample_max_top];
  float top_logprobs[sample_max_top];
};

/// Samples each of `rows` rows of f32 `logits` [rows, vocab] with
/// params[r]. Log-probabilities are of the raw logits, as the CPU engine
/// reports them; the processors apply to a copy in `work` ([rows, vocab]
/// f32, used by rows with adjustments only), so `logits` is left as it was.
void sample_rows(const float* logits, float* work, int64_t rows, int64_t vocab, const sample_params* params,
                 const logit_adjust* adjust, sample_result* out, cudaStream_t stream);

}  // namespace llmux::cuda
