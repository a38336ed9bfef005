#pragma once
/// `llmux bench layout`: one replica across k devices against k/g replicas
/// of g devices each, by the cost model (SIMULATED: no engine runs), for a
/// closed loop of c concurrent decoding requests, c = 1 .. max: each
/// layout's decode step time, time per output token and output tokens/s;
/// the crossover the controller's layout_policy would switch at; and the
/// layout a dynamic unit holds at each c as concurrency ramps up and back
/// down (layout_policy itself, with its hysteresis, deciding).

#include <string>

namespace llmux::tools {

struct layout_bench_options {
  std::string model = "llama-65b";  ///< an architecture preset
  std::string gpu = "a100";         ///< a100 (MuxServe's measured profile), h100, h200 (roofline)
  int devices = 8;                  ///< k
  int replica_devices = 4;          ///< g: devices of each small replica
  int context = 512;                ///< mean KV context of a decoding sequence, tokens
  int max_concurrency = 256;
  double hysteresis = 0.25;
  bool json = false;
};

/// Prints to stdout; 2 with a message on stderr for bad options.
int run_bench_layout(const layout_bench_options& opts);

}  // namespace llmux::tools
