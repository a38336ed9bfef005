#include "plan/online.hpp"

#include <algorithm>
#include <exception>
#include <memory>
#include <set>

namespace llmux::plan {

std::optional<controller::placement_fn> online_planner(const config::cluster_config& cfg, std::string* why,
                                                       model_demand demand) {
  auto no = [why](std::string reason) -> std::optional<controller::placement_fn> {
    if (why)
      *why = std::move(reason);
    return std::nullopt;
  };
  if (!cfg.controller.replan_planner)
    return no("[controller] replan_planner = false");
  auto cluster = std::make_shared<cluster_shape>();
  auto units = std::make_shared<std::vector<fixed_unit>>();
  auto models = std::make_shared<std::vector<model_demand>>();
  auto lane_units = std::make_shared<std::set<std::string>>();
  auto cap_units = std::make_shared<std::map<std::string, std::map<std::string, double>>>();  ///< unit → configured caps
  std::vector<std::string> nodes;
  int widest = 1;
  for (const auto& u : cfg.units) {
    if (u.memory_mib <= 0 || u.layout != "single")
      continue;
    if (u.backend == "cpu")
      return no("unit '" + u.name + "' runs on the cpu backend, which has no cost model for the planner");
    if (cluster->gpu_name != u.gpu && !units->empty())
      return no("units '" + units->front().name + "' and '" + u.name + "' are of different GPU types");
    cluster->gpu_name = u.gpu;
    auto spec = cfg.gpus.find(u.gpu);
    if (spec == cfg.gpus.end())
      return no("unit '" + u.name + "': GPU type '" + u.gpu + "' is not defined");
    if (!(spec->second.memory_gib > 0))
      return no("GPU type '" + u.gpu + "' has no memory_gib");
    cluster->gpu = spec->second;
    auto node = std::find(nodes.begin(), nodes.end(), u.node);
    const int node_index = static_cast<int>(node - nodes.begin());
    if (node == nodes.end())
      nodes.push_back(u.node);
    fixed_unit f;
    f.name = u.name;
    f.node = node_index;
    f.gpus = std::max<int>(1, static_cast<int>(u.devices.size()));
    f.weight_cap_bytes = static_cast<double>(int64_t{u.memory_mib} << 20);
    widest = std::max(widest, f.gpus);
    for (const auto& um : u.models) {
      f.models.push_back(um.model);
      const auto* m = cfg.find_model(um.model);
      if (m == nullptr || !(m->arch.params() > 0))
        return no("model '" + um.model + "' on unit '" + u.name + "' has no known shape");
      if (std::none_of(models->begin(), models->end(), [&](const auto& d) { return d.model.name == m->name; })) {
        model_demand d = demand;
        d.model = *m;
        models->push_back(std::move(d));
      }
    }
    if (u.jobs == "split" && u.prefill == "shared")
      lane_units->insert(u.name);
    if (u.oversubscribe)
      for (const auto& um : u.models)
        (*cap_units)[u.name][um.model] = um.share;
    units->push_back(std::move(f));
  }
  if (units->empty())
    return no("no unit has a memory_mib");
  cluster->nodes = static_cast<int>(nodes.size());
  cluster->gpus_per_node = 1;
  while (cluster->gpus_per_node < widest)
    cluster->gpus_per_node *= 2;
  auto opts = std::make_shared<plan_options>();
  const bool hopper = cluster->gpu_name == "h100" || cluster->gpu_name == "h200";
  opts->share_step = cluster->gpu.profile.empty() && hopper ? 8.0 / 132.0 : 0.1;
  opts->min_share = opts->share_step;
  return controller::placement_fn(
    [cluster, units, models, lane_units, cap_units, opts](const std::map<std::string, double>& rates,
                                              const std::map<std::string, std::vector<std::string>>& awake) {
      auto demands = *models;
      for (auto& d : demands) {
        auto r = rates.find(d.model.name);
        d.rate = r == rates.end() ? 0 : r->second;
      }
      auto now = *units;
      for (auto& u : now) {
        auto a = awake.find(u.name);
        u.awake = a == awake.end() ? std::vector<std::string>{} : a->second;
      }
      placement_plan plan;
      try {
        plan = plan_on_units(demands, now, *cluster, *opts);
      } catch (const std::exception&) {
        return std::map<std::string, controller::unit_target>{};  // no target: nothing placed, nothing moved
      }
      std::map<std::string, controller::unit_target> out;
      for (const auto& u : plan.units) {
        auto& t = out[u.name];
        t.caps = cap_units->count(u.name) > 0;
        const bool lane = lane_units->count(u.name) > 0;
        t.job = lane ? "decode" : "";
        for (const auto& m : u.models) {
          t.models.push_back(m.name);
          if (lane) {
            if (u.models.size() > 1)
              t.shares[m.name] = m.decode_share;
          } else if (t.caps) {
            // MPS-style caps: a model alone takes the unit (as the planner
            // estimates it: one step at a time on all of it); beside others,
            // its configured cap.
            t.shares[m.name] = u.models.size() == 1 ? 1.0 : cap_units->at(u.name).at(m.name);
          }
        }
      }
      return out;
    });
}

}  // namespace llmux::plan
