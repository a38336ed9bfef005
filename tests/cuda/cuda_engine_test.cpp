// The cuda engine end to end against the CPU engine: the same model file,
// the same prompts, 32 greedy tokens each, with the KV in blocks granted the
// way the unit's kv_manager grants them. Where the greedy tokens part, the
// test prints both engines' top logits at that step, so a divergence from
// near-ties (f16 weights vs the file's quantised ones) can be told from a bug.
//
// Without a GPU the binary says why and exits 77 (ctest: skipped).

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "engine/cpu_engine.hpp"
#include "engine/cuda/cuda_engine.hpp"
#include "engine/llama_model.hpp"
#include "engine/vocab.hpp"

using namespace llmux;
using engine::seq_work;
using engine::step_input;

namespace {

/// $NAME, else the path built in (a bundle run elsewhere sets them).
std::string dir(const char* name, const char* built_in) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : built_in;
}
const std::string stories_path = dir("LLMUX_SHARED_DIR", LLMUX_SHARED_DIR) + "/models/stories260K/stories260K.gguf";
const std::string smollm_path = dir("LLMUX_MODEL_CACHE", LLMUX_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";

struct run {
  std::vector<int32_t> tokens;
  std::vector<engine::token_logprobs> top;  ///< the top 5 at each step
};

/// Prefill `prompt` in one step, then `n` greedy decode steps, sequence 1.
/// `grant` (when given) hands out the block table as the kv_manager would:
/// whole token-blocks of n_layer · n_head_kv ids, enough for all of it.
run greedy(engine::engine& e, const std::vector<int32_t>& prompt, int n, int per_tb, int block_tokens,
           bool grant) {
  run r;
  seq_work w;
  w.seq_id = 1;
  w.tokens = prompt;
  w.prompt_len = static_cast<int32_t>(prompt.size());
  w.sample = true;
  w.temperature = 0;
  w.logprobs = 5;
  if (grant) {
    const int64_t tbs = (static_cast<int64_t>(prompt.size()) + n + block_tokens - 1) / block_tokens;
    w.kv_blocks.resize(static_cast<size_t>(tbs * per_tb));
    // Scattered ids, as a pool that has been in use hands them out.
    for (size_t i = 0; i < w.kv_blocks.size(); ++i)
      w.kv_blocks[i] = static_cast<int32_t>((i * 7919) % w.kv_blocks.size());
  }
  for (int s = 0; s < n; ++s) {
    step_input in;
    in.seqs.push_back(w);
    auto out = e.step(in);
    REQUIRE(out.tokens.size() == 1);
    r.tokens.push_back(out.tokens[0]);
    r.top.push_back(out.logprobs.at(0));
    w.context_len += static_cast<int32_t>(w.tokens.size());
    w.tokens = {out.tokens[0]};
    w.kv_blocks.clear();
  }
  return r;
}

void compare(const std::string& path, const std::string& text) {
  auto model = engine::llama_model::load(path);
  std::shared_ptr<const engine::tokenizer> tok = engine::make_tokenizer(engine::read_vocab(model->file()));
  const auto prompt = tok->encode(text, true);
  const auto& hp = model->hparams();
  const int per_tb = hp.n_layer * hp.n_head_kv;
  const int n = 32;

  engine::cpu_engine_options co;
  co.kv_blocks = 4096;
  engine::cpu_engine cpu(model, tok, co);
  auto want = greedy(cpu, prompt, n, per_tb, co.block_tokens, false);

  engine::cuda_engine_options go;
  go.kv_blocks = (static_cast<int64_t>(prompt.size()) + n + 15) / 16 * per_tb;
  engine::cuda_engine gpu(model, tok, go);
  auto got = greedy(gpu, prompt, n, per_tb, go.block_tokens, true);

  size_t same = 0;
  while (same < got.tokens.size() && got.tokens[same] == want.tokens[same])
    ++same;
  if (same < got.tokens.size()) {
    std::cout << path << ": greedy tokens part at step " << same << "\n";
    for (const auto* r : {&want, &got}) {
      std::cout << (r == &want ? "  cpu " : "  cuda");
      for (size_t k = 0; k < r->top[same].top_ids.size(); ++k)
        std::cout << "  " << r->top[same].top_ids[k] << ":" << r->top[same].top_logprobs[k];
      std::cout << "\n";
    }
  }
  CHECK(same == got.tokens.size());
  // Where they agree, the chosen token's log-probability agrees closely.
  for (size_t i = 0; i < same; ++i)
    CHECK(got.top[i].logprob == Approx(want.top[i].logprob).margin(0.05));
}

}  // namespace

TEST_CASE("cuda engine: stories260K greedy tokens equal the CPU engine's", "[cuda]") {
  compare(stories_path, "Once upon a time");
}

TEST_CASE("cuda engine: SmolLM2 from GGUF, 32 greedy tokens equal the CPU engine's", "[cuda]") {
  if (!std::ifstream(smollm_path).good()) {
    WARN(smollm_path << " is missing (scripts/setup fetches it)");
    return;
  }
  compare(smollm_path, "The capital of France is");
}

int main(int argc, char** argv) {
  std::string why;
  if (!cuda::device_available(&why)) {
    std::cout << "cuda_engine_test: SKIPPED, no usable CUDA device: " << why << std::endl;
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
