#include "actors/gpu_unit/unit_policy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace llmux::unit {

// ---------------------------------------------------------------------------
// Step arbitration

namespace {

// Indexed by the enums' values.
constexpr std::string_view policy_names[] = {"adbs", "fcfs", "round_robin"};
constexpr std::string_view reason_names[] = {"backlog", "rate_target"};

}  // namespace

std::optional<policy_kind> parse_policy(const std::string& name) {
  for (auto kind : {policy_kind::adbs, policy_kind::fcfs, policy_kind::round_robin})
    if (name == policy_name(kind))
      return kind;
  return std::nullopt;
}

std::string_view policy_name(policy_kind kind) {
  return policy_names[static_cast<size_t>(kind)];
}

std::string unknown_policy_text(const std::string& name) {
  return "unknown unit policy '" + name + "' (known: adbs, fcfs, round_robin)";
}

unit_arbiter::unit_arbiter(policy_kind kind, int max_prefill_streak)
  : kind_(kind), max_prefill_streak_(std::max(0, max_prefill_streak)) {
}

size_t unit_arbiter::slot_of(const std::string& model) {
  auto [it, fresh] = index_.try_emplace(model, slots_.size());
  if (fresh) {
    model_slot s;
    s.name = model;
    slots_.push_back(std::move(s));
  }
  return it->second;
}

void unit_arbiter::add_model(const std::string& model) {
  (void)slot_of(model);
}

void unit_arbiter::ready(const std::string& model, bool prefill, double oldest_arrival_s) {
  auto& s = slots_[slot_of(model)];
  auto& j = prefill ? s.prefill : s.decode;
  j.ready = true;
  j.oldest_arrival_s = oldest_arrival_s;
}

void unit_arbiter::withdraw(const std::string& model) {
  auto it = index_.find(model);
  if (it == index_.end())
    return;
  slots_[it->second].prefill.ready = false;
  slots_[it->second].decode.ready = false;
}

size_t unit_arbiter::ready_count() const {
  size_t n = 0;
  for (const auto& s : slots_)
    n += static_cast<size_t>(s.prefill.ready) + static_cast<size_t>(s.decode.ready);
  return n;
}

template <typename Pred>
std::optional<size_t> unit_arbiter::rotate(size_t& cursor, Pred want) {
  const size_t n = slots_.size();
  const size_t start = cursor == SIZE_MAX ? 0 : cursor + 1;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (start + k) % n;
    if (want(slots_[i])) {
      cursor = i;
      return i;
    }
  }
  return std::nullopt;
}

step_grant unit_arbiter::grant(size_t i, bool prefill, bool decode) {
  auto& s = slots_[i];
  for (auto [wanted, j] : {std::pair{prefill, &s.prefill}, std::pair{decode, &s.decode}})
    if (wanted && j->ready) {
      j->ready = false;
      ++j->granted;
    }
  return {s.name, prefill, decode};
}

std::optional<step_grant> unit_arbiter::next() {
  auto has_prefill = [](const model_slot& s) { return s.prefill.ready; };
  auto has_decode = [](const model_slot& s) { return s.decode.ready; };
  auto has_any = [](const model_slot& s) { return s.prefill.ready || s.decode.ready; };

  switch (kind_) {
    case policy_kind::adbs: {
      const bool decode_due = max_prefill_streak_ > 0 && prefill_streak_ >= max_prefill_streak_ &&
                              std::any_of(slots_.begin(), slots_.end(), has_decode);
      if (!decode_due)
        if (auto i = rotate(prefill_cursor_, has_prefill)) {
          ++prefill_streak_;
          return grant(*i, true, false);
        }
      if (auto i = rotate(decode_cursor_, has_decode)) {
        prefill_streak_ = 0;
        return grant(*i, false, true);
      }
      return std::nullopt;
    }
    case policy_kind::fcfs: {
      // The oldest arrival among a model's ready jobs.
      auto oldest = [](const model_slot& s) {
        double t = std::numeric_limits<double>::infinity();
        if (s.prefill.ready)
          t = s.prefill.oldest_arrival_s;
        if (s.decode.ready)
          t = std::min(t, s.decode.oldest_arrival_s);
        return t;
      };
      std::optional<size_t> best;
      for (size_t i = 0; i < slots_.size(); ++i)
        if (has_any(slots_[i]) && (!best || oldest(slots_[i]) < oldest(slots_[*best])))
          best = i;
      if (best)
        return grant(*best, slots_[*best].prefill.ready, slots_[*best].decode.ready);
      return std::nullopt;
    }
    case policy_kind::round_robin:
      if (auto i = rotate(decode_cursor_, has_any))
        return grant(*i, slots_[*i].prefill.ready, slots_[*i].decode.ready);
      return std::nullopt;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Rate estimate

rate_estimator::rate_estimator(double initial_rate, double tau_s)
  : tau_s_(tau_s > 0 ? tau_s : 1.0), value_(std::max(0.0, initial_rate)) {
}

void rate_estimator::start(double now_s) {
  if (started_)
    return;
  started_ = true;
  last_s_ = now_s;
}

void rate_estimator::on_arrival(double now_s) {
  start(now_s);
  now_s = std::max(now_s, last_s_);
  value_ = rate(now_s) + 1.0 / tau_s_;
  last_s_ = now_s;
}

double rate_estimator::rate(double now_s) const {
  if (!started_ || now_s <= last_s_)
    return value_;
  return value_ * std::exp(-(now_s - last_s_) / tau_s_);
}

step_queue::step_queue(policy_kind kind, int max_prefill_streak) : arbiter_(kind, max_prefill_streak) {
}

std::optional<uint64_t> step_queue::submit(const std::string& model, uint64_t ticket, bool prefill,
                                           double now_s) {
  std::optional<uint64_t> replaced;
  auto [it, fresh] = queued_.try_emplace(model);
  if (!fresh) {
    replaced = it->second.ticket;
    // The replaced step's announcement goes with it: the new one is ordered
    // by its own kind (a decode step must not ride on prefill priority).
    arbiter_.withdraw(model);
  }
  it->second = entry{ticket, prefill, grants_};
  arbiter_.ready(model, prefill, now_s);
  return replaced;
}

std::optional<step_queue::grant> step_queue::start_next() {
  while (!running_) {
    auto g = arbiter_.next();
    if (!g)
      return std::nullopt;
    auto it = queued_.find(g->model);
    if (it == queued_.end())
      continue;  // withdrawn
    const entry e = it->second;
    queued_.erase(it);
    grant out{g->model, e.ticket, e.prefill, grants_ - e.grants_at_ready};
    ++grants_;
    auto& most = waited_max_[g->model];
    auto& job_most = e.prefill ? most.first : most.second;
    job_most = std::max(job_most, out.waited);
    recent_.push_back(out);
    if (recent_.size() > 32)
      recent_.erase(recent_.begin());
    running_ = true;
    return out;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// KV quotas

std::string_view reason_name(move_reason reason) {
  return reason_names[static_cast<size_t>(reason)];
}

quota_planner::quota_planner(quota_options opts) : opts_(opts) {
  opts_.block_tokens = std::max(1, opts_.block_tokens);
  opts_.use_threshold = std::clamp(opts_.use_threshold, 0.01, 1.0);
  opts_.retarget_step = std::clamp(opts_.retarget_step, 0.0, 1.0);
  opts_.retarget_deadband = std::max(0.0, opts_.retarget_deadband);
  opts_.rate_z = std::max(0.0, opts_.rate_z);
}

std::optional<std::string> quota_planner::add_model(const std::string& name,
                                                    int64_t blocks_per_token_block,
                                                    double expected_rate, int64_t floor_tokens) {
  if (models_.count(name))
    return "model '" + name + "' is already in the quota plan";
  if (blocks_per_token_block <= 0)
    return "model '" + name + "': blocks per token-block must be positive (layers x kv_heads)";
  if (!(expected_rate >= 0))
    return "model '" + name + "': expected rate must be >= 0 req/s";
  if (floor_tokens < 0)
    return "model '" + name + "': floor must be >= 0 tokens";
  const int64_t floor_token_blocks = (floor_tokens + opts_.block_tokens - 1) / opts_.block_tokens;
  model_info m{blocks_per_token_block, expected_rate, floor_token_blocks * blocks_per_token_block,
               rate_estimator(expected_rate, opts_.rate_tau_s)};
  if (clock_started_)
    m.rate.start(now_s_);
  models_.emplace(name, std::move(m));
  return std::nullopt;
}

void quota_planner::see_time(double now_s) {
  if (!clock_started_) {
    clock_started_ = true;
    now_s_ = period_start_s_ = now_s;
    for (auto& [name, m] : models_)
      m.rate.start(now_s);
  }
  now_s_ = std::max(now_s_, now_s);
}

void quota_planner::on_arrival(const std::string& name, double now_s) {
  auto it = models_.find(name);
  if (it == models_.end())
    return;
  see_time(now_s);
  it->second.rate.on_arrival(now_s);
}

double quota_planner::rate(const std::string& name, double now_s) const {
  auto it = models_.find(name);
  return it == models_.end() ? 0.0 : it->second.rate.rate(now_s);
}

quota_split quota_planner::split(int64_t total_blocks,
                                 const std::map<std::string, double>& rates) const {
  quota_split out;
  if (models_.empty()) {
    out.error = "no models to split the KV pool between";
    return out;
  }
  int64_t floors = 0;
  for (const auto& [name, m] : models_)
    floors += m.floor_blocks;
  if (floors > total_blocks) {
    out.error = "the models' floors (one max-length sequence each) need " + std::to_string(floors) +
                " blocks, the pool has " + std::to_string(total_blocks);
    return out;
  }

  std::map<std::string, double> weight;
  bool any_rate = false;
  for (const auto& [name, m] : models_) {
    const double r = std::max(0.0, rates.at(name));
    weight[name] = r * static_cast<double>(m.blocks_per_token_block);
    any_rate = any_rate || r > 0;
  }
  if (!any_rate)
    for (const auto& [name, m] : models_)
      weight[name] = static_cast<double>(m.blocks_per_token_block);

  // Water-filling: models whose proportional share is below their floor sit
  // at the floor; the others share the rest. Each pass fixes at least one
  // model or ends, so it takes at most models_.size() passes.
  std::map<std::string, double> share;
  std::map<std::string, bool> at_floor;
  for (bool changed = true; changed;) {
    changed = false;
    double rest = static_cast<double>(total_blocks);
    double weights = 0;
    for (const auto& [name, m] : models_) {
      if (at_floor[name])
        rest -= static_cast<double>(m.floor_blocks);
      else
        weights += weight[name];
    }
    for (const auto& [name, m] : models_) {
      if (at_floor[name]) {
        share[name] = static_cast<double>(m.floor_blocks);
        continue;
      }
      share[name] = weights > 0 ? rest * weight[name] / weights : 0.0;
      if (share[name] < static_cast<double>(m.floor_blocks)) {
        at_floor[name] = true;
        changed = true;
      }
    }
  }

  // Largest remainders: round down, then hand the missing blocks to the
  // largest fractions (ties: name order).
  std::vector<std::pair<double, std::string>> fractions;
  int64_t given = 0;
  for (const auto& [name, m] : models_) {
    const auto whole = std::max(m.floor_blocks, static_cast<int64_t>(std::floor(share[name])));
    out.quotas[name] = whole;
    given += whole;
    fractions.emplace_back(share[name] - std::floor(share[name]), name);
  }
  std::stable_sort(fractions.begin(), fractions.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; given < total_blocks; i = (i + 1) % fractions.size(), ++given)
    ++out.quotas[fractions[i].second];
  // Rounding noise can overshoot by a block: take it from the largest quota
  // above its floor.
  while (given > total_blocks) {
    auto victim = out.quotas.end();
    for (auto it = out.quotas.begin(); it != out.quotas.end(); ++it)
      if (it->second > models_.at(it->first).floor_blocks &&
          (victim == out.quotas.end() || it->second > victim->second))
        victim = it;
    --victim->second;
    --given;
  }
  return out;
}

quota_split quota_planner::initial_quotas(int64_t total_blocks) const {
  std::map<std::string, double> rates;
  for (const auto& [name, m] : models_)
    rates[name] = m.expected_rate;
  return split(total_blocks, rates);
}

quota_split quota_planner::target_quotas(int64_t total_blocks, double now_s) const {
  std::map<std::string, double> rates;
  for (const auto& [name, m] : models_) {
    // A low rate's estimate is noisy (1 req/s: ±22% at tau 10 s): keep the
    // expected rate unless the measured one is clearly different.
    const double measured = m.rate.rate(now_s);
    const double sd = std::sqrt(std::max(measured, m.expected_rate) / (2 * opts_.rate_tau_s));
    rates[name] = std::abs(measured - m.expected_rate) > opts_.rate_z * sd ? measured : m.expected_rate;
  }
  return split(total_blocks, rates);
}

namespace {

int64_t value_or_zero(const block_map& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : std::max<int64_t>(0, it->second);
}

/// One model's standing in a rebalance.
struct standing {
  std::string name;
  double fill = 0;       ///< quota / rate target (how rich it is)
  int64_t offer = 0;     ///< blocks it may give this period
  int64_t want = 0;      ///< blocks it should get this period
};

}  // namespace

std::optional<rebalance_result> quota_planner::rebalance(double now_s, const block_map& usage,
                                                         const block_map& backlog,
                                                         const block_map& current) {
  if (current.size() != models_.size() ||
      !std::all_of(current.begin(), current.end(),
                   [this](const auto& kv) { return models_.count(kv.first) > 0; }))
    throw std::invalid_argument("rebalance: current quotas must name exactly the planned models");
  see_time(now_s);
  if (now_s - period_start_s_ < opts_.period_s)
    return std::nullopt;
  period_start_s_ = now_s;
  ++rebalances_;

  rebalance_result out{current, {}};
  const int64_t total = std::accumulate(current.begin(), current.end(), int64_t{0},
                                        [](int64_t s, const auto& kv) { return s + kv.second; });
  const auto target = target_quotas(total, now_s);

  std::vector<standing> lenders;
  std::vector<standing> borrowers;
  bool any_backlog = false;
  for (const auto& [name, m] : models_)
    any_backlog = any_backlog || value_or_zero(backlog, name) > 0;

  for (const auto& [name, m] : models_) {
    const int64_t quota = current.at(name);
    const int64_t used = value_or_zero(usage, name);
    const int64_t waiting = value_or_zero(backlog, name);
    const int64_t goal = target ? target.quotas.at(name) : quota;
    standing s{name, goal > 0 ? static_cast<double>(quota) / static_cast<double>(goal)
                              : std::numeric_limits<double>::infinity()};
    // A lender keeps its floor and enough to sit at the threshold.
    const auto keep = std::max(
      m.floor_blocks, static_cast<int64_t>(std::ceil(static_cast<double>(used) / opts_.use_threshold)));
    const bool under_used = static_cast<double>(used) < opts_.use_threshold * static_cast<double>(quota);
    const int64_t spare = waiting == 0 && under_used ? std::max<int64_t>(0, quota - keep) : 0;

    if (any_backlog) {
      // Where the pool lends idle quota on demand, moving the guarantee as
      // well would keep it from a lender whose load merely dipped: once
      // the borrower stays above 90% it never comes back (see the header).
      s.offer = opts_.pool_lends_idle ? std::min(spare, std::max<int64_t>(0, quota - goal)) : spare;
      s.want = std::max<int64_t>(0, waiting - std::max<int64_t>(0, quota - used));
    } else if (target) {
      const int64_t deadband = static_cast<int64_t>(
        std::ceil(opts_.retarget_deadband * static_cast<double>(total)));
      const int64_t gap = goal - quota;  // > 0: below its rate share
      const auto step = [&](int64_t g) {
        return std::max<int64_t>(1, static_cast<int64_t>(opts_.retarget_step * static_cast<double>(g)));
      };
      if (opts_.retarget_step > 0 && gap > deadband)
        s.want = step(gap);
      else if (opts_.retarget_step > 0 && -gap > deadband)
        s.offer = std::min(spare, step(-gap));
    }
    if (s.offer > 0)
      lenders.push_back(s);
    if (s.want > 0)
      borrowers.push_back(s);
  }

  // Poorest borrower first, from the richest lender first (ties: name order).
  std::stable_sort(borrowers.begin(), borrowers.end(),
                   [](const standing& a, const standing& b) { return a.fill < b.fill; });
  std::stable_sort(lenders.begin(), lenders.end(),
                   [](const standing& a, const standing& b) { return a.fill > b.fill; });
  const auto reason = any_backlog ? move_reason::backlog : move_reason::rate_target;
  for (auto& b : borrowers)
    for (auto& l : lenders) {
      const int64_t blocks = std::min(b.want, l.offer);
      if (blocks <= 0)
        continue;
      b.want -= blocks;
      l.offer -= blocks;
      out.quotas[l.name] -= blocks;
      out.quotas[b.name] += blocks;
      models_.at(l.name).blocks_out += blocks;
      models_.at(b.name).blocks_in += blocks;
      out.moves.push_back({l.name, b.name, blocks, reason});
    }
  return out;
}

}  // namespace llmux::unit
