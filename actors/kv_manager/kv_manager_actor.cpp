#include <algorithm>
#include "actors/kv_manager/kv_manager_actor.hpp"

#include <chrono>
#include <deque>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/gpu_unit/unit_policy.hpp"

namespace llmux::kv {

using namespace protocol;

namespace {

struct kv_state {
  static inline const char* name = "llmux.kv_manager";
  kv_manager_options opts;
  std::unique_ptr<kv_block_pool> pool;
  uint64_t allocations = 0;
  uint64_t refusals = 0;
  // ADBS quotas (policy "adbs" only).
  std::unique_ptr<unit::quota_planner> planner;
  std::string quota_error;            ///< why no quotas apply, if so
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  unit::block_map peak;               ///< blocks held at most since the last rebalance
  unit::block_map backlog;            ///< blocks waiting requests need, last reported
  uint64_t quota_moves = 0;
  std::deque<nlohmann::json> recent_moves;  ///< the last few, newest last

  [[nodiscard]] double now_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  [[nodiscard]] bool wants_tables(const std::string& model) const {
    for (const auto& m : opts.models)
      if (m.model == model)
        return m.tables;
    return false;
  }
  void note_usage(const std::string& model) {
    auto it = pool->models().find(model);
    if (it != pool->models().end())
      peak[model] = std::max(peak[model], it->second.used);
  }
};

using kv_ptr = kv_manager_actor::stateful_pointer<kv_state>;

/// Sets up ADBS's quotas: the split by the config's expected rates.
void start_quotas(kv_state& s) {
  if (s.opts.policy != "adbs")
    return;
  unit::quota_options qo;
  qo.block_tokens = s.opts.block_tokens;
  qo.period_s = s.opts.quota_period_ms / 1e3;
  s.planner = std::make_unique<unit::quota_planner>(qo);
  for (const auto& m : s.opts.models)
    if (auto err = s.planner->add_model(m.model, int64_t{m.layers} * m.kv_heads, m.expected_rate,
                                        s.opts.floor_tokens)) {
      s.quota_error = *err;
      s.planner.reset();
      return;
    }
  auto split = s.planner->initial_quotas(s.pool->total());
  if (!split) {
    // Floors larger than the pool: every model keeps the whole pool (fcfs).
    s.quota_error = split.error;
    s.planner.reset();
    return;
  }
  for (const auto& [model, q] : split.quotas)
    s.pool->set_quota(model, q);
  // Quotas guarantee; spare blocks no other quota still needs are lent.
  s.pool->set_borrow_spare(true);
  s.pool->set_lend_idle(true);
}

/// One ADBS period: quota moves from models under 90% of theirs to models
/// with a backlog (or toward the measured-rate split when none has one).
void rebalance(kv_state& s) {
  if (!s.planner)
    return;
  unit::block_map current, usage;
  for (const auto& [model, m] : s.pool->models()) {
    current[model] = m.quota;
    usage[model] = std::max(s.peak[model], m.used);
  }
  auto r = s.planner->rebalance(s.now_s(), usage, s.backlog, current);
  if (!r)
    return;
  for (const auto& [model, q] : r->quotas)
    s.pool->set_quota(model, q);
  for (const auto& mv : r->moves) {
    ++s.quota_moves;
    s.recent_moves.push_back({{"from", mv.from},
                              {"to", mv.to},
                              {"blocks", mv.blocks},
                              {"reason", std::string{unit::reason_name(mv.reason)}}});
    if (s.recent_moves.size() > 8)
      s.recent_moves.pop_front();
  }
  s.peak.clear();
}

}  // namespace

kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts) {
  auto impl = [](kv_ptr self, kv_manager_options opts) -> kv_manager_actor::behavior_type {
    auto& s = self->state;
    s.pool = std::make_unique<kv_block_pool>(opts.total_blocks, opts.block_tokens);
    for (const auto& m : opts.models)
      s.pool->add_model(m.model, m.layers, m.kv_heads);
    s.opts = std::move(opts);
    start_quotas(s);
    if (s.planner)
      self->delayed_send(self, std::chrono::milliseconds(s.opts.quota_period_ms), tick_atom::value);
    return {
      [self](kv_open_atom, const std::string& model, const std::vector<kv_need>& needs) -> kv_grant {
        auto& s = self->state;
        kv_grant g;
        const bool tables = s.wants_tables(model);
        for (const auto& n : needs) {
          auto got = s.pool->open(model, n.seq, n.lookup, n.tokens);
          if (!got)
            break;
          g.cached.push_back(*got);
          if (tables)
            g.blocks.push_back(*s.pool->table(model, n.seq));
          ++g.granted;
          ++s.allocations;
        }
        s.note_usage(model);
        if (g.granted == 0 && !needs.empty()) {
          ++s.refusals;
          // Distinguish "not now" from "never": the sequence is larger than
          // the model's whole quota or the whole pool.
          auto per = s.pool->blocks_per_token_block(model);
          auto it = s.pool->models().find(model);
          const int64_t bt = s.pool->block_tokens();
          const int64_t need = (needs.front().tokens + bt - 1) / bt * per;
          // Under ADBS a quota moves: the most it can reach is the pool less
          // the other models' floors.
          int64_t most = it == s.pool->models().end() ? 0 : std::min(it->second.quota, s.pool->total());
          if (s.planner) {
            most = s.pool->total();
            for (const auto& [name, info] : s.planner->models())
              if (name != model)
                most -= info.floor_blocks;
          }
          g.never = per == 0 || it == s.pool->models().end() || need > most;
        }
        return g;
      },
      [self](kv_grow_atom, const std::string& model, const std::vector<kv_need>& needs) -> kv_grant {
        auto& s = self->state;
        kv_grant g;
        const bool tables = s.wants_tables(model);
        for (const auto& n : needs) {
          const auto* before = s.pool->table(model, n.seq);
          const size_t had = before ? before->size() : 0;
          if (!s.pool->grow(model, n.seq, n.tokens))
            break;
          if (tables) {
            const auto& t = *s.pool->table(model, n.seq);
            g.blocks.emplace_back(t.begin() + static_cast<std::ptrdiff_t>(had), t.end());
          }
          ++g.granted;
        }
        s.note_usage(model);
        if (g.granted < static_cast<int32_t>(needs.size()))
          ++s.refusals;
        return g;
      },
      [self](kv_commit_atom, const std::string& model, uint64_t seq,
             const std::vector<int32_t>& tokens) { self->state.pool->commit(model, seq, tokens); },
      [self](kv_close_atom, const std::string& model, const std::vector<uint64_t>& seqs) {
        for (auto seq : seqs)
          self->state.pool->close(model, seq);
      },
      [self](kv_load_atom, const std::string& model, int32_t arrivals, int64_t backlog_tokens) {
        auto& s = self->state;
        if (!s.planner)
          return;
        const double now = s.now_s();
        for (int32_t i = 0; i < arrivals; ++i)
          s.planner->on_arrival(model, now);
        const int64_t bt = s.pool->block_tokens();
        s.backlog[model] = (backlog_tokens + bt - 1) / bt * s.pool->blocks_per_token_block(model);
        s.pool->set_waiting(model, backlog_tokens > 0);
      },
      [self](tick_atom) {
        auto& s = self->state;
        rebalance(s);
        self->delayed_send(self, std::chrono::milliseconds(s.opts.quota_period_ms), tick_atom::value);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto models = nlohmann::json::object();
        // Blocks are sized for the largest head: the share of the blocks in
        // use (held or cached) that smaller heads leave empty.
        int block_head_dim = 0;
        for (const auto& shape : s.opts.models)
          block_head_dim = std::max(block_head_dim, shape.head_dim);
        double in_use = 0, empty = 0;
        for (const auto& [name, m] : s.pool->models()) {
          int head_dim = 0;
          for (const auto& shape : s.opts.models)
            if (shape.model == name)
              head_dim = shape.head_dim;
          models[name] = {{"used", m.used},
                          {"quota", m.quota},
                          {"cached", m.cached},
                          {"sequences", m.sequences},
                          {"prefix_queries", m.prefix_queries},
                          {"prefix_hits", m.prefix_hits},
                          {"blocks_per_token_block", int64_t{m.layers} * m.kv_heads},
                          {"head_dim", head_dim}};
          const auto blocks = static_cast<double>(m.used + m.cached);
          in_use += blocks;
          if (block_head_dim > 0 && head_dim > 0)
            empty += blocks * (1.0 - static_cast<double>(head_dim) / block_head_dim);
        }
        const double now = s.now_s();
        if (s.planner)
          for (const auto& [name, info] : s.planner->models()) {
            models[name]["rate"] = s.planner->rate(name, now);
            models[name]["backlog"] = s.backlog.count(name) ? s.backlog.at(name) : 0;
            models[name]["quota_in"] = info.blocks_in;
            models[name]["quota_out"] = info.blocks_out;
          }
        auto moves = nlohmann::json::array();
        for (const auto& mv : s.recent_moves)
          moves.push_back(mv);
        nlohmann::json j{{"block_head_dim", block_head_dim},
                         {"slot_padding", in_use > 0 ? empty / in_use : 0.0},
                         {"blocks_total", s.pool->total()},
                         {"blocks_used", s.pool->used()},
                         {"blocks_free", s.pool->free()},
                         {"blocks_evictable", s.pool->evictable()},
                         {"evicted_blocks", s.pool->evicted_blocks()},
                         {"block_tokens", s.pool->block_tokens()},
                         {"allocations", s.allocations},
                         {"refusals", s.refusals},
                         {"policy", s.opts.policy},
                         {"quotas", s.planner ? "adbs" : "none"},
                         {"quota_error", s.quota_error},
                         {"quota_moves", s.quota_moves},
                         {"recent_moves", moves},
                         {"models", models}};
        return {s.opts.node, "kv_manager", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::kv
