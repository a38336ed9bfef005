#include "tools/llmux/bench_rtt.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace llmux::tools {

int run_bench_rtt(const rtt_options& opts) {
  httplib::Client cli{opts.url};
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  cli.set_read_timeout(std::chrono::seconds(30));
  httplib::Headers headers;
  if (!opts.api_key.empty())
    headers.emplace("Authorization", "Bearer " + opts.api_key);
  nlohmann::json body{{"model", opts.model}, {"prompt", "hi"}, {"max_tokens", 1}, {"seed", 7}};
  auto text = body.dump();

  std::vector<double> us;
  us.reserve(static_cast<size_t>(opts.requests));
  for (int i = 0; i < opts.warmup + opts.requests; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto res = cli.Post("/v1/completions", headers, text, "application/json");
    auto t1 = std::chrono::steady_clock::now();
    if (!res || res->status != 200) {
      std::cerr << "llmux bench rtt: request " << i << " failed: "
                << (res ? std::to_string(res->status) + " " + res->body
                        : httplib::to_string(res.error()))
                << "\n";
      return 1;
    }
    if (i >= opts.warmup)
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::vector<double> sorted = us;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) {
    auto idx = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(idx, sorted.size() - 1)];
  };
  double mean = 0;
  for (auto v : us)
    mean += v;
  mean /= static_cast<double>(us.size());
  if (opts.json) {
    nlohmann::json j{{"url", opts.url}, {"model", opts.model}, {"requests", us.size()},
                     {"p50_us", pct(50)}, {"p90_us", pct(90)}, {"p99_us", pct(99)},
                     {"mean_us", mean}, {"max_us", sorted.back()}};
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("rtt %s model=%s requests=%zu  p50=%.0f us  p90=%.0f us  p99=%.0f us  "
                "mean=%.0f us  max=%.0f us\n",
                opts.url.c_str(), opts.model.c_str(), us.size(), pct(50), pct(90), pct(99), mean,
                sorted.back());
  }
  return 0;
}

}  // namespace llmux::tools
