#pragma once
/// A Llama-family decoder loaded from GGUF (or a Hugging Face directory read
/// into one, engine/hf_model): hyperparameters and weight views
/// into the mapped file (no copies). Supported architectures: llama (Llama
/// 2/3, SmolLM/SmolLM2, Mistral) and qwen2 (attention biases, NEOX RoPE),
/// with GQA, head size from attention.key_length, RoPE base from metadata
/// and tied or untied output. Files needing what the forward pass does not
/// run (RoPE scaling, Llama 3.1's rope_freqs.weight, any tensor beyond the
/// architecture's) are refused at load, never run approximately.
/// Immutable after load; shared by every engine instance of the model.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/cluster_config.hpp"
#include "engine/gguf.hpp"
#include "kernels/cpu/ops.hpp"

namespace llmux::engine {

struct llama_hparams {
  std::string arch;      ///< "llama" | "qwen2"
  int n_vocab = 0;
  int n_ctx_train = 0;   ///< context length from metadata
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int n_ff = 0;
  int head_dim = 0;      ///< attention.key_length, else n_embd / n_head
  int rope_dim = 0;      ///< dims rotated per head
  float rope_base = 10000.0f;
  float norm_eps = 1e-5f;
  bool rope_neox = false;   ///< qwen2: pairs (i, i + d/2); llama: adjacent pairs
};

struct llama_layer {
  const float* attn_norm = nullptr;
  kernels::matrix_view wq, wk, wv, wo;
  const float* bq = nullptr;  ///< qwen2 biases (else null)
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* ffn_norm = nullptr;
  kernels::matrix_view w_gate, w_up, w_down;
};

class llama_model {
public:
  /// Loads `path` (a GGUF file or a Hugging Face directory). Throws
  /// gguf::gguf_error (bad file) or std::runtime_error
  /// (unsupported architecture, missing tensor, wrong shape) naming the file
  /// and the tensor or key.
  [[nodiscard]] static std::shared_ptr<llama_model> load(const std::string& path);

  /// Random weights of `arch` in `type` (norms in f32, ones), as vLLM's
  /// load_format = "dummy": for benchmarks at real sizes without files.
  /// Weights ~ N(0, 0.02²), deterministic per seed. Throws
  /// std::invalid_argument when a row length does not fit the type's blocks.
  [[nodiscard]] static std::shared_ptr<llama_model> dummy(const config::model_arch& arch,
                                                          kernels::dtype type, uint64_t seed);

  /// The shapes of `arch` with no weights at all (every matrix_view's data
  /// and every norm null): for backends that make dummy weights where they
  /// compute (the cuda engine fills them on the device).
  [[nodiscard]] static std::shared_ptr<llama_model> shape_only(const config::model_arch& arch);

  /// Reads only what the rest of the cluster needs to know about a model
  /// file (shape for KV accounting and the context length), cheaply.
  [[nodiscard]] static config::model_arch read_arch(const gguf::gguf_file& file);

  [[nodiscard]] const llama_hparams& hparams() const { return hp_; }
  [[nodiscard]] const kernels::matrix_view& tok_embd() const { return tok_embd_; }
  [[nodiscard]] const float* output_norm() const { return output_norm_; }
  /// The output projection (tok_embd when the model ties embeddings).
  [[nodiscard]] const kernels::matrix_view& output() const { return output_; }
  [[nodiscard]] const std::vector<llama_layer>& layers() const { return layers_; }
  /// The GGUF file (null for dummy weights).
  [[nodiscard]] const gguf::gguf_file& file() const { return *file_; }
  [[nodiscard]] bool has_file() const { return file_ != nullptr; }
  [[nodiscard]] std::shared_ptr<gguf::gguf_file> file_ptr() const { return file_; }

private:
  llama_hparams hp_;
  std::shared_ptr<gguf::gguf_file> file_;
  kernels::matrix_view tok_embd_;
  const float* output_norm_ = nullptr;
  kernels::matrix_view output_;
  std::vector<llama_layer> layers_;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  ///< dummy weights
};

}  // namespace llmux::engine
