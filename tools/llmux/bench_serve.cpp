#include "tools/llmux/bench_serve.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <utility>

#include "sim/workload.hpp"
#include "tools/loadgen/idle_connections.hpp"
#include "tools/loadgen/load_plan.hpp"
#include "tools/loadgen/load_runner.hpp"
#include "tools/loadgen/png_plot.hpp"

namespace llmux::tools {

namespace {

/// One panel a measure against the swept value (`sweep`: each rate or
/// concurrency with its run's summary): throughput, output tokens, TTFT, TPOT, E2E, and SLO
/// attainment when an SLO was given (else ITL). A run with no successful
/// request, or a statistic with no samples, leaves a gap.
std::vector<loadgen::plot_panel> sweep_panels(bool open,
                                              std::vector<std::pair<double, loadgen::run_summary>> sweep,
                                              const loadgen::slo_spec& slo) {
  // In ascending order, so that the lines run left to right.
  std::stable_sort(sweep.begin(), sweep.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<double> xs;
  std::vector<loadgen::run_summary> runs;
  for (auto& [x, run] : sweep) {
    xs.push_back(x);
    runs.push_back(std::move(run));
  }
  // A sweep over a factor of 8 or more (1 2 4 8 ...) reads better on a log axis.
  const bool log_x = xs.front() > 0 && xs.back() >= 8 * xs.front();
  const std::string x_label = open ? "rate (req/s)" : "concurrency";
  auto panel = [&](std::string title, std::string y_label, std::vector<loadgen::plot_series> series) {
    return loadgen::plot_panel{std::move(title), x_label, std::move(y_label), std::move(series), log_x};
  };
  auto series = [&](std::string label, auto measure) {
    loadgen::plot_series s{std::move(label), xs, {}};
    for (const auto& r : runs)
      s.y.push_back(r.ok > 0 ? measure(r) : NAN);
    return s;
  };
  using stats_member = loadgen::latency_stats loadgen::run_summary::*;
  auto latency = [&](std::string title, stats_member m) {
    auto ms = [m](double loadgen::latency_stats::*q) {
      return [m, q](const loadgen::run_summary& r) { return (r.*m).n > 0 ? (r.*m).*q * 1e3 : NAN; };
    };
    return panel(std::move(title), "ms",
                 {series("p50", ms(&loadgen::latency_stats::p50)),
                  series("p99", ms(&loadgen::latency_stats::p99))});
  };

  std::vector<loadgen::plot_series> throughput = {
      series("achieved", [](const loadgen::run_summary& r) { return r.requests_per_s; })};
  if (open)
    throughput.push_back({"offered", xs, xs});
  std::vector<loadgen::plot_panel> panels = {
      panel("Throughput", "req/s", throughput),
      panel("Output throughput", "tok/s",
            {series("output tok/s", [](const loadgen::run_summary& r) { return r.output_tokens_per_s; })}),
      latency("TTFT", &loadgen::run_summary::ttft),
      latency("TPOT", &loadgen::run_summary::tpot),
      latency("E2E latency", &loadgen::run_summary::e2e),
  };
  if (slo.ttft_s > 0 || slo.tpot_s > 0) {
    auto bound = [](const char* name, double s) {
      char text[64];
      std::snprintf(text, sizeof text, "%s <= %g ms", name, s * 1e3);
      return std::string{text};
    };
    std::string bounds = slo.ttft_s > 0 ? bound("TTFT", slo.ttft_s) : "";
    if (slo.tpot_s > 0)
      bounds += (bounds.empty() ? "" : ", ") + bound("TPOT", slo.tpot_s);
    // Failed requests miss the SLO, so a run with none OK still has a value (0).
    loadgen::plot_series met{bounds, xs, {}};
    for (const auto& r : runs)
      met.y.push_back(100.0 * r.slo_attainment);
    panels.push_back(panel("SLO attainment", "% of requests", {met}));
  } else {
    panels.push_back(latency("ITL", &loadgen::run_summary::itl));
  }
  return panels;
}

/// --workload: every request of the file at its time, to its model; a row per model.
int run_workload(const serve_bench_options& o) {
  sim::workload w;
  try {
    w = sim::load_workload(o.workload);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench serve: " << e.what() << "\n";
    return 2;
  }
  std::map<std::string, std::vector<int32_t>> sources;
  for (const auto& model : w.models) {
    auto t = o.target;
    t.model = model;
    try {
      sources[model] = loadgen::prompt_source(t);
    } catch (const std::exception& e) {
      std::cerr << "llmux bench serve: model " << model << ": " << e.what() << "\n";
      return 1;
    }
  }
  std::vector<loadgen::planned_request> plan;
  for (const auto& r : w.requests)
    plan.push_back({r.at_s, r.prompt_tokens, r.output_tokens, r.model});
  std::printf("llmux bench serve: %s workload=%s: %zu requests to %zu models over %.1f s\n", o.target.url.c_str(),
              o.workload.c_str(), plan.size(), w.models.size(), w.duration_s);
  double duration = 0;
  auto target = o.target;
  target.distinct_prompts = true;
  auto results = loadgen::run_plan(target, plan, o.max_workers, sources, duration);
  const loadgen::slo_spec slo{o.slo_ttft_ms / 1e3, o.slo_tpot_ms / 1e3};
  std::printf("%-24s %5s %4s %8s %9s %8s %8s %8s %8s %8s %8s %6s\n", "model", "ok", "fail", "req/s", "out_tok/s",
              "ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50", "e2e_p50", "e2e_p99", "slo%");
  int failures = 0;
  auto row = [&](const std::string& name, const std::vector<loadgen::request_result>& rs) {
    auto s = loadgen::summarize(rs, duration, slo);
    auto ms = [](double v) { return v * 1e3; };
    std::printf("%-24s %5d %4d %8.2f %9.1f %8.1f %8.1f %8.1f %8.2f %8.1f %8.1f %6.1f\n", name.c_str(), s.ok, s.failed,
                s.requests_per_s, s.output_tokens_per_s, ms(s.ttft.p50), ms(s.ttft.p90), ms(s.ttft.p99),
                ms(s.tpot.p50), ms(s.e2e.p50), ms(s.e2e.p99), 100.0 * s.slo_attainment);
    if (s.rejected > 0)
      std::printf("  429 (overloaded): %d, answered in p50 %.2f ms, p99 %.2f ms\n", s.rejected,
                  ms(s.rejected_latency.p50), ms(s.rejected_latency.p99));
    if (!s.first_error.empty())
      std::printf("  first error: %s\n", s.first_error.c_str());
    if (o.json) {
      auto j = loadgen::to_json(s);
      j["mode"] = "workload";
      j["workload"] = o.workload;
      j["url"] = o.target.url;
      j["model"] = name;
      std::cout << j.dump() << std::endl;
    }
    return s.failed;
  };
  for (const auto& model : w.models) {
    std::vector<loadgen::request_result> mine;
    for (size_t i = 0; i < plan.size(); ++i)
      if (plan[i].model == model)
        mine.push_back(results[i]);
    row(model, mine);
  }
  failures += row("all", results);
  return failures > 0 ? 1 : 0;
}

}  // namespace

int run_bench_serve(const serve_bench_options& o) {
  if (!o.workload.empty()) {
    if (!o.rates.empty() || !o.concurrencies.empty()) {
      std::cerr << "llmux bench serve: --workload sets the arrivals; give no --rate or --concurrency\n";
      return 2;
    }
    return run_workload(o);
  }
  if (o.target.model.empty()) {
    std::cerr << "llmux bench serve: --model is required (or --workload, whose requests name their models)\n";
    return 2;
  }
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
  std::vector<int32_t> source;  // empty: every prompt is t.text_prompt
  if (t.text_prompt.empty()) {
    try {
      source = loadgen::prompt_source(t);
    } catch (const std::exception& e) {
      std::cerr << "llmux bench serve: " << e.what() << " (--prompt-text sends text instead)\n";
      return 1;
    }
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
  std::unique_ptr<loadgen::idle_connections> idle;
  if (o.idle_connections > 0) {
    try {
      idle = std::make_unique<loadgen::idle_connections>(t.url, o.idle_connections);
    } catch (const std::exception& e) {
      std::cerr << "llmux bench serve: " << e.what() << "\n";
      return 1;
    }
  }
  std::printf("llmux bench serve: %s model=%s requests=%d prompt=%s output=%s%s%s\n", t.url.c_str(),
              t.model.c_str(), o.requests,
              t.text_prompt.empty() ? o.prompt_len.c_str() : ("text of " + std::to_string(t.text_prompt.size()) + " bytes").c_str(),
              o.output_len.c_str(),
              slo.ttft_s > 0 || slo.tpot_s > 0 ? " (SLO: TTFT and TPOT bounds given)" : "",
              idle ? (" idle_connections=" + std::to_string(idle->size())).c_str() : "");
  std::printf("%-12s %7s %5s %4s %8s %9s %8s %8s %8s %8s %8s %8s %8s %8s %8s %6s\n", "mode", "value",
              "ok", "fail", "req/s", "out_tok/s", "ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50",
              "tpot_p99", "itl_p50", "itl_p99", "e2e_p50", "e2e_p99", "slo%");
  int failures = 0;
  std::vector<std::pair<double, loadgen::run_summary>> sweep;
  for (const auto& p : points) {
    const bool open = std::string{p.mode} == "rate";
    auto plan = loadgen::make_plan(o.requests, open ? p.value : 0.0, prompt, output, o.seed);
    double duration = 0;
    // One event-loop thread drives every client (thousands cost no threads).
    auto results = loadgen::run_plan_async(t, plan, open ? o.max_workers : static_cast<int>(p.value),
                                           source, duration);
    auto s = loadgen::summarize(results, duration, slo);
    failures += s.failed - s.rejected;  // a 429 is the server's defined answer to overload
    sweep.emplace_back(p.value, s);
    auto ms = [](double v) { return v * 1e3; };
    std::printf("%-12s %7g %5d %4d %8.2f %9.1f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f %8.2f %8.1f %8.1f "
                "%6.1f\n",
                p.mode, p.value, s.ok, s.failed, s.requests_per_s, s.output_tokens_per_s,
                ms(s.ttft.p50), ms(s.ttft.p90), ms(s.ttft.p99), ms(s.tpot.p50), ms(s.tpot.p99),
                ms(s.itl.p50), ms(s.itl.p99), ms(s.e2e.p50), ms(s.e2e.p99), 100.0 * s.slo_attainment);
    if (s.rejected > 0)
      std::printf("  429 (overloaded): %d, answered in p50 %.2f ms, p99 %.2f ms\n", s.rejected,
                  ms(s.rejected_latency.p50), ms(s.rejected_latency.p99));
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
  if (idle) {
    const int kept = idle->still_answered();
    std::printf("idle connections: %d of %d held open through the sweep and answered again\n", kept,
                idle->size());
    if (kept != idle->size())
      ++failures;
  }
  if (!o.plot.empty()) {
    try {
      const auto panels = sweep_panels(!o.rates.empty(), std::move(sweep), slo);
      const int rows = static_cast<int>((panels.size() + 1) / 2);
      loadgen::write_file(o.plot, loadgen::render_png(panels, 1200, 350 * rows));
    } catch (const std::exception& e) {
      std::cerr << "llmux bench serve: " << e.what() << "\n";
      return 1;
    }
    std::printf("plot: %s\n", o.plot.c_str());
  }
  return failures > 0 ? 1 : 0;
}

}  // namespace llmux::tools
