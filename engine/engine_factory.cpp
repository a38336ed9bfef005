#include "engine/engine_factory.hpp"
#include "engine/hf_model.hpp"
#include "engine/jinja.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>

#include <dlfcn.h>
#include <unistd.h>

#include "engine/cpu_engine.hpp"
#include "engine/gguf.hpp"
#include "engine/llama_model.hpp"
#include "engine/sim_engine.hpp"
#include "engine/vocab.hpp"

namespace llmux::engine {

namespace {

#ifdef LLMUX_HAVE_CUDA
constexpr const char* built_backends = "sim, cpu, cuda";
#else
constexpr const char* built_backends = "sim, cpu; cuda needs a build with nvcc (LLMUX_CUDA)";
#endif

[[noreturn]] void unavailable(const config::model_config& model) {
  throw backend_unavailable("model '" + model.name + "': backend '" + model.backend
                            + "' is not available in this build (available: " + built_backends + ")");
}

#ifdef LLMUX_HAVE_CUDA
/// libllmux_cuda.so: $LLMUX_CUDA_PLUGIN, else beside the running binary.
std::string cuda_plugin_path() {
  if (const char* env = std::getenv("LLMUX_CUDA_PLUGIN"); env != nullptr && *env != '\0')
    return env;
  char buf[4096];
  const auto n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string exe = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string{};
  const auto slash = exe.rfind('/');
  return (slash == std::string::npos ? std::string{"."} : exe.substr(0, slash)) + "/libllmux_cuda.so";
}

/// The cuda backend lives in a library loaded on first use, so llmux starts
/// (and links nothing of CUDA) on machines without a GPU driver. Returns the
/// plugin's `name`, or throws backend_unavailable naming the file and why.
void* cuda_symbol(const char* name, const std::string& who) {
  static std::mutex mu;
  static void* handle = nullptr;
  static std::string load_error;
  const auto path = cuda_plugin_path();
  std::lock_guard<std::mutex> lock(mu);
  if (handle == nullptr && load_error.empty()) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
      load_error = dlerror();
  }
  if (handle == nullptr)
    throw backend_unavailable(who + "backend 'cuda' is unavailable: cannot load " + path + ": " + load_error);
  void* sym = dlsym(handle, name);
  if (sym == nullptr)
    throw backend_unavailable(who + "backend 'cuda' is unavailable: " + path + " has no " + name);
  return sym;
}

std::unique_ptr<engine> load_cuda_engine(const config::model_config& model, const engine_context& ctx) {
  using make_fn = engine* (*)(const config::model_config*, const engine_context*, char*, size_t);
  const std::string who = "model '" + model.name + "': ";
  auto make = reinterpret_cast<make_fn>(cuda_symbol("llmux_cuda_make_engine", who));
  char error[2048] = {0};
  engine* e = make(&model, &ctx, error, sizeof error);
  if (e == nullptr)
    throw backend_unavailable(who + "backend 'cuda' is unavailable: " + error);
  return std::unique_ptr<engine>(e);
}
#endif

kernels::dtype dummy_dtype(const config::model_config& m) {
  static const std::pair<const char*, kernels::dtype> names[] = {
    {"f32", kernels::dtype::f32},   {"f16", kernels::dtype::f16},   {"bf16", kernels::dtype::bf16},
    {"q8_0", kernels::dtype::q8_0}, {"q4_0", kernels::dtype::q4_0}, {"q4_1", kernels::dtype::q4_1},
    {"q5_0", kernels::dtype::q5_0}, {"q5_1", kernels::dtype::q5_1}, {"q4_k", kernels::dtype::q4_k}, {"q5_k", kernels::dtype::q5_k}, {"q6_k", kernels::dtype::q6_k}};
  for (const auto& [name, t] : names)
    if (m.dtype == name)
      return t;
  throw std::runtime_error("model '" + m.name + "': unknown dtype '" + m.dtype + "'");
}

/// One mapping of a model file however many engines run it (the replicas
/// of a unit laid out as several): weights are views into the mapped file
/// and never change, so they are shared.
std::shared_ptr<llama_model> shared_weights(const std::string& path) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<llama_model>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  if (auto w = loaded[path].lock())
    return w;
  auto w = llama_model::load(path);
  loaded[path] = w;
  return w;
}

}  // namespace

std::unique_ptr<engine> make_engine(const config::model_config& model, const engine_context& ctx) {
  if (model.backend == "sim")
    return std::make_unique<sim_engine>(
      cost_model::for_model(model, ctx.gpu, static_cast<int>(std::max<size_t>(1, ctx.devices.size()))),
      ctx.share);
  if (model.backend == "cpu") {
    std::shared_ptr<llama_model> weights;
    std::shared_ptr<tokenizer> tok;
    if (model.load_format == "dummy") {
      weights = llama_model::dummy(model.arch, dummy_dtype(model), 0x5eed);
      tok = make_frontend(model).tok;
    } else {
      weights = shared_weights(model.file);
      tok = make_tokenizer(read_vocab(weights->file()));
    }
    cpu_engine_options o;
    o.max_threads = ctx.threads;
    o.share = ctx.share;
    o.block_tokens = ctx.block_tokens;
    o.kv_blocks = ctx.kv_blocks;
    o.arena = ctx.arena;
    return std::make_unique<cpu_engine>(std::move(weights), std::move(tok), o);
  }
#ifdef LLMUX_HAVE_CUDA
  if (model.backend == "cuda")
    return load_cuda_engine(model, ctx);
#endif
  unavailable(model);
}

std::string cuda_device_report() {
#ifdef LLMUX_HAVE_CUDA
  using report_fn = bool (*)(char*, size_t);
  auto report = reinterpret_cast<report_fn>(cuda_symbol("llmux_cuda_device_report", ""));
  char out[2048] = {0};
  if (!report(out, sizeof out))
    throw backend_unavailable(std::string{"backend 'cuda' is unavailable: "} + out);
  return out;
#else
  throw backend_unavailable(std::string{"backend 'cuda' is not available in this build (available: "} + built_backends
                            + ")");
#endif
}

bool reads_unit_blocks(const config::model_config& model) {
  return model.backend == "cpu" || model.backend == "cuda";
}

std::shared_ptr<kv_arena> make_kv_arena(const std::vector<const config::model_config*>& models,
                                        int64_t blocks, int block_tokens) {
  int max_head = 0;
  for (const auto* m : models)
    if (m->backend == "cpu")  // host memory; the cuda engine keeps its blocks on the device
      max_head = std::max(max_head, m->arch.head_size());
  if (max_head == 0)
    return nullptr;
  return std::make_shared<kv_arena>(blocks, block_tokens, max_head);
}

std::shared_ptr<device_kv_slot> make_device_kv_slot(const std::vector<const config::model_config*>& models,
                                                    int64_t blocks, int block_tokens) {
  std::shared_ptr<device_kv_slot> slot;
  for (const auto* m : models) {
    if (m->backend != "cuda")
      continue;
    if (!slot) {
      slot = std::make_shared<device_kv_slot>();
      slot->blocks = blocks;
      slot->block_tokens = block_tokens;
    }
    slot->max_head_dim = std::max(slot->max_head_dim, m->arch.head_size());
    slot->scratch_blocks = std::max(slot->scratch_blocks, m->arch.layers * m->arch.kv_heads);
  }
  return slot;
}

model_frontend make_frontend(const config::model_config& model) {
  // Dummy weights have no vocabulary: the sim's byte tokenizer stands in
  // (ids past its table decode to nothing; dummy models are for speed runs).
  if (model.backend == "sim" || model.load_format == "dummy")
    return {std::make_shared<sim_tokenizer>(),
            model.chat_template.empty() ? chat_style{} : make_chat_style(model.chat_template, "", "")};
  if (model.backend == "cpu" || model.backend == "cuda") {
    // One read of the file's vocabulary gives both the tokenizer and the
    // chat template.
    auto vocab = read_vocab(*open_model_file(model.file, false));
    auto token_text = [&](token_id id) {
      return id >= 0 && id < static_cast<token_id>(vocab.tokens.size()) ? vocab.tokens[static_cast<size_t>(id)]
                                                                       : std::string();
    };
    // The config's chat_template (vLLM's --chat-template) replaces the file's.
    return {make_tokenizer(vocab),
            make_chat_style(model.chat_template.empty() ? vocab.chat_template : model.chat_template,
                            token_text(vocab.bos_id), token_text(vocab.eos_id))};
  }
  unavailable(model);
}

void resolve_model_files(config::cluster_config& cfg) {
  for (auto& m : cfg.models) {
    // A template the operator gave must be one the engine reads: refused at
    // start (a model file's own falls back to the built-in format instead).
    if (!m.chat_template.empty()) {
      try {
        (void)jinja::template_::parse(m.chat_template);
      } catch (const jinja::error& e) {
        throw std::runtime_error("model '" + m.name + "': its chat_template: " + e.what());
      }
    }
    if (m.backend == "sim" || m.load_format == "dummy")
      continue;
    auto file = open_model_file(m.file, false);
    m.arch = llama_model::read_arch(*file);
  }
}

}  // namespace llmux::engine
