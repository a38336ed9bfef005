#pragma once
/// What one engine step costs, for the sim backend, the planner and the
/// cluster simulator: from a measured profile when the GPU type names one,
/// else from a roofline.
///
/// **Roofline.** A step reads every weight once plus the KV cache of every
/// sequence in the batch, writes the new tokens' KV, and does 2·params FLOPs
/// per new token plus attention. Its time is the larger of memory time and
/// compute time, plus a fixed per-step overhead:
///
///     t = max(bytes / (BW · bw_frac(share)), flops / (PEAK · share)) / tp + overhead
///
/// `share` is the fraction of the device's compute (SMs) the job runs on.
/// Bandwidth saturates with about half the SMs, so bw_frac = min(1, 2·share).
/// A tensor-parallel group of `tp` devices splits bytes and FLOPs evenly
/// (its all-reduces are not modelled).
///
/// **Profile** (`gpu_spec::profile`, engine/step_profile.hpp): measured
/// prefill and decode step times per tensor-parallel size, share, batch and
/// length, interpolated. A step holding only prompt tokens costs
/// prefill(prompts, mean prompt tokens); one holding only decodes costs
/// decode(sequences, mean context). A mixed step (decodes beside a prompt
/// chunk, as chunked prefill builds) costs both, less the part they share:
/// the smaller of the two and of the batch-1 decode time at the same
/// context, which is reading the weights once plus launch overhead.
///
/// Immutable after construction; safe to share between threads.

#include <cstdint>
#include <memory>
#include <string>

#include "config/cluster_config.hpp"

namespace llmux::engine {

class step_profile;

/// What a step does, in tokens.
struct step_shape {
  int64_t new_tokens = 0;       ///< prefill-chunk tokens + decode tokens fed this step
  int64_t kv_read_tokens = 0;   ///< KV entries read (sum over sequences of context after the step)
  int64_t attended_pairs = 0;   ///< (query, key) pairs scored by attention
  int64_t prefill_seqs = 0;     ///< sequences feeding prompt (or recompute) tokens
  int64_t prefill_tokens = 0;   ///< their tokens
  int64_t decode_seqs = 0;      ///< sequences feeding one generated token
  int64_t decode_context = 0;   ///< sum of those sequences' contexts after the step
};

struct step_cost {
  double seconds = 0;
  /// What the roofline says the step moves and computes, and whether
  /// compute bounds it, also when `seconds` comes from a profile.
  double bytes = 0;
  double flops = 0;
  bool compute_bound = false;
};

/// How a model's steps are costed beyond its shape and GPU type.
struct cost_options {
  int tp = 1;  ///< tensor-parallel size (devices one replica spans)
  /// Measured step times; null: the roofline.
  std::shared_ptr<const step_profile> profile;
  std::string profile_key;  ///< the model's key in `profile`
};

class cost_model {
public:
  /// The roofline on one device.
  cost_model(config::model_arch arch, config::gpu_spec gpu);
  /// Throws std::invalid_argument when `opts.profile` lacks the key or tp.
  cost_model(config::model_arch arch, config::gpu_spec gpu, cost_options opts);

  /// The cost model of config model `model` on `gpu` across `tp` devices:
  /// the profile `gpu.profile` names (if any), where the model is found
  /// under its `profile_key`, else its name, else its architecture preset. Throws
  /// std::runtime_error naming the model, the profile and what it holds
  /// when neither key (or the tp) is in it, or the profile cannot load.
  [[nodiscard]] static cost_model for_model(const config::model_config& model,
                                            const config::gpu_spec& gpu, int tp = 1);

  /// Cost of one step on `share` of the device, share in (0, 1].
  [[nodiscard]] step_cost estimate(const step_shape& s, double share = 1.0) const;

  /// A step of `batch` prompts of `length` tokens each, from scratch.
  [[nodiscard]] double prefill_seconds(double batch, double length, double share = 1.0) const;
  /// A decode step of `batch` sequences over `context` tokens of KV each.
  [[nodiscard]] double decode_seconds(double batch, double context, double share = 1.0) const;

  /// Shape of a step that feeds `n` tokens to a sequence that already has
  /// `context` tokens in KV; `prefill` says they are prompt (or recompute)
  /// tokens rather than one generated token.
  static void add_sequence(step_shape& s, int64_t context, int64_t n, bool prefill);
  /// The same, prefill when more than one token is fed.
  static void add_sequence(step_shape& s, int64_t context, int64_t n) {
    add_sequence(s, context, n, n > 1);
  }

  [[nodiscard]] const config::model_arch& arch() const { return arch_; }
  [[nodiscard]] const config::gpu_spec& gpu() const { return gpu_; }
  [[nodiscard]] int tp() const { return opts_.tp; }
  [[nodiscard]] double weight_bytes() const { return weight_bytes_; }
  [[nodiscard]] double kv_bytes_per_token() const { return kv_bytes_per_token_; }
  /// True when step times come from a measured profile.
  [[nodiscard]] bool calibrated() const { return opts_.profile != nullptr; }
  /// "roofline (h100, tp 1)" or "profile builtin:a100 key llama-7b, tp 1".
  [[nodiscard]] std::string describe() const;

private:
  [[nodiscard]] step_cost roofline(const step_shape& s, double share) const;

  config::model_arch arch_;
  config::gpu_spec gpu_;
  cost_options opts_;
  double weight_bytes_;
  double kv_bytes_per_token_;
};

}  // namespace llmux::engine
