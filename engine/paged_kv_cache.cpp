#include "engine/paged_kv_cache.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace llmux::engine {

kv_arena::kv_arena(int64_t blocks, int block_tokens, int max_head_dim)
  : blocks_(std::max<int64_t>(blocks, 0)), block_tokens_(std::max(block_tokens, 1)),
    max_head_dim_(std::max(max_head_dim, 1)),
    block_elems_(2 * static_cast<size_t>(block_tokens_) * static_cast<size_t>(max_head_dim_)),
    chunks_(new std::atomic<uint16_t*>[static_cast<size_t>((blocks_ + chunk_blocks - 1) / chunk_blocks)]) {
  for (int64_t c = 0; c < (blocks_ + chunk_blocks - 1) / chunk_blocks; ++c)
    chunks_[static_cast<size_t>(c)].store(nullptr, std::memory_order_relaxed);
}

uint16_t* kv_arena::block(int32_t id) {
  auto c = static_cast<size_t>(id / chunk_blocks);
  uint16_t* base = chunks_[c].load(std::memory_order_acquire);
  if (base == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    base = chunks_[c].load(std::memory_order_relaxed);
    if (base == nullptr) {
      owned_.emplace_back(new uint16_t[static_cast<size_t>(chunk_blocks) * block_elems_]);
      base = owned_.back().get();
      chunks_[c].store(base, std::memory_order_release);
      allocated_chunks_.fetch_add(1);
    }
  }
  return base + static_cast<size_t>(id % chunk_blocks) * block_elems_;
}

paged_kv_cache::paged_kv_cache(int n_layer, int n_head_kv, int head_dim,
                               std::shared_ptr<kv_arena> arena)
  : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim),
    block_tokens_(arena->block_tokens()), max_blocks_(arena->blocks()), arena_(std::move(arena)),
    block_elems_(2 * static_cast<size_t>(block_tokens_) * static_cast<size_t>(head_dim)) {
  if (head_dim > arena_->max_head_dim())
    throw std::invalid_argument("KV arena blocks hold heads of " + std::to_string(arena_->max_head_dim())
                                + " values; the model's head has " + std::to_string(head_dim));
}

void paged_kv_cache::adopt(uint64_t seq, const std::vector<int32_t>& ids) {
  if (ids.empty())
    return;
  const auto per_tb = static_cast<size_t>(n_layer_) * static_cast<size_t>(n_head_kv_);
  if (!arena_ || per_tb == 0 || ids.size() % per_tb != 0)
    throw std::invalid_argument("KV table grant of " + std::to_string(ids.size())
                                + " block ids is not whole token-blocks of "
                                + std::to_string(per_tb));
  for (auto id : ids)
    if (id < 0 || id >= arena_->blocks())
      throw std::invalid_argument("KV block id " + std::to_string(id) + " outside the unit's "
                                  + std::to_string(arena_->blocks()) + " blocks");
  std::lock_guard<std::mutex> lock(mu_);
  auto& table = tables_[seq];
  for (size_t i = 0; i < ids.size(); i += per_tb) {
    table.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(i),
                       ids.begin() + static_cast<std::ptrdiff_t>(i + per_tb));
    used_ += static_cast<int64_t>(per_tb);
  }
}

paged_kv_cache::paged_kv_cache(int n_layer, int n_head_kv, int head_dim, int block_tokens,
                               int64_t max_blocks)
  : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim), block_tokens_(block_tokens),
    max_blocks_(max_blocks),
    block_elems_(2 * static_cast<size_t>(block_tokens) * static_cast<size_t>(head_dim)) {
  // Never reallocated: a step's workers read chunk pointers while another
  // job's step may add a chunk.
  chunks_.reserve(static_cast<size_t>((std::max<int64_t>(max_blocks, 0) + chunk_blocks - 1) / chunk_blocks));
}

int32_t paged_kv_cache::take_block() {
  if (free_.empty()) {
    if (allocated_ >= max_blocks_)
      return -1;
    auto n = std::min(chunk_blocks, max_blocks_ - allocated_);
    chunks_.emplace_back(new uint16_t[static_cast<size_t>(chunk_blocks) * block_elems_]);
    for (int64_t i = n - 1; i >= 0; --i)
      free_.push_back(static_cast<int32_t>(allocated_ + i));
    allocated_ += n;
  }
  auto id = free_.back();
  free_.pop_back();
  ++used_;
  return id;
}

uint16_t* paged_kv_cache::block_ptr(int32_t id) const {
  if (arena_)
    return arena_->block(id);
  auto chunk = static_cast<size_t>(id / chunk_blocks);
  auto off = static_cast<size_t>(id % chunk_blocks) * block_elems_;
  return chunks_[chunk].get() + off;
}

bool paged_kv_cache::reserve(uint64_t seq, int64_t tokens) {
  if (arena_)
    return capacity_tokens(seq) >= tokens;
  std::lock_guard<std::mutex> lock(mu_);
  auto& table = tables_[seq];
  int64_t need_tb = (tokens + block_tokens_ - 1) / block_tokens_;
  int64_t add_tb = need_tb - static_cast<int64_t>(table.size());
  if (add_tb <= 0)
    return true;
  int64_t per_tb = int64_t{n_layer_} * n_head_kv_;
  int64_t free_now = static_cast<int64_t>(free_.size()) + (max_blocks_ - allocated_);
  if (add_tb * per_tb > free_now) {
    if (table.empty())
      tables_.erase(seq);
    return false;
  }
  for (int64_t t = 0; t < add_tb; ++t) {
    std::vector<int32_t> ids(static_cast<size_t>(per_tb));
    for (auto& id : ids)
      id = take_block();
    table.push_back(std::move(ids));
  }
  return true;
}

void paged_kv_cache::release(uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(seq);
  if (it == tables_.end())
    return;
  for (const auto& ids : it->second)
    for (auto id : ids) {
      if (!arena_)
        free_.push_back(id);
      --used_;
    }
  tables_.erase(it);
}

int64_t paged_kv_cache::capacity_tokens(uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(seq);
  return it == tables_.end() ? 0 : static_cast<int64_t>(it->second.size()) * block_tokens_;
}

int64_t paged_kv_cache::used_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

size_t paged_kv_cache::sequences() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tables_.size();
}

const paged_kv_cache::table* paged_kv_cache::find_table(uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(seq);
  return it == tables_.end() ? nullptr : &it->second;
}

paged_kv_cache::span paged_kv_cache::block_at(uint64_t seq, int layer, int head,
                                               int64_t pos) const {
  const auto* t = find_table(seq);
  if (t == nullptr)
    throw std::out_of_range("no KV table for sequence " + std::to_string(seq));
  return block_at(*t, layer, head, pos);
}

paged_kv_cache::span paged_kv_cache::block_at(const table& table, int layer, int head,
                                               int64_t pos) const {
  auto tb = static_cast<size_t>(pos / block_tokens_);
  auto id = table.at(tb)[static_cast<size_t>(layer * n_head_kv_ + head)];
  const uint16_t* base = block_ptr(id);
  return {base, base + static_cast<size_t>(block_tokens_) * head_dim_,
          static_cast<int64_t>(tb) * block_tokens_};
}

uint16_t* paged_kv_cache::k(uint64_t seq, int layer, int head, int64_t pos) {
  auto s = block_at(seq, layer, head, pos);
  return const_cast<uint16_t*>(s.k) + (pos - s.first_pos) * head_dim_;
}

uint16_t* paged_kv_cache::v(uint64_t seq, int layer, int head, int64_t pos) {
  auto s = block_at(seq, layer, head, pos);
  return const_cast<uint16_t*>(s.v) + (pos - s.first_pos) * head_dim_;
}

uint16_t* paged_kv_cache::k(const table& t, int layer, int head, int64_t pos) const {
  auto s = block_at(t, layer, head, pos);
  return const_cast<uint16_t*>(s.k) + (pos - s.first_pos) * head_dim_;
}

uint16_t* paged_kv_cache::v(const table& t, int layer, int head, int64_t pos) const {
  auto s = block_at(t, layer, head, pos);
  return const_cast<uint16_t*>(s.v) + (pos - s.first_pos) * head_dim_;
}

}  // namespace llmux::engine
