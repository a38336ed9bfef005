#pragma once
/// The unit's KV block pool, shared by every model co-located on the unit —
/// the pure core of the kv_manager actor.
///
/// A physical block holds the K and V of one head of one layer for
/// `block_tokens` tokens (MuxServe's unified, head-wise layout), so models of
/// different shapes draw from one free list of physical block ids
/// 0..total-1: a model with L layers and H KV heads takes L·H physical blocks
/// per token-block (`block_tokens` tokens of one sequence).
///
/// Head sizes: the pool is one free list with every block sized for the
/// largest head among the unit's models (what `config::auto_kv_blocks` sizes
/// it for). A model with a smaller head leaves the rest of each of its blocks
/// unused; `head_size_waste` measures that fraction. We keep one list rather
/// than one pool per head size because MuxServe's point is that memory moves
/// freely between models as their load moves (quotas, not partitions); split
/// pools would strand free blocks of one size while another size runs out.
/// The waste matters only when a small-head model holds a large share of the
/// pool (stories260K, head_dim 8, beside SmolLM2, head_dim 64, wastes 7/8 of
/// each stories260K block, which is few blocks in practice).
///
/// Blocks are held per sequence (`open`, `grow`, `commit`, `close`): a block
/// table per sequence, with a per-model prefix cache so sequences sharing a
/// prompt prefix share its full token-blocks.
///
/// Prefix cache: each full token-block a sequence commits is published under
/// a hash chain h_i = H(h_{i-1}, tokens of block i) in its model's index. A
/// lookup follows the chain and accepts an entry only if its tokens equal the
/// prompt's and its parent is the entry accepted for the previous block, so a
/// hash collision can never cause a false hit. Cached blocks are reference
/// counted by the tables that hold them; at zero references they stay cached
/// but evictable, and are reclaimed least-recently-released first (any
/// model) when the free list runs short.
///
/// Units: tokens, token-blocks (`block_tokens` tokens of one model) and
/// physical blocks (one head of one layer of a token-block); every count
/// named `*_blocks`, `used`, `quota`, `free` is in physical blocks.
/// Single-threaded and non-blocking: the owning actor calls everything.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llmux::kv {

/// Fraction of the bytes of the listed blocks that hold nothing when every
/// block is sized for `max_head_dim`: each pair is (head_dim of a model,
/// physical blocks it has in use). Pass the free blocks as (max_head_dim,
/// free) to measure against the whole pool. 0 when nothing is listed; a
/// head_dim above `max_head_dim` counts as no waste.
[[nodiscard]] double head_size_waste(const std::vector<std::pair<int, int64_t>>& head_dim_and_blocks_in_use,
                                     int max_head_dim);

class kv_block_pool {
public:
  /// Hash of one token-block given the hash of the previous one (0 for the
  /// first block): H(parent_hash, tokens[0..count)).
  using prefix_hash_fn = uint64_t (*)(uint64_t parent_hash, const int32_t* tokens, size_t count);

  /// The default `prefix_hash_fn` (FNV-1a over the parent hash and tokens).
  [[nodiscard]] static uint64_t chain_hash(uint64_t parent_hash, const int32_t* tokens, size_t count);

  /// `total_blocks` physical blocks (ids 0..total_blocks-1) of `block_tokens`
  /// tokens each. Negative sizes make an empty pool and ids are int32_t, so
  /// the size is capped at 2^31-1; `block_tokens` < 1 is 1.
  kv_block_pool(int64_t total_blocks, int block_tokens);

  /// Declares a model and its shape. Quota defaults to the whole pool.
  /// Re-declaring a model with nothing held changes its shape; with blocks
  /// held it is ignored (the tables would no longer match the shape).
  void add_model(const std::string& model, int layers, int kv_heads);
  /// Quotas as guarantees rather than caps: a model above its quota may
  /// still take blocks as long as every other model's unused quota stays
  /// free (work-conserving; ADBS uses this so a fenced-off pool does not sit
  /// idle while one model's requests wait). Off by default: quotas cap.
  void set_borrow_spare(bool on) { borrow_spare_ = on; }
  /// With borrowing: lend also the unused quota of models with nothing
  /// waiting for blocks (`set_waiting`), all but a token-block per open
  /// sequence (what each grows into next). A model marked waiting keeps all
  /// of its unused quota from other models' new sequences (`open`), but not
  /// from the growth of their running ones (`grow`): a guarantee comes back
  /// by holding borrowers' admissions as their sequences end, never by
  /// refusing a running borrower its next block (which would preempt it by
  /// recompute). Borrowed blocks come back as their sequences end.
  void set_lend_idle(bool on) { lend_idle_ = on; }
  void set_waiting(const std::string& model, bool waiting) {
    if (waiting)
      waiting_.insert(model);
    else
      waiting_.erase(model);
  }
  /// Caps the physical blocks `model` may hold (negative → 0). Takes effect
  /// for later allocations; what is held above a lowered quota stays held.
  void set_quota(const std::string& model, int64_t physical_blocks);
  /// Replaces the prefix hash; for tests that force collisions. Entries
  /// published before the change are no longer found (never wrongly found).
  void set_prefix_hash(prefix_hash_fn fn) { hash_ = fn; }

  /// Physical blocks one token-block of `model` takes (layers × kv_heads).
  [[nodiscard]] int64_t blocks_per_token_block(const std::string& model) const;

  // ---- sequences with block tables and prefix caching ----

  /// Starts sequence `seq` of `model` with prompt `prompt` and a table
  /// covering max(`tokens`, cached) tokens (normally `tokens` ≥ prompt size;
  /// a smaller `tokens` reserves only a first prefill chunk). Reuses the
  /// longest prefix of `prompt` in the model's cache, in whole token-blocks
  /// and always shorter than the prompt (one token is left to compute), then
  /// takes fresh blocks, evicting unreferenced cached blocks if needed.
  /// All or nothing: unknown model, a model with no KV (0 layers or heads),
  /// duplicate `seq`, or no room in the pool or the quota → nullopt and
  /// nothing changes. Returns the number of prompt
  /// tokens whose KV is cached (a multiple of `block_tokens`, 0 on a miss).
  [[nodiscard]] std::optional<int32_t> open(const std::string& model, uint64_t seq,
                                            const std::vector<int32_t>& prompt, int32_t tokens);
  /// Extends the table of `seq` to cover `tokens` tokens (a no-op if it
  /// already does); all or nothing; may evict. Unknown sequence → false.
  [[nodiscard]] bool grow(const std::string& model, uint64_t seq, int32_t tokens);
  /// Publishes to the model's prefix cache every full token-block of `tokens`
  /// (the sequence's tokens whose KV is computed: prompt, then generated) that
  /// `seq` has not published or shared yet. Blocks beyond the table are
  /// ignored. The caller must pass the same tokens as before plus new ones.
  void commit(const std::string& model, uint64_t seq, const std::vector<int32_t>& tokens);
  /// Ends `seq` (finished, cancelled or preempted): drops its references.
  /// Blocks still referenced elsewhere stay; cached ones with no references
  /// become evictable; the rest go back to the free list. Unknown → no-op.
  void close(const std::string& model, uint64_t seq);
  /// Evicts every unreferenced block of `model`'s prefix cache (the model
  /// went to sleep: the engine that computed them is gone); returns how
  /// many physical blocks went back to the free list.
  int64_t forget_cache(const std::string& model);
  /// Physical block ids of `seq`: token-block-major, then layer, then head
  /// (layers × kv_heads ids per token-block); nullptr if unknown. Valid until
  /// the next call that changes the sequence.
  [[nodiscard]] const std::vector<int32_t>* table(const std::string& model, uint64_t seq) const;

  /// Empty when the pool is consistent, else what is wrong: every block is
  /// exactly one of free / referenced / evictable-cached,
  /// refcounts equal the tables holding each block, counters equal their
  /// recomputed sums, no id is twice in the free list. O(total + tables).
  [[nodiscard]] std::string check_invariants() const;

  struct model_usage {
    int layers = 0;
    int kv_heads = 0;
    int64_t used = 0;            ///< physical blocks referenced by its tables (shared ones once)
    int64_t quota = 0;           ///< physical blocks
    int64_t cached = 0;          ///< physical blocks in the cache with no references (evictable)
    uint64_t prefix_queries = 0; ///< token-blocks looked up by successful `open`s
    uint64_t prefix_hits = 0;    ///< of those, token-blocks reused from the cache
    int64_t sequences = 0;       ///< sequences open

    /// Physical blocks per token-block (layers × kv_heads).
    [[nodiscard]] int64_t per_token_block() const { return int64_t{layers} * kv_heads; }
  };

  [[nodiscard]] int64_t total() const { return total_; }
  /// Physical blocks not on the free list (referenced or cached).
  [[nodiscard]] int64_t used() const { return total_ - free(); }
  /// Physical blocks on the free list (evictable cached blocks not included).
  [[nodiscard]] int64_t free() const { return static_cast<int64_t>(free_.size()) + (total_ - fresh_); }
  /// Physical blocks cached with no references, reclaimable on demand.
  [[nodiscard]] int64_t evictable() const { return evictable_; }
  /// Physical blocks evicted from the prefix cache so far.
  [[nodiscard]] uint64_t evicted_blocks() const { return evicted_blocks_; }
  [[nodiscard]] int block_tokens() const { return block_tokens_; }
  [[nodiscard]] const std::map<std::string, model_usage>& models() const { return models_; }

private:
  /// One token-block in a model's prefix cache.
  struct cache_entry {
    std::string model;
    uint64_t hash = 0;
    uint64_t parent = 0;          ///< entry id of the previous token-block, 0 for the first
    std::vector<int32_t> tokens;  ///< the block_tokens tokens, to verify hits
    std::vector<int32_t> blocks;  ///< its layers × kv_heads physical ids
    uint64_t lru_tick = 0;        ///< key in lru_ while unreferenced, else 0
  };
  struct sequence {
    std::vector<int32_t> table;   ///< physical ids, token-block-major
    std::vector<uint64_t> chain;  ///< cache entry of each leading token-block, shared or published
  };
  /// What the pool keeps per model beside the public `model_usage`.
  struct model_state {
    std::unordered_multimap<uint64_t, uint64_t> index;  ///< hash → cache entry id
    std::map<uint64_t, sequence> sequences;
  };

  /// A sequence with its model's records; `seq` is null when either is unknown.
  struct sequence_ref {
    model_usage* usage = nullptr;
    model_state* state = nullptr;
    sequence* seq = nullptr;
  };
  [[nodiscard]] sequence_ref find_sequence(const std::string& model, uint64_t seq);

  /// Entry ids of the longest cached prefix of `prompt` (whole token-blocks,
  /// leaving at least one token), verified token by token.
  [[nodiscard]] std::vector<uint64_t> lookup(const model_state& st, const std::vector<int32_t>& prompt) const;
  /// True if `blocks` more can come from the free list plus the evictable
  /// cache, not counting `pinned` evictable blocks about to be referenced.
  [[nodiscard]] bool pool_has(int64_t blocks, int64_t pinned) const;
  /// May `model` (usage `m`) take `more` blocks under its quota, or borrow
  /// them? `growing`: for a running sequence's next blocks, not a new one.
  [[nodiscard]] bool quota_allows(const std::string& model, const model_usage& m, int64_t more,
                                  bool growing) const;
  /// Appends `count` free ids to `out`, evicting least-recently-released
  /// cache entries while the free list is short. The caller has checked
  /// `pool_has`. Their refcounts are the caller's to set.
  void take(int64_t count, std::vector<int32_t>& out);
  void evict_oldest();
  void evict(std::map<uint64_t, uint64_t>::iterator lru_entry);
  /// References the cached token-block `e` for one more table of model `m`.
  void acquire(model_usage& m, cache_entry& e);
  /// Appends `count` fresh ids to `table`, referenced once, held by `m`.
  void acquire_fresh(model_usage& m, int64_t count, std::vector<int32_t>& table);
  /// Drops one table's reference on a token-block's `per` ids: a cached one
  /// (`entry` ≠ 0) becomes evictable at zero, a private one goes back free.
  void drop(model_usage& m, uint64_t entry, const int32_t* ids, int64_t per);

  int64_t total_;
  int block_tokens_;
  bool borrow_spare_ = false;
  bool lend_idle_ = false;
  std::set<std::string> waiting_;  ///< models with requests waiting for blocks
  prefix_hash_fn hash_ = &chain_hash;
  std::map<std::string, model_usage> models_;
  std::map<std::string, model_state> state_;
  // Ids from `fresh_` up have never been handed out and are free; the
  // per-id vectors cover only the ids below it, so a large, mostly idle pool
  // (a sim unit sized from 80 GiB) costs memory in proportion to its peak use.
  int64_t fresh_ = 0;
  std::vector<int32_t> free_;             ///< free ids below fresh_ (a stack)
  std::vector<int32_t> refs_;             ///< per id below fresh_: tables holding it
  std::vector<uint64_t> cached_in_;       ///< per id below fresh_: cache entry id, 0 if none
  std::unordered_map<uint64_t, cache_entry> entries_;
  std::map<uint64_t, uint64_t> lru_;      ///< release tick → evictable entry id, oldest first
  uint64_t next_entry_ = 1;
  uint64_t next_tick_ = 1;
  int64_t evictable_ = 0;
  uint64_t evicted_blocks_ = 0;
};

}  // namespace llmux::kv
