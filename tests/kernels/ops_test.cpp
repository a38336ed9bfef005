// CPU kernels against their plain references, on random data of awkward
// sizes, for every instruction-set level this CPU has.

#include "kernels/cpu/ops.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

using namespace llmux::kernels;

namespace {

// Runs the body once per SIMD level up to the best one, restoring it after.
std::vector<simd_level> levels() {
  std::vector<simd_level> out{simd_level::portable};
  if (best_simd() >= simd_level::avx2)
    out.push_back(simd_level::avx2);
  if (best_simd() >= simd_level::avx512)
    out.push_back(simd_level::avx512);
  return out;
}

struct simd_guard {
  ~simd_guard() { force_simd(best_simd()); }
};

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v)
    x = d(rng);
  return v;
}

// A weight matrix of `rows` × `cols` random values encoded as `t`.
std::vector<uint8_t> random_weights(std::mt19937& rng, dtype t, int64_t rows, int64_t cols) {
  std::vector<uint8_t> w(row_bytes(t, cols) * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    auto v = random_vec(rng, cols);
    // Vary the scale per row so block scales differ.
    for (auto& x : v)
      x *= 0.5f + static_cast<float>(r % 5);
    quantize_row_ref(t, v.data(), w.data() + static_cast<size_t>(r) * row_bytes(t, cols), cols);
  }
  return w;
}

const dtype all_types[] = {dtype::f32,  dtype::f16,  dtype::bf16, dtype::q8_0, dtype::q4_0, dtype::q4_1,
                           dtype::q5_0, dtype::q5_1, dtype::q4_k, dtype::q5_k, dtype::q6_k};

// Every (type, SIMD level) pair.
std::vector<std::pair<dtype, simd_level>> type_levels() {
  std::vector<std::pair<dtype, simd_level>> out;
  for (dtype t : all_types)
    for (simd_level lv : levels())
      out.emplace_back(t, lv);
  return out;
}

// Element j's integer q of a Q4_1 / Q5_1 block (x = d·q + m).
int min_type_q(dtype t, const uint8_t* blk, int j) {
  if (t == dtype::q4_1) {
    const auto* b = reinterpret_cast<const block_q4_1*>(blk);
    return j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
  }
  const auto* b = reinterpret_cast<const block_q5_1*>(blk);
  int q[32];
  q5_values(b->qs, b->qh, q);
  return q[j];
}

// Σ w·a of one W row of type t and an activation row made by
// quantize_activation_row, in double, from the decoded operands: what the
// integer kernels must compute up to float summation order. mag gets Σ|w·a|.
// Q4_1/Q5_1 · Q8_1 is d_w·d_a·Σq·q_a + m_w·s_a per block, with s_a the
// fp16-rounded d_a·Σq_a that Q8_1 stores (as llama.cpp).
double exact_dot(dtype t, const uint8_t* w_row, const uint8_t* act, int64_t k, double* mag) {
  std::vector<float> wf(static_cast<size_t>(k)), af(static_cast<size_t>(k));
  dequantize_row_ref(t, w_row, wf.data(), k);
  dequantize_row_ref(vec_dot_type(t), act, af.data(), k);
  double exact = 0;
  *mag = 0;
  if (t == dtype::q4_1 || t == dtype::q5_1) {
    const size_t bb = block_bytes(t);
    const auto* ab = reinterpret_cast<const block_q8_1*>(act);
    for (int64_t ib = 0; ib < k / 32; ++ib) {
      const uint8_t* blk = w_row + static_cast<size_t>(ib) * bb;
      uint16_t h[2];
      std::memcpy(h, blk, sizeof h);
      const double dw = fp16_to_fp32(h[0]), mw = fp16_to_fp32(h[1]);
      for (int j = 0; j < 32; ++j) {
        const double term = dw * min_type_q(t, blk, j) * af[static_cast<size_t>(ib * 32 + j)];
        exact += term;
        *mag += std::fabs(term);
      }
      const double ms = mw * fp16_to_fp32(ab[ib].s);
      exact += ms;
      *mag += std::fabs(ms);
    }
    return exact;
  }
  for (int64_t j = 0; j < k; ++j) {
    const double term = static_cast<double>(wf[static_cast<size_t>(j)]) * af[static_cast<size_t>(j)];
    exact += term;
    *mag += std::fabs(term);
  }
  return exact;
}

// Error allowed relative to Σ|x·w| of an output: the activation conversion
// llama.cpp does (none, fp16, bf16, 8-bit blocks) bounds it.
double matmul_tolerance(dtype t) {
  switch (t) {
    case dtype::f32: return 2e-6;
    case dtype::f16: return 6e-4;
    case dtype::bf16: return 4e-3;
    default: return 1e-2;
  }
}

}  // namespace

TEST_CASE("best SIMD level is reported", "[ops][simd]") {
  const auto best = best_simd();
  WARN("SIMD level: " << to_string(best));
  CHECK(active_simd() == best);
  simd_guard g;
  force_simd(simd_level::portable);
  CHECK(active_simd() == simd_level::portable);
  force_simd(simd_level::avx512);
  CHECK(active_simd() == best);  // clamped to what the CPU has
}

TEST_CASE("matmul matches matmul_ref for every type, size and thread count", "[ops][matmul]") {
  simd_guard g;
  std::mt19937 rng(1234);
  std::vector<std::unique_ptr<thread_pool>> pools;
  for (int t = 1; t <= 3; ++t)
    pools.push_back(std::make_unique<thread_pool>(t));
  for (dtype t : all_types) {
    const int64_t be = static_cast<int64_t>(block_elems(t));
    std::vector<int64_t> ks;
    if (be == 1)
      ks = {1, 7, 96, 515};
    else if (be == 32)
      ks = {32, 32 * 3, 32 * 17};
    else
      ks = {256, 256 * 2, 256 * 3};
    for (int64_t k : ks) {
      for (int64_t n : {1, 5, 33, 67}) {
        const auto wbytes = random_weights(rng, t, n, k);
        const matrix_view w{wbytes.data(), t, n, k};
        std::vector<float> wf(static_cast<size_t>(n * k));
        for (int64_t r = 0; r < n; ++r)
          get_row(w, r, wf.data() + r * k);
        for (int64_t m : {1, 3, 7, 37}) {
          const auto x = random_vec(rng, m * k, -2.0f, 2.0f);
          std::vector<float> ref(static_cast<size_t>(m * n));
          matmul_ref(w, x.data(), m, ref.data());
          for (simd_level lv : levels()) {
            force_simd(lv);
            for (auto& pool : pools) {
              std::vector<float> y(static_cast<size_t>(m * n), NAN);
              matmul(w, x.data(), m, y.data(), *pool);
              for (int64_t i = 0; i < m; ++i) {
                for (int64_t r = 0; r < n; ++r) {
                  double mag = 0;
                  for (int64_t j = 0; j < k; ++j)
                    mag += std::fabs(static_cast<double>(x[static_cast<size_t>(i * k + j)]) *
                                     wf[static_cast<size_t>(r * k + j)]);
                  const double err = std::fabs(static_cast<double>(y[static_cast<size_t>(i * n + r)]) -
                                               ref[static_cast<size_t>(i * n + r)]);
                  INFO(to_string(t) << " " << to_string(lv) << " threads " << pool->size() << " m " << m
                                    << " n " << n << " k " << k << " row " << r << " col " << i);
                  REQUIRE(err <= matmul_tolerance(t) * mag + 1e-6);
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("a matmul row is bit-identical whatever else is in the batch", "[ops][matmul]") {
  // The tiled kernels share unpacked blocks across 4×4 tiles; each output
  // must still be summed in one fixed order, so a sequence's logits do not
  // depend on which other rows (or threads) share its step.
  simd_guard g;
  std::mt19937 rng(99);
  thread_pool one{1}, three{3};
  for (const auto& [t, lv] : type_levels()) {
    const int64_t n = 37, k = block_elems(t) == 256 ? 256 * 3 : 32 * 19, m = 45;
    const auto wbytes = random_weights(rng, t, n, k);
    const matrix_view w{wbytes.data(), t, n, k};
    const auto x = random_vec(rng, m * k, -2.0f, 2.0f);
    force_simd(lv);
    std::vector<float> full(static_cast<size_t>(m * n));
    matmul(w, x.data(), m, full.data(), three);
    for (int64_t i0 : {int64_t{0}, int64_t{5}, int64_t{31}, int64_t{43}}) {
      for (int64_t len : {int64_t{1}, int64_t{2}, int64_t{3}}) {
        if (i0 + len > m)
          continue;
        std::vector<float> part(static_cast<size_t>(len * n), NAN);
        matmul(w, x.data() + i0 * k, len, part.data(), one);
        for (int64_t i = 0; i < len; ++i)
          for (int64_t r = 0; r < n; ++r) {
            INFO(to_string(t) << " " << to_string(lv) << " rows " << i0 << "+" << len << " row " << i
                              << " col " << r);
            REQUIRE(part[static_cast<size_t>(i * n + r)] == full[static_cast<size_t>((i0 + i) * n + r)]);
          }
      }
    }
  }
}

TEST_CASE("attention_row matches attention_row_ref", "[ops][attention]") {
  simd_guard g;
  std::mt19937 rng(7);
  for (int64_t d : {8, 12, 64, 72, 128}) {
    for (int64_t ctx : {1, 5, 17, 300}) {
      const auto q = random_vec(rng, d, -3.0f, 3.0f);
      const auto k = random_vec(rng, ctx * d);
      const auto v = random_vec(rng, ctx * d);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      std::vector<float> ref(static_cast<size_t>(d));
      attention_row_ref(q.data(), k.data(), v.data(), ctx, d, scale, ref.data());
      for (simd_level lv : levels()) {
        force_simd(lv);
        std::vector<float> out(static_cast<size_t>(d), NAN), scores(static_cast<size_t>(ctx), NAN);
        attention_row(q.data(), k.data(), v.data(), ctx, d, scale, scores.data(), out.data());
        for (int64_t i = 0; i < d; ++i) {
          INFO(to_string(lv) << " d " << d << " ctx " << ctx << " dim " << i);
          REQUIRE(std::fabs(out[static_cast<size_t>(i)] - ref[static_cast<size_t>(i)]) < 2e-4);
        }
      }
    }
  }
}

TEST_CASE("attention_row_f16 over runs of the cache equals attention_row on the converted rows",
          "[ops][attention]") {
  simd_guard g;
  std::mt19937 rng(11);
  for (int64_t d : {8, 12, 64, 72}) {
    for (int64_t ctx : {1, 5, 17, 300}) {
      for (int64_t run : {1, 7, 16, 512}) {
        const auto q = random_vec(rng, d, -3.0f, 3.0f);
        // Each run in its own allocation, as the cache's blocks are.
        const int64_t runs = (ctx + run - 1) / run;
        std::vector<std::vector<uint16_t>> kh(static_cast<size_t>(runs)), vh(static_cast<size_t>(runs));
        std::vector<const uint16_t*> kp, vp;
        std::vector<float> kf(static_cast<size_t>(ctx * d)), vf(static_cast<size_t>(ctx * d));
        for (int64_t b = 0; b < runs; ++b) {
          for (auto* h : {&kh[static_cast<size_t>(b)], &vh[static_cast<size_t>(b)]}) {
            const auto x = random_vec(rng, run * d);
            h->resize(static_cast<size_t>(run * d));
            fp32_to_fp16_row(x.data(), h->data(), run * d);
          }
          kp.push_back(kh[static_cast<size_t>(b)].data());
          vp.push_back(vh[static_cast<size_t>(b)].data());
          const int64_t n = std::min(run, ctx - b * run);
          fp16_to_fp32_row(kp.back(), &kf[static_cast<size_t>(b * run * d)], n * d);
          fp16_to_fp32_row(vp.back(), &vf[static_cast<size_t>(b * run * d)], n * d);
        }
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        for (simd_level lv : levels()) {
          force_simd(lv);
          std::vector<float> want(static_cast<size_t>(d), NAN), got(static_cast<size_t>(d), NAN);
          std::vector<float> scores(static_cast<size_t>(ctx), NAN);
          attention_row(q.data(), kf.data(), vf.data(), ctx, d, scale, scores.data(), want.data());
          attention_row_f16(q.data(), kp.data(), vp.data(), run, ctx, d, scale, scores.data(), got.data());
          for (int64_t i = 0; i < d; ++i) {
            INFO(to_string(lv) << " d " << d << " ctx " << ctx << " run " << run << " dim " << i);
            REQUIRE(got[static_cast<size_t>(i)] == want[static_cast<size_t>(i)]);
          }
        }
      }
    }
  }
}

TEST_CASE("attention_row by hand", "[ops][attention]") {
  simd_guard g;
  const int64_t d = 16;
  std::vector<float> q(d, 0.0f), k(3 * d, 0.0f), v(3 * d);
  for (int64_t i = 0; i < 3 * d; ++i)
    v[static_cast<size_t>(i)] = static_cast<float>(i % d) + 100.0f * static_cast<float>(i / d);
  q[0] = 1.0f;
  k[0] = 0.0f;          // key 0: score 0
  k[d] = std::log(3.0f);  // key 1: score ln 3, so p = (1, 3) / 4 over keys 0..1
  k[2 * d] = 50.0f;     // key 2: past the context below, must not count
  for (simd_level lv : levels()) {
    force_simd(lv);
    std::vector<float> out(d), scores(3);
    attention_row(q.data(), k.data(), v.data(), 1, d, 1.0f, scores.data(), out.data());
    for (int64_t i = 0; i < d; ++i)
      CHECK(out[static_cast<size_t>(i)] == v[static_cast<size_t>(i)]);  // one key: p = 1
    attention_row(q.data(), k.data(), v.data(), 2, d, 1.0f, scores.data(), out.data());
    for (int64_t i = 0; i < d; ++i)
      CHECK(out[static_cast<size_t>(i)] == Approx(0.25 * static_cast<double>(i) + 0.75 * (i + 100.0)).epsilon(1e-3));
  }
}

TEST_CASE("fp16 row conversions equal the scalar ones", "[ops]") {
  simd_guard g;
  std::mt19937 rng(3);
  const auto x = random_vec(rng, 77, -70000.0f, 70000.0f);
  for (simd_level lv : levels()) {
    force_simd(lv);
    std::vector<uint16_t> h(x.size());
    std::vector<float> back(x.size());
    fp32_to_fp16_row(x.data(), h.data(), static_cast<int64_t>(x.size()));
    fp16_to_fp32_row(h.data(), back.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      INFO(to_string(lv) << " " << x[i]);
      REQUIRE(h[i] == fp32_to_fp16(x[i]));
      REQUIRE(back[i] == fp16_to_fp32(h[i]));
    }
  }
}

TEST_CASE("vec_dot equals the exact dot of the decoded operands", "[ops][matmul]") {
  // The integer kernels must compute Σ w·a of the decoded weight row and the
  // decoded activation row; only float summation order may differ.
  simd_guard g;
  std::mt19937 rng(99);
  for (dtype t : all_types) {
    const int64_t k = block_elems(t) == 256 ? 256 * 5 : 32 * 41;
    const auto wbytes = random_weights(rng, t, 1, k);
    std::vector<float> wf(static_cast<size_t>(k));
    dequantize_row_ref(t, wbytes.data(), wf.data(), k);
    for (int trial = 0; trial < 3; ++trial) {
      auto x = random_vec(rng, k, -3.0f, 3.0f);
      if (trial == 2)
        std::fill(x.begin(), x.begin() + 256, 0.0f);  // all-zero activation blocks
      const dtype at = vec_dot_type(t);
      std::vector<uint8_t> ref_act;
      for (simd_level lv : levels()) {
        force_simd(lv);
        std::vector<uint8_t> act(row_bytes(at, k));
        quantize_activation_row(t, x.data(), act.data(), k);
        // Every level converts activations to the same bytes.
        if (ref_act.empty())
          ref_act = act;
        else
          REQUIRE(std::memcmp(ref_act.data(), act.data(), act.size()) == 0);
        double mag = 0;
        const double exact = exact_dot(t, wbytes.data(), act.data(), k, &mag);
        const float got = vec_dot(t, wbytes.data(), act.data(), k);
        INFO(to_string(t) << " " << to_string(lv) << " trial " << trial);
        REQUIRE(std::fabs(got - exact) <= 2e-6 * mag + 1e-6);
      }
    }
  }
}

TEST_CASE("matmul equals the exact dot of its decoded operands", "[ops][matmul]") {
  // The tiles (and the per-pair path) must give Σ w·a of the decoded weight
  // row and the activation row as quantize_activation_row makes it: only
  // float summation order may differ. Tighter than the test against
  // matmul_ref, whose x is not quantized.
  simd_guard g;
  std::mt19937 rng(7);
  thread_pool pool{2};
  for (dtype t : all_types) {
    const int64_t k = block_elems(t) == 256 ? 256 * 3 : 32 * 23;
    const int64_t n = 13;
    const auto wbytes = random_weights(rng, t, n, k);
    const matrix_view w{wbytes.data(), t, n, k};
    const size_t wstride = row_bytes(t, k);
    for (int64_t m : {1, 6, 37}) {
      auto x = random_vec(rng, m * k, -3.0f, 3.0f);
      std::fill(x.begin(), x.begin() + 64, 0.0f);  // all-zero activation blocks
      for (simd_level lv : levels()) {
        force_simd(lv);
        std::vector<float> y(static_cast<size_t>(m * n), NAN);
        matmul(w, x.data(), m, y.data(), pool);
        std::vector<uint8_t> act(row_bytes(vec_dot_type(t), k));
        for (int64_t i = 0; i < m; ++i) {
          quantize_activation_row(t, x.data() + i * k, act.data(), k);
          for (int64_t r = 0; r < n; ++r) {
            double mag = 0;
            const double exact = exact_dot(t, wbytes.data() + static_cast<size_t>(r) * wstride, act.data(), k, &mag);
            INFO(to_string(t) << " " << to_string(lv) << " m " << m << " row " << i << " col " << r);
            REQUIRE(std::fabs(y[static_cast<size_t>(i * n + r)] - exact) <= 2e-6 * mag + 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("vec_dot_type follows llama.cpp", "[ops]") {
  CHECK(vec_dot_type(dtype::f32) == dtype::f32);
  CHECK(vec_dot_type(dtype::f16) == dtype::f16);
  CHECK(vec_dot_type(dtype::bf16) == dtype::bf16);
  CHECK(vec_dot_type(dtype::q8_0) == dtype::q8_0);
  CHECK(vec_dot_type(dtype::q4_0) == dtype::q8_0);
  CHECK(vec_dot_type(dtype::q4_1) == dtype::q8_1);
  CHECK(vec_dot_type(dtype::q5_0) == dtype::q8_0);
  CHECK(vec_dot_type(dtype::q5_1) == dtype::q8_1);
  CHECK(vec_dot_type(dtype::q4_k) == dtype::q8_k);
  CHECK(vec_dot_type(dtype::q5_k) == dtype::q8_k);
  CHECK(vec_dot_type(dtype::q6_k) == dtype::q8_k);
  CHECK_THROWS_AS(vec_dot_type(dtype::q2_k), std::invalid_argument);
}

TEST_CASE("matmul rejects bad shapes and types", "[ops][matmul]") {
  thread_pool pool(1);
  std::vector<uint8_t> w(1024);
  std::vector<float> x(256), y(4);
  CHECK_THROWS_AS(matmul(matrix_view{w.data(), dtype::q4_0, 2, 40}, x.data(), 1, y.data(), pool),
                  std::invalid_argument);
  CHECK_THROWS_AS(matmul(matrix_view{w.data(), dtype::q2_k, 2, 256}, x.data(), 1, y.data(), pool),
                  std::invalid_argument);
}

TEST_CASE("get_row decodes one row", "[ops]") {
  std::mt19937 rng(5);
  for (dtype t : all_types) {
    const int64_t k = 512;
    const auto wbytes = random_weights(rng, t, 3, k);
    std::vector<float> got(k), want(k);
    get_row(matrix_view{wbytes.data(), t, 3, k}, 2, got.data());
    dequantize_row_ref(t, wbytes.data() + 2 * row_bytes(t, k), want.data(), k);
    REQUIRE(std::memcmp(got.data(), want.data(), k * sizeof(float)) == 0);
  }
}

TEST_CASE("rmsnorm matches rmsnorm_ref", "[ops]") {
  simd_guard g;
  std::mt19937 rng(11);
  for (int64_t n : {1, 7, 8, 9, 31, 33, 576, 1000}) {
    for (int64_t m : {1, 3}) {
      const auto x = random_vec(rng, m * n, -4.0f, 4.0f);
      const auto w = random_vec(rng, n, 0.5f, 1.5f);
      std::vector<float> ref(static_cast<size_t>(m * n));
      rmsnorm_ref(x.data(), w.data(), 1e-6f, m, n, ref.data());
      for (simd_level lv : levels()) {
        force_simd(lv);
        std::vector<float> y(static_cast<size_t>(m * n));
        rmsnorm(x.data(), w.data(), 1e-6f, m, n, y.data());
        for (size_t i = 0; i < y.size(); ++i)
          REQUIRE(y[i] == Approx(ref[i]).epsilon(1e-6).margin(1e-30));
      }
    }
  }
  // In place, as the engine calls it.
  for (simd_level lv : levels()) {
    force_simd(lv);
    auto x = random_vec(rng, 2 * 45);
    const auto w = random_vec(rng, 45);
    std::vector<float> want(x.size());
    rmsnorm_ref(x.data(), w.data(), 1e-5f, 2, 45, want.data());
    rmsnorm(x.data(), w.data(), 1e-5f, 2, 45, x.data());
    for (size_t i = 0; i < want.size(); ++i)
      REQUIRE(x[i] == Approx(want[i]).epsilon(1e-6));
  }
  // Known value: x = [3, 4], w = [1, 2] → rms = sqrt(12.5).
  const float x[2] = {3.0f, 4.0f}, w[2] = {1.0f, 2.0f};
  float out[2];
  rmsnorm_ref(x, w, 0.0f, 1, 2, out);
  CHECK(out[0] == Approx(3.0 / std::sqrt(12.5)));
  CHECK(out[1] == Approx(8.0 / std::sqrt(12.5)));
}

TEST_CASE("swiglu matches swiglu_ref", "[ops]") {
  simd_guard g;
  std::mt19937 rng(12);
  for (int64_t n : {1, 7, 8, 9, 33, 1000}) {
    auto gate = random_vec(rng, n, -20.0f, 20.0f);
    const auto up = random_vec(rng, n, -3.0f, 3.0f);
    const float extremes[] = {0.0f, -0.0f, -100.0f, 100.0f, -88.0f, 89.0f, 1e-20f};
    for (size_t i = 0; i < std::min<size_t>(gate.size(), 7); ++i)
      gate[i] = extremes[i];
    std::vector<float> ref(static_cast<size_t>(n));
    swiglu_ref(gate.data(), up.data(), n, ref.data());
    for (simd_level lv : levels()) {
      force_simd(lv);
      std::vector<float> y(static_cast<size_t>(n));
      swiglu(gate.data(), up.data(), n, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        INFO(to_string(lv) << " gate " << gate[i] << " up " << up[i]);
        REQUIRE(std::isfinite(y[i]));
        REQUIRE(y[i] == Approx(ref[i]).epsilon(1e-6).margin(1e-30));
      }
    }
  }
  // In place, as the engine calls it.
  for (simd_level lv : levels()) {
    force_simd(lv);
    auto gate = random_vec(rng, 37, -5.0f, 5.0f);
    const auto up = random_vec(rng, 37);
    std::vector<float> want(37);
    swiglu_ref(gate.data(), up.data(), 37, want.data());
    swiglu(gate.data(), up.data(), 37, gate.data());
    for (size_t i = 0; i < want.size(); ++i)
      REQUIRE(gate[i] == Approx(want[i]).epsilon(1e-6).margin(1e-30));
  }
  float out;
  const float one = 1.0f, two = 2.0f;
  swiglu_ref(&one, &two, 1, &out);
  CHECK(out == Approx(2.0 / (1.0 + std::exp(-1.0))));
}

TEST_CASE("rope_ref: position 0 is the identity", "[ops][rope]") {
  std::mt19937 rng(3);
  for (bool neox : {false, true}) {
    auto x = random_vec(rng, 2 * 64);
    const auto orig = x;
    rope_ref(x.data(), 2, 64, 64, 0, 10000.0f, neox);
    CHECK(x == orig);
  }
}

TEST_CASE("rope_ref: position 1 by hand, both modes", "[ops][rope]") {
  // head_dim = rot_dim = 4, base 10000: theta_i = 1 · 10000^(−2i/4) → 1 rad and 0.01 rad.
  const double a = 1.0, b = 0.01;
  SECTION("NORM pairs (0,1), (2,3)") {
    float x[4] = {1, 2, 3, 4};
    rope_ref(x, 1, 4, 4, 1, 10000.0f, false);
    CHECK(x[0] == Approx(1 * std::cos(a) - 2 * std::sin(a)).margin(1e-6));
    CHECK(x[1] == Approx(1 * std::sin(a) + 2 * std::cos(a)).margin(1e-6));
    CHECK(x[2] == Approx(3 * std::cos(b) - 4 * std::sin(b)).margin(1e-6));
    CHECK(x[3] == Approx(3 * std::sin(b) + 4 * std::cos(b)).margin(1e-6));
  }
  SECTION("NEOX pairs (0,2), (1,3)") {
    float x[4] = {1, 2, 3, 4};
    rope_ref(x, 1, 4, 4, 1, 10000.0f, true);
    CHECK(x[0] == Approx(1 * std::cos(a) - 3 * std::sin(a)).margin(1e-6));
    CHECK(x[2] == Approx(1 * std::sin(a) + 3 * std::cos(a)).margin(1e-6));
    CHECK(x[1] == Approx(2 * std::cos(b) - 4 * std::sin(b)).margin(1e-6));
    CHECK(x[3] == Approx(2 * std::sin(b) + 4 * std::cos(b)).margin(1e-6));
  }
  SECTION("dims beyond rot_dim unchanged, every head rotated alike") {
    float x[12] = {1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6};
    rope_ref(x, 2, 6, 4, 1, 10000.0f, false);
    for (int h = 0; h < 2; ++h) {
      CHECK(x[6 * h + 0] == Approx(1 * std::cos(a) - 2 * std::sin(a)).margin(1e-6));
      CHECK(x[6 * h + 3] == Approx(3 * std::sin(b) + 4 * std::cos(b)).margin(1e-6));
      CHECK(x[6 * h + 4] == 5.0f);
      CHECK(x[6 * h + 5] == 6.0f);
    }
  }
}

TEST_CASE("rope_ref at a far position agrees with the closed form", "[ops][rope]") {
  std::mt19937 rng(8);
  for (bool neox : {false, true}) {
    const int d = 128;
    const int64_t pos = 1000;
    auto x = random_vec(rng, d);
    const auto orig = x;
    rope_ref(x.data(), 1, d, d, pos, 1e6f, neox);
    for (int i = 0; i < d / 2; ++i) {
      const double theta = static_cast<double>(pos) * std::pow(1e6, -2.0 * i / d);
      const int ia = neox ? i : 2 * i, ib = neox ? i + d / 2 : 2 * i + 1;
      const double c = std::cos(theta), s = std::sin(theta);
      // theta is built by repeated float products, as ggml: ~1e-4 rad off at pos 1000.
      CHECK(x[ia] == Approx(orig[ia] * c - orig[ib] * s).margin(2e-3));
      CHECK(x[ib] == Approx(orig[ia] * s + orig[ib] * c).margin(2e-3));
    }
  }
}

TEST_CASE("softmax_ref", "[ops]") {
  float x[3] = {1, 2, 3};
  softmax_ref(x, 3);
  const double z = std::exp(-2.0) + std::exp(-1.0) + 1.0;
  CHECK(x[0] == Approx(std::exp(-2.0) / z));
  CHECK(x[1] == Approx(std::exp(-1.0) / z));
  CHECK(x[2] == Approx(1.0 / z));
  float big[2] = {1000.0f, 1001.0f};  // no overflow
  softmax_ref(big, 2);
  CHECK(big[0] == Approx(1.0 / (1.0 + std::exp(1.0))));
  CHECK(big[1] == Approx(1.0 / (1.0 + std::exp(-1.0))));
  float masked[3] = {-INFINITY, 0.0f, -INFINITY};
  softmax_ref(masked, 3);
  CHECK(masked[0] == 0.0f);
  CHECK(masked[1] == 1.0f);
}

TEST_CASE("dot_f32 on awkward lengths", "[ops]") {
  simd_guard g;
  std::mt19937 rng(21);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 1000}) {
    const auto a = random_vec(rng, n), b = random_vec(rng, n);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      exact += static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)];
      mag += std::fabs(static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)]);
    }
    for (simd_level lv : levels()) {
      force_simd(lv);
      INFO(to_string(lv) << " n " << n);
      REQUIRE(std::fabs(dot_f32(a.data(), b.data(), n) - exact) <= 1e-6 * mag + 1e-7);
    }
  }
}
