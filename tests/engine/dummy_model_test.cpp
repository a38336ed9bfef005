// load_format = "dummy": random weights of a given shape for speed runs.

#include <catch2/catch.hpp>

#include <cmath>

#include "engine/llama_runner.hpp"

using namespace llmux;

namespace {

config::model_arch small_arch() {
  config::model_arch a;
  a.layers = 2;
  a.hidden = 256;
  a.heads = 4;
  a.kv_heads = 2;
  a.intermediate = 512;
  a.vocab = 300;
  a.context_length = 64;
  return a;
}

std::vector<float> run(const std::shared_ptr<engine::llama_model>& m) {
  engine::llama_runner runner{m, 16, 1024};
  kernels::thread_pool pool{2};
  std::vector<int32_t> toks{1, 5, 9, 200};
  std::vector<engine::runner_seq> seqs{{1, toks.data(), 4, 0, true}};
  std::vector<float> logits;
  REQUIRE(runner.forward(seqs, logits, pool));
  return logits;
}

}  // namespace

TEST_CASE("dummy weights have the asked shape and run, deterministically per seed", "[dummy]") {
  for (auto t : {kernels::dtype::f16, kernels::dtype::q8_0, kernels::dtype::q4_1,
                 kernels::dtype::q4_k}) {
    INFO(kernels::to_string(t));
    auto m = engine::llama_model::dummy(small_arch(), t, 7);
    const auto& hp = m->hparams();
    CHECK(hp.n_layer == 2);
    CHECK(hp.n_head_kv == 2);
    CHECK(hp.head_dim == 64);
    CHECK(m->layers()[0].wk.rows == 128);
    CHECK(m->layers()[0].wq.type == t);
    CHECK_FALSE(m->has_file());
    auto a = run(m);
    REQUIRE(a.size() == 300);
    for (auto x : a)
      REQUIRE(std::isfinite(x));
    CHECK(a == run(engine::llama_model::dummy(small_arch(), t, 7)));
    CHECK(a != run(engine::llama_model::dummy(small_arch(), t, 8)));
  }
}

TEST_CASE("dummy weights refuse a row length that does not fit the type's blocks", "[dummy]") {
  auto a = small_arch();
  a.hidden = 96;  // fits 32-element blocks, not 256-element K-quant blocks
  a.heads = 3;
  a.kv_heads = 3;
  CHECK_NOTHROW(engine::llama_model::dummy(a, kernels::dtype::q8_0, 1));
  CHECK_THROWS_AS(engine::llama_model::dummy(a, kernels::dtype::q4_k, 1), std::invalid_argument);
}

TEST_CASE("a shape-only model has a dummy model's shapes and no weights", "[dummy]") {
  // The cuda engine makes dummy weights on the device from these shapes.
  auto arch = small_arch();
  arch.head_dim = 48;  // q_dim 192 != hidden 256: the shapes follow the heads
  auto shape = engine::llama_model::shape_only(arch);
  const auto& hp = shape->hparams();
  CHECK(hp.n_layer == 2);
  CHECK(hp.head_dim == 48);
  CHECK(hp.n_vocab == 300);
  REQUIRE(shape->layers().size() == 2);
  const auto& l = shape->layers()[1];
  auto dims = [](const kernels::matrix_view& m) { return std::make_pair(m.rows, m.cols); };
  CHECK(dims(l.wq) == std::make_pair<int64_t, int64_t>(4 * 48, 256));
  CHECK(dims(l.wk) == std::make_pair<int64_t, int64_t>(2 * 48, 256));
  CHECK(dims(l.wo) == std::make_pair<int64_t, int64_t>(256, 4 * 48));
  CHECK(dims(l.w_gate) == std::make_pair<int64_t, int64_t>(512, 256));
  CHECK(dims(l.w_down) == std::make_pair<int64_t, int64_t>(256, 512));
  CHECK(dims(shape->tok_embd()) == std::make_pair<int64_t, int64_t>(300, 256));
  for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down, &shape->tok_embd()})
    CHECK(m->data == nullptr);
  CHECK(l.attn_norm == nullptr);
  CHECK(shape->output_norm() == nullptr);
  CHECK(shape->output().data == shape->tok_embd().data);  // tied
}
