#pragma once
/// Builds engines and tokenizers from config. The only place that knows
/// which backends exist.

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "config/cluster_config.hpp"
#include "engine/chat_template.hpp"
#include "engine/engine.hpp"

namespace llmux::engine {

class kv_arena;

/// A unit's KV memory on its GPU, shared by the unit's cuda engines (one
/// pool in fact, as kv_arena is for cpu engines): the first engine built
/// allocates it, the others use it, the last one frees it. Blocks hold
/// 2 · block_tokens · max_head_dim halves (a smaller head uses the front of
/// each), and `scratch_blocks` more past the pool that no grant names: where
/// a CUDA graph's padded rows write.
struct device_kv_slot {
  int64_t blocks = 0;
  int block_tokens = 16;
  int max_head_dim = 0;
  int scratch_blocks = 0;  ///< the largest n_layer · n_head_kv among the models
  std::mutex mu;
  std::map<int, std::shared_ptr<void>> memory;  ///< per CUDA device, once allocated (under mu)
};

struct backend_unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What the unit gives an engine.
struct engine_context {
  config::gpu_spec gpu;   ///< sim cost model
  double share = 1.0;     ///< compute share in (0, 1]
  int threads = 0;        ///< cpu: the unit's threads (0 = every core)
  int block_tokens = 16;
  int64_t kv_blocks = 0;  ///< physical KV blocks the engine may use
  /// The unit's shared KV memory (`make_kv_arena`), for engines that keep
  /// KV in the kv_manager's blocks (cpu); null: private blocks.
  std::shared_ptr<kv_arena> arena;
  /// The same for cuda engines (`make_device_kv_slot`); null: each cuda
  /// engine allocates its own blocks.
  std::shared_ptr<device_kv_slot> device_kv;
  /// cuda: the unit's CUDA devices; more than one runs the model
  /// tensor-parallel across them. sim: their count is the tensor-parallel
  /// size of the cost model.
  std::vector<int> devices{0};
};

/// The GPU as the cuda backend measures it, one JSON object: device name,
/// SMs, memory, device copy bandwidth (GB/s) and cuBLAS GEMM peak (TFLOP/s,
/// f16 and bf16). Throws backend_unavailable without the backend or a GPU.
[[nodiscard]] std::string cuda_device_report();

/// Whether `model`'s engine keeps its KV in the unit's blocks, so the
/// kv_manager grants it block ids and prefix-cache hits skip its prefill.
/// The sim also shares prefixes (its KV is accounting only) but needs no ids.
[[nodiscard]] bool reads_unit_blocks(const config::model_config& model);

/// The KV memory of a unit whose pool has `blocks` physical blocks of
/// `block_tokens` tokens, sized for the largest head among `models` that
/// read the unit's blocks; null when none does.
[[nodiscard]] std::shared_ptr<kv_arena> make_kv_arena(const std::vector<const config::model_config*>& models,
                                                      int64_t blocks, int block_tokens);

/// The GPU KV memory of a unit with `blocks` blocks, sized for the largest
/// head among `models` on the cuda backend; null when none is.
[[nodiscard]] std::shared_ptr<device_kv_slot> make_device_kv_slot(
  const std::vector<const config::model_config*>& models, int64_t blocks, int block_tokens);

/// The engine for `model`. Throws backend_unavailable for a backend this
/// build cannot run, std::runtime_error for a model file it cannot load.
[[nodiscard]] std::unique_ptr<engine> make_engine(const config::model_config& model,
                                                  const engine_context& ctx);

/// What the edge needs of a model: its tokenizer (the same vocabulary as its
/// engine) and its chat style (from the file's template; ChatML with no
/// default system prompt when it has none, as llama.cpp falls back).
struct model_frontend {
  std::shared_ptr<tokenizer> tok;
  chat_style chat;
};
[[nodiscard]] model_frontend make_frontend(const config::model_config& model);

/// Fills `arch` (layers, heads, context length, ...) of every file-backed
/// model from its file header, so KV accounting and context checks work
/// before any weights load, and checks that a chat_template the config
/// gives parses. Throws std::runtime_error naming the file or the model.
void resolve_model_files(config::cluster_config& cfg);

}  // namespace llmux::engine
