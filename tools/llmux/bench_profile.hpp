#pragma once
/// `llmux bench profile [--profile SPEC]`: what a step-latency profile
/// (engine/step_profile.hpp) covers — models, tp sizes, shares, batches,
/// lengths — and how far its interpolation is from held-out measured points
/// (`engine::holdout_errors`). No engine runs; reads the file only.

#include <string>

namespace llmux::tools {

struct profile_bench_options {
  std::string profile = "builtin:a100";  ///< a file, or builtin:a100
  bool json = false;                     ///< one JSON document instead of tables
};

/// Prints to stdout; returns 0, or 2 (message on stderr) when the profile
/// cannot be read.
int run_bench_profile(const profile_bench_options& opts);

}  // namespace llmux::tools
