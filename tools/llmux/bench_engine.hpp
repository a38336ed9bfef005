#pragma once
/// `llmux bench engine --model F`: the CPU engine alone (no actors, no HTTP):
/// prefill tokens/s for one prompt, and decode tokens/s at several batch
/// sizes and thread counts. Prints a table and one JSON line per row.
/// `--backend cuda` (a GGUF file, or `--architecture` for dummy weights made
/// on the device): the cuda engine against the GPU's own floors.
/// `--profile OUT.json` (cpu): measures the step-latency table of
/// engine/step_profile.hpp instead (engine/cpu_step_profiler.hpp) and
/// writes it, with "_meta" saying where and how it was measured.

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
  std::string profile_out;  ///< --profile: write the step-latency profile here
  std::string profile_key;  ///< its model key (default: the model file's stem)
  std::vector<int> lengths{32, 64, 128, 256, 512};  ///< profile: tokens (clipped to the context)
  int64_t prefill_token_budget = 4096;  ///< profile: prefill batch · length above this: -1
  int profile_sweeps = 1;    ///< profile: whole-table sweeps, each point keeps its fastest
  std::string command_line;  ///< recorded in the profile's "_meta"
};

int run_bench_engine(const engine_bench_options& opts);
/// `--profile`: the cpu engine's profile (the cuda one is not written yet).
int run_bench_engine_profile(const engine_bench_options& opts);
int run_bench_engine_cuda(const engine_bench_options& opts);

}  // namespace llmux::tools
