#include "tools/llmux/bench_layout.hpp"

#include <cstdio>
#include <iostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/controller/layout_policy.hpp"
#include "config/cluster_config.hpp"
#include "engine/cost_model.hpp"

namespace llmux::tools {

int run_bench_layout(const layout_bench_options& o) {
  auto arch = config::arch_preset(o.model);
  if (!arch) {
    std::cerr << "llmux bench layout: unknown architecture preset '" << o.model << "'\n";
    return 2;
  }
  if (o.devices < 2 || o.replica_devices < 1 || o.devices % o.replica_devices != 0
      || o.replica_devices == o.devices) {
    std::cerr << "llmux bench layout: --devices must be a multiple (>= 2x) of --replica-devices\n";
    return 2;
  }
  // The GPU types a config knows, from the embedded default.
  auto cfg = config::default_single_node();
  auto gpu_it = cfg.gpus.find(o.gpu);
  if (gpu_it == cfg.gpus.end()) {
    std::cerr << "llmux bench layout: unknown gpu '" << o.gpu << "' (a100, h100, h200)\n";
    return 2;
  }
  auto gpu = gpu_it->second;
  if (o.gpu == "a100")
    gpu.profile = "builtin:a100";  // MuxServe's measured A100 step latencies
  config::model_config m;
  m.name = o.model;
  m.arch = *arch;
  const int k = o.devices, g = o.replica_devices, n = k / g;
  std::unique_ptr<engine::cost_model> one, each;
  try {
    one = std::make_unique<engine::cost_model>(engine::cost_model::for_model(m, gpu, k));
    each = std::make_unique<engine::cost_model>(engine::cost_model::for_model(m, gpu, g));
  } catch (const std::exception& e) {
    std::cerr << "llmux bench layout: " << e.what() << "\n";
    return 2;
  }
  // Step time of one layout at concurrency c: one replica of tp k batches
  // all c; n replicas of tp g batch c/n each. As layout_policy's step
  // function: share 1 is the whole unit, share 1/n one small replica.
  auto step = [&](double batch, double share) {
    return share >= 1.0 ? one->decode_seconds(batch, o.context, 1.0)
                        : each->decode_seconds(batch, o.context, 1.0);
  };
  const double at = controller::crossover(step, n, o.max_concurrency);
  controller::layout_policy policy;
  controller::layout_unit_options lo;
  lo.k = n;
  lo.switch_at = at;
  lo.hysteresis = o.hysteresis;
  lo.cooldown_s = 0;
  lo.smoothing = 1.0;
  policy.add_unit("u", lo, controller::layout_kind::single);

  std::vector<int> levels;
  for (int c = 1; c <= o.max_concurrency; c *= 2)
    levels.push_back(c);
  std::vector<int> ramp = levels;  // up, then back down
  for (auto it = levels.rbegin() + 1; it != levels.rend(); ++it)
    ramp.push_back(*it);

  auto rows = nlohmann::json::array();
  std::printf("SIMULATED (cost model: %s): %s on %d %s, decode at a %d-token context, closed loop\n",
              one->describe().c_str(), o.model.c_str(), k, o.gpu.c_str(), o.context);
  std::printf("one replica = tp %d; replicas = %d x tp %d; crossover (replicas >= 2%% faster per step): %s\n", k, n, g,
              at > 0 ? std::to_string(static_cast<int>(at)).c_str() : "none up to --max-concurrency");
  std::printf("%5s | %9s %9s %9s | %9s %9s %9s | %9s %9s %9s\n", "c", "1:TPOT ms", "tok/s", "", "n:TPOT ms",
              "tok/s", "", "dynamic", "TPOT ms", "tok/s");
  double t = 0;
  for (size_t i = 0; i < ramp.size(); ++i) {
    const int c = ramp[i];
    policy.observe("u", "all", c);
    for (const auto& mv : policy.decide(t)) {
      policy.begin(mv.unit, t);
      policy.end(mv.unit, mv.to, true, t);
    }
    t += 1;
    const double s1 = step(c, 1.0), sn = step(static_cast<double>(c) / n, 1.0 / n);
    const bool reps = policy.find("u")->layout == controller::layout_kind::replicas;
    const double sd = reps ? sn : s1;
    std::printf("%5d | %9.2f %9.0f %9s | %9.2f %9.0f %9s | %9s %9.2f %9.0f%s\n", c, s1 * 1e3, c / s1, "",
                sn * 1e3, c / sn, "", reps ? "replicas" : "single", sd * 1e3, c / sd, i + 1 == levels.size() ? "  (top)" : "");
    rows.push_back({{"concurrency", c},
                    {"ramp", i < levels.size() ? "up" : "down"},
                    {"single_tpot_ms", s1 * 1e3},
                    {"single_tok_s", c / s1},
                    {"replicas_tpot_ms", sn * 1e3},
                    {"replicas_tok_s", c / sn},
                    {"dynamic_layout", reps ? "replicas" : "single"},
                    {"dynamic_tok_s", c / sd}});
  }
  std::printf("dynamic: %llu switches over the ramp up and down\n",
              static_cast<unsigned long long>(policy.find("u")->switches));
  if (o.json)
    std::cout << nlohmann::json{{"simulated", true},
                                {"model", o.model},
                                {"gpu", o.gpu},
                                {"devices", k},
                                {"replica_devices", g},
                                {"cost_model", one->describe()},
                                {"crossover", at},
                                {"switches", policy.find("u")->switches},
                                {"rows", rows}}
                   .dump()
              << "\n";
  return 0;
}

}  // namespace llmux::tools
