#include "tools/llmux/bench_serve.hpp"

#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "tools/loadgen/load_plan.hpp"
#include "tools/loadgen/load_runner.hpp"

namespace llmux::tools {

int run_bench_serve(const serve_bench_options& o) {
  if (!o.rates.empty() && !o.concurrencies.empty()) {
    std::cerr << "llmux bench serve: give --rate (open loop) or --concurrency (closed loop), not both\n";
    return 2;
  }
  loadgen::length_spec prompt, output;
  try {
    prompt = loadgen::parse_length_spec(o.prompt_len);
    output = loadgen::parse_length_spec(o.output_len);
  } catch (const std::invalid_argument& e) {
    std::cerr << "llmux bench serve: " << e.what() << "\n";
    return 2;
  }
  const loadgen::target& t = o.target;
  std::vector<int32_t> source;
  try {
    source = loadgen::prompt_source(t);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench serve: " << e.what() << "\n";
    return 1;
  }
  struct point {
    const char* mode;
    double value;
  };
  std::vector<point> points;
  for (double r : o.rates)
    points.push_back({"rate", r});
  for (int c : o.concurrencies)
    points.push_back({"concurrency", static_cast<double>(c)});
  if (points.empty())
    points.push_back({"concurrency", 1});

  const loadgen::slo_spec slo{o.slo_ttft_ms / 1e3, o.slo_tpot_ms / 1e3};
  std::printf("llmux bench serve: %s model=%s requests=%d prompt=%s output=%s%s\n", t.url.c_str(),
              t.model.c_str(), o.requests, o.prompt_len.c_str(), o.output_len.c_str(),
              slo.ttft_s > 0 || slo.tpot_s > 0 ? " (SLO: TTFT and TPOT bounds given)" : "");
  std::printf("%-12s %7s %5s %4s %8s %9s %8s %8s %8s %8s %8s %8s %8s %8s %8s %6s\n", "mode", "value",
              "ok", "fail", "req/s", "out_tok/s", "ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50",
              "tpot_p99", "itl_p50", "itl_p99", "e2e_p50", "e2e_p99", "slo%");
  int failures = 0;
  for (const auto& p : points) {
    const bool open = std::string{p.mode} == "rate";
    auto plan = loadgen::make_plan(o.requests, open ? p.value : 0.0, prompt, output, o.seed);
    double duration = 0;
    auto results = loadgen::run_plan(t, plan, open ? o.max_workers : static_cast<int>(p.value),
                                     source, duration);
    auto s = loadgen::summarize(results, duration, slo);
    failures += s.failed;
    auto ms = [](double v) { return v * 1e3; };
    std::printf("%-12s %7g %5d %4d %8.2f %9.1f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f %8.2f %8.1f %8.1f "
                "%6.1f\n",
                p.mode, p.value, s.ok, s.failed, s.requests_per_s, s.output_tokens_per_s,
                ms(s.ttft.p50), ms(s.ttft.p90), ms(s.ttft.p99), ms(s.tpot.p50), ms(s.tpot.p99),
                ms(s.itl.p50), ms(s.itl.p99), ms(s.e2e.p50), ms(s.e2e.p99), 100.0 * s.slo_attainment);
    if (!s.first_error.empty())
      std::printf("  first error: %s\n", s.first_error.c_str());
    if (o.json) {
      auto j = loadgen::to_json(s);
      j["mode"] = p.mode;
      j["value"] = p.value;
      j["url"] = t.url;
      j["model"] = t.model;
      j["prompt_len"] = o.prompt_len;
      j["output_len"] = o.output_len;
      std::cout << j.dump() << std::endl;
    }
    std::fflush(stdout);
  }
  return failures > 0 ? 1 : 0;
}

}  // namespace llmux::tools
