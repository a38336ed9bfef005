#pragma once
/// The CPU engine's paged KV cache for one model, and the arena that lets the
/// models of one unit keep their KV in one pool.
///
/// Head-wise blocks, as in the unit's pool: a physical block holds the K and
/// V of one head of one layer for `block_tokens` tokens, stored in f16 (as
/// llama.cpp's default cache). A sequence owns a block table: for each
/// token-block, one physical block per (layer, kv head).
///
/// Two ways to get blocks:
/// - private (no arena): the cache hands out its own blocks from a free list,
///   allocated lazily in chunks, up to `max_blocks` (benchmarks, tests);
/// - shared (a `kv_arena`): the unit's kv_manager owns the free list and the
///   prefix cache, and the engine is told which physical ids a sequence's
///   table gained (`adopt`). Sequences that share a prompt prefix then share
///   its blocks, and the models of a unit draw from one memory.
///
/// Threads: a model with split jobs runs a prefill step and a decode step at
/// once, over disjoint sequences. Every change to the set of tables (reserve,
/// adopt, release) and every lookup by id takes a lock; a step looks each of
/// its sequences' tables up once (`find_table`) and then reads and writes
/// K/V through the table (`k`/`v`/`block_at` on a table) without one: a
/// table's address is stable while other sequences come and go, and only the
/// step that feeds a sequence touches its table. Worker threads of a step
/// write distinct positions.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace llmux::engine {

/// Memory for a unit's physical KV blocks, shared by the engines of every
/// model on the unit (each on its own thread). Every block is sized for the
/// largest head among them (the pool's choice: one free list for all head
/// sizes); a model with a smaller head uses the front of each of its blocks.
/// Memory is allocated in chunks on first touch, so an arena sized for the
/// whole pool costs what the busiest moment used.
class kv_arena {
public:
  kv_arena(int64_t blocks, int block_tokens, int max_head_dim);

  /// Storage of block `id` (0 <= id < blocks()): K of `block_tokens` rows
  /// of the owner's head_dim, then V at `block_tokens · head_dim`.
  /// Thread-safe.
  [[nodiscard]] uint16_t* block(int32_t id);

  [[nodiscard]] int64_t blocks() const { return blocks_; }
  [[nodiscard]] int block_tokens() const { return block_tokens_; }
  [[nodiscard]] int max_head_dim() const { return max_head_dim_; }
  [[nodiscard]] int64_t bytes_allocated() const { return allocated_chunks_.load() * chunk_bytes(); }

private:
  static constexpr int64_t chunk_blocks = 256;
  [[nodiscard]] int64_t chunk_bytes() const {
    return chunk_blocks * static_cast<int64_t>(block_elems_) * 2;
  }

  int64_t blocks_;
  int block_tokens_, max_head_dim_;
  size_t block_elems_;  ///< 2 · block_tokens · max_head_dim
  std::unique_ptr<std::atomic<uint16_t*>[]> chunks_;
  std::vector<std::unique_ptr<uint16_t[]>> owned_;  ///< under mu_
  std::atomic<int64_t> allocated_chunks_{0};
  std::mutex mu_;
};

class paged_kv_cache {
public:
  /// Private blocks.
  paged_kv_cache(int n_layer, int n_head_kv, int head_dim, int block_tokens, int64_t max_blocks);
  /// Blocks of a unit's arena, granted by its kv_manager (`adopt`).
  paged_kv_cache(int n_layer, int n_head_kv, int head_dim, std::shared_ptr<kv_arena> arena);

  /// Makes room for positions [0, tokens) of `seq`. All or nothing; false
  /// when the cache has no blocks left. Shared: true if the adopted table
  /// already covers them (nothing is allocated here).
  [[nodiscard]] bool reserve(uint64_t seq, int64_t tokens);
  /// Shared: appends granted physical ids to the table of `seq` (whole
  /// token-blocks of n_layer · n_head_kv ids). Throws std::invalid_argument
  /// for a partial token-block or an id outside the arena.
  void adopt(uint64_t seq, const std::vector<int32_t>& ids);
  /// Private: frees every block of `seq`. Shared: forgets its table (the
  /// kv_manager owns the blocks). Unknown seq: no-op.
  void release(uint64_t seq);
  [[nodiscard]] bool shared() const { return arena_ != nullptr; }

  /// Per token-block: n_layer·n_head_kv physical block ids.
  using table = std::vector<std::vector<int32_t>>;
  /// The table of `seq`, or null. Stays valid until `seq` is released.
  [[nodiscard]] const table* find_table(uint64_t seq) const;

  /// head_dim f16 values of K (or V) of `seq` at `pos`, for (layer, head).
  /// `pos` must be reserved.
  [[nodiscard]] uint16_t* k(uint64_t seq, int layer, int head, int64_t pos);
  [[nodiscard]] uint16_t* v(uint64_t seq, int layer, int head, int64_t pos);
  [[nodiscard]] uint16_t* k(const table& t, int layer, int head, int64_t pos) const;
  [[nodiscard]] uint16_t* v(const table& t, int layer, int head, int64_t pos) const;

  /// The first K row of the token-block holding `pos`, and how many
  /// positions of that block follow (rows are head_dim apart) — for
  /// attention loops that walk a block at a time.
  struct span {
    const uint16_t* k;
    const uint16_t* v;
    int64_t first_pos;
  };
  [[nodiscard]] span block_at(uint64_t seq, int layer, int head, int64_t pos) const;
  [[nodiscard]] span block_at(const table& t, int layer, int head, int64_t pos) const;

  [[nodiscard]] int block_tokens() const { return block_tokens_; }
  [[nodiscard]] int64_t used_blocks() const;
  [[nodiscard]] int64_t max_blocks() const { return max_blocks_; }
  [[nodiscard]] int64_t capacity_tokens(uint64_t seq) const;
  [[nodiscard]] size_t sequences() const;

private:
  [[nodiscard]] int32_t take_block();
  [[nodiscard]] uint16_t* block_ptr(int32_t id) const;

  int n_layer_, n_head_kv_, head_dim_, block_tokens_;
  int64_t max_blocks_;
  std::shared_ptr<kv_arena> arena_;  ///< shared mode
  size_t block_elems_;  ///< 2 · block_tokens · head_dim (K then V)
  static constexpr int64_t chunk_blocks = 256;
  std::vector<std::unique_ptr<uint16_t[]>> chunks_;
  int64_t allocated_ = 0;  ///< blocks backed by memory
  int64_t used_ = 0;
  std::vector<int32_t> free_;
  /// seq → its table. Node-based: a table's address survives rehashing.
  std::unordered_map<uint64_t, table> tables_;
  mutable std::mutex mu_;  ///< tables_, free_, chunks_, used_, allocated_
};

}  // namespace llmux::engine
