#pragma once
// Test fixtures shared by the engine and unit tests: GPU constants written
// out here (not taken from the config defaults) so a change of defaults
// cannot silently change what the tests expect.

#include "config/cluster_config.hpp"

namespace llmux::test {

inline config::gpu_spec h100_like() {
  config::gpu_spec g;
  g.name = "test-h100";
  g.mem_bandwidth_gbs = 3350;
  g.peak_tflops = 989;
  g.step_overhead_us = 40;
  g.memory_gib = 80;
  return g;
}

}  // namespace llmux::test
