#pragma once
/// The CPU engine's paged KV cache for one model.
///
/// Head-wise blocks, as in the unit's pool: a physical block holds the K and
/// V of one head of one layer for `block_tokens` tokens, stored in f16 (as
/// llama.cpp's default cache). A sequence owns a block table: for each
/// token-block, one physical block per (layer, kv head). Blocks are handed
/// out from a free list and allocated lazily in chunks, up to `max_blocks`.
///
/// Single-threaded for reserve/release (the engine's step thread); `k`/`v`
/// pointers may be read and written by the step's worker threads for
/// distinct positions.

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace llmux::engine {

class paged_kv_cache {
public:
  paged_kv_cache(int n_layer, int n_head_kv, int head_dim, int block_tokens, int64_t max_blocks);

  /// Makes room for positions [0, tokens) of `seq`. All or nothing; false
  /// when the cache has no blocks left.
  [[nodiscard]] bool reserve(uint64_t seq, int64_t tokens);
  /// Frees every block of `seq` (unknown seq: no-op).
  void release(uint64_t seq);

  /// head_dim f16 values of K (or V) of `seq` at `pos`, for (layer, head).
  /// `pos` must be reserved.
  [[nodiscard]] uint16_t* k(uint64_t seq, int layer, int head, int64_t pos);
  [[nodiscard]] uint16_t* v(uint64_t seq, int layer, int head, int64_t pos);

  /// The first K row of the token-block holding `pos`, and how many
  /// positions of that block follow (rows are head_dim apart) — for
  /// attention loops that walk a block at a time.
  struct span {
    const uint16_t* k;
    const uint16_t* v;
    int64_t first_pos;
  };
  [[nodiscard]] span block_at(uint64_t seq, int layer, int head, int64_t pos) const;

  [[nodiscard]] int block_tokens() const { return block_tokens_; }
  [[nodiscard]] int64_t used_blocks() const { return used_; }
  [[nodiscard]] int64_t max_blocks() const { return max_blocks_; }
  [[nodiscard]] int64_t capacity_tokens(uint64_t seq) const;
  [[nodiscard]] size_t sequences() const { return tables_.size(); }

private:
  [[nodiscard]] int32_t take_block();
  [[nodiscard]] uint16_t* block_ptr(int32_t id) const;

  int n_layer_, n_head_kv_, head_dim_, block_tokens_;
  int64_t max_blocks_;
  size_t block_elems_;  ///< 2 · block_tokens · head_dim (K then V)
  static constexpr int64_t chunk_blocks = 256;
  std::vector<std::unique_ptr<uint16_t[]>> chunks_;
  int64_t allocated_ = 0;  ///< blocks backed by memory
  int64_t used_ = 0;
  std::vector<int32_t> free_;
  /// seq → per token-block: n_layer·n_head_kv physical block ids.
  std::unordered_map<uint64_t, std::vector<std::vector<int32_t>>> tables_;
};

}  // namespace llmux::engine
