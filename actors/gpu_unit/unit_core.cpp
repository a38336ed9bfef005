#include "actors/gpu_unit/unit_core.hpp"

#include <stdexcept>

namespace llmux::unit {

void unit_core::add_model(const std::string& model, std::unique_ptr<engine::engine> e,
                          double share, double decode_share) {
  auto& slot = models_[model];
  slot.engine = std::move(e);
  slot.share = share;
  slot.split = decode_share > 0;
  if (slot.split) {
    slot.decode_share = decode_share;
    slot.engine->set_job_share(engine::job_kind::prefill, share);
    slot.engine->set_job_share(engine::job_kind::decode, decode_share);
  } else {
    slot.engine->set_share(share);
  }
}

engine::step_output unit_core::step(const std::string& model, const engine::step_input& in) {
  auto it = models_.find(model);
  if (it == models_.end())
    throw std::out_of_range("model '" + model + "' is not on this unit");
  auto& slot = it->second;
  // Steps that compute something count as running (release-only ones not).
  struct running_guard {
    model_slot& s;
    int n;
    running_guard(model_slot& slot, int counted) : s(slot), n(counted) {
      const int now = s.running += n;
      for (int m = s.running_max; now > m && !s.running_max.compare_exchange_weak(m, now);)
        ;
    }
    ~running_guard() { s.running -= n; }
  };
  engine::step_output out;
  {
    running_guard busy(slot, in.seqs.empty() ? 0 : 1);
    out = slot.engine->step(in);
  }
  ++slot.steps;
  uint64_t fed = 0;
  for (const auto& s : in.seqs)
    fed += s.tokens.size();
  slot.tokens_in += fed;
  slot.busy_ns += static_cast<uint64_t>(out.seconds * 1e9);
  if (in.job == engine::job_kind::decode) {
    ++slot.decode_steps;
    slot.decode_busy_ns += static_cast<uint64_t>(out.seconds * 1e9);
  }
  return out;
}

double unit_core::hold_seconds(const std::string& model, const engine::step_output& out) const {
  auto it = models_.find(model);
  if (it == models_.end() || it->second.engine->backend() != "sim")
    return 0;
  return out.seconds * time_scale_;
}

std::optional<std::string> unit_core::set_share(const std::string& target, double share) {
  share_change change;
  auto err = take_share(target, share, &change);
  if (!err)
    for (const auto& [job, value] : change.jobs)
      models_.at(change.model).engine->set_job_share(job, value);
  return err;
}

std::optional<std::string> unit_core::take_share(const std::string& target, double share,
                                                 share_change* change) {
  // "MODEL" or, for a split model, "MODEL/prefill" or "MODEL/decode". A
  // model's own name wins (model names may contain '/').
  auto it = models_.find(target);
  std::optional<engine::job_kind> job;
  if (it == models_.end())
    for (auto j : {engine::job_kind::prefill, engine::job_kind::decode}) {
      const std::string suffix = std::string{"/"} + engine::job_name(j);
      if (target.size() > suffix.size()
          && target.compare(target.size() - suffix.size(), suffix.size(), suffix) == 0) {
        it = models_.find(target.substr(0, target.size() - suffix.size()));
        job = j;
        break;
      }
    }
  if (it == models_.end())
    return "model '" + target + "' is not on this unit";
  auto& slot = it->second;
  if (job && !slot.split)
    return "model '" + it->first + "' runs one mixed job (the unit's jobs = \"mixed\"): it has no "
           + engine::job_name(*job) + " job of its own";
  if (!(share > 0 && share <= 1))
    return "share must be in (0, 1], got " + std::to_string(share);
  // The new shares of this model's jobs.
  double prefill = slot.share, decode = slot.decode_share;
  if (!slot.split) {
    prefill = share;
  } else if (!job) {
    const double total = prefill + decode;
    prefill = share * prefill / total;
    decode = share - prefill;
  } else if (*job == engine::job_kind::prefill) {
    prefill = share;
  } else {
    decode = share;
  }
  double others = 0;
  for (const auto& [name, s] : models_)
    if (name != it->first)
      others += s.total_share();
  if (others + prefill + decode > 1 + 1e-9)
    return "shares would sum to " + std::to_string(others + prefill + decode) + " (> 1)";
  slot.share = prefill;
  slot.decode_share = decode;
  ++slot.share_moves;
  if (change != nullptr) {
    change->model = it->first;
    change->jobs.clear();
    if (!slot.split)
      change->jobs.emplace_back(engine::job_kind::mixed, prefill);
    else {
      if (!job || *job == engine::job_kind::prefill)
        change->jobs.emplace_back(engine::job_kind::prefill, prefill);
      if (!job || *job == engine::job_kind::decode)
        change->jobs.emplace_back(engine::job_kind::decode, decode);
    }
  }
  return std::nullopt;
}

engine::engine& unit_core::engine_of(const std::string& model) {
  auto it = models_.find(model);
  if (it == models_.end())
    throw std::out_of_range("model '" + model + "' is not on this unit");
  return *it->second.engine;
}

void unit_core::note_running(const std::string& model, int n) {
  auto it = models_.find(model);
  if (it == models_.end())
    return;
  auto& m = it->second.running_max;
  for (int cur = m; n > cur && !m.compare_exchange_weak(cur, n);)
    ;
}

uint64_t unit_core::total_steps() const {
  uint64_t n = 0;
  for (const auto& [name, slot] : models_)
    n += slot.steps;
  return n;
}

}  // namespace llmux::unit
