#pragma once
/// Builds engines and tokenizers from config. The only place that knows
/// which backends exist.

#include <memory>
#include <stdexcept>

#include "config/cluster_config.hpp"
#include "engine/engine.hpp"

namespace llmux::engine {

struct backend_unavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The engine for `model` on a unit with `gpu`, at compute `share`.
/// Throws backend_unavailable for a backend this build cannot run.
[[nodiscard]] std::unique_ptr<engine> make_engine(const config::model_config& model,
                                                  const config::gpu_spec& gpu, double share);

/// The tokenizer the edge uses for `model` (same vocabulary as its engine).
[[nodiscard]] std::shared_ptr<tokenizer> make_tokenizer(const config::model_config& model);

}  // namespace llmux::engine
