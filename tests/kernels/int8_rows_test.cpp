// Per-row int8 weights (kernels/cpu/int8_rows.hpp): the scale of each row,
// the round-trip bound of half a scale step, zero rows, a row dominated by
// one outlier, exact multiples of the scale, and non-finite input.

#include "kernels/cpu/int8_rows.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace llmux::kernels;

namespace {

struct quantized {
  std::vector<int8_t> q;
  std::vector<float> scales;
  std::vector<float> back;  ///< dequantized
};

quantized round_trip(const std::vector<float>& w, int64_t rows, int64_t cols) {
  quantized out{std::vector<int8_t>(w.size()), std::vector<float>(static_cast<size_t>(rows)),
                std::vector<float>(w.size())};
  quantize_int8_rows(w.data(), rows, cols, out.q.data(), out.scales.data());
  dequantize_int8_rows(out.q.data(), out.scales.data(), rows, cols, out.back.data());
  return out;
}

float row_amax(const std::vector<float>& w, int64_t r, int64_t cols) {
  float a = 0.0f;
  for (int64_t j = 0; j < cols; ++j)
    a = std::max(a, std::fabs(w[r * cols + j]));
  return a;
}

// Every element within half a step of its row (plus f32 rounding of the
// quotient and the product), every q in range, and the row's largest
// magnitude at ±127.
void check_bound(const std::vector<float>& w, const quantized& z, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float amax = row_amax(w, r, cols);
    INFO("row " << r << ", max |w| " << amax);
    REQUIRE(z.scales[r] == amax / 127.0f);
    int top = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = static_cast<size_t>(r * cols + j);
      REQUIRE(z.q[i] != -128);  // symmetric: [-127, 127]
      top = std::max(top, std::abs(static_cast<int>(z.q[i])));
      const double err = std::fabs(static_cast<double>(z.back[i]) - w[i]);
      if (!(err <= z.scales[r] * (0.5 + 1e-5))) {
        INFO("column " << j << ": w " << w[i] << ", q " << int{z.q[i]} << ", back " << z.back[i]);
        REQUIRE(err <= z.scales[r] * (0.5 + 1e-5));
      }
    }
    CHECK(top == (amax > 0.0f ? 127 : 0));
  }
}

}  // namespace

TEST_CASE("int8 rows: every element within half a scale step, each row on its own scale", "[int8]") {
  std::mt19937 rng(31);
  const int64_t rows = 37, cols = 1003;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  // Rows of very different magnitudes: a shared scale would flatten the small ones.
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, static_cast<int>(r % 13) - 8);
    for (int64_t j = 0; j < cols; ++j)
      w[static_cast<size_t>(r * cols + j)] = mag * u(rng);
  }
  const auto z = round_trip(w, rows, cols);
  check_bound(w, z, rows, cols);
}

TEST_CASE("int8 rows: an all-zero row gets scale 0 and q 0, beside ordinary rows", "[int8]") {
  std::mt19937 rng(32);
  const int64_t rows = 3, cols = 45;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (auto& v : w)
    v = u(rng);
  std::fill(w.begin() + cols, w.begin() + 2 * cols, 0.0f);
  w[cols + 7] = -0.0f;  // a negative zero is still zero
  const auto z = round_trip(w, rows, cols);
  CHECK(z.scales[1] == 0.0f);
  for (int64_t j = cols; j < 2 * cols; ++j) {
    CHECK(z.q[j] == 0);
    CHECK(z.back[j] == 0.0f);
  }
  check_bound(w, z, rows, cols);
}

TEST_CASE("int8 rows: one huge outlier sets its row's scale, the rest round to few steps", "[int8]") {
  std::mt19937 rng(33);
  const int64_t rows = 2, cols = 300;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : w)
    v = u(rng);
  w[123] = 1000.0f;  // row 0
  const auto z = round_trip(w, rows, cols);
  CHECK(z.scales[0] == 1000.0f / 127.0f);
  CHECK(z.q[123] == 127);
  CHECK(std::fabs(z.back[123] - 1000.0f) <= 1000.0f * 1e-6f);
  // The rest of row 0 is now |w| <= 1 against a step of ~7.9: all round to 0.
  for (int64_t j = 0; j < cols; ++j)
    if (j != 123)
      CHECK(z.q[j] == 0);
  // Row 1 keeps its own scale.
  CHECK(z.scales[1] == row_amax(w, 1, cols) / 127.0f);
  check_bound(w, z, rows, cols);
}

TEST_CASE("int8 rows: multiples of the scale come back exactly, ties round away from zero", "[int8]") {
  // s = 3·2^-10: 127·s and (127·s)/127 are exact in f32, so the row's scale is s.
  const float s = 3.0f * 0x1p-10f;
  const int64_t cols = 2 * 127 + 1 + 4;
  std::vector<float> w;
  for (int j = -127; j <= 127; ++j)
    w.push_back(static_cast<float>(j) * s);
  for (float half : {2.5f, -2.5f, 0.5f, -0.5f})
    w.push_back(half * s);
  REQUIRE(static_cast<int64_t>(w.size()) == cols);
  // The same values scaled by a power of two in a second row, and negated
  // in a third.
  const size_t c = static_cast<size_t>(cols);
  for (size_t j = 0; j < c; ++j)
    w.push_back(w[j] * 0x1p-20f);
  for (size_t j = 0; j < c; ++j)
    w.push_back(-w[j]);
  const auto z = round_trip(w, 3, cols);
  for (int64_t r = 0; r < 3; ++r) {
    INFO("row " << r);
    CHECK(z.scales[r] == (r == 1 ? s * 0x1p-20f : s));
    const int sign = r == 2 ? -1 : 1;
    for (int j = 0; j < 255; ++j) {
      const size_t i = static_cast<size_t>(r) * c + static_cast<size_t>(j);
      REQUIRE(z.q[i] == sign * (j - 127));
      REQUIRE(z.back[i] == w[i]);
    }
    const size_t ties = static_cast<size_t>(r) * c + 255;
    CHECK(z.q[ties + 0] == sign * 3);
    CHECK(z.q[ties + 1] == sign * -3);
    CHECK(z.q[ties + 2] == sign * 1);
    CHECK(z.q[ties + 3] == sign * -1);
  }
}

TEST_CASE("int8 rows: NaN or infinity is rejected, naming the row", "[int8]") {
  const int64_t rows = 3, cols = 4;
  std::vector<int8_t> q(rows * cols);
  std::vector<float> scales(rows);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> w(rows * cols, 0.25f);
    w[2 * cols + 1] = bad;
    try {
      quantize_int8_rows(w.data(), rows, cols, q.data(), scales.data());
      FAIL("no exception for " << bad);
    } catch (const std::invalid_argument& e) {
      CHECK(std::string{e.what()}.find("row 2") != std::string::npos);
    }
  }
}

TEST_CASE("int8 rows: no rows or no columns write nothing", "[int8]") {
  std::vector<float> scales{-1.0f};
  quantize_int8_rows(nullptr, 0, 16, nullptr, scales.data());
  CHECK(scales[0] == -1.0f);
  int8_t q = 5;
  quantize_int8_rows(nullptr, 1, 0, &q, scales.data());
  CHECK(scales[0] == 0.0f);  // an empty row has scale 0
  CHECK(q == 5);
}
