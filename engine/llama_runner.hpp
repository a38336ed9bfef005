#pragma once
/// The Llama forward pass on CPU over a paged KV cache.
///
/// One call runs one engine step: the tokens of every sequence in the batch
/// (prefill chunks and single decode tokens mixed) go through each layer
/// together, so every weight matrix is read once per step whatever the batch
/// size; attention then runs per sequence over its own cached context.
/// Each call's work is spread over the thread pool it is given. Two calls may
/// run at once (a model's prefill and decode jobs) over disjoint sequences,
/// each with its own pool and scratch; the KV cache is shared.

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/llama_model.hpp"
#include "engine/paged_kv_cache.hpp"
#include "kernels/cpu/thread_pool.hpp"

namespace llmux::engine {

struct runner_seq {
  uint64_t id = 0;
  const int32_t* tokens = nullptr;
  int32_t n = 0;          ///< tokens fed this step
  int32_t pos0 = 0;       ///< position of tokens[0] (= tokens already cached)
  bool logits = false;    ///< produce logits for the last token
};

/// Activations of one step, reused across steps (grown on demand). One per
/// job that steps the runner.
struct runner_scratch {
  std::vector<float> x, h, q, k, v, attn, gate, up, tmp;
};

class llama_runner {
public:
  /// Private KV blocks.
  llama_runner(std::shared_ptr<const llama_model> model, int block_tokens, int64_t kv_blocks);
  /// KV in a unit's arena: sequences' tables come from `adopt`.
  llama_runner(std::shared_ptr<const llama_model> model, std::shared_ptr<kv_arena> arena);

  /// Runs the step. `logits` receives n_vocab floats for each sequence with
  /// `logits = true`, in order. Returns false (nothing computed) when the KV
  /// cache cannot hold the batch.
  [[nodiscard]] bool forward(const std::vector<runner_seq>& seqs, std::vector<float>& logits,
                             kernels::thread_pool& pool) {
    return forward(seqs, logits, pool, scratch_);
  }
  /// The same with the caller's scratch (a second job stepping at once).
  [[nodiscard]] bool forward(const std::vector<runner_seq>& seqs, std::vector<float>& logits,
                             kernels::thread_pool& pool, runner_scratch& scratch);
  void release(uint64_t seq) { kv_.release(seq); }
  /// Shared KV: physical ids the table of `seq` gained (paged_kv_cache::adopt).
  void adopt(uint64_t seq, const std::vector<int32_t>& ids) { kv_.adopt(seq, ids); }

  [[nodiscard]] const llama_model& model() const { return *model_; }
  [[nodiscard]] const paged_kv_cache& kv() const { return kv_; }

private:
  std::shared_ptr<const llama_model> model_;
  paged_kv_cache kv_;
  runner_scratch scratch_;
};

}  // namespace llmux::engine
