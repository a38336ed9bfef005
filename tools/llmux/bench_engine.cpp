#include "tools/llmux/bench_engine.hpp"

#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/llama_runner.hpp"
#include "engine/sampler.hpp"

namespace llmux::tools {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// Deterministic filler tokens (ids 100..) so runs are comparable.
std::vector<int32_t> filler(int n, int vocab, int salt) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = 100 + (i * 7919 + salt * 104729) % (vocab - 100);
  return out;
}

}  // namespace

int run_bench_engine(const engine_bench_options& o) {
  if (o.backend == "cuda")
    return run_bench_engine_cuda(o);
  if (o.model.empty()) {
    std::cerr << "llmux bench engine: --model FILE is required for the cpu backend\n";
    return 2;
  }
  std::shared_ptr<engine::llama_model> model;
  try {
    model = engine::llama_model::load(o.model);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return 2;
  }
  const auto& hp = model->hparams();
  const int vocab = hp.n_vocab;
  int prompt = std::min(o.prompt_tokens, hp.n_ctx_train - o.decode_steps - 1);
  std::printf("model %s: %d layers, %d hidden, %d heads (%d kv), vocab %d\n", o.model.c_str(),
              hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, vocab);
  std::printf("%-8s %-7s %-6s %14s %12s\n", "phase", "threads", "batch", "tokens/s", "ms/step");
  std::vector<float> logits;
  for (int threads : o.threads) {
    kernels::thread_pool pool{threads};
    // Prefill: one prompt of `prompt` tokens in one step.
    {
      engine::llama_runner runner{model, 16, 1 << 20};
      auto toks = filler(prompt, vocab, 1);
      std::vector<engine::runner_seq> seqs{{1, toks.data(), prompt, 0, true}};
      auto t0 = clock_type::now();
      if (!runner.forward(seqs, logits, pool))
        return 1;
      double s = seconds_since(t0);
      std::printf("%-8s %-7d %-6d %14.1f %12.2f\n", "prefill", threads, 1, prompt / s, s * 1e3);
      if (o.json)
        std::cout << nlohmann::json{{"phase", "prefill"}, {"threads", threads}, {"batch", 1},
                                    {"prompt_tokens", prompt}, {"tokens_per_s", prompt / s}}
                       .dump()
                  << std::endl;
    }
    // Decode: `batch` sequences with short prompts, then decode_steps steps.
    for (int batch : o.batches) {
      engine::llama_runner runner{model, 16, 1 << 20};
      std::vector<std::vector<int32_t>> prompts, feeds(static_cast<size_t>(batch));
      std::vector<engine::runner_seq> seqs;
      for (int b = 0; b < batch; ++b)
        prompts.push_back(filler(16, vocab, b + 2));
      for (int b = 0; b < batch; ++b)
        seqs.push_back({static_cast<uint64_t>(b + 1), prompts[b].data(), 16, 0, true});
      if (!runner.forward(seqs, logits, pool))
        return 1;
      auto t0 = clock_type::now();
      for (int step = 0; step < o.decode_steps; ++step) {
        for (int b = 0; b < batch; ++b) {
          auto next = engine::sample_token(&logits[static_cast<size_t>(b) * vocab], vocab, {0.0f}, 0);
          feeds[static_cast<size_t>(b)] = {next};
          seqs[static_cast<size_t>(b)] = {static_cast<uint64_t>(b + 1),
                                          feeds[static_cast<size_t>(b)].data(), 1, 16 + step, true};
        }
        if (!runner.forward(seqs, logits, pool))
          return 1;
      }
      double s = seconds_since(t0);
      double tps = static_cast<double>(batch) * o.decode_steps / s;
      std::printf("%-8s %-7d %-6d %14.1f %12.2f\n", "decode", threads, batch, tps,
                  s * 1e3 / o.decode_steps);
      if (o.json)
        std::cout << nlohmann::json{{"phase", "decode"}, {"threads", threads}, {"batch", batch},
                                    {"steps", o.decode_steps}, {"tokens_per_s", tps}}
                       .dump()
                  << std::endl;
    }
  }
  return 0;
}

}  // namespace llmux::tools
