#include "actors/kv_manager/kv_block_pool.hpp"

#include <algorithm>

namespace llmux::kv {

kv_block_pool::kv_block_pool(int64_t total_blocks, int block_tokens)
  : total_(std::max<int64_t>(0, total_blocks)), block_tokens_(block_tokens) {
}

void kv_block_pool::add_model(const std::string& model, int layers, int kv_heads) {
  auto& m = models_[model];
  m.layers = layers;
  m.kv_heads = kv_heads;
  m.quota = total_;
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
  return static_cast<int64_t>(it->second.layers) * it->second.kv_heads;
}

bool kv_block_pool::try_allocate(const std::string& model, int64_t token_blocks) {
  auto it = models_.find(model);
  if (it == models_.end() || token_blocks < 0)
    return false;
  auto& m = it->second;
  int64_t need = token_blocks * m.layers * m.kv_heads;
  if (need > total_ - used_ || m.used + need > m.quota)
    return false;
  m.used += need;
  used_ += need;
  return true;
}

void kv_block_pool::release(const std::string& model, int64_t token_blocks) {
  auto it = models_.find(model);
  if (it == models_.end() || token_blocks <= 0)
    return;
  auto& m = it->second;
  int64_t give = token_blocks * m.layers * m.kv_heads;
  if (give > m.used) {
    ++release_errors_;
    give = m.used;
  }
  m.used -= give;
  used_ -= give;
}

}  // namespace llmux::kv
