#pragma once
/// `llmux bench gateway`: what the edge itself costs. The backend is the
/// simulated unit at zero step time (`time_scale = 0`: labelled simulated;
/// no model math), so every microsecond measured is the runtime's:
///
///   inproc       requests handed to the gateway actor in this process, as
///                the HTTP edge hands them (gateway → router → scheduler →
///                kv → unit → back), no HTTP;
///   http         `llmux serve --sim` as a child process, over HTTP;
///   two-process  `llmux launch` of an edge node and a unit node (the unit's
///                messages cross the middleman);
///   peer         a peer Rust router from PyPI (sglang-router) in front of
///                the `http` layout's server as its single worker.
///
/// For each: sequential latency (one request at a time, short outputs),
/// non-streaming and streaming, p50/p99; then, for each mode, the highest
/// Poisson request rate of a ladder at which the end-to-end p99 stays under
/// the bound (every request answered, the offered rate achieved).

#include <string>
#include <vector>

namespace llmux::tools {

struct gateway_bench_options {
  int requests = 2000;        ///< sequential samples per layout and mode
  int warmup = 100;
  int output_len = 4;         ///< max_tokens per request (short outputs)
  std::vector<double> rates;  ///< the ladder (requests/s); empty: 250 ... 24000
  double rate_seconds = 3;    ///< seconds of arrivals per ladder step
  double p99_bound_ms = 10;
  int max_workers = 64;       ///< open-loop client threads
  std::vector<std::string> layouts = {"inproc", "http", "two-process", "peer"};
  std::string python;         ///< interpreter with sglang_router (default: the setup venv's)
  int base_port = 18600;      ///< ports base .. base+7 are used
  bool json = false;
};

int run_bench_gateway(const gateway_bench_options& opts);

}  // namespace llmux::tools
