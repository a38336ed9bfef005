#pragma once
/// Measures a `step_profile` of the CPU engine (`llmux bench engine
/// --profile`): the table MuxServe measured on an A100, for
/// engine/llama_runner on this machine's cores.
///
/// - tp is 1. A share is a thread count as a percentage of the largest one
///   measured (threads 1 and 2 → shares 50 and 100).
/// - prefill(batch, length): one step computing `batch` prompts of `length`
///   tokens over an empty cache. Points with batch · length above
///   `prefill_token_budget` are not measured (-1, as MuxServe writes for the
///   points that ran out of memory), which keeps a profile to minutes.
/// - decode(batch, length): one step of `batch` sequences, each feeding one
///   token at position `length` over its own KV cache of `length` tokens.
///   The KV of a length is computed once (a prefill of one prompt) and
///   copied into every sequence's own blocks: a step reads batch · length
///   distinct cached positions as a real batch does, without paying `batch`
///   prefills to build them. Each timed step feeds position `length` again,
///   so every step sees the same context.
///
/// Blocking, single caller; spawns its own worker threads (one pool per
/// thread count at a time).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/llama_model.hpp"
#include "engine/step_profile.hpp"

namespace llmux::engine {

/// Deterministic filler tokens (ids from 100 up, past the special tokens) so
/// runs are comparable: `n` of them, varied by `salt`; the values do not
/// change the work of a step. For benchmarks of the CPU engine.
[[nodiscard]] std::vector<int32_t> filler_tokens(int n, int vocab, int salt);


struct cpu_profile_options {
  std::string key = "model";        ///< the profile's model key
  std::vector<int> threads{1, 2};   ///< thread counts; the largest is 100%
  std::vector<int> batches{1, 2, 4, 8, 16, 32};
  /// Tokens; lengths the model's context cannot hold (length + 1 above
  /// n_ctx_train) are dropped.
  std::vector<int> lengths{32, 64, 128, 256, 512};
  int64_t prefill_token_budget = 4096;  ///< batch · length above this: not measured
  int decode_steps = 3;     ///< timed decode steps averaged per point (after one untimed)
  int prefill_repeats = 3;  ///< timed prefill steps averaged per point, at most
  /// A point stops repeating once its timed steps took this long (seconds);
  /// at least one timed step is always made.
  double point_seconds = 0.5;
  int block_tokens = 16;    ///< KV block size, tokens (the unit's default)
  /// The whole table is measured this many times and each point keeps its
  /// fastest sweep: on a shared machine other work slows some sweeps, and
  /// rarely the same point in every one.
  int sweeps = 1;
};

/// One measured value, as soon as it is known (progress output). `sweep`
/// counts from 1; `kind` is "prefill" or "decode"; `ms` is that sweep's
/// mean step time (-1: not measured).
using cpu_profile_progress = std::function<void(int sweep, const char* kind, int threads, int share_pct,
                                                int batch, int length, double ms)>;

/// The lengths of `opts` that `model` can profile (see `lengths`).
[[nodiscard]] std::vector<int> cpu_profile_lengths(const llama_model& model, const cpu_profile_options& opts);

/// Measures every (threads, batch, length) point of `opts` for `model` under
/// `opts.key`, tp 1. Metadata is left to the caller (device, command line).
/// Throws std::invalid_argument for empty or non-positive thread counts,
/// batches or lengths, or no length the model can hold.
[[nodiscard]] step_profile measure_cpu_profile(const std::shared_ptr<const llama_model>& model,
                                               const cpu_profile_options& opts,
                                               const cpu_profile_progress& progress = {});

}  // namespace llmux::engine
