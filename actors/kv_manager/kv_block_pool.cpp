#include "actors/kv_manager/kv_block_pool.hpp"

#include <algorithm>
#include <limits>

namespace llmux::kv {

double head_size_waste(const std::vector<std::pair<int, int64_t>>& head_dim_and_blocks_in_use,
                       int max_head_dim) {
  if (max_head_dim <= 0)
    return 0;
  double bytes = 0;
  double wasted = 0;
  for (const auto& [head_dim, blocks] : head_dim_and_blocks_in_use) {
    if (blocks <= 0)
      continue;
    bytes += static_cast<double>(blocks) * max_head_dim;
    wasted += static_cast<double>(blocks) * std::max(0, max_head_dim - head_dim);
  }
  return bytes > 0 ? wasted / bytes : 0;
}

uint64_t kv_block_pool::chain_hash(uint64_t parent_hash, const int32_t* tokens, size_t count) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bit
  auto mix = [&h](uint64_t v, int bytes) {
    for (int b = 0; b < bytes; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(parent_hash, 8);
  for (size_t i = 0; i < count; ++i)
    mix(static_cast<uint32_t>(tokens[i]), 4);
  return h;
}

kv_block_pool::kv_block_pool(int64_t total_blocks, int block_tokens)
  : total_(std::clamp<int64_t>(total_blocks, 0, std::numeric_limits<int32_t>::max())),
    block_tokens_(std::max(1, block_tokens)) {
}

void kv_block_pool::add_model(const std::string& model, int layers, int kv_heads) {
  auto it = models_.find(model);
  if (it != models_.end()) {
    const auto& st = state_.at(model);
    if (it->second.used > 0 || !st.sequences.empty() || !st.index.empty())
      return;
  }
  auto& m = models_[model];
  m.layers = std::max(0, layers);
  m.kv_heads = std::max(0, kv_heads);
  m.quota = total_;
  state_[model];
}

void kv_block_pool::set_quota(const std::string& model, int64_t physical_blocks) {
  auto it = models_.find(model);
  if (it != models_.end())
    it->second.quota = std::max<int64_t>(0, physical_blocks);
}

int64_t kv_block_pool::blocks_per_token_block(const std::string& model) const {
  auto it = models_.find(model);
  if (it == models_.end())
    return 0;
  return it->second.per_token_block();
}

// ---- free list and eviction ----

bool kv_block_pool::quota_allows(const std::string& model, const model_usage& m, int64_t more,
                                 bool growing) const {
  if (m.used + more <= m.quota)
    return true;
  if (!borrow_spare_)
    return false;
  // A model holding nothing may always start one sequence the pool has room
  // for: a request larger than its quota must not wait forever while every
  // other model keeps its own (that starved whole models at overload).
  if (m.used == 0)
    return true;
  // Above its quota a model may borrow what no other model's quota still
  // guarantees: the unused part of every other quota stays free for it.
  // With lending, a model with nothing waiting keeps only what its open
  // sequences grow into next (a token-block each, within its quota): the
  // rest of its quota is lent, and its running sequences are not preempted
  // under their own quota for want of their next block. A waiting model
  // keeps the rest from new sequences only: a borrower's running sequences
  // may grow into it, since refusing them would preempt by recompute
  // (their work lost, their blocks taken again later), while held
  // admissions hand the blocks back as the borrowed sequences end.
  int64_t owed = 0;
  for (const auto& [name, other] : models_) {
    if (name == model)
      continue;
    const int64_t unused = std::max<int64_t>(0, other.quota - other.used);
    const bool lent = lend_idle_ && (growing || waiting_.count(name) == 0);
    owed += lent ? std::min(unused, other.sequences * other.per_token_block()) : unused;
  }
  return more + owed <= free() + evictable_;
}

bool kv_block_pool::pool_has(int64_t blocks, int64_t pinned) const {
  return blocks <= free() + evictable_ - pinned;
}

void kv_block_pool::take(int64_t count, std::vector<int32_t>& out) {
  while (count > 0) {
    if (!free_.empty()) {
      // Off the top of the free stack (most recently freed first), as many as it has.
      const auto n = std::min<int64_t>(count, static_cast<int64_t>(free_.size()));
      out.insert(out.end(), free_.rbegin(), free_.rbegin() + n);
      free_.resize(free_.size() - static_cast<size_t>(n));
      count -= n;
    } else if (fresh_ < total_) {
      const auto n = std::min<int64_t>(count, total_ - fresh_);
      for (int64_t i = 0; i < n; ++i)
        out.push_back(static_cast<int32_t>(fresh_ + i));
      fresh_ += n;
      refs_.resize(static_cast<size_t>(fresh_), 0);
      cached_in_.resize(static_cast<size_t>(fresh_), 0);
      count -= n;
    } else {
      evict_oldest();
    }
  }
}

void kv_block_pool::evict_oldest() {
  evict(lru_.begin());
}

int64_t kv_block_pool::forget_cache(const std::string& model) {
  int64_t n = 0;
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto next = std::next(it);
    const auto& e = entries_.at(it->second);
    if (e.model == model) {
      n += static_cast<int64_t>(e.blocks.size());
      evict(it);
    }
    it = next;
  }
  return n;
}

void kv_block_pool::evict(std::map<uint64_t, uint64_t>::iterator lru_entry) {
  const uint64_t id = lru_entry->second;
  lru_.erase(lru_entry);
  auto& e = entries_.at(id);
  const auto n = static_cast<int64_t>(e.blocks.size());
  for (auto b : e.blocks) {
    cached_in_[b] = 0;
    free_.push_back(b);
  }
  evictable_ -= n;
  evicted_blocks_ += static_cast<uint64_t>(n);
  models_.at(e.model).cached -= n;
  auto& index = state_.at(e.model).index;
  auto [lo, hi] = index.equal_range(e.hash);
  for (auto it = lo; it != hi; ++it)
    if (it->second == id) {
      index.erase(it);
      break;
    }
  // Its cached descendants, if any, become unreachable; they were released no
  // later than it and so sit ahead of it in the LRU order anyway.
  entries_.erase(id);
}

void kv_block_pool::acquire(model_usage& m, cache_entry& e) {
  if (e.lru_tick != 0) {
    lru_.erase(e.lru_tick);
    e.lru_tick = 0;
    const auto n = static_cast<int64_t>(e.blocks.size());
    evictable_ -= n;
    m.cached -= n;
  }
  for (auto b : e.blocks)
    if (refs_[b]++ == 0)
      ++m.used;
}

void kv_block_pool::acquire_fresh(model_usage& m, int64_t count, std::vector<int32_t>& table) {
  const size_t from = table.size();
  take(count, table);
  for (size_t k = from; k < table.size(); ++k)
    refs_[static_cast<size_t>(table[k])] = 1;
  m.used += count;
}

void kv_block_pool::drop(model_usage& m, uint64_t entry, const int32_t* ids, int64_t per) {
  if (entry == 0) {
    // A private token-block (never published) is held by this table alone:
    // all of it goes back at once.
    for (int64_t i = 0; i < per; ++i)
      refs_[static_cast<size_t>(ids[i])] = 0;
    m.used -= per;
    free_.insert(free_.end(), ids, ids + per);
    return;
  }
  for (int64_t i = 0; i < per; ++i) {
    const int32_t b = ids[i];
    if (--refs_[b] > 0)
      continue;
    --m.used;
    if (entry == 0)
      free_.push_back(b);
  }
  if (entry == 0 || refs_[ids[0]] > 0)
    return;
  auto& e = entries_.at(entry);
  e.lru_tick = next_tick_++;
  lru_.emplace(e.lru_tick, entry);
  evictable_ += per;
  m.cached += per;
}

// ---- sequences ----

std::vector<uint64_t> kv_block_pool::lookup(const model_state& st,
                                            const std::vector<int32_t>& prompt) const {
  const auto bt = static_cast<size_t>(block_tokens_);
  const size_t eligible = prompt.empty() ? 0 : (prompt.size() - 1) / bt;
  // Several entries may hold the same tokens at one depth (sequences that
  // computed the same block before either published it): keep every match
  // per depth, so the longest chain below any of them is found.
  std::vector<std::vector<uint64_t>> depths;
  std::vector<uint64_t> parents{0};
  uint64_t hash = 0;
  for (size_t i = 0; i < eligible; ++i) {
    const int32_t* tokens = prompt.data() + i * bt;
    hash = hash_(hash, tokens, bt);
    std::vector<uint64_t> matches;
    auto [lo, hi] = st.index.equal_range(hash);
    for (auto it = lo; it != hi; ++it) {
      const auto& e = entries_.at(it->second);
      if (std::find(parents.begin(), parents.end(), e.parent) != parents.end()
          && std::equal(e.tokens.begin(), e.tokens.end(), tokens, tokens + bt))
        matches.push_back(it->second);
    }
    if (matches.empty())
      break;
    parents = matches;
    depths.push_back(std::move(matches));
  }
  std::vector<uint64_t> chain(depths.size());
  if (!chain.empty()) {
    chain.back() = depths.back().front();
    for (size_t i = chain.size() - 1; i > 0; --i)
      chain[i - 1] = entries_.at(chain[i]).parent;
  }
  return chain;
}

std::optional<int32_t> kv_block_pool::open(const std::string& model, uint64_t seq,
                                           const std::vector<int32_t>& prompt, int32_t tokens) {
  auto it = models_.find(model);
  if (it == models_.end())
    return std::nullopt;
  auto& m = it->second;
  auto& st = state_.at(model);
  const int64_t per = m.per_token_block();
  if (per == 0 || st.sequences.count(seq) != 0)
    return std::nullopt;

  auto chain = lookup(st, prompt);
  const auto cached = static_cast<int64_t>(chain.size());
  const int64_t wanted = std::max<int64_t>(cached, (std::max(tokens, 0) + block_tokens_ - 1) / block_tokens_);
  // Hits sitting unreferenced in the cache start counting for this model and
  // stop being evictable; hits other sequences hold are counted already.
  int64_t pinned = 0;
  for (auto id : chain)
    if (entries_.at(id).lru_tick != 0)
      pinned += per;
  const int64_t fresh = (wanted - cached) * per;
  if (!quota_allows(model, m, pinned + fresh, false) || !pool_has(fresh, pinned))
    return std::nullopt;

  sequence s;
  s.table.reserve(static_cast<size_t>(wanted * per));
  for (auto id : chain) {
    auto& e = entries_.at(id);
    acquire(m, e);
    s.table.insert(s.table.end(), e.blocks.begin(), e.blocks.end());
  }
  acquire_fresh(m, fresh, s.table);
  s.chain = std::move(chain);
  st.sequences.emplace(seq, std::move(s));
  ++m.sequences;
  m.prefix_queries += prompt.empty() ? 0 : (prompt.size() - 1) / static_cast<size_t>(block_tokens_);
  m.prefix_hits += static_cast<uint64_t>(cached);
  return static_cast<int32_t>(cached * block_tokens_);
}

kv_block_pool::sequence_ref kv_block_pool::find_sequence(const std::string& model, uint64_t seq) {
  auto it = models_.find(model);
  if (it == models_.end())
    return {};
  auto& st = state_.at(model);
  auto sit = st.sequences.find(seq);
  return {&it->second, &st, sit == st.sequences.end() ? nullptr : &sit->second};
}

bool kv_block_pool::grow(const std::string& model, uint64_t seq, int32_t tokens) {
  auto found = find_sequence(model, seq);
  if (found.seq == nullptr)
    return false;
  auto& m = *found.usage;
  auto& table = found.seq->table;
  const int64_t per = m.per_token_block();
  const int64_t wanted = (std::max(tokens, 0) + block_tokens_ - 1) / block_tokens_;
  const int64_t fresh = wanted * per - static_cast<int64_t>(table.size());
  if (fresh <= 0)
    return true;
  if (!quota_allows(model, m, fresh, true) || !pool_has(fresh, 0))
    return false;
  acquire_fresh(m, fresh, table);
  return true;
}

void kv_block_pool::commit(const std::string& model, uint64_t seq, const std::vector<int32_t>& tokens) {
  auto found = find_sequence(model, seq);
  if (found.seq == nullptr)
    return;
  auto& s = *found.seq;
  const auto per = static_cast<size_t>(found.usage->per_token_block());
  const auto bt = static_cast<size_t>(block_tokens_);
  const size_t full = std::min(tokens.size() / bt, s.table.size() / per);
  for (size_t i = s.chain.size(); i < full; ++i) {
    cache_entry e;
    e.model = model;
    e.parent = i == 0 ? 0 : s.chain[i - 1];
    e.hash = hash_(i == 0 ? 0 : entries_.at(e.parent).hash, tokens.data() + i * bt, bt);
    e.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(i * bt),
                    tokens.begin() + static_cast<std::ptrdiff_t>((i + 1) * bt));
    e.blocks.assign(s.table.begin() + static_cast<std::ptrdiff_t>(i * per),
                    s.table.begin() + static_cast<std::ptrdiff_t>((i + 1) * per));
    const uint64_t id = next_entry_++;
    for (auto b : e.blocks)
      cached_in_[b] = id;
    found.state->index.emplace(e.hash, id);
    entries_.emplace(id, std::move(e));
    s.chain.push_back(id);
  }
}

void kv_block_pool::close(const std::string& model, uint64_t seq) {
  auto found = find_sequence(model, seq);
  if (found.seq == nullptr)
    return;
  auto& m = *found.usage;
  const auto& s = *found.seq;
  const int64_t per = m.per_token_block();
  // Last token-block first: deeper blocks of a chain get older LRU ticks and
  // are evicted before the blocks they extend.
  for (auto i = static_cast<int64_t>(s.table.size()) / per - 1; i >= 0; --i) {
    const uint64_t entry = i < static_cast<int64_t>(s.chain.size()) ? s.chain[static_cast<size_t>(i)] : 0;
    drop(m, entry, s.table.data() + i * per, per);
  }
  found.state->sequences.erase(seq);
  --m.sequences;
}

const std::vector<int32_t>* kv_block_pool::table(const std::string& model, uint64_t seq) const {
  auto it = state_.find(model);
  if (it == state_.end())
    return nullptr;
  auto sit = it->second.sequences.find(seq);
  return sit == it->second.sequences.end() ? nullptr : &sit->second.table;
}

// ---- invariants ----

std::string kv_block_pool::check_invariants() const {
  enum class use : uint8_t { none, free, referenced, evictable };
  const auto seen = static_cast<size_t>(fresh_);
  if (refs_.size() != seen || cached_in_.size() != seen)
    return "per-block vectors do not match the fresh mark";
  std::vector<use> state(seen, use::none);
  auto claim = [&](int32_t b, use as, const std::string& where) -> std::string {
    if (b < 0 || static_cast<size_t>(b) >= seen)
      return where + ": id " + std::to_string(b) + " out of range";
    if (state[static_cast<size_t>(b)] != use::none)
      return where + ": id " + std::to_string(b) + " is also in another state";
    state[static_cast<size_t>(b)] = as;
    return {};
  };
  for (auto b : free_)
    if (auto err = claim(b, use::free, "free list"); !err.empty())
      return err;

  std::vector<int32_t> table_refs(seen, 0);
  std::vector<const std::string*> holder(seen, nullptr);
  int64_t evictable = 0;
  for (const auto& [name, m] : models_) {
    const auto& st = state_.at(name);
    const auto per = static_cast<size_t>(m.per_token_block());
    int64_t used = 0;
    for (const auto& [seq, s] : st.sequences) {
      const std::string where = name + " seq " + std::to_string(seq);
      if (s.table.size() % per != 0 || s.chain.size() > s.table.size() / per)
        return where + ": table or chain size does not match the shape";
      std::vector<int32_t> ids = s.table;
      std::sort(ids.begin(), ids.end());
      if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
        return where + ": an id twice in one table";
      for (auto b : ids) {
        if (b < 0 || static_cast<size_t>(b) >= seen)
          return where + ": id " + std::to_string(b) + " out of range";
        auto& h = holder[static_cast<size_t>(b)];
        if (h != nullptr && *h != name)
          return where + ": id " + std::to_string(b) + " also in a table of " + *h;
        h = &name;
        if (table_refs[static_cast<size_t>(b)]++ == 0)
          ++used;
      }
      for (size_t i = 0; i < s.chain.size(); ++i) {
        auto e = entries_.find(s.chain[i]);
        if (e == entries_.end() || e->second.model != name || e->second.lru_tick != 0
            || !std::equal(e->second.blocks.begin(), e->second.blocks.end(), s.table.begin() + static_cast<std::ptrdiff_t>(i * per)))
          return where + ": token-block " + std::to_string(i) + " does not match its cache entry";
      }
    }
    if (used != m.used)
      return name + ": used " + std::to_string(m.used) + " but holds " + std::to_string(used);
    if (static_cast<int64_t>(st.sequences.size()) != m.sequences)
      return name + ": sequence count is off";
    int64_t cached = 0;
    size_t entries = 0;
    for (const auto& [hash, id] : st.index) {
      auto e = entries_.find(id);
      if (e == entries_.end() || e->second.model != name || e->second.hash != hash)
        return name + ": index names a missing or foreign entry";
      ++entries;
      if (e->second.lru_tick != 0)
        cached += static_cast<int64_t>(e->second.blocks.size());
    }
    if (cached != m.cached)
      return name + ": cached " + std::to_string(m.cached) + " but " + std::to_string(cached) + " evictable";
    if (std::count_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e.second.model == name; })
        != static_cast<std::ptrdiff_t>(entries))
      return name + ": cache entries missing from the index";
    evictable += cached;
  }

  for (size_t b = 0; b < seen; ++b) {
    if (refs_[b] != table_refs[b])
      return "id " + std::to_string(b) + ": refcount " + std::to_string(refs_[b]) + ", in "
             + std::to_string(table_refs[b]) + " tables";
    if (table_refs[b] > 0 && state[b] != use::none)
      return "id " + std::to_string(b) + ": in a table and free";
    if (table_refs[b] > 0)
      state[b] = use::referenced;
  }
  size_t ticked = 0;
  for (const auto& [id, e] : entries_) {
    const auto per = static_cast<size_t>(blocks_per_token_block(e.model));
    if (e.blocks.size() != per || e.tokens.size() != static_cast<size_t>(block_tokens_))
      return "cache entry " + std::to_string(id) + ": wrong size";
    for (auto b : e.blocks) {
      if (b < 0 || static_cast<size_t>(b) >= seen || cached_in_[static_cast<size_t>(b)] != id)
        return "cache entry " + std::to_string(id) + ": block not marked as cached in it";
      const bool referenced = state[static_cast<size_t>(b)] == use::referenced;
      if (referenced == (e.lru_tick != 0))
        return "cache entry " + std::to_string(id) + ": referenced and evictable, or neither";
      if (!referenced)
        state[static_cast<size_t>(b)] = use::evictable;
    }
    if (e.lru_tick != 0) {
      ++ticked;
      auto l = lru_.find(e.lru_tick);
      if (l == lru_.end() || l->second != id)
        return "cache entry " + std::to_string(id) + ": evictable but not in the LRU order";
    }
  }
  if (ticked != lru_.size())
    return "LRU order names entries that are not evictable";
  if (evictable != evictable_)
    return "evictable " + std::to_string(evictable_) + " but " + std::to_string(evictable) + " counted";
  for (size_t b = 0; b < seen; ++b) {
    if (state[b] == use::none)
      return "id " + std::to_string(b) + " is in no state (leaked)";
    if (cached_in_[b] != 0 && state[b] != use::referenced && state[b] != use::evictable)
      return "id " + std::to_string(b) + " marked cached but free";
  }
  return {};
}

}  // namespace llmux::kv
