#pragma once
/// `llmux bench engine --model F`: the CPU engine alone (no actors, no HTTP):
/// prefill tokens/s for one prompt, and decode tokens/s at several batch
/// sizes and thread counts. Prints a table and one JSON line per row.
/// `--backend cuda` (a GGUF file, or `--architecture` for dummy weights made
/// on the device): the cuda engine against the GPU's own floors.

#include <string>
#include <vector>

namespace llmux::tools {

struct engine_bench_options {
  std::string backend = "cpu";  ///< "cpu" | "cuda"
  std::string model;            ///< GGUF file
  std::string architecture;     ///< cuda: dummy weights of this preset instead of a file
  std::string dtype = "bf16";   ///< cuda: f16 | bf16
  bool eager = false;  ///< cuda: no CUDA graphs (enforce_eager), to measure what graphs save
  std::string quantization = "none";  ///< cuda: "int8" weight-only layer matrices
  int decode_context = 512;     ///< cuda: each decode sequence's prompt, tokens
  int prompt_tokens = 512;
  int decode_steps = 32;
  std::vector<int> batches{1, 8, 32};
  std::vector<int> threads{1, 2};
  bool json = false;
};

int run_bench_engine(const engine_bench_options& opts);
int run_bench_engine_cuda(const engine_bench_options& opts);

}  // namespace llmux::tools
