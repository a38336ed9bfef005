#include "actors/kv_manager/kv_manager_core.hpp"

#include <algorithm>

namespace llmux::kv {

using protocol::kv_grant;
using protocol::kv_need;

kv_manager_core::kv_manager_core(kv_manager_options opts)
  : opts_(std::move(opts)), pool_(std::make_unique<kv_block_pool>(opts_.total_blocks, opts_.block_tokens)) {
  for (const auto& m : opts_.models)
    pool_->add_model(m.model, m.layers, m.kv_heads);
  start_quotas();
}

bool kv_manager_core::wants_tables(const std::string& model) const {
  for (const auto& m : opts_.models)
    if (m.model == model)
      return m.tables;
  return false;
}

void kv_manager_core::note_usage(const std::string& model) {
  auto it = pool_->models().find(model);
  if (it != pool_->models().end())
    peak_[model] = std::max(peak_[model], it->second.used);
}

/// Sets up ADBS's quotas: the split by the config's expected rates.
void kv_manager_core::start_quotas() {
  if (opts_.policy != "adbs")
    return;
  unit::quota_options qo;
  qo.block_tokens = opts_.block_tokens;
  qo.period_s = opts_.quota_period_ms / 1e3;
  qo.pool_lends_idle = true;  // set_lend_idle below
  planner_ = std::make_unique<unit::quota_planner>(qo);
  for (const auto& m : opts_.models)
    if (auto err = planner_->add_model(m.model, int64_t{m.layers} * m.kv_heads, m.expected_rate,
                                       opts_.floor_tokens)) {
      quota_error_ = *err;
      planner_.reset();
      return;
    }
  auto split = planner_->initial_quotas(pool_->total());
  if (!split) {
    // Floors larger than the pool: every model keeps the whole pool (fcfs).
    quota_error_ = split.error;
    planner_.reset();
    return;
  }
  for (const auto& [model, q] : split.quotas)
    pool_->set_quota(model, q);
  // Quotas guarantee; spare blocks no other quota still needs are lent.
  pool_->set_borrow_spare(true);
  pool_->set_lend_idle(true);
}

int64_t kv_manager_core::most_blocks(const std::string& model) const {
  auto it = pool_->models().find(model);
  if (it == pool_->models().end())
    return 0;
  if (!planner_)
    return std::min(it->second.quota, pool_->total());
  // Under ADBS a quota moves, but every other model keeps its floor: the
  // most one model can ever hold is the pool less the others' floors.
  int64_t most = pool_->total();
  for (const auto& [name, info] : planner_->models())
    if (name != model)
      most -= info.floor_blocks;
  return most;
}

kv_grant kv_manager_core::open(const std::string& model, const std::vector<kv_need>& needs) {
  kv_grant g;
  const bool tables = wants_tables(model);
  const int64_t per = pool_->blocks_per_token_block(model);
  const int64_t bt = pool_->block_tokens();
  const int64_t most = most_blocks(model);
  for (const auto& n : needs) {
    // A sequence larger than the most the model can ever hold is refused
    // before the pool is asked, whether or not it has room now: otherwise
    // it would be served only while the other models happen to hold
    // nothing, and wait (holding up every request behind it) until then.
    if (per == 0 || (n.tokens + bt - 1) / bt * per > most) {
      g.never = g.granted == 0;
      break;
    }
    auto got = pool_->open(model, n.seq, n.lookup, n.tokens);
    if (!got)
      break;
    g.cached.push_back(*got);
    if (tables)
      g.blocks.push_back(*pool_->table(model, n.seq));
    ++g.granted;
    ++allocations_;
  }
  note_usage(model);
  if (g.granted == 0 && !needs.empty())
    ++refusals_;
  return g;
}

kv_grant kv_manager_core::grow(const std::string& model, const std::vector<kv_need>& needs) {
  kv_grant g;
  const bool tables = wants_tables(model);
  for (const auto& n : needs) {
    const auto* before = pool_->table(model, n.seq);
    const size_t had = before ? before->size() : 0;
    if (!pool_->grow(model, n.seq, n.tokens))
      break;
    if (tables) {
      const auto& t = *pool_->table(model, n.seq);
      g.blocks.emplace_back(t.begin() + static_cast<std::ptrdiff_t>(had), t.end());
    }
    ++g.granted;
  }
  note_usage(model);
  if (g.granted < static_cast<int32_t>(needs.size()))
    ++refusals_;
  return g;
}

void kv_manager_core::close(const std::string& model, const std::vector<uint64_t>& seqs) {
  for (auto seq : seqs)
    pool_->close(model, seq);
}

void kv_manager_core::load(const std::string& model, int32_t arrivals, int64_t backlog_tokens, double now_s) {
  if (!planner_)
    return;
  for (int32_t i = 0; i < arrivals; ++i)
    planner_->on_arrival(model, now_s);
  const int64_t bt = pool_->block_tokens();
  backlog_[model] = (backlog_tokens + bt - 1) / bt * pool_->blocks_per_token_block(model);
  pool_->set_waiting(model, backlog_tokens > 0);
}

void kv_manager_core::rebalance(double now_s) {
  if (!planner_)
    return;
  unit::block_map current, usage;
  for (const auto& [model, m] : pool_->models()) {
    current[model] = m.quota;
    usage[model] = std::max(peak_[model], m.used);
  }
  auto r = planner_->rebalance(now_s, usage, backlog_, current);
  if (!r)
    return;
  for (const auto& [model, q] : r->quotas)
    pool_->set_quota(model, q);
  for (const auto& mv : r->moves) {
    ++quota_moves_;
    recent_moves_.push_back({{"from", mv.from},
                             {"to", mv.to},
                             {"blocks", mv.blocks},
                             {"reason", std::string{unit::reason_name(mv.reason)}}});
    if (recent_moves_.size() > 8)
      recent_moves_.pop_front();
  }
  peak_.clear();
}

nlohmann::json kv_manager_core::state(double now_s) const {
  auto models = nlohmann::json::object();
  // Blocks are sized for the largest head: the share of the blocks in use
  // (held or cached) that smaller heads leave empty.
  int block_head_dim = 0;
  for (const auto& shape : opts_.models)
    block_head_dim = std::max(block_head_dim, shape.head_dim);
  double in_use = 0, empty = 0;
  for (const auto& [name, m] : pool_->models()) {
    int head_dim = 0;
    for (const auto& shape : opts_.models)
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
  if (planner_)
    for (const auto& [name, info] : planner_->models()) {
      models[name]["rate"] = planner_->rate(name, now_s);
      auto b = backlog_.find(name);
      models[name]["backlog"] = b == backlog_.end() ? 0 : b->second;
      models[name]["quota_in"] = info.blocks_in;
      models[name]["quota_out"] = info.blocks_out;
    }
  auto moves = nlohmann::json::array();
  for (const auto& mv : recent_moves_)
    moves.push_back(mv);
  return {{"block_head_dim", block_head_dim},
          {"slot_padding", in_use > 0 ? empty / in_use : 0.0},
          {"blocks_total", pool_->total()},
          // As vLLM counts them: cached prefix blocks nobody references are
          // free (reclaimed on demand), not used; blocks_evictable says how
          // many of the free ones still hold a prefix.
          {"blocks_used", pool_->used() - pool_->evictable()},
          {"blocks_free", pool_->free() + pool_->evictable()},
          {"blocks_evictable", pool_->evictable()},
          {"evicted_blocks", pool_->evicted_blocks()},
          {"block_tokens", pool_->block_tokens()},
          {"allocations", allocations_},
          {"refusals", refusals_},
          {"policy", opts_.policy},
          {"quotas", planner_ ? "adbs" : "none"},
          {"quota_error", quota_error_},
          {"quota_moves", quota_moves_},
          {"recent_moves", moves},
          {"models", models}};
}

}  // namespace llmux::kv
