#include "actors/gpu_unit/unit_core.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace llmux::unit {

void unit_core::add_model(const std::string& model, std::unique_ptr<engine::engine> e,
                          double share, double decode_share, engine_maker make, const std::string& backend) {
  if (!e && !make)
    throw std::logic_error("unit_core: model '" + model + "' has neither an engine nor a maker");
  auto& slot = models_[model];
  slot.engine = std::move(e);
  slot.make = std::move(make);
  slot.backend = slot.engine ? slot.engine->backend() : backend;
  if (slot.engine && !slot.engine->steps_at_once())
    slot.one_at_a_time = std::make_unique<std::mutex>();
  slot.share = lane_ > 0 ? lane_ : share;
  slot.split = decode_share > 0;
  if (slot.split)
    slot.decode_share = decode_share;
  // Setup is single-threaded: place the new jobs, and every job whose
  // partition start moved (the layout is in model-name order).
  for (const auto& p : relayout())
    place_job(p.model, p.job, p.offset, p.share);
}

void unit_core::place_job(const std::string& model, engine::job_kind job, double offset, double share) {
  auto& slot = models_.at(model);
  std::lock_guard<std::mutex> lock(*slot.engine_mu);
  if (slot.engine)
    slot.engine->set_job_partition(job, offset, share);
}

bool unit_core::loaded(const std::string& model) const {
  auto& slot = models_.at(model);
  std::lock_guard<std::mutex> lock(*slot.engine_mu);
  return slot.engine != nullptr;
}

void unit_core::unload(const std::string& model) {
  auto& slot = models_.at(model);
  if (!slot.make)
    throw std::logic_error("model '" + model + "' cannot sleep: the unit cannot build its engine again");
  std::unique_ptr<engine::engine> gone;
  {
    std::lock_guard<std::mutex> lock(*slot.engine_mu);
    gone = std::move(slot.engine);
  }
  // Destroyed outside the lock: an engine's threads may take a while to join.
}

void unit_core::load(const std::string& model) {
  auto& slot = models_.at(model);
  if (loaded(model))
    return;
  auto e = slot.make();  // may take a while (and throw): outside the lock
  if (!e->steps_at_once() && !slot.one_at_a_time)
    slot.one_at_a_time = std::make_unique<std::mutex>();
  // The partitions the unit's books hold for it now (shares may have moved
  // while it slept).
  std::vector<std::pair<engine::job_kind, double>> jobs;
  if (lane_ > 0) {
    jobs = {{engine::job_kind::prefill, lane_}, {engine::job_kind::decode, slot.decode_share.load()}};
  } else if (slot.split) {
    jobs = {{engine::job_kind::prefill, slot.share.load()}, {engine::job_kind::decode, slot.decode_share.load()}};
  } else {
    jobs = {{engine::job_kind::mixed, slot.share.load()}};
  }
  for (const auto& [job, share] : jobs)
    e->set_job_partition(job, offset_of(model, job), share);
  std::lock_guard<std::mutex> lock(*slot.engine_mu);
  slot.engine = std::move(e);
}

std::vector<unit_core::share_change::placed> unit_core::relayout() {
  std::vector<share_change::placed> moved;
  auto place = [&](const std::string& name, engine::job_kind job, double at, double share) {
    auto key = std::make_pair(name, job);
    auto it = offsets_.find(key);
    if (it == offsets_.end() || std::fabs(it->second - at) > 1e-12) {
      offsets_[key] = at;
      moved.push_back({name, job, at, share});
    }
  };
  if (lane_ > 0) {
    // Every prefill job on the lane at the start; decode jobs after it.
    double at = lane_;
    for (const auto& [name, slot] : models_) {
      place(name, engine::job_kind::prefill, 0, lane_);
      place(name, engine::job_kind::decode, at, slot.decode_share.load());
      at += slot.decode_share.load();
    }
    return moved;
  }
  double at = 0;
  for (const auto& [name, slot] : models_) {
    const auto first = slot.split ? engine::job_kind::prefill : engine::job_kind::mixed;
    std::vector<std::pair<engine::job_kind, double>> jobs{{first, slot.share.load()}};
    if (slot.split)
      jobs.emplace_back(engine::job_kind::decode, slot.decode_share.load());
    for (const auto& [job, share] : jobs) {
      place(name, job, at, share);
      at += share;
    }
  }
  return moved;
}

double unit_core::offset_of(const std::string& model, engine::job_kind job) const {
  auto it = offsets_.find({model, job});
  if (it == offsets_.end())
    throw std::out_of_range("no job " + std::string{engine::job_name(job)} + " of model '" + model + "' on this unit");
  return it->second;
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
    std::unique_lock<std::mutex> turn;
    if (slot.one_at_a_time)
      turn = std::unique_lock<std::mutex>(*slot.one_at_a_time);
    running_guard busy(slot, in.seqs.empty() ? 0 : 1);
    if (!slot.engine)
      throw std::runtime_error("model '" + model + "' is asleep on this unit");
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
  if (it == models_.end() || it->second.backend != "sim")
    return 0;
  return out.seconds * time_scale_;
}

std::optional<std::string> unit_core::set_share(const std::string& target, double share) {
  share_change change;
  auto err = take_share(target, share, &change);
  if (!err)
    for (const auto& p : change.places)
      place_job(p.model, p.job, p.offset, p.share);
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
  // 0 parks a mixed model (a replica of a unit laid out as several that
  // lent its threads to another): it keeps its engine and takes no steps.
  const bool parks = share == 0 && !slot.split && !job && lane_ <= 0;
  if (!(share > 0 && share <= 1) && !parks)
    return "share must be in (0, 1], got " + std::to_string(share);
  if (lane_ > 0 && job && *job == engine::job_kind::prefill)
    return "model '" + it->first + "' runs its prefill steps on the unit's shared prefill lane: only its "
           + "decode job's share moves (" + it->first + "/decode)";
  if (lane_ > 0 && !job) {
    // A model's whole share is the lane plus its decode job's: the decode
    // job takes what the lane leaves of it (as the controller moves shares).
    if (!(share - lane_ > 1e-9))
      return "a share of " + std::to_string(share) + " for model '" + it->first
             + "' leaves its decode job nothing beside the unit's shared prefill lane ("
             + std::to_string(lane_) + "): give the lane plus a decode share, or set " + it->first + "/decode";
    share -= lane_;
    job = engine::job_kind::decode;
  }
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
      others += lane_ > 0 ? s.decode_share.load() : s.total_share();
  const double sum = lane_ > 0 ? lane_ + others + decode : others + prefill + decode;
  if (sum > 1 + 1e-9 && !oversubscribed_)
    return "shares would sum to " + std::to_string(sum) + " (> 1)";
  slot.share = prefill;
  slot.decode_share = decode;
  ++slot.share_moves;
  auto shifted = relayout();
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
    // Where each job lands: the moved ones, and any other whose offset shifted.
    change->places.clear();
    for (const auto& [j, value] : change->jobs)
      change->places.push_back({it->first, j, offset_of(it->first, j), value});
    for (const auto& p : shifted) {
      const bool listed = std::any_of(change->places.begin(), change->places.end(), [&](const auto& q) {
        return q.model == p.model && q.job == p.job;
      });
      if (!listed)
        change->places.push_back(p);
    }
  }
  return std::nullopt;
}

engine::engine& unit_core::engine_of(const std::string& model) {
  auto it = models_.find(model);
  if (it == models_.end())
    throw std::out_of_range("model '" + model + "' is not on this unit");
  if (!it->second.engine)
    throw std::runtime_error("model '" + model + "' is asleep on this unit");
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
