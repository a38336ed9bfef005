#pragma once
/// Builds engines and tokenizers from config. The only place that knows
/// which backends exist.

#include <memory>
#include <stdexcept>

#include "config/cluster_config.hpp"
#include "engine/chat_template.hpp"
#include "engine/engine.hpp"

namespace llmux::engine {

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
};

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
/// before any weights load. Throws std::runtime_error naming the file.
void resolve_model_files(config::cluster_config& cfg);

}  // namespace llmux::engine
