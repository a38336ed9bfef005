#pragma once
/// `llmux bench serve`: a load generator for any OpenAI-compatible server
/// (llmux's edge, vLLM, SGLang, llama.cpp server). Open loop (Poisson
/// arrivals at each --rate) or closed loop (each --concurrency), prompt and
/// output lengths fixed, uniform or log-normal (ShareGPT-like); streaming.
/// One table row (and with --json one JSON line) per sweep point:
/// throughput, TTFT/TPOT/ITL/E2E percentiles, SLO attainment; with --plot,
/// a PNG of them all against the sweep.

#include <cstdint>
#include <string>
#include <vector>

#include "tools/loadgen/load_runner.hpp"

namespace llmux::tools {

struct serve_bench_options {
  loadgen::target target;           ///< url, model, api key, temperature
  int requests = 100;
  std::vector<double> rates;        ///< open loop, requests/s (a sweep)
  std::vector<int> concurrencies;   ///< closed loop (a sweep)
  int max_workers = 256;            ///< open loop: client threads
  std::string prompt_len = "fixed:128";
  std::string output_len = "fixed:64";
  uint64_t seed = 1;
  double slo_ttft_ms = 0;
  double slo_tpot_ms = 0;
  bool json = false;
  /// PNG path for the sweep's plot (throughput, TTFT, TPOT, E2E, SLO
  /// attainment against the rate or concurrency); empty: no plot.
  std::string plot;
  /// A workload file (sim/workload.hpp: a .toml spec or a .jsonl trace):
  /// its requests, each to its own model, at their times, once; a table row
  /// per model. Replaces --rate/--concurrency and the lengths. Prompts are
  /// distinct (no shared prefix blocks), as the simulator takes them.
  std::string workload;
  /// Idle keep-alive connections held open beside the clients for the whole
  /// sweep (each answered once before, and asked again after).
  int idle_connections = 0;
};

int run_bench_serve(const serve_bench_options& opts);

}  // namespace llmux::tools
