#pragma once
/// Everything a unit's kv_manager decides, without CAF — the pure core the
/// kv_manager actor wraps and `llmux simulate` drives in virtual time: the
/// unit's `kv_block_pool`, and under ADBS its `unit::quota_planner` with the
/// books the planner needs (peak use per model since the last rebalance,
/// each model's reported backlog).
///
/// Times are seconds from any monotonic origin the caller picks (the actor:
/// its start on the steady clock; the simulator: virtual time).
/// Single-threaded and non-blocking: the owner calls everything.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/gpu_unit/unit_policy.hpp"
#include "actors/kv_manager/kv_block_pool.hpp"
#include "actors/protocol/generation.hpp"

namespace llmux::kv {

struct kv_model_shape {
  std::string model;
  int layers = 0;
  int kv_heads = 0;
  double expected_rate = 1.0;  ///< req/s, from the config: ADBS's starting point
  /// Its engine keeps KV in the unit's blocks: grants carry the block ids.
  bool tables = false;
  /// Values per head. Every block has room for the largest head of the
  /// unit's models (one free list for all shapes); a smaller head leaves the
  /// rest of each of its blocks empty, which admin state reports.
  int head_dim = 0;
};

struct kv_manager_options {
  std::string node;
  std::string name;  ///< "<unit>/kv"
  int64_t total_blocks = 0;
  int block_tokens = 16;
  std::vector<kv_model_shape> models;
  /// "adbs": per-model quotas from unit::quota_planner, moved every
  /// `quota_period_ms`; "fcfs"/"round_robin": every model may use the pool.
  std::string policy = "adbs";
  int quota_period_ms = 5000;
  int64_t floor_tokens = 512;  ///< adbs: room every model keeps, tokens
};

class kv_manager_core {
public:
  explicit kv_manager_core(kv_manager_options opts);

  /// `kv_open`: tables for the waiting sequences `needs`, in order, until
  /// one does not fit. A sequence that can never fit (larger than
  /// `most_blocks`) is refused even when the pool has room now; when it is
  /// the first, nothing is granted and the grant says `never`.
  [[nodiscard]] protocol::kv_grant open(const std::string& model, const std::vector<protocol::kv_need>& needs);
  /// `kv_grow`: longer tables for running sequences, in order, until one is refused.
  [[nodiscard]] protocol::kv_grant grow(const std::string& model, const std::vector<protocol::kv_need>& needs);
  void commit(const std::string& model, uint64_t seq, const std::vector<int32_t>& tokens) {
    pool_->commit(model, seq, tokens);
  }
  void close(const std::string& model, const std::vector<uint64_t>& seqs);
  /// The model went to sleep: its cached blocks go back to the pool.
  int64_t forget_cache(const std::string& model) { return pool_->forget_cache(model); }
  /// The most physical blocks `model` can ever hold: its quota (fcfs: the
  /// pool), or under ADBS, whose quotas move, the pool less every other
  /// model's floor.
  [[nodiscard]] int64_t most_blocks(const std::string& model) const;
  /// A scheduler's `kv_load`: requests accepted since its last one, and the
  /// tokens its waiting requests need but could not get.
  void load(const std::string& model, int32_t arrivals, int64_t backlog_tokens, double now_s);
  /// One ADBS period: quota moves from models under 90% of theirs to models
  /// with a backlog, taking only what a lender holds above its share of
  /// the rate split (the pool lends the rest while it is idle), or toward
  /// the measured-rate split when no model has a backlog. No-op without
  /// quotas or before the planner's period has passed.
  void rebalance(double now_s);

  /// The kv_manager's admin state (what `llmux admin state` shows).
  [[nodiscard]] nlohmann::json state(double now_s) const;

  [[nodiscard]] const kv_block_pool& pool() const { return *pool_; }
  /// Null without ADBS quotas (policy not "adbs", or floors over the pool).
  [[nodiscard]] const unit::quota_planner* planner() const { return planner_.get(); }
  [[nodiscard]] const kv_manager_options& options() const { return opts_; }
  [[nodiscard]] uint64_t refusals() const { return refusals_; }
  [[nodiscard]] uint64_t quota_moves() const { return quota_moves_; }

private:
  void start_quotas();
  [[nodiscard]] bool wants_tables(const std::string& model) const;
  void note_usage(const std::string& model);

  kv_manager_options opts_;
  std::unique_ptr<kv_block_pool> pool_;
  uint64_t allocations_ = 0;
  uint64_t refusals_ = 0;
  std::unique_ptr<unit::quota_planner> planner_;
  std::string quota_error_;   ///< why no quotas apply, if so
  unit::block_map peak_;      ///< blocks held at most since the last rebalance
  unit::block_map backlog_;   ///< blocks waiting requests need, last reported
  uint64_t quota_moves_ = 0;
  std::deque<nlohmann::json> recent_moves_;  ///< the last few, newest last
};

}  // namespace llmux::kv
