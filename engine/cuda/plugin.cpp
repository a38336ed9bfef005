// The entry point of libllmux_cuda.so, which engine_factory loads with
// dlopen when a model asks for backend = "cuda". The engine's own code and
// the CUDA libraries live here; the rest of the engine (model loading,
// tokenizers, sampling) resolves against the llmux binary's exports.

#include <cstdio>
#include <exception>

#include "engine/cuda/cuda_engine.hpp"

/// Builds the engine for `model`; on failure returns null with the reason in
/// `error` (at most `error_len` bytes, NUL-terminated).
extern "C" __attribute__((visibility("default"))) llmux::engine::engine* llmux_cuda_make_engine(
  const llmux::config::model_config* model, const llmux::engine::engine_context* ctx, char* error,
  size_t error_len) {
  try {
    return llmux::engine::make_cuda_engine(*model, *ctx).release();
  } catch (const std::exception& e) {
    std::snprintf(error, error_len, "%s", e.what());
  } catch (...) {
    std::snprintf(error, error_len, "unknown error");
  }
  return nullptr;
}
