// The unit's shared KV memory: engines of models with different shapes keep
// their KV in one arena of head-wise blocks whose ids the kv_manager grants
// (paged_kv_cache's shared mode), and a sequence that adopts another's blocks
// for a common prefix computes the same tokens as one that prefilled it.

#include <catch2/catch.hpp>

#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/engine_factory.hpp"
#include "engine/llama_runner.hpp"
#include "engine/paged_kv_cache.hpp"
#include "engine/sampler.hpp"

using namespace llmux;
using engine::runner_seq;

namespace {

const std::string model_path = LLMUX_SHARED_DIR "/models/stories260K/stories260K.gguf";

/// Hands out physical ids as the kv_manager does: one free list for every
/// model, ids of different models interleaved.
struct id_source {
  int32_t next = 0;
  std::vector<int32_t> take(size_t n) {
    std::vector<int32_t> ids(n);
    for (auto& id : ids)
      id = next++;
    return ids;
  }
};

/// Greedy continuation of `prompt` for `want` tokens on `runner`, as
/// sequence `seq` whose table starts as `table` covering `cached` tokens of
/// the prompt (their KV already in the arena); every further token-block
/// comes from `ids`.
std::vector<int32_t> greedy(engine::llama_runner& runner, kernels::thread_pool& pool, uint64_t seq,
                            const std::vector<int32_t>& prompt, size_t want, int32_t cached,
                            const std::vector<int32_t>& table, id_source& ids, int block_tokens) {
  const auto& hp = runner.model().hparams();
  const auto per_tb = static_cast<size_t>(hp.n_layer) * static_cast<size_t>(hp.n_head_kv);
  runner.adopt(seq, table);
  int64_t covered = static_cast<int64_t>(table.size() / per_tb) * block_tokens;
  std::vector<int32_t> feed(prompt.begin() + cached, prompt.end()), got;
  int32_t pos = cached;
  std::vector<float> logits;
  while (got.size() < want) {
    while (covered < pos + static_cast<int64_t>(feed.size())) {
      runner.adopt(seq, ids.take(per_tb));
      covered += block_tokens;
    }
    std::vector<runner_seq> seqs{{seq, feed.data(), static_cast<int32_t>(feed.size()), pos, true}};
    REQUIRE(runner.forward(seqs, logits, pool));
    auto tok = engine::sample_token(logits.data(), hp.n_vocab, {0.0f}, 0);
    got.push_back(tok);
    pos += static_cast<int32_t>(feed.size());
    feed = {tok};
  }
  return got;
}

config::model_arch wide_arch() {
  config::model_arch a;  // head 64, beside stories260K's head 8
  a.layers = 2;
  a.hidden = 256;
  a.heads = 4;
  a.kv_heads = 2;
  a.intermediate = 512;
  a.vocab = 300;
  a.context_length = 256;
  return a;
}

}  // namespace

TEST_CASE("shared KV caches of different shapes keep their blocks apart in one arena", "[kv]") {
  auto arena = std::make_shared<engine::kv_arena>(600, 4, 16);
  engine::paged_kv_cache narrow{2, 2, 8, arena}, wide{3, 1, 16, arena};
  // Interleaved grants: narrow takes 4 ids per token-block, wide 3.
  narrow.adopt(7, {0, 1, 2, 3});
  wide.adopt(7, {4, 5, 6});  // same sequence id, other model: its own table
  narrow.adopt(7, {300, 301, 302, 303});  // a second chunk of the arena
  CHECK(narrow.capacity_tokens(7) == 8);
  CHECK(wide.capacity_tokens(7) == 4);
  CHECK(narrow.reserve(7, 8));
  CHECK_FALSE(narrow.reserve(7, 9));  // shared mode allocates nothing itself
  CHECK(narrow.used_blocks() == 8);
  auto fill = [](uint16_t* p, int n, uint16_t v) { std::fill(p, p + n, v); };
  for (int64_t pos = 0; pos < 8; ++pos)
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) {
        fill(narrow.k(7, l, h, pos), 8, static_cast<uint16_t>(1000 + pos * 10 + l * 2 + h));
        fill(narrow.v(7, l, h, pos), 8, static_cast<uint16_t>(2000 + pos * 10 + l * 2 + h));
      }
  for (int64_t pos = 0; pos < 4; ++pos)
    for (int l = 0; l < 3; ++l) {
      fill(wide.k(7, l, 0, pos), 16, static_cast<uint16_t>(3000 + pos * 10 + l));
      fill(wide.v(7, l, 0, pos), 16, static_cast<uint16_t>(4000 + pos * 10 + l));
    }
  for (int64_t pos = 0; pos < 8; ++pos)
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 2; ++h) {
        const uint16_t* k = narrow.k(7, l, h, pos);
        const uint16_t* v = narrow.v(7, l, h, pos);
        for (int i = 0; i < 8; ++i) {
          REQUIRE(k[i] == 1000 + pos * 10 + l * 2 + h);
          REQUIRE(v[i] == 2000 + pos * 10 + l * 2 + h);
        }
      }
  for (int64_t pos = 0; pos < 4; ++pos)
    for (int l = 0; l < 3; ++l)
      for (int i = 0; i < 16; ++i) {
        REQUIRE(wide.k(7, l, 0, pos)[i] == 3000 + pos * 10 + l);
        REQUIRE(wide.v(7, l, 0, pos)[i] == 4000 + pos * 10 + l);
      }
  // Two chunks of 256 blocks were touched, of 2 · 4 · 16 f16 each.
  CHECK(arena->bytes_allocated() == 2 * 256 * 2 * 4 * 16 * 2);
  // Grants that are not whole token-blocks, or name ids outside the arena,
  // are refused and change nothing.
  CHECK_THROWS_AS(narrow.adopt(8, {1, 2, 3}), std::invalid_argument);
  CHECK_THROWS_AS(narrow.adopt(8, {1, 2, 3, 600}), std::invalid_argument);
  CHECK_THROWS_AS(narrow.adopt(8, {-1, 2, 3, 4}), std::invalid_argument);
  CHECK(narrow.capacity_tokens(8) == 0);
  // A model whose head is larger than the arena's blocks cannot use it.
  CHECK_THROWS_AS((engine::paged_kv_cache{1, 1, 32, arena}), std::invalid_argument);
  // Releasing forgets the table; the blocks belong to the kv_manager.
  narrow.release(7);
  CHECK(narrow.used_blocks() == 0);
  CHECK(narrow.capacity_tokens(7) == 0);
  CHECK(wide.capacity_tokens(7) == 4);
}

TEST_CASE("co-located models in one arena: greedy outputs as alone, and a shared prefix changes nothing",
          "[llama]") {
  std::ifstream in{LLMUX_SHARED_DIR "/golden/stories260K_greedy.json"};
  REQUIRE(in.good());
  auto g = nlohmann::json::parse(in);
  auto stories = engine::llama_model::load(model_path);
  auto wide = engine::llama_model::dummy(wide_arch(), kernels::dtype::f16, 11);
  REQUIRE(stories->hparams().head_dim == 8);
  REQUIRE(wide->hparams().head_dim == 64);
  constexpr int bt = 4;  // small blocks: prompts of 5 to 13 tokens span several
  auto arena = std::make_shared<engine::kv_arena>(1 << 16, bt, 64);
  engine::llama_runner a{stories, arena}, b{wide, arena};
  kernels::thread_pool pool_a{1}, pool_b{1};
  id_source ids;  // shared by both models, so their blocks interleave
  const auto per_a = static_cast<size_t>(stories->hparams().n_layer) * stories->hparams().n_head_kv;

  // The wide model alone first, for its reference output.
  std::vector<int32_t> wide_prompt;
  for (int i = 0; i < 37; ++i)
    wide_prompt.push_back((i * 37 + 11) % 300);
  engine::llama_runner b_alone{wide, 16, 1 << 14};
  kernels::thread_pool pool_ref{1};
  std::vector<int32_t> wide_want;
  {
    std::vector<int32_t> feed = wide_prompt;
    int32_t pos = 0;
    std::vector<float> logits;
    while (wide_want.size() < 40) {
      std::vector<runner_seq> seqs{{1, feed.data(), static_cast<int32_t>(feed.size()), pos, true}};
      REQUIRE(b_alone.forward(seqs, logits, pool_ref));
      wide_want.push_back(engine::sample_token(logits.data(), 300, {0.0f}, 0));
      pos += static_cast<int32_t>(feed.size());
      feed = {wide_want.back()};
    }
  }

  uint64_t seq = 100;
  for (const auto& c : g["cases"]) {
    auto prompt = c["prompt_tokens"].get<std::vector<int32_t>>();
    auto want = c["completion_tokens"].get<std::vector<int32_t>>();
    INFO("prompt: " << c["prompt"].get<std::string>());
    // The other model computes at the same time on its own thread, writing
    // its own blocks of the same arena. Ids are taken up front so the two
    // threads do not share the id source.
    std::vector<int32_t> wide_table = ids.take(static_cast<size_t>((37 + 40 + bt - 1) / bt) * 4);
    std::vector<int32_t> wide_got;
    std::thread other([&] {
      id_source none;
      wide_got = greedy(b, pool_b, seq + 1, wide_prompt, 40, 0, wide_table, none, bt);
      b.release(seq + 1);
    });
    // First sequence: computes the whole prompt.
    std::vector<int32_t> first_table = ids.take(per_a * ((prompt.size() + bt - 1) / bt));
    auto got = greedy(a, pool_a, seq, prompt, want.size(), 0, first_table, ids, bt);
    other.join();
    CHECK(got == want);
    CHECK(wide_got == wide_want);
    // Second sequence, same prompt: adopts the first one's full blocks of
    // the prompt (never all of it, as the kv_manager's prefix cache) and
    // prefills only the rest.
    const auto shared_tb = (prompt.size() - 1) / bt;
    REQUIRE(shared_tb >= 1);
    std::vector<int32_t> prefix(first_table.begin(),
                                first_table.begin() + static_cast<std::ptrdiff_t>(shared_tb * per_a));
    auto again = greedy(a, pool_a, seq + 2, prompt, want.size(), static_cast<int32_t>(shared_tb * bt),
                        prefix, ids, bt);
    CHECK(again == want);
    a.release(seq);
    a.release(seq + 2);
    seq += 10;
  }
}

TEST_CASE("a unit's memories: host arena for cpu models, one GPU slot for cuda models, sized for the largest head",
          "[shared_kv]") {
  auto model = [](const char* backend, int layers, int kv_heads, int hidden, int heads) {
    config::model_config m;
    m.backend = backend;
    m.arch.layers = layers;
    m.arch.kv_heads = kv_heads;
    m.arch.hidden = hidden;
    m.arch.heads = heads;
    return m;
  };
  const auto cpu = model("cpu", 5, 4, 256, 4);     // heads of 64
  const auto big = model("cuda", 32, 8, 4096, 32);  // heads of 128
  const auto small = model("cuda", 2, 2, 64, 8);    // heads of 8
  const auto sim = model("sim", 80, 8, 8192, 64);
  CHECK_FALSE(engine::make_device_kv_slot({&cpu, &sim}, 100, 16));
  auto slot = engine::make_device_kv_slot({&cpu, &small, &big, &sim}, 100, 16);
  REQUIRE(slot);
  CHECK(slot->blocks == 100);
  CHECK(slot->block_tokens == 16);
  CHECK(slot->max_head_dim == 128);     // the cuda models' largest, not the sim's
  CHECK(slot->scratch_blocks == 32 * 8);  // a token-block of the widest cuda model
  CHECK(slot->memory.empty());            // the first cuda engine on each GPU allocates it
  auto arena = engine::make_kv_arena({&cpu, &small, &big}, 100, 16);
  REQUIRE(arena);
  CHECK(arena->max_head_dim() == 64);  // host memory for the cpu model only
  CHECK_FALSE(engine::make_kv_arena({&small, &big}, 100, 16));
}
