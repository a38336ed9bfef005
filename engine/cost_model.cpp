#include "engine/cost_model.hpp"

#include <algorithm>

namespace llmux::engine {

cost_model::cost_model(config::model_arch arch, config::gpu_spec gpu)
  : arch_(arch), gpu_(gpu),
    weight_bytes_(arch.params() * arch.dtype_bytes),
    kv_bytes_per_token_(arch.kv_bytes_per_token()) {
}

void cost_model::add_sequence(step_shape& s, int64_t context, int64_t n) {
  s.new_tokens += n;
  s.kv_read_tokens += context + n;
  // Token i of the chunk (0-based) attends to context + i + 1 keys.
  s.attended_pairs += n * context + n * (n + 1) / 2;
}

step_cost cost_model::estimate(const step_shape& s, double share) const {
  share = std::clamp(share, 1e-3, 1.0);
  step_cost c;
  if (s.new_tokens == 0)
    return c;
  c.bytes = weight_bytes_ + kv_bytes_per_token_ * static_cast<double>(s.kv_read_tokens);
  // Linear layers: 2 FLOPs per weight per token. Attention: QK^T and AV, each
  // 2·head_dim FLOPs per (query, key) pair per head per layer = 4·hidden per layer.
  c.flops = 2.0 * arch_.params() * static_cast<double>(s.new_tokens)
            + 4.0 * arch_.layers * static_cast<double>(arch_.hidden)
                * static_cast<double>(s.attended_pairs);
  double bw = gpu_.mem_bandwidth_gbs * 1e9 * std::min(1.0, 2.0 * share);
  double peak = gpu_.peak_tflops * 1e12 * share;
  double t_mem = c.bytes / bw;
  double t_compute = c.flops / peak;
  c.compute_bound = t_compute > t_mem;
  c.seconds = std::max(t_mem, t_compute) + gpu_.step_overhead_us * 1e-6;
  return c;
}

}  // namespace llmux::engine
