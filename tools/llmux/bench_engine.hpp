#pragma once
/// `llmux bench engine --model F`: the CPU engine alone (no actors, no HTTP):
/// prefill tokens/s for one prompt, and decode tokens/s at several batch
/// sizes and thread counts. Prints a table and one JSON line per row.

#include <string>
#include <vector>

namespace llmux::tools {

struct engine_bench_options {
  std::string model;
  int prompt_tokens = 512;
  int decode_steps = 32;
  std::vector<int> batches{1, 8, 32};
  std::vector<int> threads{1, 2};
  bool json = false;
};

int run_bench_engine(const engine_bench_options& opts);

}  // namespace llmux::tools
