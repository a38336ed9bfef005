// plan/placement: MuxServe's placement on llmux's cost model.
//
// Expected values are worked by hand (cuts, memory), read off MuxServe's A100
// profile (../shared/muxserve/a100_llama_profile.json), or found by an
// exhaustive search written here, independently of the planner's greedy one.

#include "plan/online.hpp"
#include "plan/placement.hpp"
#include "plan/plan_spec.hpp"
#include "sim/workload.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace llmux;
using plan::cluster_shape;
using plan::model_demand;
using plan::placement_plan;
using plan::plan_options;
using plan::planned_unit;

namespace {

model_demand model(const std::string& name, const std::string& preset, double rate, double prompt = 161,
                   double output = 337) {
  model_demand d;
  d.model.name = name;
  d.model.arch = *config::arch_preset(preset);
  d.rate = rate;
  d.mean_prompt = prompt;
  d.mean_output = output;
  return d;
}

cluster_shape a100s(int nodes, int gpus) {
  cluster_shape c;
  c.nodes = nodes;
  c.gpus_per_node = gpus;
  c.gpu_name = "a100";
  c.gpu.name = "a100";
  c.gpu.mem_bandwidth_gbs = 2039;
  c.gpu.peak_tflops = 312;
  c.gpu.memory_gib = 80;
  c.gpu.profile = "builtin:a100";
  return c;
}

double share_sum(const planned_unit& u) {
  if (u.models.size() == 1)
    return u.models[0].decode_share;  // one step at a time on the whole unit: 1
  double s = u.prefill_share;
  for (const auto& m : u.models)
    s += m.decode_share;
  return s;
}

}  // namespace

TEST_CASE("node cuts: MuxServe's ten ways to cut 8 GPUs into power-of-two groups", "[plan]") {
  auto cuts = plan::node_cuts(8, true);
  const std::vector<std::vector<int>> muxserve = {{8},          {4, 4},          {4, 2, 2},       {4, 2, 1, 1},
                                                  {4, 1, 1, 1, 1}, {2, 2, 2, 2}, {2, 2, 2, 1, 1}, {2, 2, 1, 1, 1, 1},
                                                  {2, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}};
  CHECK(std::set<std::vector<int>>(cuts.begin(), cuts.end())
        == std::set<std::vector<int>>(muxserve.begin(), muxserve.end()));
  CHECK(cuts.size() == 10);
  // Any sizes: the partitions of 4 (4, 3+1, 2+2, 2+1+1, 1+1+1+1).
  CHECK(plan::node_cuts(4, false).size() == 5);
  CHECK(plan::node_cuts(1, true) == std::vector<std::vector<int>>{{1}});
}

TEST_CASE("unit estimator: a lone 7B at a light rate is served in full at its measured decode time", "[plan]") {
  // llama-7b, tp 1, 100% SMs, decode at batch 1 over context 161 + 337/2:
  // between the profile's 128 (11.49 ms) and 256 (11.795 ms) columns.
  auto m = model("m", "llama-7b", 0.01);
  planned_unit u;
  u.gpus = 1;
  u.models.push_back({"m", 0.01, 1.0});
  plan_options o;
  o.slo_scale = 0;
  const double served = plan::estimate_unit(u, {&m}, a100s(1, 1), o);
  CHECK(served == Approx(0.01));
  REQUIRE(u.models.size() == 1);
  const double context = 161 + 337 / 2.0;
  const double expected = 11.49 + (11.795 - 11.49) * (context - 128) / 128;
  CHECK(u.models[0].batch == 1);
  // At 0.01 req/s prefills take a negligible share of the time, so the
  // time per output token is the decode step (over the small free-time factor).
  CHECK(u.models[0].tpot_s * 1e3 == Approx(expected / (1 - 0.01 * 0.016023)).epsilon(0.01));
}

TEST_CASE("unit estimator: co-located models share the lane and each keep their decode partition", "[plan]") {
  auto a = model("a", "llama-7b", 2);
  auto b = model("b", "llama-7b", 2);
  planned_unit u;
  u.gpus = 1;
  u.prefill_share = 0.4;
  u.models.push_back({"a", 2, 0.3});
  u.models.push_back({"b", 2, 0.3});
  plan_options o;
  o.slo_scale = 0;
  CHECK(plan::estimate_unit(u, {&a, &b}, a100s(1, 1), o) == Approx(4));
  // A unit whose weights do not fit is refused: 65B's 130 GB on one 80 GiB GPU.
  auto big = model("big", "llama-65b", 1);
  planned_unit one;
  one.gpus = 1;
  one.models.push_back({"big", 1, 1});
  CHECK(plan::estimate_unit(one, {&big}, a100s(1, 1), o) < 0);
}

namespace {

/// The best estimated goodput of `models` on a node of `gpus` GPUs, over
/// every cut, every assignment of models to units (each model once) and
/// every share grid of each unit: exhaustive.
double exhaustive(const std::vector<model_demand>& models, int gpus, const plan_options& o) {
  const auto cluster = a100s(1, gpus);
  const int levels = static_cast<int>(std::lround(1 / o.share_step));
  double best = -1;
  for (const auto& cut : plan::node_cuts(gpus, true)) {
    // Assign each model a unit index.
    std::vector<size_t> at(models.size(), 0);
    std::function<void(size_t)> assign = [&](size_t i) {
      if (i == models.size()) {
        double total = 0;
        for (size_t k = 0; k < cut.size(); ++k) {
          std::vector<const model_demand*> here;
          for (size_t j = 0; j < models.size(); ++j)
            if (at[j] == k)
              here.push_back(&models[j]);
          if (here.empty())
            continue;
          planned_unit u;
          u.gpus = cut[k];
          double unit_best = -1;
          if (here.size() == 1) {
            u.models = {{here[0]->model.name, here[0]->rate, 1.0}};
            unit_best = plan::estimate_unit(u, here, cluster, o);
          } else {
            // Every grid of decode shares and lane, summing to 1.
            std::vector<int> steps(here.size(), 1);
            std::function<void(size_t, int)> grid = [&](size_t j, int left) {
              if (j == here.size()) {
                if (left < 1)
                  return;
                u.prefill_share = left * o.share_step;
                u.models.clear();
                for (size_t q = 0; q < here.size(); ++q)
                  u.models.push_back({here[q]->model.name, here[q]->rate, steps[q] * o.share_step});
                unit_best = std::max(unit_best, plan::estimate_unit(u, here, cluster, o));
                return;
              }
              for (int s = 1; s < left; ++s) {
                steps[j] = s;
                grid(j + 1, left - s);
              }
            };
            grid(0, levels);
          }
          if (unit_best < 0)
            return;  // does not fit
          total += unit_best;
        }
        best = std::max(best, total);
        return;
      }
      for (size_t k = 0; k < cut.size(); ++k) {
        at[i] = k;
        assign(i + 1);
      }
    };
    assign(0);
  }
  return best;
}

double goodput_of(const placement_plan& p, const std::vector<model_demand>& models, int gpus,
                  const plan_options& o) {
  double total = 0;
  for (auto u : p.units) {
    std::vector<const model_demand*> here;
    for (const auto& m : u.models)
      for (const auto& d : models)
        if (d.model.name == m.name)
          here.push_back(&d);
    total += plan::estimate_unit(u, here, a100s(1, gpus), o);
  }
  return total;
}

}  // namespace

TEST_CASE("greedy placement against an exhaustive search on small cases", "[plan][exhaustive]") {
  plan_options o;
  o.replicas = false;  // the exhaustive search places each model once
  o.share_step = 0.1;
  o.min_share = 0.1;
  struct case_t {
    const char* what;
    std::vector<model_demand> models;
    int gpus;
  };
  const std::vector<case_t> cases = {
    {"two 7B and a 13B on 2 GPUs, overloaded", {model("a", "llama-7b", 12), model("b", "llama-7b", 6),
                                                model("c", "llama-13b", 4)}, 2},
    {"a hot 7B and two cold ones on 2 GPUs", {model("hot", "llama-7b", 20), model("c1", "llama-7b", 1),
                                              model("c2", "llama-7b", 1)}, 2},
    {"a 30B beside two 7B on 4 GPUs, overloaded", {model("big", "llama-30b", 6), model("a", "llama-7b", 15),
                                                   model("b", "llama-7b", 8)}, 4},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const double best = exhaustive(c.models, c.gpus, o);
    REQUIRE(best > 0);
    auto p = plan::plan_llmux(c.models, a100s(1, c.gpus), o);
    REQUIRE(p.unplaced.empty());
    const double got = goodput_of(p, c.models, c.gpus, o);
    // MuxServe's greedy search is a heuristic: it must come within 5% of the optimum.
    CHECK(got >= 0.95 * best);
    CHECK(got <= best + 1e-9);
    WARN(c.what << ": greedy " << got << " req/s of goodput, exhaustive optimum " << best);
  }
}

TEST_CASE("the paper's case: 19 LLMs on 32 A100s are all placed, shares fit, in seconds", "[plan][paper]") {
  // 12 x 7B, 4 x 13B, 2 x 30B, 1 x 65B; rates (i+1)^-0.9 with the top at 20 req/s.
  const std::vector<std::string> sizes = {"llama-7b", "llama-7b",  "llama-65b", "llama-30b", "llama-7b",
                                          "llama-7b", "llama-30b", "llama-7b",  "llama-7b",  "llama-7b",
                                          "llama-7b", "llama-13b", "llama-7b",  "llama-13b", "llama-13b",
                                          "llama-7b", "llama-13b", "llama-7b",  "llama-7b"};
  std::vector<model_demand> models;
  for (size_t i = 0; i < sizes.size(); ++i)
    models.push_back(model("llm-" + std::to_string(i), sizes[i], 20 * std::pow(i + 1.0, -0.9)));
  const auto t0 = std::chrono::steady_clock::now();
  auto p = plan::plan_llmux(models, a100s(4, 8), {});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("19 LLMs on 4 x 8 A100: planned in " << secs << " s, " << p.cuts_tried << " cuts searched, "
                                            << p.units.size() << " units, sustains " << p.load_scale << "x");
  CHECK(p.unplaced.empty());
  CHECK(p.cuts_tried > 100);
  std::map<int, int> gpus_per_node;
  for (const auto& u : p.units) {
    gpus_per_node[u.node] += u.gpus;
    CHECK(share_sum(u) <= 1 + 1e-9);
    CHECK(u.first_gpu + u.gpus <= 8);
  }
  for (const auto& [node, g] : gpus_per_node)
    CHECK(g <= 8);
  for (const auto& m : models)
    CHECK(p.replicas_of(m.model.name) >= 1);
  // The expected rates are servable: the search looked for headroom.
  CHECK(p.load_scale >= 1);

  auto s = plan::plan_spatial(models, a100s(4, 8), {});
  CHECK(s.unplaced.empty());
  for (const auto& u : s.units)
    CHECK(u.models.size() == 1);
  int spatial_gpus = 0;
  for (const auto& u : s.units)
    spatial_gpus += u.gpus;
  CHECK(spatial_gpus <= 32);
  // Each model on the fewest GPUs that hold it: 7B and 13B on 1, 30B on 2, 65B on 4.
  for (const auto& u : s.units) {
    const auto& name = u.models[0].name;
    const auto i = static_cast<size_t>(std::stoi(name.substr(4)));
    const int expect = sizes[i] == "llama-65b" ? 4 : sizes[i] == "llama-30b" ? 2 : 1;
    CHECK(u.gpus == expect);
  }
  auto t = plan::plan_temporal(p, models, a100s(4, 8), {});
  CHECK(t.units.size() == p.units.size());
}

TEST_CASE("the written config names every unit's GPUs, shares and rates", "[plan]") {
  std::vector<model_demand> models = {model("a", "llama-7b", 5), model("b", "llama-7b", 3)};
  auto p = plan::plan_llmux(models, a100s(1, 1), {});
  REQUIRE(p.units.size() == 1);
  const auto text = plan::to_config_toml(p, models, a100s(1, 1));
  CHECK_THAT(text, Catch::Contains("profile = \"builtin:a100\""));
  CHECK_THAT(text, Catch::Contains("prefill = \"shared\""));
  CHECK_THAT(text, Catch::Contains("devices = [0]"));
  CHECK_THAT(text, Catch::Contains("architecture = \"llama-7b\""));
  // The temporal baseline runs one step at a time, first come first served.
  const auto t = plan::to_config_toml(plan::plan_temporal(p, models, a100s(1, 1)), models, a100s(1, 1));
  CHECK_THAT(t, Catch::Contains("multiplex = \"temporal\"") && Catch::Contains("policy = \"fcfs\""));
}

TEST_CASE("the example plan spec and workload load, and their plan places every model", "[plan]") {
  auto spec = plan::load_plan_spec(LLMUX_SOURCE_DIR "/examples/plan-a100.toml");
  CHECK(spec.cluster.nodes == 1);
  CHECK(spec.cluster.gpus_per_node == 4);
  CHECK(spec.cluster.gpu.profile == "builtin:a100");
  CHECK(spec.options.slo_scale == 5);
  REQUIRE(spec.models.size() == 3);
  CHECK(spec.models[0].rate == 6);
  auto w = sim::load_workload(LLMUX_SOURCE_DIR "/examples/workload-zipf.toml");
  plan::apply_workload(spec, w);
  // The workload's arrivals set the rates: its requests over its 60 s.
  size_t chat = 0;
  for (const auto& r : w.requests)
    chat += r.model == "chat-7b" ? 1 : 0;
  CHECK(spec.models[0].rate == Approx(chat / 60.0));
  auto p = plan::plan_llmux(spec.models, spec.cluster, spec.options);
  CHECK(p.unplaced.empty());
  for (const auto& m : spec.models)
    CHECK(p.replicas_of(m.model.name) >= 1);
}

TEST_CASE("plan spec errors name the file, line and key", "[plan]") {
  auto err = [](const std::string& text) {
    try {
      (void)plan::parse_plan_spec(text, "spec.toml");
    } catch (const std::invalid_argument& e) {
      return std::string{e.what()};
    }
    FAIL("accepted: " << text);
    return std::string{};
  };
  const std::string cluster = "[cluster]\nnodes = 1\ngpus_per_node = 2\ngpu = \"a100\"\n";
  CHECK_THAT(err(cluster), Catch::Contains("spec.toml:") && Catch::Contains("models"));
  CHECK_THAT(err(cluster + "[[models]]\nname = \"a\"\narchitecture = \"llama-99b\"\n"),
             Catch::StartsWith("spec.toml:7: key 'models[0].architecture'"));
  CHECK_THAT(err(cluster + "[[models]]\nname = \"a\"\narchitecture = \"llama-7b\"\nrate = -1\n"),
             Catch::Contains("models[0].rate"));
  CHECK_THAT(err("[cluster]\nnodes = 1\ngpus_per_node = 2\ngpu = \"v100\"\n"), Catch::Contains("cluster.gpu"));
  CHECK_THAT(err(cluster + "[plan]\nshare_step = 0.7\n[[models]]\nname = \"a\"\narchitecture = \"llama-7b\"\n"),
             Catch::Contains("plan.share_step"));
  CHECK_THAT(err(cluster + "typo = 1\n"), Catch::Contains("'cluster.typo'") && Catch::Contains("unknown key"));
}

TEST_CASE("shares on an H100 are whole 8-SM steps and never sum above the GPU", "[plan]") {
  // Roofline H100 (no profile): 8 of 132 SMs a step, so at most 16 steps (128 SMs).
  cluster_shape c;
  c.nodes = 1;
  c.gpus_per_node = 1;
  c.gpu_name = "h100";
  c.gpu.name = "h100";
  c.gpu.memory_gib = 80;
  plan_options o;
  o.share_step = 8.0 / 132.0;
  o.min_share = o.share_step;
  std::vector<model_demand> models = {model("a", "llama-8b", 4), model("b", "llama-8b", 2), model("c", "llama-1b", 3)};
  auto p = plan::plan_llmux(models, c, o);
  REQUIRE(p.units.size() == 1);
  const auto& u = p.units[0];
  double steps = std::round(u.prefill_share / o.share_step);
  CHECK(u.prefill_share == Approx(steps * o.share_step));
  for (const auto& m : u.models) {
    const double k = std::round(m.decode_share / o.share_step);
    CHECK(m.decode_share == Approx(k * o.share_step));
    steps += k;
  }
  CHECK(steps <= 16);
  CHECK(share_sum(u) <= 1 + 1e-9);
}

TEST_CASE("more nodes than models: every model is placed", "[plan]") {
  // 3 models, 4 nodes of 8: each node has at least one unit, so a search
  // that wanted no more units than models would try no cut at all.
  std::vector<model_demand> models = {model("a", "llama-7b", 6), model("b", "llama-13b", 2),
                                      model("c", "llama-7b", 1)};
  auto p = plan::plan_llmux(models, a100s(4, 8), {});
  CHECK(p.unplaced.empty());
  CHECK(p.cuts_tried > 0);
  for (const auto& m : models)
    CHECK(p.replicas_of(m.model.name) >= 1);
}

TEST_CASE("a model that fits nowhere is reported, the others are placed", "[plan]") {
  // llama-65b is measured at tp 4 and 8 only: a node of 2 GPUs cannot hold it.
  std::vector<model_demand> models = {model("huge", "llama-65b", 1), model("small", "llama-7b", 2)};
  auto p = plan::plan_llmux(models, a100s(1, 2), {});
  CHECK(p.unplaced == std::vector<std::string>{"huge"});
  CHECK(p.replicas_of("small") >= 1);
  CHECK(p.rate_rps == Approx(3));
}

TEST_CASE("many nodes: the cut search stays bounded", "[plan]") {
  // 16 nodes of 8: all multisets of the 10 node cuts would be ~2 million;
  // the search tries those with at most two distinct cuts.
  std::vector<model_demand> models;
  for (int i = 0; i < 20; ++i)
    models.push_back(model("m" + std::to_string(i), "llama-7b", 2));
  const auto t0 = std::chrono::steady_clock::now();
  auto p = plan::plan_llmux(models, a100s(16, 8), {});
  WARN("20 models on 16 x 8 A100: " << p.cuts_tried << " cuts, "
       << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  CHECK(p.unplaced.empty());
  CHECK(p.cuts_tried < 100000);
}

TEST_CASE("the written config carries the GPU type for any backend, and shapes that are not presets", "[plan]") {
  auto custom = model("custom", "llama-7b", 2);
  custom.model.arch.preset = "custom";  // as a model read from its file
  custom.model.arch.layers = 30;
  custom.model.profile_key = "llama-7b";  // its step times: the profile's 7B
  std::vector<model_demand> models = {custom, model("b", "llama-7b", 1)};
  auto p = plan::plan_llmux(models, a100s(1, 2), {});
  REQUIRE(p.unplaced.empty());
  plan::config_options co;
  const auto sim_text = plan::to_config_toml(p, models, a100s(1, 2), co);
  CHECK_THAT(sim_text, Catch::Contains("architecture = { layers = 30, hidden = 4096")
                         && Catch::Contains("profile_key = \"llama-7b\""));
  co.backend = "cuda";
  const auto cuda_text = plan::to_config_toml(p, models, a100s(1, 2), co);
  CHECK_THAT(cuda_text, Catch::Contains("[gpus.a100]") && Catch::Contains("step_overhead_us")
                          && Catch::Contains("load_format = \"dummy\""));
}

namespace {

plan::fixed_unit fixed(const std::string& name, std::vector<std::string> models, double cap_bytes) {
  plan::fixed_unit u;
  u.name = name;
  u.models = std::move(models);
  u.weight_cap_bytes = cap_bytes;
  return u;
}

std::vector<std::string> names_on(const planned_unit& u) {
  std::vector<std::string> out;
  for (const auto& m : u.models)
    out.push_back(m.name);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("plan_on_units: each model only where its unit lists it, under the unit's cap; the rest sleep",
          "[plan][online]") {
  // 13B weights: 13.0e9 parameters x 2 bytes. u0 lists a, b, c, d and holds
  // two of them; u1 lists only c and holds one. In demand order a, b take
  // u0 (the only unit listing them), c finds u0 full and goes to u1, d (the
  // least demand) finds nowhere: unplaced.
  const double w13 = config::arch_preset("llama-13b")->params() * 2.0;
  std::vector<model_demand> models = {model("a", "llama-13b", 2.0), model("b", "llama-13b", 1.0),
                                      model("c", "llama-13b", 0.5), model("d", "llama-13b", 0.1)};
  std::vector<plan::fixed_unit> units = {fixed("u0", {"a", "b", "c", "d"}, 2.5 * w13), fixed("u1", {"c"}, 1.5 * w13)};
  auto p = plan::plan_on_units(models, units, a100s(1, 2), {});
  REQUIRE(p.units.size() == 2);
  CHECK(p.units[0].name == "u0");
  CHECK(p.units[1].name == "u1");
  CHECK(names_on(p.units[0]) == std::vector<std::string>{"a", "b"});
  CHECK(names_on(p.units[1]) == std::vector<std::string>{"c"});
  CHECK(p.unplaced == std::vector<std::string>{"d"});
  // Without caps, the GPU's memory is the only limit (a third 13B does not
  // fit u0's 80 GiB beside KV): with u1 listing d too, d is placed there.
  units[0].weight_cap_bytes = 0;
  units[1].weight_cap_bytes = 0;
  units[1].models.push_back("d");
  auto open = plan::plan_on_units(models, units, a100s(1, 2), {});
  CHECK(open.unplaced.empty());
  CHECK(open.replicas_of("d") >= 1);
  // A unit that lists nothing holds nothing, and is still in the plan.
  auto idle = plan::plan_on_units(models, {fixed("u0", {"a"}, 0), fixed("u1", {}, 0)}, a100s(1, 2), {});
  REQUIRE(idle.units.size() == 2);
  CHECK(idle.units[1].models.empty());
  CHECK(idle.unplaced == std::vector<std::string>{"b", "c", "d"});
}

TEST_CASE("plan_on_units: two busy models listed on two units go one to each", "[plan][online]") {
  // Both units can hold both; together on one GPU they would share its
  // compute, apart each has a GPU of its own: the greedy puts the second on
  // the empty unit (its gain there is larger), whatever the first did.
  const double w7 = config::arch_preset("llama-7b")->params() * 2.0;
  std::vector<model_demand> models = {model("a", "llama-7b", 6.0), model("b", "llama-7b", 5.0)};
  std::vector<plan::fixed_unit> units = {fixed("u0", {"a", "b"}, 2.5 * w7), fixed("u1", {"a", "b"}, 2.5 * w7)};
  auto p = plan::plan_on_units(models, units, a100s(1, 2), {});
  REQUIRE(p.units.size() == 2);
  CHECK(p.unplaced.empty());
  for (const auto& u : p.units)
    CHECK(u.models.size() == 1);
  CHECK(names_on(p.units[0]) != names_on(p.units[1]));
  CHECK(p.served_rps == Approx(11.0).epsilon(0.02));
  // Either way serves them alike: where they are awake now decides (a
  // plan on measured rates does not move models for nothing), whichever
  // of the two is the more popular.
  for (double rate_b : {5.0, 6.1}) {
    models[1].rate = rate_b;
    units[0].awake = {"b"};
    units[1].awake = {"a"};
    auto kept = plan::plan_on_units(models, units, a100s(1, 2), {});
    CHECK(names_on(kept.units[0]) == std::vector<std::string>{"b"});
    CHECK(names_on(kept.units[1]) == std::vector<std::string>{"a"});
    units[0].awake = {"a"};
    units[1].awake = {"b"};
    auto back = plan::plan_on_units(models, units, a100s(1, 2), {});
    CHECK(names_on(back.units[0]) == std::vector<std::string>{"a"});
    CHECK(names_on(back.units[1]) == std::vector<std::string>{"b"});
  }
}

TEST_CASE("online_planner: the controller's target from a config's units and the measured rates",
          "[plan][online]") {
  // Two A100 units that each list m0 and m1 with room for one 7B each, on
  // MuxServe's layout; then the same with a cpu unit (no cost model).
  const std::string sim = R"(
[[nodes]]
name = "n0"
host = "127.0.0.1"
port = 7400
[gateway]
node = "n0"
[router]
node = "n0"
[controller]
node = "n0"
replan_s = 5
[gpus.a100]
profile = "builtin:a100"
[[models]]
name = "m0"
architecture = "llama-7b"
[[models]]
name = "m1"
architecture = "llama-7b"
[[units]]
name = "g0"
node = "n0"
gpu = "a100"
memory_mib = 20000
models = [ { name = "m0", share = 0.5 }, { name = "m1", share = 0.5, awake = false } ]
[[units]]
name = "g1"
node = "n0"
gpu = "a100"
devices = [1]
memory_mib = 20000
models = [ { name = "m0", share = 0.5, awake = false }, { name = "m1", share = 0.5, awake = false } ]
)";
  auto cfg = config::parse_cluster_config(sim, "test.toml");
  std::string why;
  auto planner = plan::online_planner(cfg, &why);
  REQUIRE(planner);
  auto target = (*planner)({{"m0", 3.0}, {"m1", 2.0}}, {});
  REQUIRE(target.size() == 2);
  REQUIRE(target["g0"].models.size() == 1);
  REQUIRE(target["g1"].models.size() == 1);
  CHECK(target["g0"].models[0] != target["g1"].models[0]);
  // Partitions the planner's estimate does not model: the unit's own shares stand.
  CHECK(target["g0"].shares.empty());
  CHECK_FALSE(target["g0"].caps);
  // As MPS caps (oversubscribed): a model alone takes the whole unit.
  cfg.units[0].oversubscribe = cfg.units[1].oversubscribe = true;
  auto capped = (*plan::online_planner(cfg))({{"m0", 3.0}, {"m1", 2.0}}, {});
  CHECK(capped["g0"].caps);
  CHECK(capped["g0"].job.empty());  // the model's whole share
  CHECK(capped["g0"].shares.at(capped["g0"].models[0]) == Approx(1.0));
  cfg.units[0].oversubscribe = cfg.units[1].oversubscribe = false;
  // No traffic for m1: m0 is still placed.
  auto quiet = (*planner)({{"m0", 3.0}, {"m1", 0.0}}, {});
  size_t m0 = 0;
  for (const auto& [unit, t] : quiet)
    m0 += static_cast<size_t>(std::count(t.models.begin(), t.models.end(), "m0"));
  CHECK(m0 >= 1);
  // Off by config, and no cost model on a cpu unit: the rate rule.
  cfg.controller.replan_planner = false;
  CHECK_FALSE(plan::online_planner(cfg, &why));
  CHECK(why.find("replan_planner") != std::string::npos);
  cfg.controller.replan_planner = true;
  cfg.units[1].backend = "cpu";
  CHECK_FALSE(plan::online_planner(cfg, &why));
  CHECK(why.find("cpu") != std::string::npos);
}
