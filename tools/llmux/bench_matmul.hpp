#pragma once
/// `llmux bench matmul`: one CPU matmul kernel alone, y[m, n] = x[m, k] ·
/// W[n, k]ᵀ with random weights of each type, at each batch m and thread
/// count: the best of --repeat timed runs, as integer (or float) operations
/// per second (2·m·n·k / s). Defaults: SmolLM2's ffn_down shape (576 × 1536).
/// Then, for each thread count above 1, what one parallel_for of an empty
/// body costs (the pool's hand-off and join).

#include <string>
#include <vector>

namespace llmux::tools {

struct matmul_bench_options {
  std::vector<std::string> types{"q4_0", "q8_0", "q4_1", "q5_0", "q4_k", "q6_k"};
  int64_t rows = 576;   ///< n: W's rows (outputs)
  int64_t cols = 1536;  ///< k
  std::vector<int> batches{1, 512};
  std::vector<int> threads{1};
  int repeat = 5;
};

int run_bench_matmul(const matmul_bench_options& opts);

}  // namespace llmux::tools
