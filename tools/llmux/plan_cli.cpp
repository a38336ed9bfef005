#include "tools/llmux/plan_cli.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/engine_factory.hpp"
#include "plan/placement.hpp"
#include "plan/plan_spec.hpp"

namespace llmux::tools {

namespace {

nlohmann::json plan_json(const plan::placement_plan& p, double seconds) {
  auto units = nlohmann::json::array();
  for (const auto& u : p.units) {
    auto models = nlohmann::json::array();
    for (const auto& m : u.models)
      models.push_back({{"name", m.name}, {"rate", m.rate}, {"served_rps", m.served_rps},
                        {"decode_share", m.decode_share}, {"batch", m.batch}, {"tpot_ms", m.tpot_s * 1e3},
                        {"kv_quota_blocks", m.kv_quota_blocks}});
    units.push_back({{"node", u.node}, {"first_gpu", u.first_gpu}, {"gpus", u.gpus},
                     {"prefill_share", u.prefill_share}, {"lane_load", u.lane_load}, {"kv_blocks", u.kv_blocks},
                     {"models", models}});
  }
  return {{"system", plan::system_name(p.system)}, {"rate_rps", p.rate_rps}, {"served_rps", p.served_rps},
          {"cuts_tried", p.cuts_tried}, {"search_s", seconds}, {"units", units}, {"unplaced", p.unplaced}};
}

bool write(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) {
    std::cerr << "llmux plan: cannot write " << path << "\n";
    return false;
  }
  return true;
}

}  // namespace

int run_plan(const plan_options& o) {
  plan::plan_spec spec;
  try {
    spec = plan::load_plan_spec(o.spec);
    if (!o.backend.empty())
      spec.backend = o.backend;
    if (o.no_replicas)
      spec.options.replicas = false;
    if (o.slo_scale >= 0)
      spec.options.slo_scale = o.slo_scale;
    if (!o.workload.empty())
      plan::apply_workload(spec, sim::load_workload(o.workload));
    // Model files tell their own shape.
    config::cluster_config files;
    for (auto& d : spec.models)
      if (!d.model.file.empty()) {
        d.model.backend = spec.backend == "sim" ? "cpu" : spec.backend;
        files.models.push_back(d.model);
      }
    engine::resolve_model_files(files);
    for (auto& d : spec.models)
      for (const auto& f : files.models)
        if (f.name == d.model.name)
          d.model.arch = f.arch;
  } catch (const std::exception& e) {
    std::cerr << "llmux plan: " << e.what() << "\n";
    return 2;
  }
  std::vector<plan::placement_plan> plans;
  std::vector<double> seconds;
  try {
    auto t0 = std::chrono::steady_clock::now();
    plans.push_back(plan::plan_llmux(spec.models, spec.cluster, spec.options));
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (o.baselines) {
      t0 = std::chrono::steady_clock::now();
      plans.push_back(plan::plan_spatial(spec.models, spec.cluster, spec.options));
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      t0 = std::chrono::steady_clock::now();
      plans.push_back(plan::plan_temporal(plans[0], spec.models, spec.cluster, spec.options));
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  } catch (const std::exception& e) {
    std::cerr << "llmux plan: " << e.what() << "\n";
    return 2;
  }
  if (o.json) {
    auto j = nlohmann::json::array();
    for (size_t i = 0; i < plans.size(); ++i)
      j.push_back(plan_json(plans[i], seconds[i]));
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << "llmux plan: " << spec.models.size() << " models on " << spec.cluster.nodes << " x "
              << spec.cluster.gpus_per_node << " " << spec.cluster.gpu_name << " ("
              << (spec.cluster.gpu.profile.empty() ? "roofline cost model" : "profile " + spec.cluster.gpu.profile)
              << "; shares in steps of " << spec.options.share_step << ")\n";
    for (size_t i = 0; i < plans.size(); ++i)
      std::cout << "\n" << plan::to_table(plans[i]) << "(searched in " << seconds[i] << " s)\n";
  }
  for (const auto& p : plans)
    if (!p.unplaced.empty()) {
      std::cerr << "llmux plan: " << plan::system_name(p.system) << " could not place " << p.unplaced.size()
                << " models: " << p.unplaced.front() << (p.unplaced.size() > 1 ? ", ..." : "") << "\n";
    }
  if (!o.out.empty() && spec.backend != "sim")
    for (const auto& u : plans[0].units)
      if (u.models.size() > 1) {
        std::cerr << "llmux plan: the shared prefill lane runs on sim units only for now: units with "
                     "several models are written for "
                  << spec.backend << " as temporal units (one step at a time), which the estimates above "
                                     "do not describe\n";
        break;
      }
  if (!o.out.empty() && plans[0].units.empty()) {
    std::cerr << "llmux plan: nothing placed, so no config written to " << o.out << "\n";
    return 1;
  }
  if (!o.out.empty()) {
    plan::config_options co;
    co.backend = spec.backend;
    co.http_port = static_cast<uint16_t>(o.http_port);
    co.base_port = static_cast<uint16_t>(o.base_port);
    std::filesystem::path out(o.out);
    for (const auto& p : plans) {
      auto path = out;
      if (p.system != plan::system_kind::llmux)
        path = out.parent_path() / (out.stem().string() + "-" + plan::system_name(p.system) + out.extension().string());
      co.cluster_name = std::string{"planned-"} + plan::system_name(p.system);
      if (!write(path.string(), plan::to_config_toml(p, spec.models, spec.cluster, co)))
        return 2;
      if (!o.json)
        std::cout << "wrote " << path.string() << "\n";
    }
  }
  return plans[0].unplaced.empty() ? 0 : 1;
}

}  // namespace llmux::tools
