// Tensor-parallel shards (engine/tensor_parallel.hpp): the slices cover
// every head and FFN row once, keep GQA groups whole, and a layer computed
// rank by rank (column-parallel slices, row-parallel partial sums added as
// the all-reduce adds them) equals the layer computed whole, on the CPU
// reference kernels. The cuda engine uploads exactly these slices.

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "engine/tensor_parallel.hpp"
#include "kernels/cpu/ops.hpp"

using namespace llmux;
using engine::make_tp_shard;

namespace {

engine::llama_hparams shape(int n_head, int n_head_kv, int n_ff, int head_dim) {
  engine::llama_hparams hp;
  hp.n_head = n_head;
  hp.n_head_kv = n_head_kv;
  hp.n_ff = n_ff;
  hp.head_dim = head_dim;
  hp.n_embd = n_head * head_dim;
  return hp;
}

/// Rows [r0, r1) of a row-major [rows, cols] matrix.
std::vector<float> rows_of(const std::vector<float>& w, int64_t cols, int64_t r0, int64_t r1) {
  return {w.begin() + r0 * cols, w.begin() + r1 * cols};
}

/// Columns [c0, c1) of a row-major [rows, cols] matrix.
std::vector<float> cols_of(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t c0, int64_t c1) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    out.insert(out.end(), w.begin() + r * cols + c0, w.begin() + r * cols + c1);
  return out;
}

std::vector<float> matmul(const std::vector<float>& w, int64_t n, int64_t k, const std::vector<float>& x, int64_t m) {
  std::vector<float> y(static_cast<size_t>(m * n));
  kernels::matmul_ref(kernels::matrix_view{w.data(), kernels::dtype::f32, n, k}, x.data(), m, y.data());
  return y;
}

}  // namespace

TEST_CASE("tp shards cover heads and FFN rows once and keep GQA groups whole", "[tp]") {
  const auto hp = shape(32, 8, 14336, 128);  // Llama-3-8B
  for (int size : {1, 2, 4, 8}) {
    INFO("size " << size);
    int64_t q_next = 0, kv_next = 0, ff_next = 0;
    for (int r = 0; r < size; ++r) {
      const auto s = make_tp_shard(hp, r, size);
      CHECK(s.q_rows.begin == q_next);
      CHECK(s.kv_rows.begin == kv_next);
      CHECK(s.ff_rows.begin == ff_next);
      q_next = s.q_rows.end;
      kv_next = s.kv_rows.end;
      ff_next = s.ff_rows.end;
      CHECK(s.q_rows.size() == int64_t{s.n_head} * hp.head_dim);
      CHECK(s.kv_rows.size() == int64_t{s.n_head_kv} * hp.head_dim);
      CHECK(s.head_base == r * s.n_head_kv);
      // Every query head of the rank maps (h / group) to one of its KV heads.
      const int group = hp.n_head / hp.n_head_kv;
      for (int64_t h = s.q_rows.begin / hp.head_dim; h < s.q_rows.end / hp.head_dim; ++h) {
        CHECK(h / group >= s.head_base);
        CHECK(h / group < s.head_base + s.n_head_kv);
      }
    }
    CHECK(q_next == int64_t{hp.n_head} * hp.head_dim);
    CHECK(kv_next == int64_t{hp.n_head_kv} * hp.head_dim);
    CHECK(ff_next == hp.n_ff);
  }
  CHECK_THROWS_WITH(make_tp_shard(hp, 0, 16), Catch::Contains("KV heads (8)") && Catch::Contains("multiple of 16"));
  CHECK_THROWS_WITH(make_tp_shard(shape(12, 12, 100, 8), 0, 8), Catch::Contains("query heads (12)"));
  CHECK_THROWS_WITH(make_tp_shard(shape(8, 8, 100, 8), 0, 8), Catch::Contains("FFN width (100)"));
  CHECK_THROWS(make_tp_shard(hp, 2, 2));
}

TEST_CASE("a layer's attention projections and FFN computed rank by rank equal the whole", "[tp]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  const auto hp = shape(8, 4, 96, 16);
  const int64_t E = hp.n_embd, QD = int64_t{hp.n_head} * hp.head_dim, KVD = int64_t{hp.n_head_kv} * hp.head_dim,
                F = hp.n_ff, m = 3;
  auto rnd = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v)
      x = nd(rng);
    return v;
  };
  const auto wq = rnd(QD * E), wk = rnd(KVD * E), wo = rnd(E * QD), gate = rnd(F * E), up = rnd(F * E),
             down = rnd(E * F), x = rnd(m * E);
  // Whole: q and k projections; o over a stand-in attention output (q
  // itself: attention is per head, so the rank's heads of it are its own);
  // the FFN.
  const auto q = matmul(wq, QD, E, x, m), k = matmul(wk, KVD, E, x, m);
  const auto o = matmul(wo, E, QD, q, m);
  auto g = matmul(gate, F, E, x, m);
  const auto u = matmul(up, F, E, x, m);
  kernels::swiglu_ref(g.data(), u.data(), m * F, g.data());
  const auto ffn = matmul(down, E, F, g, m);
  for (int size : {2, 4}) {
    INFO("size " << size);
    std::vector<float> o_sum(static_cast<size_t>(m * E), 0.0f), ffn_sum(o_sum);
    for (int r = 0; r < size; ++r) {
      const auto s = make_tp_shard(hp, r, size);
      const auto qr = matmul(rows_of(wq, E, s.q_rows.begin, s.q_rows.end), s.q_rows.size(), E, x, m);
      const auto kr = matmul(rows_of(wk, E, s.kv_rows.begin, s.kv_rows.end), s.kv_rows.size(), E, x, m);
      // The rank's slice of q and k are the whole's columns of its heads.
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t c = 0; c < s.q_rows.size(); ++c)
          CHECK(qr[static_cast<size_t>(i * s.q_rows.size() + c)]
                == Approx(q[static_cast<size_t>(i * QD + s.q_rows.begin + c)]).margin(1e-6));
        for (int64_t c = 0; c < s.kv_rows.size(); ++c)
          CHECK(kr[static_cast<size_t>(i * s.kv_rows.size() + c)]
                == Approx(k[static_cast<size_t>(i * KVD + s.kv_rows.begin + c)]).margin(1e-6));
      }
      // Row-parallel o: the rank's input columns times its heads' output.
      const auto op = matmul(cols_of(wo, E, QD, s.q_rows.begin, s.q_rows.end), E, s.q_rows.size(), qr, m);
      auto gr = matmul(rows_of(gate, E, s.ff_rows.begin, s.ff_rows.end), s.ff_rows.size(), E, x, m);
      const auto ur = matmul(rows_of(up, E, s.ff_rows.begin, s.ff_rows.end), s.ff_rows.size(), E, x, m);
      kernels::swiglu_ref(gr.data(), ur.data(), m * s.ff_rows.size(), gr.data());
      const auto fp = matmul(cols_of(down, E, F, s.ff_rows.begin, s.ff_rows.end), E, s.ff_rows.size(), gr, m);
      for (size_t i = 0; i < o_sum.size(); ++i) {  // the all-reduce
        o_sum[i] += op[i];
        ffn_sum[i] += fp[i];
      }
    }
    for (size_t i = 0; i < o_sum.size(); ++i) {
      CHECK(o_sum[i] == Approx(o[i]).margin(1e-5));
      CHECK(ffn_sum[i] == Approx(ffn[i]).margin(1e-5));
    }
  }
}
