// `llmux bench engine --backend cuda`: the cuda engine alone, through the
// same engine interface the unit calls (KV in blocks granted as the
// kv_manager grants them), against the floors the GPU itself sets: decode
// step time vs the memory-bandwidth floor (weights + KV bytes read per step
// over the measured device copy bandwidth), prefill throughput vs the
// measured cuBLAS GEMM peak.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "engine/engine_factory.hpp"
#include "engine/hf_model.hpp"
#include "engine/gguf.hpp"
#include "engine/llama_model.hpp"
#include "tools/llmux/bench_engine.hpp"

namespace llmux::tools {

namespace {

using clock_type = std::chrono::steady_clock;

/// Hands out block tables as the kv_manager does: whole token-blocks of
/// per_tb ids, from one counter (reset when everything is released).
struct grants {
  int per_tb = 0;
  int block_tokens = 16;
  int32_t next = 0;
  std::vector<int32_t> take(int64_t tokens) {
    const int64_t n = (tokens + block_tokens - 1) / block_tokens * per_tb;
    std::vector<int32_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), next);
    next += static_cast<int32_t>(n);
    return ids;
  }
};

engine::seq_work work(uint64_t id, std::vector<int32_t> tokens, int32_t context, bool sample) {
  engine::seq_work w;
  w.seq_id = id;
  w.tokens = std::move(tokens);
  w.context_len = context;
  w.prompt_len = context + static_cast<int32_t>(w.tokens.size());
  w.sample = sample;
  w.temperature = 0;  // greedy: picked on the device
  return w;
}

std::vector<int32_t> filler(int64_t n, int vocab, int64_t salt) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = static_cast<int32_t>(100 + (i * 7919 + salt * 104729) % (vocab - 100));
  return out;
}

}  // namespace

int run_bench_engine_cuda(const engine_bench_options& o) {
  config::model_config m;
  m.name = "bench";
  m.backend = "cuda";
  m.dtype = o.dtype;
  m.enforce_eager = o.eager;
  m.quantization = o.quantization;
  try {
    if (!o.architecture.empty()) {
      auto a = config::arch_preset(o.architecture);
      if (!a) {
        std::cerr << "llmux bench engine: unknown architecture '" << o.architecture << "'\n";
        return 2;
      }
      m.arch = *a;
      m.load_format = "dummy";
    } else {
      m.file = o.model;
      m.arch = engine::llama_model::read_arch(*engine::open_model_file(o.model, false));
    }
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return 2;
  }
  m.arch.dtype_bytes = o.dtype == "f32" ? 4 : 2;
  nlohmann::json dev;
  try {
    dev = nlohmann::json::parse(engine::cuda_device_report());
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return 2;
  }
  const auto& a = m.arch;
  const int per_tb = a.layers * a.kv_heads;
  const int bt = 16;
  const int ctx0 = o.decode_context;
  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  engine::engine_context ctx;
  ctx.block_tokens = bt;
  ctx.kv_blocks = std::max<int64_t>(int64_t{max_batch} * ((ctx0 + o.decode_steps + 2 + bt - 1) / bt),
                                    (o.prompt_tokens + bt) / bt) * per_tb;
  std::unique_ptr<engine::engine> e;
  try {
    e = engine::make_engine(m, ctx);
  } catch (const std::exception& ex) {
    std::cerr << "llmux bench engine: " << ex.what() << "\n";
    return 2;
  }
  const double copy_bps = dev.value("copy_gb_s", 0.0) * 1e9;
  const double gemm_peak = dev.value(o.dtype == "f16" ? "gemm_f16_tflops" : "gemm_bf16_tflops", 0.0) * 1e12;
  // Bytes every decode step reads whatever the batch: the weights less the
  // input embedding table (only its rows for the step's tokens are read).
  // int8: the layers' matrices at one byte (and a 4-byte scale per row),
  // the output head in dtype.
  const double matmul_params = a.params() - static_cast<double>(a.vocab) * a.hidden;
  const double head_params = static_cast<double>(a.vocab) * a.hidden;
  const double weight_bytes =
    o.quantization == "int8"
      ? (matmul_params - head_params) * 1.0 + head_params * a.dtype_bytes +
          // scales: one per output row of q, k, v, o, gate, up, down
          4.0 * a.layers * (1.0 * a.heads * a.head_size() + 2.0 * a.kv_heads * a.head_size() + 2.0 * a.intermediate +
                            2.0 * a.hidden)
      : matmul_params * a.dtype_bytes;
  std::printf("device %s (sm_%s, %d SMs): copy %.0f GB/s, cuBLAS %s peak %.0f TFLOP/s\n",
              dev.value("device", "?").c_str(), dev.value("sm", "?").c_str(), dev.value("sms", 0),
              copy_bps / 1e9, o.dtype.c_str(), gemm_peak / 1e12);
  std::printf("model %s, %s%s: %.2f B params, %.2f GB of weights read per step; decode %s\n",
              o.architecture.empty() ? o.model.c_str() : o.architecture.c_str(), o.dtype.c_str(),
              o.quantization == "int8" ? " with int8 layer weights" : "", a.params() / 1e9, weight_bytes / 1e9,
              o.eager ? "eager (--eager)" : "through CUDA graphs");
  std::printf("%-8s %-6s %-7s %12s %12s %12s %9s\n", "phase", "batch", "context", "ms/step", "floor ms", "tokens/s",
              "of floor");
  grants g{per_tb, bt, 0};
  auto release_all = [&](uint64_t first, uint64_t count) {
    engine::step_input in;
    for (uint64_t i = 0; i < count; ++i)
      in.released.push_back(first + i);
    (void)e->step(in);
    g.next = 0;
  };

  // Prefill: one prompt in one step (its logits row included), best of 3.
  {
    double best = 1e30;
    for (int rep = 0; rep < 4; ++rep) {
      engine::step_input in;
      auto w = work(1, filler(o.prompt_tokens, a.vocab, rep), 0, true);
      w.kv_blocks = g.take(o.prompt_tokens + 1);
      in.seqs.push_back(std::move(w));
      auto t0 = clock_type::now();
      (void)e->step(in);
      const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
      if (rep > 0)  // the first run warms cuBLAS
        best = std::min(best, s);
      release_all(1, 1);
    }
    const double P = o.prompt_tokens;
    const double flops = 2.0 * matmul_params * P
                         + 2.0 * a.layers * static_cast<double>(a.heads) * a.head_size() * P * P;  // QK and PV, causal
    const double tflops = flops / best / 1e12;
    std::printf("%-8s %-6d %-7d %12.2f %12s %12.0f %8.0f%%  (%.0f TFLOP/s of %.0f)\n", "prefill", 1, o.prompt_tokens,
                best * 1e3, "-", P / best, gemm_peak > 0 ? 100.0 * flops / best / gemm_peak : 0.0, tflops,
                gemm_peak / 1e12);
    if (o.json)
      std::cout << nlohmann::json{{"phase", "prefill"}, {"backend", "cuda"}, {"device", dev.value("device", "?")},
                                  {"prompt_tokens", o.prompt_tokens}, {"ms", best * 1e3}, {"tokens_per_s", P / best},
                                  {"tflops", tflops}, {"gemm_peak_tflops", gemm_peak / 1e12}}
                       .dump()
                << std::endl;
  }

  // Decode: `batch` sequences with ctx0-token prompts (prefilled in chunks),
  // then decode_steps greedy steps, timed.
  for (int batch : o.batches) {
    std::vector<int32_t> last(static_cast<size_t>(batch));
    const int per_step = std::max(1, 8192 / std::max(ctx0, 1));
    for (int b0 = 0; b0 < batch; b0 += per_step) {
      engine::step_input in;
      for (int b = b0; b < std::min(batch, b0 + per_step); ++b) {
        auto w = work(static_cast<uint64_t>(b + 1), filler(ctx0, a.vocab, b), 0, true);
        w.kv_blocks = g.take(ctx0 + o.decode_steps + 2);
        in.seqs.push_back(std::move(w));
      }
      auto out = e->step(in);
      for (size_t i = 0; i < out.tokens.size(); ++i)
        last[static_cast<size_t>(b0) + i] = out.tokens[i];
    }
    double total = 0;
    const int warm = 2;
    for (int step = 0; step < warm + o.decode_steps; ++step) {
      engine::step_input in;
      for (int b = 0; b < batch; ++b)
        in.seqs.push_back(work(static_cast<uint64_t>(b + 1), {last[static_cast<size_t>(b)]}, ctx0 + step, true));
      auto t0 = clock_type::now();
      auto out = e->step(in);
      if (step >= warm)
        total += std::chrono::duration<double>(clock_type::now() - t0).count();
      for (int b = 0; b < batch; ++b)
        last[static_cast<size_t>(b)] = out.tokens[static_cast<size_t>(b)];
    }
    release_all(1, static_cast<uint64_t>(batch));
    const double ms = total / o.decode_steps * 1e3;
    const double mean_ctx = ctx0 + warm + o.decode_steps / 2.0;
    const double kv_bytes = batch * mean_ctx * a.kv_bytes_per_token();
    const double floor_ms = copy_bps > 0 ? (weight_bytes + kv_bytes) / copy_bps * 1e3 : 0;
    std::printf("%-8s %-6d %-7d %12.3f %12.3f %12.0f %8.2fx\n", "decode", batch, ctx0, ms, floor_ms,
                batch / (ms * 1e-3), floor_ms > 0 ? ms / floor_ms : 0.0);
    if (o.json)
      std::cout << nlohmann::json{{"phase", "decode"}, {"backend", "cuda"}, {"device", dev.value("device", "?")},
                                  {"batch", batch}, {"context", ctx0}, {"ms_per_step", ms}, {"graphs", !o.eager},
                                  {"quantization", o.quantization},
                                  {"floor_ms", floor_ms}, {"tokens_per_s", batch / (ms * 1e-3)}}
                       .dump()
                << std::endl;
  }
  return 0;
}

}  // namespace llmux::tools
