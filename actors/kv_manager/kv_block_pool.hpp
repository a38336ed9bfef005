#pragma once
/// The unit's KV block pool, shared by every model co-located on the unit —
/// the pure core of the kv_manager actor.
///
/// A physical block holds the K and V of one head of one layer for
/// `block_tokens` tokens (MuxServe's unified, head-wise layout), so models of
/// different shapes draw from one free count: a model with L layers and H KV
/// heads takes L·H physical blocks per token-block. Callers speak in
/// token-blocks; the pool converts.
///
/// Accounting only: which physical blocks back a sequence (block tables)
/// arrives with the real engines. Quotas cap what one model may hold.
/// Single-threaded: the owning actor calls everything.

#include <cstdint>
#include <map>
#include <string>

namespace llmux::kv {

class kv_block_pool {
public:
  /// `total_blocks` physical blocks of `block_tokens` tokens each.
  kv_block_pool(int64_t total_blocks, int block_tokens);

  /// Declares a model and its shape. Quota defaults to the whole pool.
  void add_model(const std::string& model, int layers, int kv_heads);
  void set_quota(const std::string& model, int64_t physical_blocks);

  /// Physical blocks one token-block of `model` takes (layers × kv_heads).
  [[nodiscard]] int64_t blocks_per_token_block(const std::string& model) const;

  /// Takes `token_blocks` for `model` if both the pool and the model's quota
  /// have room; all or nothing. Unknown model → false.
  [[nodiscard]] bool try_allocate(const std::string& model, int64_t token_blocks);
  /// Gives back token-blocks; more than held is clamped (and counted as an
  /// accounting error in `release_errors`).
  void release(const std::string& model, int64_t token_blocks);

  struct model_usage {
    int layers = 0;
    int kv_heads = 0;
    int64_t used = 0;   ///< physical blocks
    int64_t quota = 0;  ///< physical blocks
  };

  [[nodiscard]] int64_t total() const { return total_; }
  [[nodiscard]] int64_t used() const { return used_; }
  [[nodiscard]] int64_t free() const { return total_ - used_; }
  [[nodiscard]] int block_tokens() const { return block_tokens_; }
  [[nodiscard]] uint64_t release_errors() const { return release_errors_; }
  [[nodiscard]] const std::map<std::string, model_usage>& models() const { return models_; }

private:
  int64_t total_;
  int block_tokens_;
  int64_t used_ = 0;
  uint64_t release_errors_ = 0;
  std::map<std::string, model_usage> models_;
};

}  // namespace llmux::kv
