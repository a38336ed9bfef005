// The int8 weight-only GEMM (kernels/cuda/int8.hpp) against the CPU
// reference: weights quantized on the host as the engine does
// (quantize_int8_rows), the reference multiplying their dequantized values
// (dequantize_int8_rows) by the same activations, rounded to the activation
// type, in double (cpu::matmul_ref). m covers the GEMV (m <= 8) and the
// dequantize + cuBLAS path; n and k are awkward: k = 1003 leaves most rows
// unaligned and a partial last chunk, k = 1000 aligns every other row, and
// k = 2064 aligns every row and ends in a partial tile. Among the rows, one
// is all zeros (scale 0) and one is dominated by an outlier.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/int8_rows.hpp"
#include "kernels/cpu/ops.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/int8.hpp"
#include "tests/cuda/cuda_test_util.hpp"

using namespace llmux::cuda::test;

namespace {

/// An [n, k] matrix (n > 8) quantized on the host and uploaded, with its
/// dequantized f32 values for the reference.
struct int8_matrix {
  int64_t n, k;
  std::vector<float> dequantized;
  device_buffer q, scales;
  cu::int8_weights weights() { return {q.as<int8_t>(), scales.as<float>(), n, k}; }
};

int8_matrix make_matrix(int64_t n, int64_t k, std::mt19937& rng) {
  auto w = random_floats(static_cast<size_t>(n * k), rng);
  // Row 7: all zeros (scale 0). Row n/2: one outlier, so its other
  // elements quantize to 0 or ±1 steps.
  std::fill(w.begin() + 7 * k, w.begin() + 8 * k, 0.0f);
  w[static_cast<size_t>(n / 2 * k + k / 3)] = 50.0f;
  std::vector<int8_t> q(w.size());
  std::vector<float> scales(static_cast<size_t>(n));
  cpu::quantize_int8_rows(w.data(), n, k, q.data(), scales.data());
  std::vector<float> deq(w.size());
  cpu::dequantize_int8_rows(q.data(), scales.data(), n, k, deq.data());
  return {n, k, std::move(deq), upload_vec(q), upload_vec(scales)};
}

}  // namespace

TEST_CASE("int8 matmul: GEMV and dequantize paths against the CPU reference, both output types", "[cuda]") {
  std::mt19937 rng(41);
  cu::blas blas(nullptr);
  const int64_t n = 515;
  for (int64_t k : {1000, 1003, 2064}) {
    auto w = make_matrix(n, k, rng);
    for (act t : all_types) {
      device_buffer scratch(cu::int8_scratch_bytes(t, n, k));
      for (int64_t m : {1, 3, 8, 9, 64}) {
        INFO("type " << cu::to_string(t) << ", m " << m << ", k " << k);
        const auto x = rounded(t, random_floats(static_cast<size_t>(m * k), rng));
        auto dx = upload_act(t, x);
        std::vector<float> want(static_cast<size_t>(m * n));
        cpu::matmul_ref(cpu::matrix_view{w.dequantized.data(), llmux::kernels::dtype::f32, n, k}, x.data(), m,
                        want.data());
        const bool gemv = m <= cu::int8_gemv_max_m;
        for (act y_type : {t, act::f32}) {
          INFO("output " << cu::to_string(y_type));
          device_buffer dy(static_cast<size_t>(m * n) * cu::act_bytes(y_type));
          dy.poison();
          scratch.poison();
          cu::matmul_int8(t, w.weights(), dx.p, m, dy.p, y_type, scratch.p, scratch.bytes, blas, nullptr);
          // The GEMV's products are exact in f32, so only its sums and the
          // output round; the other path also rounds W to a 16-bit type.
          const double tol = (gemv || t == act::f32 ? tolerance(y_type) : tolerance(t)) * 4;
          require_close(decode(y_type, dy.download()), want, tol, gemv ? "int8 GEMV" : "int8 dequantize + cuBLAS");
        }
      }
    }
  }
}

TEST_CASE("int8 matmul: scratch checked only where needed, output types, empty shapes", "[cuda]") {
  std::mt19937 rng(42);
  cu::blas blas(nullptr);
  const int64_t n = 40, k = 48;
  auto w = make_matrix(n, k, rng);
  const act t = act::f16;
  const size_t need = cu::int8_scratch_bytes(t, n, k);
  CHECK(need == static_cast<size_t>(n * k * 2));
  device_buffer scratch(need + 16);
  auto dx = upload_act(t, random_floats(64 * k, rng));
  device_buffer dy(64 * n * 4);
  dy.poison();
  const auto untouched = dy.download();

  // m > int8_gemv_max_m: too little, none, or misaligned scratch throws before anything runs.
  const int64_t big = cu::int8_gemv_max_m + 1;
  CHECK_THROWS_AS(cu::matmul_int8(t, w.weights(), dx.p, big, dy.p, t, scratch.p, need - 1, blas, nullptr),
                  cu::cuda_error);
  CHECK_THROWS_AS(cu::matmul_int8(t, w.weights(), dx.p, big, dy.p, t, nullptr, 0, blas, nullptr), cu::cuda_error);
  CHECK_THROWS_AS(cu::matmul_int8(t, w.weights(), dx.p, big, dy.p, t, static_cast<char*>(scratch.p) + 2, need,
                                  blas, nullptr),
                  cu::cuda_error);
  // An output type other than the activation type or f32.
  CHECK_THROWS_AS(cu::matmul_int8(t, w.weights(), dx.p, 1, dy.p, act::bf16, nullptr, 0, blas, nullptr),
                  cu::cuda_error);
  // k must be positive.
  auto no_k = w.weights();
  no_k.k = 0;
  CHECK_THROWS_AS(cu::matmul_int8(t, no_k, dx.p, 1, dy.p, t, nullptr, 0, blas, nullptr), cu::cuda_error);
  // m = 0 and n = 0 do nothing.
  cu::matmul_int8(t, w.weights(), dx.p, 0, dy.p, t, nullptr, 0, blas, nullptr);
  auto no_n = w.weights();
  no_n.n = 0;
  cu::matmul_int8(t, no_n, dx.p, big, dy.p, t, nullptr, 0, blas, nullptr);
  CHECK(dy.download() == untouched);

  // The GEMV needs no scratch; exactly int8_scratch_bytes is enough for the other path.
  for (int64_t m : {cu::int8_gemv_max_m, big}) {
    INFO("m " << m);
    const auto x = rounded(t, random_floats(static_cast<size_t>(m * k), rng));
    auto dxm = upload_act(t, x);
    device_buffer out(static_cast<size_t>(m * n) * 2);
    out.poison();
    cu::matmul_int8(t, w.weights(), dxm.p, m, out.p, t, m == big ? scratch.p : nullptr, m == big ? need : 0, blas,
                    nullptr);
    std::vector<float> want(static_cast<size_t>(m * n));
    cpu::matmul_ref(cpu::matrix_view{w.dequantized.data(), llmux::kernels::dtype::f32, n, k}, x.data(), m,
                    want.data());
    require_close(decode(t, out.download()), want, tolerance(t) * 4, "int8 matmul");
  }
}
