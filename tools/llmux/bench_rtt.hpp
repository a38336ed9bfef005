#pragma once
/// `llmux bench rtt`: sequential round trips through a running edge
/// (HTTP → gateway → router → scheduler → unit and back), one request at a
/// time on a keep-alive connection, each generating one token. Run it
/// against a sim unit with time_scale = 0 to measure the runtime's own
/// overhead. Prints p50/p90/p99 and the mean in microseconds.

#include <string>

namespace llmux::tools {

struct rtt_options {
  std::string url = "http://127.0.0.1:8080";
  std::string model = "tiny";
  std::string api_key;
  int requests = 1000;
  int warmup = 50;
  bool json = false;
};

int run_bench_rtt(const rtt_options& opts);

}  // namespace llmux::tools
