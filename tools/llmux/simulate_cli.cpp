#include "tools/llmux/simulate_cli.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <unistd.h>

#include "config/cluster_config.hpp"
#include "plan/online.hpp"
#include "sim/cluster_sim.hpp"
#include "sim/sim_report.hpp"
#include "sim/workload.hpp"
#include "tools/loadgen/png_plot.hpp"

namespace llmux::tools {

namespace {

void draw_progress(double done) {
  const int width = 40;
  const int filled = static_cast<int>(done * width);
  std::fprintf(stderr, "\rsimulating [%.*s%*s] %3d%%", filled, "########################################",
               width - filled, "", static_cast<int>(done * 100));
  if (done >= 1)
    std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace

int run_simulate(const simulate_options& o) {
  if (o.timeline_s != 0 && !(o.timeline_s >= 0.1)) {
    std::cerr << "llmux simulate: --timeline must be at least 0.1 s (or 0: none)\n";
    return 2;
  }
  if (!(o.slo_scale > 0)) {
    std::cerr << "llmux simulate: --slo-scale must be above 0\n";
    return 2;
  }
  config::cluster_config cfg;
  sim::workload w;
  try {
    cfg = config::load_cluster_config(o.config);
  } catch (const config::config_error& e) {
    std::cerr << "llmux simulate: " << e.what() << "\n";
    return 2;
  }
  if (!o.router_policy.empty()) {
    // Every model routed by this one policy, to compare policies on one config.
    cfg.router.policy = o.router_policy;
    for (auto& m : cfg.models)
      m.router_policy.clear();
  }
  try {
    w = sim::load_workload(o.workload);
  } catch (const std::exception& e) {
    std::cerr << "llmux simulate: " << e.what() << "\n";
    return 2;
  }
  if (!o.trace_out.empty()) {
    std::ofstream f(o.trace_out);
    sim::write_trace(w, f);
    if (!f) {
      std::cerr << "llmux simulate: cannot write " << o.trace_out << "\n";
      return 2;
    }
  }
  sim::sim_options so;
  so.bandwidth_contention = !o.no_contention;
  so.drain_s = o.drain_s;
  if (isatty(STDERR_FILENO) && !o.json)
    so.progress = draw_progress;
  if (cfg.controller.replan_s > 0) {
    std::string why;
    if (auto planner = plan::online_planner(cfg, &why))
      so.planner = std::move(*planner);
    else if (!o.json)
      std::cerr << "llmux simulate: re-placement plans by the rate rule: " << why << "\n";
  }
  sim::sim_result r;
  try {
    r = sim::simulate(cfg, w, so);
  } catch (const std::exception& e) {
    std::cerr << "llmux simulate: " << e.what() << "\n";
    return 2;
  }
  // Scales 1..10, and the one the table shows.
  auto scales = sim::default_slo_scales();
  if (std::find(scales.begin(), scales.end(), o.slo_scale) == scales.end()) {
    scales.push_back(o.slo_scale);
    std::sort(scales.begin(), scales.end());
  }
  auto rep = sim::summarize(r, w.models, scales, w.duration_s);
  auto j = sim::to_json(rep);
  j["config"] = o.config;
  j["workload"] = o.workload;
  j["bandwidth_contention"] = so.bandwidth_contention;
  if (o.timeline_s > 0) {
    auto tl = nlohmann::json::array();
    for (const auto& p : sim::timeline(r, o.timeline_s, o.slo_scale))
      tl.push_back({{"t_s", p.t_s}, {"completed_rps", p.completed_rps}, {"arrived", p.arrived},
                    {"attainment", p.attainment}});
    j["timeline"] = tl;
    j["timeline_slo_scale"] = o.slo_scale;
  }
  if (o.json) {
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << "SIMULATED (sim backend, cost model; no model ran): " << o.config << " serving "
              << w.requests.size() << " requests of " << o.workload << " over " << w.duration_s << " s\n"
              << sim::to_table(rep, o.slo_scale);
    if (o.timeline_s > 0) {
      std::cout << "window_s  completed_rps  arrived  slo@" << o.slo_scale << "\n";
      for (const auto& p : sim::timeline(r, o.timeline_s, o.slo_scale)) {
        if (p.arrived > 0)
          std::printf("%8.0f  %13.2f  %7zu  %5.1f%%\n", p.t_s, p.completed_rps, p.arrived, p.attainment * 100);
        else
          std::printf("%8.0f  %13.2f  %7zu      -\n", p.t_s, p.completed_rps, p.arrived);
      }
    }
  }
  if (!o.json_out.empty()) {
    std::ofstream f(o.json_out);
    f << j.dump(1) << "\n";
    if (!f) {
      std::cerr << "llmux simulate: cannot write " << o.json_out << "\n";
      return 2;
    }
  }
  if (!o.plot.empty()) {
    loadgen::plot_panel p;
    p.title = "SLO attainment (simulated)";
    p.x_label = "SLO scale";
    p.y_label = "% requests";
    auto series = [&](const sim::group_report& g) {
      loadgen::plot_series s;
      s.label = g.name;
      s.x = rep.slo_scales;
      for (double a : g.attainment)
        s.y.push_back(a * 100);
      return s;
    };
    p.series.push_back(series(rep.all));
    for (const auto& g : rep.models)
      if (p.series.size() < 10)
        p.series.push_back(series(g));
    try {
      loadgen::write_file(o.plot, loadgen::render_png({p}, 900, 600));
    } catch (const std::exception& e) {
      std::cerr << "llmux simulate: " << e.what() << "\n";
      return 2;
    }
  }
  for (const auto& v : r.violations)
    std::cerr << "llmux simulate: invariant broken: " << v << "\n";
  return r.violations.empty() ? 0 : 3;
}

}  // namespace llmux::tools
