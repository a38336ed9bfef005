#include "plan/placement.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "actors/gpu_unit/unit_policy.hpp"
#include "engine/cost_model.hpp"

namespace llmux::plan {

const char* system_name(system_kind s) {
  switch (s) {
    case system_kind::llmux: return "llmux";
    case system_kind::spatial: return "spatial";
    case system_kind::temporal: return "temporal";
  }
  return "?";
}

double planned_unit::served_rps() const {
  double s = 0;
  for (const auto& m : models)
    s += m.served_rps;
  return s;
}

int placement_plan::replicas_of(const std::string& model) const {
  int n = 0;
  for (const auto& u : units)
    for (const auto& m : u.models)
      n += m.name == model ? 1 : 0;
  return n;
}

std::vector<std::vector<int>> node_cuts(int gpus, bool power_of_two) {
  std::vector<std::vector<int>> out;
  std::vector<int> cur;
  std::function<void(int, int)> rec = [&](int left, int largest) {
    if (left == 0) {
      out.push_back(cur);
      return;
    }
    for (int g = std::min(left, largest); g >= 1; --g) {
      if (power_of_two && (g & (g - 1)) != 0)
        continue;
      cur.push_back(g);
      rec(left - g, g);
      cur.pop_back();
    }
  };
  rec(gpus, gpus);
  return out;
}

namespace {

constexpr double gib = 1024.0 * 1024.0 * 1024.0;

/// The estimator's view of one model on units of one size: costs and the
/// answers it gives again and again during the search, cached.
struct model_view {
  const model_demand* d = nullptr;
  double weight_bytes = 0;
  double kv_per_token = 0;
  double context = 0;  ///< mean KV length while decoding: prompt + output / 2
  /// A mean request's latency alone on the fewest GPUs the profile (or
  /// memory) allows, at full share: the SLO's unit, as `llmux simulate`
  /// measures attainment.
  double reference_s = 0;
  /// Per tensor-parallel size: its cost model, if the profile measured it.
  std::map<int, std::shared_ptr<engine::cost_model>> costs;
  // (tp, share steps) → prefill seconds of one mean prompt.
  mutable std::unordered_map<int64_t, double> prefill_cache;
  // (tp, share steps, batch) → decode step seconds at the mean context.
  mutable std::unordered_map<int64_t, double> decode_cache;

  [[nodiscard]] const engine::cost_model* cost(int tp) const {
    auto it = costs.find(tp);
    return it == costs.end() ? nullptr : it->second.get();
  }
  [[nodiscard]] double prefill_s(int tp, int steps, double step) const {
    const int64_t key = int64_t{tp} << 32 | steps;
    auto it = prefill_cache.find(key);
    if (it != prefill_cache.end())
      return it->second;
    const double t = cost(tp)->prefill_seconds(1, d->mean_prompt, steps * step);
    prefill_cache.emplace(key, t);
    return t;
  }
  [[nodiscard]] double decode_s(int tp, int steps, double step, int batch) const {
    const int64_t key = (int64_t{tp} << 48) | (int64_t{steps} << 32) | batch;
    auto it = decode_cache.find(key);
    if (it != decode_cache.end())
      return it->second;
    const double t = cost(tp)->decode_seconds(batch, context, steps * step);
    decode_cache.emplace(key, t);
    return t;
  }
};

struct unit_shape {
  int node = 0, first_gpu = 0, gpus = 1;
  /// Units that exist (plan_on_units): its name, which models it may hold
  /// (indices into the views; empty: any) and a cap on its weights' bytes
  /// (0: none).
  std::string name;
  std::vector<size_t> allowed;
  std::vector<size_t> awake;  ///< held awake there now (indices into the views)
  double weight_cap = 0;
  [[nodiscard]] bool allows(size_t model) const {
    return allowed.empty() || std::find(allowed.begin(), allowed.end(), model) != allowed.end();
  }
  [[nodiscard]] bool holds_awake(size_t model) const {
    return std::find(awake.begin(), awake.end(), model) != awake.end();
  }
};

/// A unit being filled: its models (indices into the views) and shares in steps.
struct unit_fill {
  unit_shape shape;
  std::vector<size_t> models;
  std::vector<double> part;  ///< per model: the part of its rate this unit carries (replicas split it)
  std::vector<int> decode_steps;  ///< per model
  int lane_steps = 0;
  double served = 0;
  double min_ratio = 1;
};

class planner {
public:
  planner(const std::vector<model_demand>& models, const cluster_shape& c, const plan_options& o)
    : cluster_(c), opts_(o), models_(models) {
    if (models.empty())
      throw std::invalid_argument("nothing to place: no models");
    if (!(c.gpu.memory_gib > 0) || c.nodes < 1 || c.gpus_per_node < 1)
      throw std::invalid_argument("the cluster has no GPUs or its GPU type no memory");
    // Whole steps only: 8-SM steps of a 132-SM H100 give 16 (128 SMs), never 17.
    levels_ = static_cast<int>(std::floor(1.0 / o.share_step + 1e-9));
    min_steps_ = std::max(1, static_cast<int>(std::ceil(o.min_share / o.share_step - 1e-9)));
    for (const auto& m : models_) {
      model_view v;
      v.d = &m;
      v.weight_bytes = m.model.arch.params() * m.model.arch.dtype_bytes;
      v.kv_per_token = m.model.arch.kv_bytes_per_token();
      v.context = m.mean_prompt + m.mean_output / 2;
      for (int tp = 1; tp <= c.gpus_per_node; tp *= 2) {
        try {
          auto cm = std::make_shared<engine::cost_model>(engine::cost_model::for_model(m.model, c.gpu, tp));
          v.costs[tp] = cm;
        } catch (const std::exception&) {
          // Not measured at this size: not placeable on units of it.
        }
      }
      // The reference devices: the smallest measured tp; on the roofline,
      // the fewest GPUs that hold the weights twice over.
      int ref = 0;
      for (const auto& [tp, cm] : v.costs)
        if (c.gpu.profile.empty() ? v.weight_bytes * 2 <= tp * c.gpu.memory_gib * gib : true) {
          ref = tp;
          break;
        }
      if (ref > 0) {
        const auto& cm = *v.costs.at(ref);
        v.reference_s = cm.prefill_seconds(1, m.mean_prompt)
                        + std::max(0.0, m.mean_output - 1) * cm.decode_seconds(1, m.mean_prompt + m.mean_output / 2);
      }
      views_.push_back(std::move(v));
    }
  }

  [[nodiscard]] int levels() const { return levels_; }
  [[nodiscard]] double step() const { return opts_.share_step; }
  [[nodiscard]] const std::vector<model_view>& views() const { return views_; }
  [[nodiscard]] const cluster_shape& cluster() const { return cluster_; }
  [[nodiscard]] const plan_options& options() const { return opts_; }

  /// Bytes of KV memory a unit of `gpus` holding `models` has (0 or less: the weights do not fit).
  [[nodiscard]] double kv_bytes(int gpus, const std::vector<size_t>& models) const {
    double bytes = gpus * cluster_.gpu.memory_gib * gib * opts_.memory_fraction;
    for (auto i : models)
      bytes -= views_[i].weight_bytes;
    return bytes;
  }

  /// Each model's largest decode batch: its KV share (rate × KV per token,
  /// as ADBS splits the pool) over a mean request's KV, capped.
  [[nodiscard]] std::vector<int> max_batches(int gpus, const std::vector<size_t>& models,
                                             const std::vector<double>& part = {}) const {
    const double kv = kv_bytes(gpus, models);
    auto rate = [&](size_t k) { return std::max(views_[models[k]].d->rate * (part.empty() ? 1.0 : part[k]), 1e-3); };
    double weight = 0;
    for (size_t k = 0; k < models.size(); ++k)
      weight += rate(k) * views_[models[k]].kv_per_token;
    std::vector<int> out;
    for (size_t k = 0; k < models.size(); ++k) {
      const auto& v = views_[models[k]];
      const double share = kv * rate(k) * v.kv_per_token / weight;
      const double per_seq = v.kv_per_token * (v.d->mean_prompt + v.d->mean_output);
      int b = kv > 0 ? static_cast<int>(share / per_seq) : 0;
      b = std::min(b, opts_.max_running);
      out.push_back(std::max(0, b));
    }
    return out;
  }

  /// `models` on a unit of `shape`: each allowed there, their weights
  /// under its cap, and room for a sequence of each.
  [[nodiscard]] bool fits(const unit_shape& shape, const std::vector<size_t>& models) const {
    double weights = 0;
    for (auto i : models) {
      if (!shape.allows(i))
        return false;
      weights += views_[i].weight_bytes;
    }
    if (shape.weight_cap > 0 && weights > shape.weight_cap)
      return false;
    return fits(shape.gpus, models);
  }
  [[nodiscard]] bool fits(int gpus, const std::vector<size_t>& models) const {
    for (auto i : models)
      if (!views_[i].cost(gpus))
        return false;
    for (int b : max_batches(gpus, models))
      if (b < 1)
        return false;
    return true;
  }

  /// Decode capacity (req/s) of model `i` at `steps` of share with batches up to `bmax`,
  /// and the smallest batch that serves `rate` (bmax if none does).
  struct capacity {
    double rps = 0;
    int batch = 0;
  };
  [[nodiscard]] capacity decode_capacity(size_t i, int tp, int steps, int bmax, double rate, double stretch) const {
    const auto& v = views_[i];
    const double out = std::max(1.0, v.d->mean_output);
    auto cap = [&](int b) { return b / (out * v.decode_s(tp, steps, opts_.share_step, b) * stretch); };
    capacity c;
    if (bmax < 1)
      return c;
    if (cap(bmax) < rate) {
      c.rps = cap(bmax);
      c.batch = bmax;
      return c;
    }
    int lo = 1, hi = bmax;  // smallest b with cap(b) >= rate
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (cap(mid) >= rate)
        hi = mid;
      else
        lo = mid + 1;
    }
    c.rps = cap(lo);
    c.batch = lo;
    return c;
  }

  /// Served rate of a unit with the shares in `u` (llmux layout with 2+
  /// models; one step at a time with one model). Fills per-model estimates
  /// when `out` is given.
  [[nodiscard]] static double part_of(const unit_fill& u, size_t k) { return u.part.empty() ? 1.0 : u.part[k]; }
  [[nodiscard]] double rate_of(const unit_fill& u, size_t k) const {
    return views_[u.models[k]].d->rate * part_of(u, k);
  }

  /// What an SLO leaves of a model's served rate: all of it while its
  /// estimated latency is within slo_scale × its reference latency, then
  /// falling with the square of the overshoot (so a search still sees
  /// which way is better). 1 without an SLO.
  [[nodiscard]] double slo_factor(const model_view& v, double latency_s) const {
    if (opts_.slo_scale <= 0 || v.reference_s <= 0 || latency_s <= 0)
      return 1;
    const double r = opts_.slo_scale * v.reference_s / latency_s;
    return r >= 1 ? 1 : r * r;
  }

  /// Estimated served rate of a unit with the shares in `u` (llmux layout
  /// with 2+ models; one step at a time with one model), counting under an
  /// SLO only what meets it (goodput). Fills per-model estimates when `out`
  /// is given.
  double evaluate(unit_fill& u, std::vector<planned_model>* out = nullptr) const {
    const int tp = u.shape.gpus;
    const auto bmax = max_batches(tp, u.models, u.part);
    u.served = 0;
    u.min_ratio = 1;
    if (out)
      out->clear();
    if (u.models.size() == 1) {
      const auto i = u.models[0];
      const auto& v = views_[i];
      // One step at a time on the whole unit: prefills take r·t_p of the
      // time, decode steps the rest.
      const double tp_s = v.prefill_s(tp, levels_, opts_.share_step);
      const double rate = rate_of(u, 0);
      double served = rate;
      int b = std::max(1, bmax[0]);
      const double free = 1 - rate * tp_s;
      auto c = free > 0 ? decode_capacity(i, tp, levels_, bmax[0], rate / free, 1.0) : capacity{0, b};
      if (free <= 0 || c.rps < rate / free) {
        // Overloaded: r (t_p + out · t_d(B) / B) = 1 at the largest batch.
        const double td = v.decode_s(tp, levels_, opts_.share_step, b);
        served = std::min(rate, 1.0 / (tp_s + v.d->mean_output * td / b));
        c.batch = b;
      }
      // A decode step waits for the prompts computed between steps.
      const double tpot = v.decode_s(tp, levels_, opts_.share_step, std::max(1, c.batch)) / std::max(0.05, free);
      const double good = served * slo_factor(v, tp_s + v.d->mean_output * tpot);
      u.served = good;
      u.min_ratio = rate > 0 ? good / rate : 1;
      if (out)
        out->push_back({v.d->model.name, rate, 1.0, served, static_cast<double>(c.batch), tpot, 0});
      return u.served;
    }
    // The shared prefill lane.
    double rho = 0;
    for (size_t k = 0; k < u.models.size(); ++k)
      rho += rate_of(u, k) * views_[u.models[k]].prefill_s(tp, u.lane_steps, opts_.share_step);
    const double lane_cut = std::max(1.0, rho);
    // A prompt's wait on the lane, as an M/M/1 queue's (capped near saturation).
    const double lane_wait = rho / std::max(0.05, 1 - std::min(rho, 0.95));
    // Decode capacities, then once more with the bandwidth their batches
    // would draw together.
    std::vector<capacity> caps(u.models.size());
    double demand = 0;
    const double unit_bw = tp * cluster_.gpu.mem_bandwidth_gbs * 1e9;
    for (size_t k = 0; k < u.models.size(); ++k) {
      const auto i = u.models[k];
      const auto& v = views_[i];
      caps[k] = decode_capacity(i, tp, u.decode_steps[k], bmax[k], rate_of(u, k) / lane_cut, 1.0);
      const int b = std::max(1, caps[k].batch);
      const double bytes = v.weight_bytes + v.kv_per_token * b * v.context;
      demand += std::min(1.0, bytes / (v.decode_s(tp, u.decode_steps[k], opts_.share_step, b) * unit_bw));
    }
    const double stretch = std::max(1.0, demand);
    if (stretch > 1)
      for (size_t k = 0; k < u.models.size(); ++k)
        caps[k] = decode_capacity(u.models[k], tp, u.decode_steps[k], bmax[k], rate_of(u, k) / lane_cut, stretch);
    for (size_t k = 0; k < u.models.size(); ++k) {
      const auto& v = views_[u.models[k]];
      const double rate = rate_of(u, k);
      const double served = std::min({rate, caps[k].rps, rate / lane_cut});
      const double prefill = v.prefill_s(tp, u.lane_steps, opts_.share_step);
      const double tpot = stretch * v.decode_s(tp, u.decode_steps[k], opts_.share_step, std::max(1, caps[k].batch));
      const double good = served * slo_factor(v, prefill * (1 + lane_wait) + v.d->mean_output * tpot);
      u.served += good;
      if (rate > 0)
        u.min_ratio = std::min(u.min_ratio, good / rate);
      if (out)
        out->push_back({v.d->model.name, rate, u.decode_steps[k] * opts_.share_step, served,
                        static_cast<double>(caps[k].batch), tpot, 0});
    }
    return u.served;
  }

  /// Shares for a unit: each decode job the smallest that serves its rate,
  /// the lane the smallest that keeps its load under `lane_load`, the rest
  /// to the lane; trimmed to fit; then (with `search`) one-step moves while
  /// the served rate grows.
  void allocate(unit_fill& u, bool search) const {
    const size_t n = u.models.size();
    u.decode_steps.assign(n, min_steps_);
    u.lane_steps = 0;
    if (n <= 1) {
      evaluate(u);
      return;
    }
    const int tp = u.shape.gpus;
    const auto bmax = max_batches(tp, u.models, u.part);
    for (size_t k = 0; k < n; ++k) {
      const auto i = u.models[k];
      int s = min_steps_;
      while (s < levels_ && decode_capacity(i, tp, s, bmax[k], rate_of(u, k), 1.0).rps < rate_of(u, k))
        ++s;
      u.decode_steps[k] = s;
    }
    int lane = min_steps_;
    auto lane_rho = [&](int steps) {
      double rho = 0;
      for (size_t k = 0; k < n; ++k)
        rho += rate_of(u, k) * views_[u.models[k]].prefill_s(tp, steps, opts_.share_step);
      return rho;
    };
    while (lane < levels_ && lane_rho(lane) > opts_.lane_load)
      ++lane;
    // Too much asked: take from the largest decode share first.
    auto total = [&] {
      int t = lane;
      for (int s : u.decode_steps)
        t += s;
      return t;
    };
    while (total() > levels_) {
      auto it = std::max_element(u.decode_steps.begin(), u.decode_steps.end());
      if (*it > min_steps_) {
        --*it;
      } else if (lane > min_steps_) {
        --lane;
      } else {
        break;  // every job at its minimum: the unit cannot host them all
      }
    }
    u.lane_steps = levels_ - (total() - lane);
    if (u.lane_steps < min_steps_) {
      u.served = -1;  // does not fit
      return;
    }
    evaluate(u);
    if (!search)
      return;
    // Local search: one step from one job to another while it helps.
    for (int round = 0; round < 4 * levels_; ++round) {
      unit_fill best = u;
      bool moved = false;
      const size_t jobs = n + 1;  // index n: the lane
      auto steps_of = [&](unit_fill& f, size_t j) -> int& { return j == n ? f.lane_steps : f.decode_steps[j]; };
      for (size_t from = 0; from < jobs; ++from)
        for (size_t to = 0; to < jobs; ++to) {
          if (from == to)
            continue;
          unit_fill t = u;
          if (steps_of(t, from) <= min_steps_)
            continue;
          --steps_of(t, from);
          ++steps_of(t, to);
          evaluate(t);
          const bool better = t.served > best.served + 1e-9
                              || (std::fabs(t.served - best.served) <= 1e-9 && t.min_ratio > best.min_ratio + 1e-9);
          if (better) {
            best = t;
            moved = true;
          }
        }
      if (!moved)
        break;
      u = best;
    }
  }

  /// Computation placed on a unit per GPU: Σ rate × parameters / GPUs (the
  /// order MuxServe keeps its meshes in, least loaded first).
  [[nodiscard]] double load_per_gpu(const unit_fill& u) const {
    double load = 0;
    for (size_t k = 0; k < u.models.size(); ++k)
      load += rate_of(u, k) * views_[u.models[k]].weight_bytes;
    return load / u.shape.gpus;
  }

  /// MuxServe's greedy placement on one cut (each model where the served
  /// rate grows most; ties: the least loaded unit, then the smaller), then
  /// llmux's replicas: while some model is under-served, another unit takes
  /// an even part of its rate if that serves more in all. nullopt when a
  /// model fits nowhere, unless `unplaced` takes such models (units that
  /// exist, where the rest are still placed).
  std::optional<std::vector<unit_fill>> place(const std::vector<unit_shape>& cut, std::vector<size_t> order,
                                              std::vector<size_t>* unplaced = nullptr) const {
    std::vector<unit_fill> units;
    for (const auto& s : cut) {
      unit_fill f;
      f.shape = s;
      units.push_back(f);
    }
    for (auto i : order) {
      int best = -1;
      double best_gain = -1e18;
      unit_fill best_fill;
      for (size_t k = 0; k < units.size(); ++k) {
        unit_fill t = units[k];
        t.models.push_back(i);
        t.part.push_back(1.0);
        if (!fits(t.shape, t.models))
          continue;
        allocate(t, false);
        if (t.served < 0)
          continue;
        const double gain = t.served - units[k].served;
        bool better = gain > best_gain + 1e-9;
        if (best >= 0) {
          // Units that exist: within 2% of the model's rate, where it is
          // awake now wins (no move for nothing).
          const auto& b = units[static_cast<size_t>(best)];
          const double near = 0.02 * views_[i].d->rate + 1e-9;
          const bool here = t.shape.holds_awake(i), there = b.shape.holds_awake(i);
          if (here != there && std::fabs(gain - best_gain) <= near)
            better = here;
          else if (!better && std::fabs(gain - best_gain) <= 1e-9) {
            const double la = load_per_gpu(units[k]), lb = load_per_gpu(b);
            better = la < lb - 1e-9 || (std::fabs(la - lb) <= 1e-9 && t.shape.gpus < b.shape.gpus);
          }
        }
        if (better) {
          best = static_cast<int>(k);
          best_gain = gain;
          best_fill = t;
        }
      }
      if (best < 0) {
        if (!unplaced)
          return std::nullopt;
        unplaced->push_back(i);
        continue;
      }
      units[static_cast<size_t>(best)] = best_fill;
    }
    if (opts_.replicas)
      add_replicas(units);
    return units;
  }

  /// Local search over a placement: move one model (or replica) to another
  /// unit, or swap two, while the estimated goodput grows (shares searched
  /// afresh for the two units touched). Greedy placement is myopic: it
  /// fills units in demand order and never revisits a choice.
  void refine(std::vector<unit_fill>& units) const {
    for (auto& u : units)
      allocate(u, true);
    auto gain_of = [&](unit_fill& a, unit_fill& b, double before) {
      if (!a.models.empty() && !fits(a.shape, a.models))
        return -1e18;
      if (!b.models.empty() && !fits(b.shape, b.models))
        return -1e18;
      allocate(a, true);
      allocate(b, true);
      if (a.served < 0 || b.served < 0)
        return -1e18;
      return a.served + b.served - before;
    };
    auto holds = [](const unit_fill& u, size_t model) {
      return std::find(u.models.begin(), u.models.end(), model) != u.models.end();
    };
    for (int round = 0; round < 8; ++round) {
      bool improved = false;
      for (size_t a = 0; a < units.size(); ++a)
        for (size_t b = 0; b < units.size(); ++b) {
          if (a == b)
            continue;
          for (size_t k = 0; k < units[a].models.size(); ++k) {
            const double before = units[a].served + units[b].served;
            // Move entry k of a to b.
            if (!holds(units[b], units[a].models[k])) {
              unit_fill ta = units[a], tb = units[b];
              tb.models.push_back(ta.models[k]);
              tb.part.push_back(part_of(ta, k));
              ta.models.erase(ta.models.begin() + static_cast<std::ptrdiff_t>(k));
              if (!ta.part.empty())
                ta.part.erase(ta.part.begin() + static_cast<std::ptrdiff_t>(k));
              if (ta.models.empty())
                ta.served = 0;
              if (gain_of(ta, tb, before) > 1e-9) {
                units[a] = std::move(ta);
                units[b] = std::move(tb);
                improved = true;
                break;
              }
            }
            // Swap entry k of a with each entry of b.
            bool swapped = false;
            for (size_t j = 0; j < units[b].models.size() && !swapped; ++j) {
              if (holds(units[b], units[a].models[k]) || holds(units[a], units[b].models[j]))
                continue;
              unit_fill ta = units[a], tb = units[b];
              if (ta.part.empty())
                ta.part.assign(ta.models.size(), 1.0);
              if (tb.part.empty())
                tb.part.assign(tb.models.size(), 1.0);
              std::swap(ta.models[k], tb.models[j]);
              std::swap(ta.part[k], tb.part[j]);
              if (gain_of(ta, tb, before) > 1e-9) {
                units[a] = std::move(ta);
                units[b] = std::move(tb);
                improved = swapped = true;
              }
            }
            if (swapped)
              break;
          }
        }
      if (!improved)
        return;
    }
  }

  /// Served rate of each model, summed over its replicas.
  [[nodiscard]] std::vector<double> served_per_model(const std::vector<unit_fill>& units) const {
    std::vector<double> out(views_.size(), 0);
    for (const auto& u : units) {
      unit_fill t = u;
      std::vector<planned_model> est;
      evaluate(t, &est);
      for (size_t k = 0; k < u.models.size(); ++k)
        out[u.models[k]] += est[k].served_rps;
    }
    return out;
  }

  void add_replicas(std::vector<unit_fill>& units) const {
    std::vector<bool> done(views_.size(), false);
    for (size_t round = 0; round < 2 * views_.size(); ++round) {
      const auto served = served_per_model(units);
      int worst = -1;
      double worst_unmet = 0;
      for (size_t i = 0; i < views_.size(); ++i) {
        const double unmet = views_[i].d->rate - served[i];
        if (!done[i] && unmet > 0.01 * views_[i].d->rate && unmet > worst_unmet) {
          worst_unmet = unmet;
          worst = static_cast<int>(i);
        }
      }
      if (worst < 0)
        return;
      const auto i = static_cast<size_t>(worst);
      double total = 0;
      for (const auto& u : units)
        total += u.served;
      // Every replica of i carries an even part: re-split, then try each unit without it.
      int replicas = 1;
      for (const auto& u : units)
        replicas += static_cast<int>(std::count(u.models.begin(), u.models.end(), i));
      std::optional<std::vector<unit_fill>> best;
      double best_total = total + 0.01 * views_[i].d->rate;
      for (size_t k = 0; k < units.size(); ++k) {
        if (std::count(units[k].models.begin(), units[k].models.end(), i) > 0)
          continue;
        auto trial = units;
        trial[k].models.push_back(i);
        trial[k].part.push_back(1.0);
        if (!fits(trial[k].shape, trial[k].models))
          continue;
        double sum = 0;
        for (auto& u : trial) {
          for (size_t j = 0; j < u.models.size(); ++j)
            if (u.models[j] == i)
              u.part[j] = 1.0 / replicas;
          allocate(u, false);
          sum += std::max(0.0, u.served);
        }
        if (sum > best_total) {
          best_total = sum;
          best = std::move(trial);
        }
      }
      if (best)
        units = std::move(*best);
      else
        done[i] = true;
    }
  }

  /// Models in order of computation demand: rate × parameters, largest first.
  [[nodiscard]] std::vector<size_t> demand_order() const {
    std::vector<size_t> order(views_.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return views_[a].d->rate * views_[a].weight_bytes > views_[b].d->rate * views_[b].weight_bytes;
    });
    return order;
  }

  /// The fewest GPUs (a power of two) on which model `i` alone fits.
  [[nodiscard]] int min_gpus(size_t i) const {
    for (int g = 1; g <= cluster_.gpus_per_node; g *= 2)
      if (fits(g, {i}))
        return g;
    return 0;
  }

  planned_unit to_planned(unit_fill& u) const {
    planned_unit p;
    p.name = u.shape.name;
    p.node = u.shape.node;
    p.first_gpu = u.shape.first_gpu;
    p.gpus = u.shape.gpus;
    evaluate(u, &p.models);
    if (u.models.size() > 1) {
      p.prefill_share = u.lane_steps * opts_.share_step;
      double rho = 0;
      for (size_t k = 0; k < u.models.size(); ++k)
        rho += rate_of(u, k) * views_[u.models[k]].prefill_s(u.shape.gpus, u.lane_steps, opts_.share_step);
      p.lane_load = rho;
    } else if (!u.models.empty()) {
      p.prefill_share = 1;
      const auto& v = views_[u.models[0]];
      const auto& m = p.models[0];
      p.lane_load = rate_of(u, 0) * v.prefill_s(u.shape.gpus, levels_, opts_.share_step)
                    + m.served_rps * v.d->mean_output * m.tpot_s / std::max(1.0, m.batch);
    }
    quotas(p, u);
    return p;
  }

  /// KV: the unit's blocks, and ADBS's starting quotas from the same core.
  void quotas(planned_unit& p, const unit_fill& u) const {
    int head = 0;
    for (auto i : u.models)
      head = std::max(head, views_[i].d->model.arch.head_size());
    const double block_bytes = 2.0 * head * 2 * opts_.block_tokens;
    const double kv = kv_bytes(p.gpus, u.models);
    p.kv_blocks = kv > 0 && block_bytes > 0 ? static_cast<int64_t>(kv / block_bytes) : 0;
    unit::quota_options qo;
    qo.block_tokens = opts_.block_tokens;
    unit::quota_planner qp(qo);
    for (size_t k = 0; k < u.models.size(); ++k) {
      const auto& a = views_[u.models[k]].d->model.arch;
      (void)qp.add_model(views_[u.models[k]].d->model.name, int64_t{a.layers} * a.kv_heads, rate_of(u, k), 512);
    }
    auto split = qp.initial_quotas(p.kv_blocks);
    for (auto& m : p.models)
      if (split && split.quotas.count(m.name))
        m.kv_quota_blocks = split.quotas.at(m.name);
  }

private:
  cluster_shape cluster_;
  plan_options opts_;
  int levels_ = 10;
  int min_steps_ = 1;
  std::vector<model_demand> models_;  ///< owned: the views point into it
  std::vector<model_view> views_;
};

std::vector<unit_shape> lay_out(const std::vector<std::vector<int>>& per_node) {
  std::vector<unit_shape> out;
  for (size_t n = 0; n < per_node.size(); ++n) {
    int at = 0;
    for (int g : per_node[n]) {
      out.push_back({static_cast<int>(n), at, g});
      at += g;
    }
  }
  return out;
}

placement_plan finish(system_kind kind, const planner& p, std::vector<unit_fill>& units, int cuts) {
  placement_plan plan;
  plan.system = kind;
  plan.cuts_tried = cuts;
  for (const auto& v : p.views())
    plan.rate_rps += v.d->rate;
  for (auto& u : units) {
    if (u.models.empty() && u.shape.name.empty())
      continue;
    plan.units.push_back(p.to_planned(u));
    plan.served_rps += plan.units.back().served_rps();
  }
  return plan;
}

}  // namespace

double estimate_unit(planned_unit& unit, const std::vector<const model_demand*>& models, const cluster_shape& cluster,
                     const plan_options& opts) {
  std::vector<model_demand> copies;
  for (const auto* m : models)
    copies.push_back(*m);
  planner p(copies, cluster, opts);
  unit_fill f;
  f.shape = {unit.node, unit.first_gpu, unit.gpus};
  for (size_t i = 0; i < copies.size(); ++i) {
    f.models.push_back(i);
    double share = 0;
    for (const auto& m : unit.models)
      if (m.name == copies[i].model.name)
        share = m.decode_share;
    f.decode_steps.push_back(static_cast<int>(std::lround(share / opts.share_step)));
  }
  f.lane_steps = static_cast<int>(std::lround(unit.prefill_share / opts.share_step));
  if (!p.fits(unit.gpus, f.models))
    return -1;
  const double served = p.evaluate(f, &unit.models);
  return served;
}

namespace {

/// MuxServe's search on one set of rates: the best cut and its placement.
struct search_result {
  std::optional<std::vector<unit_fill>> units;
  double served = -1;
  int tried = 0;
  /// The next best cuts' placements (greedy's ranking is rough: a cut that
  /// ranks a little lower may refine to the best).
  std::vector<std::pair<double, std::vector<unit_fill>>> runners_up;
};

constexpr size_t kept_cuts = 8;

/// The cluster cuts to try: each node's cut chosen from `cuts` with
/// repetition (nodes are alike), as index vectors in non-decreasing order.
/// Every multiset while there are at most `budget` of them; beyond (many
/// nodes), those with at most two distinct cuts (the first m nodes one
/// cut, the rest another), which grows with nodes² instead of exponentially.
std::vector<std::vector<size_t>> cluster_cuts(size_t kinds, int nodes) {
  constexpr double budget = 50000;
  double count = 1;  // C(kinds + nodes - 1, nodes), computed in doubles
  for (int i = 1; i <= nodes; ++i)
    count = count * static_cast<double>(kinds - 1 + static_cast<size_t>(i)) / i;
  std::vector<std::vector<size_t>> out;
  const auto n = static_cast<size_t>(nodes);
  if (count <= budget) {
    std::vector<size_t> pick(n, 0);
    for (;;) {
      out.push_back(pick);
      int k = static_cast<int>(n) - 1;
      while (k >= 0 && pick[static_cast<size_t>(k)] + 1 == kinds)
        --k;
      if (k < 0)
        break;
      const size_t v = pick[static_cast<size_t>(k)] + 1;
      for (size_t j = static_cast<size_t>(k); j < n; ++j)
        pick[j] = v;
    }
    return out;
  }
  for (size_t a = 0; a < kinds; ++a)
    for (size_t b = a; b < kinds; ++b)
      for (size_t m = (a == b ? n : 1); m <= n; ++m) {
        std::vector<size_t> pick(n, b);
        std::fill(pick.begin(), pick.begin() + static_cast<std::ptrdiff_t>(m), a);
        out.push_back(std::move(pick));
      }
  return out;
}

search_result search(const planner& p, const cluster_shape& cluster, const plan_options& opts, size_t n_models) {
  search_result r;
  const auto cuts = node_cuts(cluster.gpus_per_node, opts.power_of_two_units);
  int need = 1;
  for (size_t i = 0; i < n_models; ++i)
    need = std::max(need, p.min_gpus(i));
  const auto order = p.demand_order();
  // More units than models leave some empty, unless replicas fill them;
  // every node has at least one unit.
  const size_t most_units = std::max(n_models, static_cast<size_t>(cluster.nodes));
  for (const auto& pick : cluster_cuts(cuts.size(), cluster.nodes)) {
    std::vector<std::vector<int>> per_node;
    size_t units = 0;
    int largest = 0;
    for (auto c : pick) {
      per_node.push_back(cuts[c]);
      units += cuts[c].size();
      largest = std::max(largest, cuts[c].front());
    }
    if (units > most_units || largest < need || need <= 0)
      continue;
    ++r.tried;
    auto placed = p.place(lay_out(per_node), order);
    if (!placed)
      continue;
    double served = 0;
    for (const auto& u : *placed)
      served += u.served;
    if (served > r.served + 1e-9) {
      if (r.units)
        r.runners_up.emplace_back(r.served, std::move(*r.units));
      r.served = served;
      r.units = std::move(placed);
    } else {
      r.runners_up.emplace_back(served, std::move(*placed));
    }
    if (r.runners_up.size() > 2 * kept_cuts) {
      std::sort(r.runners_up.begin(), r.runners_up.end(),
                [](const auto& a, const auto& b) { return a.first > b.first; });
      r.runners_up.resize(kept_cuts);
    }
  }
  return r;
}

std::vector<model_demand> scaled(const std::vector<model_demand>& models, double scale) {
  auto out = models;
  for (auto& m : out)
    m.rate *= scale;
  return out;
}

}  // namespace

placement_plan plan_llmux(const std::vector<model_demand>& all_models, const cluster_shape& cluster,
                          const plan_options& opts) {
  // A model no unit of any size can hold is reported, not allowed to sink
  // the search for the others.
  std::vector<model_demand> models;
  std::vector<std::string> unplaced;
  {
    planner probe(all_models, cluster, opts);
    for (size_t i = 0; i < all_models.size(); ++i)
      (probe.min_gpus(i) > 0 ? models.push_back(all_models[i]) : unplaced.push_back(all_models[i].model.name));
  }
  if (models.empty()) {
    placement_plan plan;
    plan.unplaced = unplaced;
    for (const auto& m : all_models)
      plan.rate_rps += m.rate;
    return plan;
  }
  // Every placement that serves the expected rates looks alike to a served
  // rate; what tells them apart is how much more load each could carry.
  // So when the expected rates can be served, the search runs at the
  // largest load scale (the same popularity, all rates × s) at which the
  // best placement still serves `full` of it, found by bisection, and that
  // placement, with its shares, is the plan. When they cannot, the plan is
  // the placement that serves the most of them (MuxServe's objective), and
  // the bisection only says what fraction of the load it would sustain.
  constexpr double full = 0.99;
  double total = 0;
  for (const auto& m : models)
    total += m.rate;
  auto at = [&](double s) {
    planner p(scaled(models, s), cluster, opts);
    return search(p, cluster, opts, models.size());
  };
  auto serves = [&](const search_result& r, double s) { return r.units && r.served >= full * total * s; };
  search_result best = at(1);
  int tried = best.tried;
  const bool enough = total > 0 && serves(best, 1);
  double lo = enough ? 1 : 0, hi = enough ? 2 : 1;
  if (enough)
    for (; hi < 1e4; hi *= 2) {
      auto r = at(hi);
      tried += r.tried;
      if (!serves(r, hi))
        break;
      lo = hi;
      best = std::move(r);
    }
  if (total > 0)
    for (int it = 0; it < 10 && hi - lo > 0.01 * hi; ++it) {
      const double mid = lo > 0 ? std::sqrt(lo * hi) : hi / 2;
      auto r = at(mid);
      tried += r.tried;
      if (serves(r, mid)) {
        lo = mid;
        if (enough)
          best = std::move(r);
      } else {
        hi = mid;
      }
    }
  planner real(models, cluster, opts);
  if (!best.units) {
    // Each fits alone somewhere, but no cut holds them all.
    placement_plan plan;
    plan.cuts_tried = tried;
    plan.unplaced = unplaced;
    for (const auto& m : models)
      plan.unplaced.push_back(m.model.name);
    for (const auto& m : all_models)
      plan.rate_rps += m.rate;
    return plan;
  }
  // The placement improved by local moves and shares searched for the load
  // planned for, then the estimates at the expected rates.
  planner stressed(scaled(models, enough ? lo : 1.0), cluster, opts);
  stressed.refine(*best.units);
  double best_served = 0;
  for (const auto& u : *best.units)
    best_served += u.served;
  std::sort(best.runners_up.begin(), best.runners_up.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; k < std::min(kept_cuts, best.runners_up.size()); ++k) {
    auto units = best.runners_up[k].second;
    stressed.refine(units);
    double served = 0;
    for (const auto& u : units)
      served += u.served;
    if (served > best_served + 1e-9) {
      best_served = served;
      *best.units = std::move(units);
    }
  }
  auto plan = finish(system_kind::llmux, real, *best.units, tried);
  plan.load_scale = lo;
  plan.unplaced = unplaced;
  for (const auto& name : unplaced)
    for (const auto& m : all_models)
      plan.rate_rps += m.model.name == name ? m.rate : 0;
  return plan;
}

placement_plan plan_on_units(const std::vector<model_demand>& models, const std::vector<fixed_unit>& units,
                             const cluster_shape& cluster, const plan_options& opts) {
  planner p(models, cluster, opts);
  std::vector<unit_shape> shapes;
  for (const auto& u : units) {
    unit_shape s;
    s.name = u.name;
    s.node = u.node;
    s.gpus = u.gpus;
    s.weight_cap = u.weight_cap_bytes;
    for (const auto& name : u.models)
      for (size_t i = 0; i < models.size(); ++i)
        if (models[i].model.name == name)
          s.allowed.push_back(i);
    for (const auto& name : u.awake)
      for (size_t i = 0; i < models.size(); ++i)
        if (models[i].model.name == name)
          s.awake.push_back(i);
    if (s.allowed.empty())
      s.allowed.push_back(models.size());  // none of the models: no index matches
    shapes.push_back(std::move(s));
  }
  std::vector<size_t> left;
  auto placed = p.place(shapes, p.demand_order(), &left);
  p.refine(*placed);
  auto plan = finish(system_kind::llmux, p, *placed, 1);
  for (auto i : left)
    plan.unplaced.push_back(models[i].model.name);
  return plan;
}

placement_plan plan_spatial(const std::vector<model_demand>& models, const cluster_shape& cluster,
                            const plan_options& opts) {
  planner p(models, cluster, opts);
  std::vector<int> free(static_cast<size_t>(cluster.nodes), cluster.gpus_per_node);
  std::vector<int> used_at(static_cast<size_t>(cluster.nodes), 0);
  std::vector<unit_fill> units;
  placement_plan unplaced;
  // One unit each, largest first (first fit), then spare GPUs as replicas.
  auto order = p.demand_order();
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p.min_gpus(a) > p.min_gpus(b); });
  auto add = [&](size_t i) {
    const int g = p.min_gpus(i);
    if (g == 0)
      return false;
    for (size_t n = 0; n < free.size(); ++n)
      if (free[n] >= g) {
        unit_fill f;
        f.shape = {static_cast<int>(n), used_at[n], g};
        f.models = {i};
        units.push_back(f);
        free[n] -= g;
        used_at[n] += g;
        return true;
      }
    return false;
  };
  std::vector<std::string> left;
  for (auto i : order)
    if (!add(i))
      left.push_back(models[i].model.name);
  // Spare GPUs: a replica for the model whose unmet rate is largest.
  auto rate_of = [&](size_t i) { return models[i].rate; };
  while (opts.replicas) {
    std::vector<int> replicas(models.size(), 0);
    for (const auto& u : units)
      ++replicas[u.models[0]];
    double worst = 1e-9;
    int pick = -1;
    for (size_t i = 0; i < models.size(); ++i) {
      if (replicas[i] == 0)
        continue;
      // Each replica serves rate / replicas.
      unit_fill f;
      f.shape = {0, 0, p.min_gpus(i)};
      f.models = {i};
      auto copy = models[i];
      copy.rate = rate_of(i) / replicas[i];
      planner one({copy}, cluster, opts);
      unit_fill g = f;
      g.models = {0};
      one.allocate(g, false);
      const double unmet = rate_of(i) - g.served * replicas[i];
      const bool room = std::any_of(free.begin(), free.end(), [&](int x) { return x >= f.shape.gpus; });
      if (room && unmet > worst) {
        worst = unmet;
        pick = static_cast<int>(i);
      }
    }
    if (pick < 0 || !add(static_cast<size_t>(pick)))
      break;
  }
  // Each replica carries an even part of its model's rate.
  std::vector<int> replicas(models.size(), 0);
  for (const auto& u : units)
    ++replicas[u.models[0]];
  placement_plan plan;
  plan.system = system_kind::spatial;
  for (const auto& m : models)
    plan.rate_rps += m.rate;
  for (auto& u : units) {
    const size_t i = u.models[0];
    auto copy = models[i];
    copy.rate /= replicas[i];
    planner one({copy}, cluster, opts);
    unit_fill g = u;
    g.models = {0};
    one.allocate(g, false);
    plan.units.push_back(one.to_planned(g));
    plan.served_rps += plan.units.back().served_rps();
  }
  plan.unplaced = left;
  return plan;
}

placement_plan plan_temporal(const placement_plan& llmux, const std::vector<model_demand>& models,
                             const cluster_shape& cluster, const plan_options& opts) {
  planner p(models, cluster, opts);
  placement_plan plan;
  plan.system = system_kind::temporal;
  plan.cuts_tried = llmux.cuts_tried;
  plan.unplaced = llmux.unplaced;
  for (const auto& m : models)
    plan.rate_rps += m.rate;
  for (const auto& lu : llmux.units) {
    planned_unit u = lu;
    u.prefill_share = 1;
    // One step at a time on the whole unit: ρ = Σ r (t_p + out · t_d(B) / B),
    // at each model's largest batch (the most generous to this baseline);
    // above 1 every model is served 1/ρ of its rate.
    std::vector<size_t> idx;
    for (const auto& m : u.models)
      for (size_t i = 0; i < models.size(); ++i)
        if (models[i].model.name == m.name)
          idx.push_back(i);
    std::vector<double> part;
    for (size_t k = 0; k < idx.size(); ++k)
      part.push_back(models[idx[k]].rate > 0 ? u.models[k].rate / models[idx[k]].rate : 1.0);
    const auto bmax = p.max_batches(u.gpus, idx, part);
    double rho = 0;
    std::vector<double> td(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) {
      const auto& v = p.views()[idx[k]];
      const int b = std::max(1, bmax[k]);
      td[k] = v.decode_s(u.gpus, p.levels(), p.step(), b);
      rho += u.models[k].rate * (v.prefill_s(u.gpus, p.levels(), p.step()) + v.d->mean_output * td[k] / b);
    }
    u.lane_load = rho;
    for (size_t k = 0; k < idx.size(); ++k) {
      auto& m = u.models[k];
      m.decode_share = 1;
      m.served_rps = m.rate / std::max(1.0, rho);
      m.batch = std::max(1, bmax[k]);
      m.tpot_s = td[k];
    }
    plan.served_rps += u.served_rps();
    plan.units.push_back(std::move(u));
  }
  return plan;
}

std::string to_config_toml(const placement_plan& plan, const std::vector<model_demand>& models,
                           const cluster_shape& cluster, const config_options& co) {
  std::ostringstream o;
  // Exact to the last bit: shares written rounded (0.166667 × 3) could
  // sum above 1 and be refused by the config loader.
  auto num = [](double v) {
    char b[40];
    std::snprintf(b, sizeof b, "%.17g", v);
    return std::string{b};
  };
  o << "# Written by `llmux plan` (" << system_name(plan.system) << "): " << plan.units.size() << " units on "
    << cluster.nodes << " x " << cluster.gpus_per_node << " " << cluster.gpu_name << ".\n"
    << "# Estimated: " << num(plan.served_rps) << " of " << num(plan.rate_rps) << " req/s served.\n\n"
    << "[cluster]\nname = \"" << co.cluster_name << "\"\n\n";
  for (int n = 0; n < cluster.nodes; ++n)
    o << "[[nodes]]\nname = \"node" << n << "\"\nport = " << co.base_port + n << "\n\n";
  o << "[gateway]\nnode = \"node0\"\nport = " << co.http_port << "\n\n";
  // The GPU type as planned (a spec may define its own), for every backend.
  o << "[gpus." << cluster.gpu_name << "]\n"
    << "mem_bandwidth_gbs = " << num(cluster.gpu.mem_bandwidth_gbs) << "\n"
    << "peak_tflops = " << num(cluster.gpu.peak_tflops) << "\n"
    << "step_overhead_us = " << num(cluster.gpu.step_overhead_us) << "\n"
    << "memory_gib = " << num(cluster.gpu.memory_gib) << "\n";
  if (!cluster.gpu.profile.empty())
    o << "profile = \"" << cluster.gpu.profile << "\"\n";
  o << "\n";
  // A shape the config reads back: a preset's name, else the table.
  auto arch = [&](const config::model_arch& a) {
    if (config::arch_preset(a.preset))
      return "\"" + a.preset + "\"";
    return "{ layers = " + std::to_string(a.layers) + ", hidden = " + std::to_string(a.hidden)
           + ", heads = " + std::to_string(a.heads) + ", kv_heads = " + std::to_string(a.kv_heads)
           + ", intermediate = " + std::to_string(a.intermediate) + ", vocab = " + std::to_string(a.vocab)
           + ", context_length = " + std::to_string(a.context_length > 0 ? a.context_length : 4096) + " }";
  };
  for (const auto& m : models) {
    o << "[[models]]\nname = \"" << m.model.name << "\"\n";
    if (!m.model.profile_key.empty())
      o << "profile_key = \"" << m.model.profile_key << "\"\n";
    if (co.backend == "sim") {
      o << "architecture = " << arch(m.model.arch) << "\n";
    } else {
      o << "backend = \"" << co.backend << "\"\n";
      if (!m.model.file.empty())
        o << "file = \"" << m.model.file << "\"\n";
      else
        o << "load_format = \"dummy\"\narchitecture = " << arch(m.model.arch) << "\n";
    }
    o << "\n";
  }
  for (const auto& u : plan.units) {
    o << "[[units]]\nname = \"n" << u.node << "g" << u.first_gpu;
    if (u.gpus > 1)
      o << "-" << u.first_gpu + u.gpus - 1;
    o << "\"\nnode = \"node" << u.node << "\"\nbackend = \"" << co.backend << "\"\n";
    if (co.backend != "cpu") {
      o << "gpu = \"" << cluster.gpu_name << "\"\ndevices = [";
      for (int g = 0; g < u.gpus; ++g)
        o << (g ? ", " : "") << u.first_gpu + g;
      o << "]\n";
    } else {
      o << "threads = " << u.gpus << "\n";
    }
    const bool shared = plan.system == system_kind::llmux && u.models.size() > 1 && co.backend == "sim";
    if (plan.system == system_kind::temporal || (plan.system == system_kind::llmux && u.models.size() > 1 && !shared)) {
      o << "multiplex = \"temporal\"\npolicy = \"" << (plan.system == system_kind::temporal ? "fcfs" : "adbs") << "\"\n";
    } else if (shared) {
      o << "jobs = \"split\"\nprefill = \"shared\"\nprefill_share = " << num(u.prefill_share) << "\npolicy = \"adbs\"\n";
    }
    o << "models = [\n";
    for (const auto& m : u.models) {
      o << "  { name = \"" << m.name << "\", rate = " << num(m.rate);
      if (shared)
        o << ", decode_share = " << num(m.decode_share);
      else if (u.models.size() > 1)
        // One step at a time on the whole unit: the books still want shares
        // that sum to at most 1; steps run on all of it.
        o << ", share = " << num(std::floor(1e6 / static_cast<double>(u.models.size())) / 1e6);
      o << " },\n";
    }
    o << "]\n\n";
  }
  return o.str();
}

std::string to_table(const placement_plan& plan) {
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%s: %zu units, est. %.2f of %.2f req/s served (%d cuts searched)", system_name(plan.system),
                plan.units.size(), plan.served_rps, plan.rate_rps, plan.cuts_tried);
  o << line;
  if (plan.load_scale > 0) {
    std::snprintf(line, sizeof line, "; sustains %.2fx the expected rates", plan.load_scale);
    o << line;
  }
  o << "\n";
  std::snprintf(line, sizeof line, "%-10s %4s %-16s %7s %7s %8s %8s %7s %8s %10s\n", "unit", "gpus", "model",
                "rate", "served", "decode", "prefill", "batch", "TPOT", "KV quota");
  o << line;
  for (const auto& u : plan.units) {
    char name[32];
    std::snprintf(name, sizeof name, "n%dg%d", u.node, u.first_gpu);
    for (size_t k = 0; k < u.models.size(); ++k) {
      const auto& m = u.models[k];
      std::snprintf(line, sizeof line, "%-10s %4d %-16s %7.2f %7.2f %8.2f %8.2f %7.0f %6.1fms %10lld\n",
                    k == 0 ? name : "", k == 0 ? u.gpus : 0, m.name.c_str(), m.rate, m.served_rps, m.decode_share,
                    u.prefill_share, m.batch, m.tpot_s * 1e3, static_cast<long long>(m.kv_quota_blocks));
      o << line;
    }
  }
  for (const auto& m : plan.unplaced)
    o << "unplaced: " << m << " (fits no unit)\n";
  return o.str();
}

}  // namespace llmux::plan
