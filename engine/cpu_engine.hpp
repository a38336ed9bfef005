#pragma once
/// The `cpu` backend: a real Llama-family model on CPU threads, over a paged
/// KV cache. The unit gives it a compute share; on CPU a share is a number
/// of worker threads (share × the unit's threads), changed between steps.
///
/// Split jobs: a prefill step and a decode step may run at once on two
/// threads. Each job has its own lane (worker threads, activations, logits);
/// weights and the KV cache are shared, and the two steps feed disjoint
/// sequences. The decode lane's threads start with its first share or step.

#include <memory>

#include "engine/engine.hpp"
#include "engine/llama_runner.hpp"
#include "engine/step_sampler.hpp"
#include "kernels/cpu/thread_pool.hpp"

namespace llmux::engine {

struct cpu_engine_options {
  int max_threads = 0;     ///< the unit's threads; 0 = hardware concurrency
  double share = 1.0;      ///< (0, 1]
  int block_tokens = 16;
  int64_t kv_blocks = 0;   ///< physical blocks (one head, one layer, block_tokens tokens)
  /// The unit's shared KV memory: when set, sequences' tables are the
  /// kv_manager's grants (seq_work::kv_blocks) and `kv_blocks` is unused.
  std::shared_ptr<kv_arena> arena;
};

class cpu_engine final : public engine {
public:
  cpu_engine(std::shared_ptr<const llama_model> model, std::shared_ptr<const tokenizer> tok,
             cpu_engine_options opts);

  /// Throws std::runtime_error when the KV cache cannot hold the batch (the
  /// kv_manager's admission makes that a bug, not a load condition).
  [[nodiscard]] step_output step(const step_input& in) override;
  void set_share(double share) override;
  void set_job_share(job_kind job, double share) override;
  [[nodiscard]] std::string backend() const override { return "cpu"; }
  [[nodiscard]] const tokenizer& vocab() const override { return *tok_; }

  /// Worker threads of the mixed/prefill lane.
  [[nodiscard]] int threads() const { return lanes_[0].pool->size(); }
  /// Worker threads of `job`'s lane (0: the decode lane has not started).
  [[nodiscard]] int threads(job_kind job) const;
  [[nodiscard]] const llama_runner& runner() const { return runner_; }

private:
  std::shared_ptr<const tokenizer> tok_;
  cpu_engine_options opts_;
  llama_runner runner_;
  struct lane {
    std::unique_ptr<kernels::thread_pool> pool;
    runner_scratch scratch;
    std::vector<float> logits;
    double share = 1.0;
  };
  /// [0]: mixed and prefill steps; [1]: decode steps.
  lane lanes_[2];
  /// Penalty histories and sampling, shared by the lanes.
  step_sampler sampler_;
};

}  // namespace llmux::engine
