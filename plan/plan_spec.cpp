#include "plan/plan_spec.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <toml++/toml.h>

namespace llmux::plan {

namespace {

[[noreturn]] void fail(const std::string& source, const toml::node* n, const std::string& key, const std::string& why) {
  const int line = n ? static_cast<int>(n->source().begin.line) : 0;
  throw std::invalid_argument(source + ":" + std::to_string(line) + ": key '" + key + "': " + why);
}

void allow_only(const std::string& source, const toml::table& t, const std::string& prefix,
                const std::set<std::string>& keys) {
  for (auto&& [k, v] : t)
    if (!keys.count(std::string{k.str()}))
      fail(source, &v, prefix + std::string{k.str()}, "unknown key");
}

double positive(const std::string& source, const toml::table& t, const std::string& key, const std::string& path,
                double fallback) {
  const auto* n = t.get(key);
  if (!n)
    return fallback;
  auto v = n->value<double>();
  if (!v || !(*v > 0) || !std::isfinite(*v))
    fail(source, n, path, "must be a positive number");
  return *v;
}

}  // namespace

plan_spec parse_plan_spec(const std::string& text, const std::string& source, const std::string& base_dir) {
  toml::table top;
  try {
    top = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(source + ":" + std::to_string(e.source().begin.line) + ": "
                                + std::string{e.description()});
  }
  allow_only(source, top, "", {"cluster", "gpus", "plan", "models"});
  plan_spec spec;
  spec.source = source;
  // GPU types: the built-in ones, then the file's.
  auto gpus = config::default_single_node().gpus;
  if (const auto* g = top.get("gpus")) {
    const auto* tbl = g->as_table();
    if (!tbl)
      fail(source, g, "gpus", "must be a table of GPU types");
    for (auto&& [k, v] : *tbl) {
      const std::string name{k.str()};
      const auto* t = v.as_table();
      if (!t)
        fail(source, &v, "gpus." + name, "must be a table");
      allow_only(source, *t, "gpus." + name + ".",
                 {"mem_bandwidth_gbs", "peak_tflops", "step_overhead_us", "memory_gib", "profile"});
      auto& spec_gpu = gpus[name];
      spec_gpu.name = name;
      spec_gpu.mem_bandwidth_gbs = positive(source, *t, "mem_bandwidth_gbs", "gpus." + name + ".mem_bandwidth_gbs",
                                            spec_gpu.mem_bandwidth_gbs);
      spec_gpu.peak_tflops = positive(source, *t, "peak_tflops", "gpus." + name + ".peak_tflops", spec_gpu.peak_tflops);
      spec_gpu.step_overhead_us = positive(source, *t, "step_overhead_us", "gpus." + name + ".step_overhead_us",
                                           spec_gpu.step_overhead_us);
      spec_gpu.memory_gib = positive(source, *t, "memory_gib", "gpus." + name + ".memory_gib", spec_gpu.memory_gib);
      if (const auto* p = t->get("profile")) {
        auto v = p->value<std::string>();
        if (!v || v->empty())
          fail(source, p, "gpus." + name + ".profile", "must be a file or builtin:a100");
        if (v->rfind("builtin:", 0) == 0) {
          if (*v != "builtin:a100")
            fail(source, p, "gpus." + name + ".profile", "unknown built-in profile (known: builtin:a100)");
          spec_gpu.profile = *v;
        } else {
          std::filesystem::path path(*v);
          if (path.is_relative())
            path = std::filesystem::path(base_dir) / path;
          if (!std::filesystem::is_regular_file(path))
            fail(source, p, "gpus." + name + ".profile", "profile file '" + path.string() + "': no such file");
          spec_gpu.profile = path.lexically_normal().string();
        }
      }
    }
  }
  const auto* c = top.get("cluster");
  if (!c || !c->as_table())
    fail(source, c, "cluster", "is required: nodes, gpus_per_node, gpu");
  const auto& ct = *c->as_table();
  allow_only(source, ct, "cluster.", {"nodes", "gpus_per_node", "gpu"});
  for (auto [key, out] : {std::pair{"nodes", &spec.cluster.nodes}, std::pair{"gpus_per_node", &spec.cluster.gpus_per_node}}) {
    const auto* n = ct.get(key);
    auto v = n ? n->value<int64_t>() : std::nullopt;
    if (!v || *v < 1 || *v > 1024)
      fail(source, n ? n : c, std::string{"cluster."} + key, "must be an integer in 1..1024");
    *out = static_cast<int>(*v);
  }
  {
    const auto* n = ct.get("gpu");
    auto v = n ? n->value<std::string>() : std::nullopt;
    if (!v)
      fail(source, n ? n : c, "cluster.gpu", "must name a GPU type");
    auto it = gpus.find(*v);
    if (it == gpus.end())
      fail(source, n, "cluster.gpu", "unknown GPU type '" + *v + "'");
    spec.cluster.gpu_name = *v;
    spec.cluster.gpu = it->second;
  }
  // Shares: the device's split granularity.
  const bool hopper = spec.cluster.gpu_name == "h100" || spec.cluster.gpu_name == "h200";
  spec.options.share_step = spec.cluster.gpu.profile.empty() && hopper ? 8.0 / 132.0 : 0.1;
  spec.options.min_share = spec.options.share_step;
  if (const auto* p = top.get("plan")) {
    const auto* t = p->as_table();
    if (!t)
      fail(source, p, "plan", "must be a table");
    allow_only(source, *t, "plan.",
               {"backend", "share_step", "min_share", "lane_load", "memory_fraction", "replicas", "slo_scale"});
    if (const auto* v = t->get("slo_scale")) {
      auto x = v->value<double>();
      if (!x || !(*x >= 0) || !std::isfinite(*x))
        fail(source, v, "plan.slo_scale", "must be a number >= 0 (0: no SLO)");
      spec.options.slo_scale = *x;
    }
    if (const auto* r = t->get("replicas")) {
      auto v = r->value<bool>();
      if (!v)
        fail(source, r, "plan.replicas", "must be true or false");
      spec.options.replicas = *v;
    }
    if (const auto* b = t->get("backend")) {
      auto v = b->value<std::string>();
      if (!v || (*v != "sim" && *v != "cuda" && *v != "cpu"))
        fail(source, b, "plan.backend", "must be \"sim\", \"cuda\" or \"cpu\"");
      spec.backend = *v;
    }
    spec.options.share_step = positive(source, *t, "share_step", "plan.share_step", spec.options.share_step);
    spec.options.min_share = positive(source, *t, "min_share", "plan.min_share", spec.options.share_step);
    spec.options.lane_load = positive(source, *t, "lane_load", "plan.lane_load", spec.options.lane_load);
    spec.options.memory_fraction = positive(source, *t, "memory_fraction", "plan.memory_fraction",
                                            spec.options.memory_fraction);
    if (spec.options.share_step > 0.5 || spec.options.share_step < 1.0 / 1024)
      fail(source, t->get("share_step"), "plan.share_step", "must be in [1/1024, 0.5]");
  }
  const auto* ms = top.get("models");
  const auto* arr = ms ? ms->as_array() : nullptr;
  if (!arr || arr->empty())
    fail(source, ms, "models", "at least one [[models]] entry is required");
  std::set<std::string> names;
  for (size_t i = 0; i < arr->size(); ++i) {
    const std::string path = "models[" + std::to_string(i) + "]";
    const auto* t = arr->get(i)->as_table();
    if (!t)
      fail(source, arr->get(i), path, "must be a table");
    allow_only(source, *t, path + ".", {"name", "architecture", "file", "rate", "prompt", "output"});
    model_demand d;
    auto name = t->get("name") ? t->get("name")->value<std::string>() : std::nullopt;
    if (!name || name->empty())
      fail(source, arr->get(i), path + ".name", "is required");
    if (!names.insert(*name).second)
      fail(source, t->get("name"), path + ".name", "model '" + *name + "' is listed twice");
    d.model.name = *name;
    d.model.backend = spec.backend;
    if (const auto* a = t->get("architecture")) {
      auto v = a->value<std::string>();
      auto arch = v ? config::arch_preset(*v) : std::nullopt;
      if (!arch)
        fail(source, a, path + ".architecture", "must be a preset name (llama-7b, llama-13b, ...)");
      d.model.arch = *arch;
    } else if (const auto* f = t->get("file")) {
      auto v = f->value<std::string>();
      if (!v || v->empty())
        fail(source, f, path + ".file", "must be a model file");
      std::filesystem::path p(*v);
      if (p.is_relative())
        p = std::filesystem::path(base_dir) / p;
      d.model.file = p.lexically_normal().string();
    } else {
      fail(source, arr->get(i), path + ".architecture", "a model needs an architecture preset or a file");
    }
    d.rate = t->get("rate") ? positive(source, *t, "rate", path + ".rate", 1) : 0;
    d.mean_prompt = positive(source, *t, "prompt", path + ".prompt", d.mean_prompt);
    d.mean_output = positive(source, *t, "output", path + ".output", d.mean_output);
    spec.models.push_back(std::move(d));
  }
  return spec;
}

plan_spec load_plan_spec(const std::string& path) {
  std::ifstream f(path);
  if (!f)
    throw std::invalid_argument(path + ":0: cannot read the plan spec");
  std::stringstream buf;
  buf << f.rdbuf();
  auto base = std::filesystem::path(path).parent_path().string();
  return parse_plan_spec(buf.str(), path, base.empty() ? "." : base);
}

void apply_workload(plan_spec& spec, const sim::workload& w) {
  struct sums {
    double n = 0, prompt = 0, output = 0;
  };
  std::map<std::string, sums> by;
  for (const auto& r : w.requests) {
    auto& s = by[r.model];
    s.n += 1;
    s.prompt += r.prompt_tokens;
    s.output += r.output_tokens;
  }
  for (const auto& [name, s] : by) {
    auto it = std::find_if(spec.models.begin(), spec.models.end(),
                           [&](const model_demand& d) { return d.model.name == name; });
    if (it == spec.models.end())
      throw std::invalid_argument(w.source + ": workload model '" + name + "' is not in the plan spec " + spec.source);
    it->rate = w.duration_s > 0 ? s.n / w.duration_s : 0;
    it->mean_prompt = s.prompt / s.n;
    it->mean_output = s.output / s.n;
  }
}

}  // namespace llmux::plan
