#include "actors/unit_setup.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "engine/cost_model.hpp"

namespace llmux::setup {

kv::kv_manager_options kv_options(const config::cluster_config& cfg, const config::unit_config& u) {
  kv::kv_manager_options kvo;
  kvo.node = u.node;
  kvo.name = u.name + "/kv";
  kvo.block_tokens = u.block_tokens;
  kvo.total_blocks = u.kv_blocks > 0 ? u.kv_blocks : config::auto_kv_blocks(cfg, u);
  kvo.policy = u.policy;
  kvo.quota_period_ms = u.quota_period_ms;
  kvo.floor_tokens = u.kv_floor_tokens;
  for (const auto& in : instances(u)) {
    const auto* m = cfg.find_model(in.model);
    if (m == nullptr)
      continue;
    double rate = 1;
    for (const auto& um : u.models)
      if (um.model == in.model)
        rate = um.rate / in.count;
    kvo.models.push_back({in.key, m->arch.layers, m->arch.kv_heads, rate, engine::reads_unit_blocks(*m),
                          m->arch.head_size()});
  }
  return kvo;
}

std::string instance_key(const std::string& model, int index) {
  return index == 0 ? model : model + "#" + std::to_string(index);
}

std::vector<instance> instances(const config::unit_config& u) {
  std::vector<instance> out;
  const bool many = u.layout != "single" && u.models.size() == 1;
  for (const auto& um : u.models) {
    if (!many) {
      out.push_back({um.model, um.model, 0, 1, um.share});
      continue;
    }
    const int k = std::max(u.threads, 1);
    for (int i = 0; i < k; ++i) {
      double share = 1.0 / k;
      if (u.layout == "dynamic")  // starts as one replica on the whole unit
        share = i == 0 ? 1.0 : 0.0;
      out.push_back({instance_key(um.model, i), um.model, i, k, share});
    }
  }
  return out;
}

scheduler::scheduler_options scheduler_options(const config::unit_config& u, const config::model_config& m,
                                               engine::token_id eos_id) {
  scheduler::scheduler_options o;
  o.max_running = u.max_running;
  o.max_batch_tokens = u.max_batch_tokens;
  o.max_waiting = u.max_waiting;
  o.growth = u.kv_growth == "reserve" ? scheduler::kv_growth::reserve : scheduler::kv_growth::on_demand;
  // Prefix hits skip prefill where the engine reads the unit's shared
  // blocks (cpu), and on the sim, whose KV is accounting only.
  o.share_prefix = m.backend == "sim" || engine::reads_unit_blocks(m);
  o.block_tokens = u.block_tokens;
  o.split_jobs = u.jobs == "split";
  o.context_length = m.arch.context_length > 0 ? m.arch.context_length : 4096;
  o.eos_id = eos_id;
  return o;
}

engine::engine_context engine_context(const config::cluster_config& cfg, const config::unit_config& u,
                                      const config::unit_model& um, int64_t kv_blocks) {
  engine::engine_context ctx;
  ctx.gpu = cfg.gpus.at(u.gpu);
  // Temporal multiplexing gives each step the whole unit. Split jobs: the
  // engine starts on the prefill job's share (with a shared prefill lane,
  // the lane's); the decode job's is set when the unit takes the model.
  ctx.share = u.multiplex == "temporal" ? 1.0 : um.share - um.decode_share;
  ctx.threads = u.threads;
  ctx.block_tokens = u.block_tokens;
  ctx.kv_blocks = kv_blocks;
  ctx.devices = u.devices;
  return ctx;
}

controller::layout_unit_options layout_options(const config::cluster_config& cfg,
                                               const config::unit_config& u) {
  controller::layout_unit_options o;
  o.k = std::max(u.threads, 1);
  o.hysteresis = u.layout_hysteresis;
  o.cooldown_s = u.layout_cooldown_ms / 1e3;
  o.automatic = u.layout == "dynamic";
  o.switch_at = u.layout_switch_at;
  if (o.switch_at > 0 || u.models.size() != 1)
    return o;
  const auto* m = cfg.find_model(u.models[0].model);
  auto gpu = cfg.gpus.find(u.gpu);
  const bool measured = gpu != cfg.gpus.end() && !gpu->second.profile.empty();
  // The roofline knows no CPU, and for GPUs it models no tensor-parallel
  // communication: only a measured profile places the switch.
  if (m == nullptr || !measured) {
    if (o.automatic)
      throw std::runtime_error("unit " + u.name + ": layout = \"dynamic\" needs layout_switch_at, or a "
                               "measured profile of this CPU for the crossover (gpu = \"NAME\" and [gpus.NAME] "
                               "profile = FILE, made by `llmux bench engine --profile`)");
    return o;
  }
  try {
    auto cost = engine::cost_model::for_model(*m, gpu->second, 1);
    o.switch_at = controller::crossover(
      [&cost](double batch, double share) { return cost.decode_seconds(batch, 512, share); }, o.k, 1024);
  } catch (const std::exception& e) {
    if (o.automatic)
      throw std::runtime_error("unit " + u.name + ": layout = \"dynamic\": " + e.what());
  }
  return o;
}

router::routing_options routing(const config::cluster_config& cfg) {
  router::routing_options rt;
  if (auto p = router::parse_policy(cfg.router.policy))
    rt.policy = *p;
  for (const auto& m : cfg.models)
    if (auto p = router::parse_policy(m.router_policy))
      rt.model_policy[m.name] = *p;
  if (!cfg.units.empty())
    rt.block_tokens = cfg.units.front().block_tokens;
  rt.affinity_slack = cfg.router.affinity_slack;
  rt.affinity_ratio = cfg.router.affinity_ratio;
  rt.prefix_cache_blocks = static_cast<size_t>(cfg.router.prefix_cache_blocks);
  rt.max_sessions = static_cast<size_t>(cfg.router.max_sessions);
  return rt;
}

double prefill_rate(const config::cluster_config& cfg, const config::unit_config& u,
                    const config::unit_model& um) {
  const auto* m = cfg.find_model(um.model);
  auto gpu = cfg.gpus.find(u.gpu);
  if (!m || m->backend == "cpu" || gpu == cfg.gpus.end())
    return 0;
  try {
    const int tp = std::max<int>(1, static_cast<int>(u.devices.size()));
    auto cost = engine::cost_model::for_model(*m, gpu->second, tp);
    const double share = std::clamp(u.multiplex == "temporal" ? 1.0 : um.share, 0.01, 1.0);
    const double s = cost.prefill_seconds(1, 512, share) * std::max(u.time_scale, 0.0);
    return s > 0 ? 512 / s : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

void configure_core(unit::unit_core& core, const config::unit_config& u) {
  if (u.prefill == "shared")
    core.set_prefill_lane(u.prefill_share);
  core.set_oversubscribed(u.oversubscribe);
}

step_sharing sharing(const config::unit_config& u) {
  step_sharing s;
  s.temporal = u.multiplex == "temporal";
  s.shared_prefill = u.prefill == "shared";
  s.policy = u.policy;
  // Temporal: after a prefill step of every model, a waiting decode step
  // goes (pure prefill-first would starve decodes here, where MuxServe
  // runs them beside prefills in spare SMs). A shared prefill lane runs
  // only prefill steps: nothing to bound.
  s.max_prefill_streak = s.temporal ? static_cast<int>(u.models.size()) : 0;
  return s;
}

int64_t weight_bytes(const config::model_config& m) {
  namespace fs = std::filesystem;
  if (m.backend != "sim" && m.load_format != "dummy" && !m.file.empty()) {
    std::error_code ec;
    if (fs::is_directory(m.file, ec)) {
      int64_t n = 0;
      for (const auto& f : fs::directory_iterator(m.file, ec))
        if (f.path().extension() == ".safetensors")
          n += static_cast<int64_t>(f.file_size(ec));
      return n;
    }
    const auto n = fs::file_size(m.file, ec);
    return ec ? 0 : static_cast<int64_t>(n);
  }
  // Bytes per weight of each dummy dtype (blocks of 32 or 256 with scales).
  double per = m.arch.dtype_bytes;
  if (m.load_format == "dummy") {
    static const std::pair<const char*, double> sizes[] = {
      {"f32", 4},         {"f16", 2},          {"bf16", 2},          {"q8_0", 34.0 / 32},  {"q4_0", 18.0 / 32},
      {"q4_1", 20.0 / 32}, {"q5_0", 22.0 / 32},   {"q5_1", 24.0 / 32},   {"q4_k", 144.0 / 256},
      {"q5_k", 176.0 / 256}, {"q6_k", 210.0 / 256}};
    for (const auto& [name, b] : sizes)
      if (m.dtype == name)
        per = b;
  }
  return static_cast<int64_t>(m.arch.params() * per);
}

double sim_wake_seconds(const config::cluster_config& cfg, const config::unit_config& unit,
                        const config::model_config& model) {
  if (unit.backend != "sim")
    return 0;
  auto gpu = cfg.gpus.find(unit.gpu);
  if (gpu == cfg.gpus.end() || gpu->second.load_gbs <= 0)
    return 0;
  const double devices = static_cast<double>(std::max<size_t>(1, unit.devices.size()));
  return static_cast<double>(weight_bytes(model)) / (gpu->second.load_gbs * 1e9 * devices);
}

}  // namespace llmux::setup
