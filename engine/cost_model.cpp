#include "engine/cost_model.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "engine/step_profile.hpp"

namespace llmux::engine {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (int x : v)
    out += (out.empty() ? "" : ", ") + std::to_string(x);
  return out;
}

}  // namespace

cost_model::cost_model(config::model_arch arch, config::gpu_spec gpu)
  : cost_model(std::move(arch), std::move(gpu), cost_options{}) {
}

cost_model::cost_model(config::model_arch arch, config::gpu_spec gpu, cost_options opts)
  : arch_(std::move(arch)), gpu_(std::move(gpu)), opts_(std::move(opts)),
    weight_bytes_(arch_.params() * arch_.dtype_bytes),
    kv_bytes_per_token_(arch_.kv_bytes_per_token()) {
  opts_.tp = std::max(1, opts_.tp);
  if (opts_.profile && !opts_.profile->has(opts_.profile_key, opts_.tp))
    throw std::invalid_argument("profile has no entry for '" + opts_.profile_key + "' at tp "
                                + std::to_string(opts_.tp));
}

cost_model cost_model::for_model(const config::model_config& model, const config::gpu_spec& gpu,
                                 int tp) {
  cost_options o;
  o.tp = std::max(1, tp);
  if (gpu.profile.empty())
    return cost_model(model.arch, gpu, o);
  auto profile = step_profile::shared(gpu.profile);
  if (!model.profile_key.empty() && !profile->has(model.profile_key))
    throw std::runtime_error("model '" + model.name + "': profile " + gpu.profile + " (gpu '" + gpu.name
                             + "') has no key '" + model.profile_key + "' (its profile_key; it has: "
                             + join(profile->models()) + ")");
  for (const auto& key : {model.profile_key, model.name, model.arch.preset}) {
    if (key.empty() || !profile->has(key))
      continue;
    if (!profile->has(key, o.tp))
      throw std::runtime_error("model '" + model.name + "': profile " + gpu.profile + " (gpu '"
                               + gpu.name + "') measured '" + key + "' at tensor-parallel sizes "
                               + join(profile->tp_sizes(key)) + ", not " + std::to_string(o.tp));
    o.profile = profile;
    o.profile_key = key;
    return cost_model(model.arch, gpu, o);
  }
  throw std::runtime_error("model '" + model.name + "': profile " + gpu.profile + " (gpu '" + gpu.name
                           + "') has neither '" + model.name + "' nor its architecture '"
                           + model.arch.preset + "' (it has: " + join(profile->models()) + ")");
}

void cost_model::add_sequence(step_shape& s, int64_t context, int64_t n, bool prefill) {
  s.new_tokens += n;
  s.kv_read_tokens += context + n;
  // Token i of the chunk (0-based) attends to context + i + 1 keys.
  s.attended_pairs += n * context + n * (n + 1) / 2;
  if (prefill) {
    ++s.prefill_seqs;
    s.prefill_tokens += n;
  } else {
    s.decode_seqs += 1;
    s.decode_context += context + n;
  }
}

step_cost cost_model::roofline(const step_shape& s, double share) const {
  share = std::clamp(share, 1e-3, 1.0);
  step_cost c;
  if (s.new_tokens == 0)
    return c;
  c.bytes = weight_bytes_ + kv_bytes_per_token_ * static_cast<double>(s.kv_read_tokens);
  // Linear layers: 2 FLOPs per weight per token. Attention: QK^T and AV, each
  // 2·head_dim FLOPs per (query, key) pair per head per layer = 4·hidden per layer.
  c.flops = 2.0 * arch_.params() * static_cast<double>(s.new_tokens)
            + 4.0 * arch_.layers * static_cast<double>(arch_.hidden)
                * static_cast<double>(s.attended_pairs);
  double bw = gpu_.mem_bandwidth_gbs * 1e9 * std::min(1.0, 2.0 * share);
  double peak = gpu_.peak_tflops * 1e12 * share;
  double t_mem = c.bytes / bw;
  double t_compute = c.flops / peak;
  c.compute_bound = t_compute > t_mem;
  c.seconds = std::max(t_mem, t_compute) / opts_.tp + gpu_.step_overhead_us * 1e-6;
  return c;
}

double cost_model::prefill_seconds(double batch, double length, double share) const {
  batch = std::max(1.0, batch);
  length = std::max(1.0, length);
  if (opts_.profile) {
    if (auto t = opts_.profile->prefill_seconds(opts_.profile_key, opts_.tp, share, batch, length))
      return *t;
  }
  step_shape s;
  s.new_tokens = static_cast<int64_t>(batch * length);
  s.kv_read_tokens = s.new_tokens;
  s.attended_pairs = static_cast<int64_t>(batch * length * (length + 1) / 2);
  return roofline(s, share).seconds;
}

double cost_model::decode_seconds(double batch, double context, double share) const {
  batch = std::max(1.0, batch);
  context = std::max(1.0, context);
  if (opts_.profile) {
    if (auto t = opts_.profile->decode_seconds(opts_.profile_key, opts_.tp, share, batch, context))
      return *t;
  }
  step_shape s;
  s.new_tokens = static_cast<int64_t>(batch);
  s.kv_read_tokens = static_cast<int64_t>(batch * context);
  s.attended_pairs = s.kv_read_tokens;
  return roofline(s, share).seconds;
}

step_cost cost_model::estimate(const step_shape& s, double share) const {
  // Bytes, FLOPs and the bound always come from the roofline (the
  // simulator shares a GPU's bandwidth between its concurrent jobs by them).
  step_cost c = roofline(s, share);
  if (!opts_.profile || s.new_tokens == 0)
    return c;
  double t_prefill = 0, t_decode = 0;
  if (s.prefill_seqs > 0)
    t_prefill = prefill_seconds(static_cast<double>(s.prefill_seqs),
                                static_cast<double>(s.prefill_tokens) / static_cast<double>(s.prefill_seqs),
                                share);
  double context = 1;
  if (s.decode_seqs > 0) {
    context = static_cast<double>(s.decode_context) / static_cast<double>(s.decode_seqs);
    t_decode = decode_seconds(static_cast<double>(s.decode_seqs), context, share);
  }
  c.seconds = t_prefill + t_decode;
  if (t_prefill > 0 && t_decode > 0)
    c.seconds -= std::min({t_prefill, t_decode, decode_seconds(1, context, share)});
  return c;
}

std::string cost_model::describe() const {
  std::ostringstream out;
  if (opts_.profile)
    out << "profile " << gpu_.profile << " key " << opts_.profile_key << ", tp " << opts_.tp;
  else
    out << "roofline (" << gpu_.name << ", tp " << opts_.tp << ")";
  return out.str();
}

}  // namespace llmux::engine
