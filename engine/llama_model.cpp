#include "engine/llama_model.hpp"
#include "engine/hf_model.hpp"

#include <random>
#include <set>
#include <stdexcept>

namespace llmux::engine {

namespace {

using gguf::gguf_file;
using gguf::tensor_info;

struct hparam_reader {
  const gguf_file& f;
  std::string arch;

  int required_int(const std::string& key) const {
    auto v = f.get_int(arch + "." + key);
    if (!v)
      f.fail(arch + "." + key, "missing (needed to run the model)");
    if (*v <= 0 || *v > (1 << 30))
      f.fail(arch + "." + key, "out of range: " + std::to_string(*v));
    return static_cast<int>(*v);
  }
  std::optional<double> opt_float(const std::string& key) const {
    return f.get_float(arch + "." + key);
  }
};

llama_hparams read_hparams(const gguf_file& f) {
  auto arch = f.get_string("general.architecture");
  if (!arch)
    f.fail("general.architecture", "missing");
  if (*arch != "llama" && *arch != "qwen2")
    f.fail("general.architecture",
           "unsupported architecture '" + *arch + "' (supported: llama, qwen2)");
  hparam_reader r{f, *arch};
  llama_hparams hp;
  hp.arch = *arch;
  hp.n_ctx_train = r.required_int("context_length");
  hp.n_embd = r.required_int("embedding_length");
  hp.n_layer = r.required_int("block_count");
  hp.n_ff = r.required_int("feed_forward_length");
  hp.n_head = r.required_int("attention.head_count");
  hp.n_head_kv = hp.n_head;
  if (f.find(hp.arch + ".attention.head_count_kv"))
    hp.n_head_kv = r.required_int("attention.head_count_kv");
  if (hp.n_head % hp.n_head_kv != 0)
    f.fail(hp.arch + ".attention.head_count_kv", "heads " + std::to_string(hp.n_head)
             + " are not a multiple of kv heads " + std::to_string(hp.n_head_kv));
  // Head size: attention.key_length where the file gives one (Mistral Nemo:
  // 128, not 5120 / 32), else embedding_length / heads, as llama.cpp.
  if (f.find(hp.arch + ".attention.key_length")) {
    hp.head_dim = r.required_int("attention.key_length");
  } else {
    if (hp.n_embd % hp.n_head != 0)
      f.fail(hp.arch + ".attention.head_count", "embedding_length " + std::to_string(hp.n_embd)
               + " is not a multiple of heads " + std::to_string(hp.n_head));
    hp.head_dim = hp.n_embd / hp.n_head;
  }
  if (f.find(hp.arch + ".attention.value_length")
      && r.required_int("attention.value_length") != hp.head_dim)
    f.fail(hp.arch + ".attention.value_length",
           "differs from the key head size " + std::to_string(hp.head_dim) + " (not supported)");
  hp.rope_dim = hp.head_dim;
  if (f.find(hp.arch + ".rope.dimension_count"))
    hp.rope_dim = r.required_int("rope.dimension_count");
  if (hp.rope_dim > hp.head_dim || hp.rope_dim % 2 != 0)
    f.fail(hp.arch + ".rope.dimension_count", "must be even and <= head size");
  if (auto v = r.opt_float("rope.freq_base"))
    hp.rope_base = static_cast<float>(*v);
  // llama.cpp divides positions by rope.scaling.factor (or the older
  // rope.scale_linear) unless the scaling type is "none"; with no type it
  // assumes "linear", so a bare factor scales too.
  auto scaling = f.get_string(hp.arch + ".rope.scaling.type").value_or("linear");
  if (scaling != "none" && scaling != "linear")
    f.fail(hp.arch + ".rope.scaling.type", "RoPE scaling '" + scaling + "' is not supported yet");
  for (const char* key : {"rope.scaling.factor", "rope.scale_linear"})
    if (auto factor = r.opt_float(key); factor && scaling == "linear" && *factor != 0.0 && *factor != 1.0)
      f.fail(hp.arch + "." + key, "linear RoPE scaling (factor " + std::to_string(*factor)
                                    + ") is not supported yet");
  if (auto v = r.opt_float("attention.layer_norm_rms_epsilon"))
    hp.norm_eps = static_cast<float>(*v);
  hp.rope_neox = hp.arch == "qwen2";
  if (const auto* toks = f.get_strings("tokenizer.ggml.tokens"))
    hp.n_vocab = static_cast<int>(toks->size());
  if (auto v = f.get_int(hp.arch + ".vocab_size"))
    hp.n_vocab = static_cast<int>(*v);
  return hp;
}

/// Finds the tensors the forward pass reads and remembers which, so that
/// `check_all_used` can refuse a file with more (as llama.cpp refuses a
/// tensor its graph does not take): an extra tensor is a feature llmux
/// does not run, and ignoring it would give other results than llama.cpp.
struct tensor_reader {
  const gguf_file& f;
  std::set<std::string> used;

  const tensor_info& need(const std::string& name) {
    const auto* t = f.find_tensor(name);
    if (t == nullptr)
      f.fail("tensor '" + name + "'", "missing (the architecture needs it)");
    used.insert(name);
    return *t;
  }

  /// A [rows, cols] matrix: GGUF dims are {cols, rows}.
  kernels::matrix_view matrix(const std::string& name, int64_t rows, int64_t cols) {
    const auto& t = need(name);
    if (t.dims.size() != 2 || t.dims[0] != cols || t.dims[1] != rows)
      f.fail("tensor '" + name + "'", "expected shape [" + std::to_string(cols) + ", "
                                        + std::to_string(rows) + "]");
    return {t.data, t.type, rows, cols};
  }

  const float* vector_f32(const std::string& name, int64_t n) {
    const auto& t = need(name);
    if (t.dims.size() != 1 || t.dims[0] != n)
      f.fail("tensor '" + name + "'", "expected " + std::to_string(n) + " elements");
    if (t.type != kernels::dtype::f32)
      f.fail("tensor '" + name + "'", "norms and biases must be F32, got " + kernels::to_string(t.type));
    return reinterpret_cast<const float*>(t.data);
  }

  void check_all_used(const std::string& arch) const {
    for (const auto& t : f.tensors()) {
      if (used.count(t.name))
        continue;
      if (t.name == "rope_freqs.weight")
        f.fail("tensor 'rope_freqs.weight'", "Llama 3.1 RoPE frequency factors are not supported "
                                             "yet (llama.cpp applies them at every position)");
      f.fail("tensor '" + t.name + "'", "not part of the " + arch + " model llmux runs (a bias "
                                        "or extension it does not support); refusing the file "
                                        "rather than ignoring the tensor");
    }
  }
};

}  // namespace

config::model_arch llama_model::read_arch(const gguf::gguf_file& file) {
  auto hp = read_hparams(file);
  config::model_arch a;
  a.preset = "file";
  a.layers = hp.n_layer;
  a.hidden = hp.n_embd;
  a.heads = hp.n_head;
  a.kv_heads = hp.n_head_kv;
  a.intermediate = hp.n_ff;
  a.vocab = hp.n_vocab;
  a.context_length = hp.n_ctx_train;
  a.dtype_bytes = 2;  // the KV cache is kept in f16, as llama.cpp does by default
  a.head_dim = hp.head_dim;  // attention.key_length where the file gives one
  return a;
}

std::shared_ptr<llama_model> llama_model::load(const std::string& path) {
  auto m = std::make_shared<llama_model>();
  m->file_ = open_model_file(path);
  const auto& f = *m->file_;
  m->hp_ = read_hparams(f);
  auto& hp = m->hp_;
  const int64_t q_dim = int64_t{hp.n_head} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_head_kv} * hp.head_dim;
  tensor_reader r{f, {}};
  const auto& embd = r.need("token_embd.weight");
  if (embd.dims.size() != 2 || embd.dims[0] != hp.n_embd)
    f.fail("tensor 'token_embd.weight'", "expected rows of " + std::to_string(hp.n_embd));
  if (hp.n_vocab == 0)
    hp.n_vocab = static_cast<int>(embd.dims[1]);
  m->tok_embd_ = r.matrix("token_embd.weight", hp.n_vocab, hp.n_embd);
  m->output_norm_ = r.vector_f32("output_norm.weight", hp.n_embd);
  m->output_ = f.find_tensor("output.weight") ? r.matrix("output.weight", hp.n_vocab, hp.n_embd)
                                              : m->tok_embd_;  // tied embeddings
  for (int i = 0; i < hp.n_layer; ++i) {
    auto p = "blk." + std::to_string(i) + ".";
    llama_layer l;
    l.attn_norm = r.vector_f32(p + "attn_norm.weight", hp.n_embd);
    l.wq = r.matrix(p + "attn_q.weight", q_dim, hp.n_embd);
    l.wk = r.matrix(p + "attn_k.weight", kv_dim, hp.n_embd);
    l.wv = r.matrix(p + "attn_v.weight", kv_dim, hp.n_embd);
    l.wo = r.matrix(p + "attn_output.weight", hp.n_embd, q_dim);
    if (hp.arch == "qwen2") {
      l.bq = r.vector_f32(p + "attn_q.bias", q_dim);
      l.bk = r.vector_f32(p + "attn_k.bias", kv_dim);
      l.bv = r.vector_f32(p + "attn_v.bias", kv_dim);
    }
    l.ffn_norm = r.vector_f32(p + "ffn_norm.weight", hp.n_embd);
    l.w_gate = r.matrix(p + "ffn_gate.weight", hp.n_ff, hp.n_embd);
    l.w_up = r.matrix(p + "ffn_up.weight", hp.n_ff, hp.n_embd);
    l.w_down = r.matrix(p + "ffn_down.weight", hp.n_embd, hp.n_ff);
    m->layers_.push_back(l);
  }
  r.check_all_used(hp.arch);
  return m;
}

namespace {

/// A Llama of `arch`'s shape (dummy and shape-only models).
llama_hparams hparams_of(const config::model_arch& arch) {
  llama_hparams hp;
  hp.arch = "llama";
  hp.n_vocab = arch.vocab;
  hp.n_ctx_train = arch.context_length;
  hp.n_embd = arch.hidden;
  hp.n_layer = arch.layers;
  hp.n_head = arch.heads;
  hp.n_head_kv = arch.kv_heads;
  hp.n_ff = arch.intermediate;
  hp.head_dim = arch.head_size();
  hp.rope_dim = hp.head_dim;
  return hp;
}

}  // namespace

std::shared_ptr<llama_model> llama_model::shape_only(const config::model_arch& arch) {
  auto m = std::make_shared<llama_model>();
  auto& hp = m->hp_;
  hp = hparams_of(arch);
  const int64_t E = hp.n_embd, Q = int64_t{hp.n_head} * hp.head_dim, KV = int64_t{hp.n_head_kv} * hp.head_dim;
  auto shape = [](int64_t rows, int64_t cols) { return kernels::matrix_view{nullptr, kernels::dtype::f32, rows, cols}; };
  m->tok_embd_ = shape(hp.n_vocab, E);
  m->output_ = m->tok_embd_;
  for (int i = 0; i < hp.n_layer; ++i) {
    llama_layer l;
    l.wq = shape(Q, E);
    l.wk = shape(KV, E);
    l.wv = shape(KV, E);
    l.wo = shape(E, Q);
    l.w_gate = shape(hp.n_ff, E);
    l.w_up = shape(hp.n_ff, E);
    l.w_down = shape(E, hp.n_ff);
    m->layers_.push_back(l);
  }
  return m;
}

std::shared_ptr<llama_model> llama_model::dummy(const config::model_arch& arch, kernels::dtype type,
                                                uint64_t seed) {
  auto m = std::make_shared<llama_model>();
  auto& hp = m->hp_;
  hp = hparams_of(arch);
  std::mt19937_64 rng{seed};
  std::normal_distribution<float> normal{0.0f, 0.02f};
  auto block = static_cast<int64_t>(kernels::block_elems(type));
  auto weights = [&](int64_t rows, int64_t cols) {
    if (cols % block != 0)
      throw std::invalid_argument("dummy weights: rows of " + std::to_string(cols)
                                  + " elements do not fit " + kernels::to_string(type)
                                  + " blocks of " + std::to_string(block));
    auto rb = kernels::row_bytes(type, cols);
    m->owned_.emplace_back(new uint8_t[rb * static_cast<size_t>(rows)]);
    auto* data = m->owned_.back().get();
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& x : row)
        x = normal(rng);
      kernels::quantize_row_ref(type, row.data(), data + rb * static_cast<size_t>(r), cols);
    }
    return kernels::matrix_view{data, type, rows, cols};
  };
  auto ones = [&](int64_t n) {
    m->owned_.emplace_back(new uint8_t[static_cast<size_t>(n) * sizeof(float)]);
    auto* f = reinterpret_cast<float*>(m->owned_.back().get());
    std::fill(f, f + n, 1.0f);
    return static_cast<const float*>(f);
  };
  int64_t E = hp.n_embd, KV = int64_t{hp.n_head_kv} * hp.head_dim;
  m->tok_embd_ = weights(hp.n_vocab, E);
  m->output_norm_ = ones(E);
  m->output_ = m->tok_embd_;
  for (int i = 0; i < hp.n_layer; ++i) {
    llama_layer l;
    l.attn_norm = ones(E);
    l.wq = weights(E, E);
    l.wk = weights(KV, E);
    l.wv = weights(KV, E);
    l.wo = weights(E, E);
    l.ffn_norm = ones(E);
    l.w_gate = weights(hp.n_ff, E);
    l.w_up = weights(hp.n_ff, E);
    l.w_down = weights(E, hp.n_ff);
    m->layers_.push_back(l);
  }
  return m;
}

}  // namespace llmux::engine
