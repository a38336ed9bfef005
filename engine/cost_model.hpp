#pragma once
/// Roofline cost model of one engine step, for the sim backend and planning.
///
/// A step reads every weight once plus the KV cache of every sequence in the
/// batch, writes the new tokens' KV, and does 2·params FLOPs per new token
/// plus attention. Its time is the larger of memory time and compute time,
/// plus a fixed per-step overhead:
///
///     t = max(bytes / (BW · bw_frac(share)), flops / (PEAK · share)) + overhead
///
/// `share` is the fraction of the device's compute (SMs) the job runs on.
/// Bandwidth saturates with about half the SMs, so bw_frac = min(1, 2·share).

#include <cstdint>

#include "config/cluster_config.hpp"

namespace llmux::engine {

/// What a step does, in tokens.
struct step_shape {
  int64_t new_tokens = 0;       ///< prefill-chunk tokens + decode tokens fed this step
  int64_t kv_read_tokens = 0;   ///< KV entries read (sum over sequences of context after the step)
  int64_t attended_pairs = 0;   ///< (query, key) pairs scored by attention
};

struct step_cost {
  double seconds = 0;
  double bytes = 0;
  double flops = 0;
  bool compute_bound = false;
};

class cost_model {
public:
  cost_model(config::model_arch arch, config::gpu_spec gpu);

  /// Cost of one step on `share` of the device, share in (0, 1].
  [[nodiscard]] step_cost estimate(const step_shape& s, double share = 1.0) const;

  /// Shape of a step that feeds `n` tokens to a sequence that already has
  /// `context` tokens in KV.
  static void add_sequence(step_shape& s, int64_t context, int64_t n);

  [[nodiscard]] const config::model_arch& arch() const { return arch_; }
  [[nodiscard]] double weight_bytes() const { return weight_bytes_; }

private:
  config::model_arch arch_;
  config::gpu_spec gpu_;
  double weight_bytes_;
  double kv_bytes_per_token_;
};

}  // namespace llmux::engine
