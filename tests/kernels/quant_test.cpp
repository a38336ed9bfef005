// Weight formats: fp16/bf16 conversions at their edges, hand-built blocks of
// every quantised type decoded to values worked out from ggml's layout, and
// quantise→dequantise round trips on random data.

#include "kernels/cpu/quant.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

using namespace llmux::kernels;

namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<float> decode(dtype t, const void* src, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row_ref(t, src, out.data(), n);
  return out;
}

// Packs 6-bit scales and mins the way the header describes ggml's scales[12]:
// sub-blocks 0..3 in the low 6 bits of bytes 0..3 / 4..7; sub-blocks 4..7
// as nibbles in bytes 8..11 with their top two bits in bits 6..7 of bytes
// 0..3 (scales) and 4..7 (mins).
void pack_k4(const int sc[8], const int mn[8], uint8_t out[12]) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j]);
    out[j + 4] = static_cast<uint8_t>(mn[j]);
  }
  for (int j = 4; j < 8; ++j) {
    out[j + 4] = static_cast<uint8_t>((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
    out[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
    out[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
  }
}

const int k4_sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
const int k4_mn[8] = {0, 1, 2, 3, 20, 40, 60, 63};

}  // namespace

TEST_CASE("fp16 decodes special and boundary values", "[quant][fp16]") {
  CHECK(fp16_to_fp32(0x0000) == 0.0f);
  CHECK(std::signbit(fp16_to_fp32(0x8000)));
  CHECK(fp16_to_fp32(0x8000) == 0.0f);
  CHECK(fp16_to_fp32(0x3c00) == 1.0f);
  CHECK(fp16_to_fp32(0xc000) == -2.0f);
  CHECK(fp16_to_fp32(0x3555) == 0x1.554p-2f);  // 0.333251953125
  CHECK(fp16_to_fp32(0x7bff) == 65504.0f);
  CHECK(fp16_to_fp32(0x0400) == 0x1p-14f);      // smallest normal
  CHECK(fp16_to_fp32(0x0001) == 0x1p-24f);      // smallest subnormal
  CHECK(fp16_to_fp32(0x03ff) == 1023 * 0x1p-24f);
  CHECK(fp16_to_fp32(0x8001) == -0x1p-24f);
  CHECK(fp16_to_fp32(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(fp16_to_fp32(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(fp16_to_fp32(0x7e00)));
  CHECK(std::isnan(fp16_to_fp32(0x7c01)));  // signalling NaN stays NaN
}

TEST_CASE("fp16 encodes with round to nearest even", "[quant][fp16]") {
  CHECK(fp32_to_fp16(0.0f) == 0x0000);
  CHECK(fp32_to_fp16(-0.0f) == 0x8000);
  CHECK(fp32_to_fp16(1.0f) == 0x3c00);
  CHECK(fp32_to_fp16(-2.0f) == 0xc000);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  CHECK(fp32_to_fp16(1.0f + 0x1p-11f) == 0x3c00);
  // 1 + 3·2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even).
  CHECK(fp32_to_fp16(1.0f + 3 * 0x1p-11f) == 0x3c02);
  CHECK(fp32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);  // just above half
  CHECK(fp32_to_fp16(65504.0f) == 0x7bff);
  CHECK(fp32_to_fp16(65519.0f) == 0x7bff);
  CHECK(fp32_to_fp16(65520.0f) == 0x7c00);  // tie with 65536 → even → inf
  CHECK(fp32_to_fp16(1e10f) == 0x7c00);
  CHECK(fp32_to_fp16(-1e10f) == 0xfc00);
  CHECK(fp32_to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
  // Subnormals: units of 2^-24.
  CHECK(fp32_to_fp16(0x1p-24f) == 0x0001);
  CHECK(fp32_to_fp16(0x1p-25f) == 0x0000);                // tie → 0 (even)
  CHECK(fp32_to_fp16(0x1.000002p-25f) == 0x0001);         // just above the tie
  CHECK(fp32_to_fp16(3 * 0x1p-25f) == 0x0002);            // 1.5 units → 2 (even)
  CHECK(fp32_to_fp16(5 * 0x1p-25f) == 0x0002);            // 2.5 units → 2 (even)
  CHECK(fp32_to_fp16(1023.5f * 0x1p-24f) == 0x0400);      // rounds up into the normals
  CHECK(fp32_to_fp16(-0x1p-24f) == 0x8001);
  CHECK(fp32_to_fp16(1e-30f) == 0x0000);
  CHECK(fp32_to_fp16(from_bits(0x00000001)) == 0x0000);   // f32 subnormal
  const uint16_t nan = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
}

TEST_CASE("fp16 round trips every half exactly", "[quant][fp16]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      REQUIRE(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
      continue;
    }
    REQUIRE(fp32_to_fp16(f) == h);
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t hw_fp32_to_fp16(float f) {
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

TEST_CASE("fp16 encoding agrees with the F16C instruction", "[quant][fp16]") {
  if (!__builtin_cpu_supports("f16c")) {
    WARN("no F16C on this CPU: skipped");
    return;
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any;
  // Random bit patterns, biased towards the half range (exponents 100..145).
  for (int i = 0; i < 400000; ++i) {
    uint32_t u = any(rng);
    if (i % 2)
      u = (u & 0x807fffffu) | ((100u + (u % 46u)) << 23);
    const float f = from_bits(u);
    if (std::isnan(f))
      continue;
    REQUIRE(fp32_to_fp16(f) == hw_fp32_to_fp16(f));
  }
}
#endif

TEST_CASE("bf16 conversions", "[quant][bf16]") {
  CHECK(bf16_to_fp32(0x3f80) == 1.0f);
  CHECK(bf16_to_fp32(0xc040) == -3.0f);
  CHECK(bf16_to_fp32(0x0001) == from_bits(0x00010000));  // subnormal kept
  CHECK(bf16_to_fp32(0x7f80) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bf16_to_fp32(0x7fc0)));
  CHECK(fp32_to_bf16(1.0f) == 0x3f80);
  CHECK(fp32_to_bf16(from_bits(0x3f808000)) == 0x3f80);  // tie → even
  CHECK(fp32_to_bf16(from_bits(0x3f818000)) == 0x3f82);  // tie → even (up)
  CHECK(fp32_to_bf16(from_bits(0x3f808001)) == 0x3f81);
  CHECK(fp32_to_bf16(from_bits(0x00018000)) == 0x0002);  // subnormal, tie → even
  CHECK(fp32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(fp32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80);  // FLT_MAX rounds to inf
  const uint16_t nan = fp32_to_bf16(from_bits(0x7f800001));  // sNaN → quiet NaN
  CHECK(std::isnan(bf16_to_fp32(nan)));
  CHECK((nan & 0x0040) != 0);
}

TEST_CASE("Q8_0 block decodes to d·q", "[quant]") {
  block_q8_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 32; ++j)
    b.qs[j] = static_cast<int8_t>(j - 16);
  b.qs[31] = -128;
  const auto x = decode(dtype::q8_0, &b, 32);
  for (int j = 0; j < 31; ++j)
    CHECK(x[j] == 0.5f * static_cast<float>(j - 16));
  CHECK(x[31] == -64.0f);
}

TEST_CASE("Q4_0 block: low nibbles are elements 0..15, high 16..31", "[quant]") {
  block_q4_0 b{};
  b.d = 0x4000;  // 2.0
  for (int j = 0; j < 16; ++j)
    b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto x = decode(dtype::q4_0, &b, 32);
  CHECK(x[0] == -16.0f);   // 2·(0−8)
  CHECK(x[8] == 0.0f);
  CHECK(x[15] == 14.0f);   // 2·(15−8)
  CHECK(x[16] == 14.0f);   // high nibble of qs[0] = 15
  CHECK(x[31] == -16.0f);  // high nibble of qs[15] = 0
  for (int j = 0; j < 16; ++j) {
    CHECK(x[j] == 2.0f * static_cast<float>(j - 8));
    CHECK(x[j + 16] == 2.0f * static_cast<float>(7 - j));
  }
}

TEST_CASE("Q4_1 block decodes to d·q + m", "[quant]") {
  block_q4_1 b{};
  b.d = 0x3400;  // 0.25
  b.m = 0xbc00;  // -1
  for (int j = 0; j < 16; ++j)
    b.qs[j] = static_cast<uint8_t>(j | (((j * 7) & 15) << 4));
  const auto x = decode(dtype::q4_1, &b, 32);
  CHECK(x[0] == -1.0f);
  CHECK(x[15] == 2.75f);
  CHECK(x[17] == 0.75f);  // (7·1)&15 = 7 → 1.75 − 1
  for (int j = 0; j < 16; ++j) {
    CHECK(x[j] == 0.25f * static_cast<float>(j) - 1.0f);
    CHECK(x[j + 16] == 0.25f * static_cast<float>((j * 7) & 15) - 1.0f);
  }
}

TEST_CASE("Q5_0 block: fifth bit j of qh, x = d·(q − 16)", "[quant]") {
  block_q5_0 b{};
  b.d = 0x4000;  // 2.0
  for (int j = 0; j < 16; ++j)
    b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const uint32_t qh = 0x80010003u;  // bits 0, 1, 16, 31
  std::memcpy(b.qh, &qh, sizeof qh);
  const auto x = decode(dtype::q5_0, &b, 32);
  CHECK(x[0] == 2.0f * (0 + 16 - 16));   // bit 0 set
  CHECK(x[1] == 2.0f * (1 + 16 - 16));   // bit 1 set
  CHECK(x[2] == 2.0f * (2 - 16));        // no fifth bit
  CHECK(x[16] == 2.0f * (15 + 16 - 16)); // high nibble of qs[0], bit 16
  CHECK(x[17] == 2.0f * (14 - 16));
  CHECK(x[31] == 2.0f * (0 + 16 - 16));  // high nibble of qs[15] = 0, bit 31
}

TEST_CASE("Q5_1 block decodes to d·q + m with the fifth bit", "[quant]") {
  block_q5_1 b{};
  b.d = 0x3400;  // 0.25
  b.m = 0xbc00;  // -1
  for (int j = 0; j < 16; ++j)
    b.qs[j] = static_cast<uint8_t>(j | (j << 4));
  const uint32_t qh = 0x00020004u;  // bits 2 and 17
  std::memcpy(b.qh, &qh, sizeof qh);
  const auto x = decode(dtype::q5_1, &b, 32);
  CHECK(x[0] == -1.0f);
  CHECK(x[2] == 0.25f * 18 - 1.0f);
  CHECK(x[3] == 0.25f * 3 - 1.0f);
  CHECK(x[17] == 0.25f * 17 - 1.0f);
  CHECK(x[18] == 0.25f * 2 - 1.0f);
}

TEST_CASE("Q4_K block: packed 6-bit scales/mins and nibble order", "[quant][kquant]") {
  block_q4_k b{};
  b.d = 0x3c00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  pack_k4(k4_sc, k4_mn, b.scales);
  // The packing worked out by hand (see pack_k4 for the rule).
  const uint8_t expected_scales[12] = {0x41, 0x82, 0xC3, 0xC4, 0x40, 0x81,
                                       0xC2, 0xC3, 0x41, 0x81, 0xC2, 0xFF};
  CHECK(std::memcmp(b.scales, expected_scales, 12) == 0);
  // 4 chunks of 32 bytes; chunk c holds sub-block 2c (low nibbles) and 2c+1 (high).
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>((l & 0xF) | (((l + c) & 0xF) << 4));
  const auto x = decode(dtype::q4_k, &b, 256);
  CHECK(x[0] == 0.0f);             // 1·1·0 − 0.5·0
  CHECK(x[5] == 5.0f);             // sub-block 0: 1·5
  CHECK(x[32] == -0.5f);           // sub-block 1: 2·0 − 0.5·1
  CHECK(x[33] == 1.5f);            // 2·1 − 0.5
  CHECK(x[128 + 3] == 17.0f * 3 - 10.0f);   // sub-block 4: sc 17, min 20
  CHECK(x[224 + 31] == 63.0f * 2 - 31.5f);  // sub-block 7: (31+3)&15 = 2
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const float lo = static_cast<float>(k4_sc[2 * c] * (l & 0xF)) - 0.5f * static_cast<float>(k4_mn[2 * c]);
      const float hi = static_cast<float>(k4_sc[2 * c + 1] * ((l + c) & 0xF)) -
                       0.5f * static_cast<float>(k4_mn[2 * c + 1]);
      CHECK(x[64 * c + l] == lo);
      CHECK(x[64 * c + 32 + l] == hi);
    }
  }
}

TEST_CASE("Q5_K block: fifth bit from qh, two bits per 64-element chunk", "[quant][kquant]") {
  block_q5_k b{};
  b.d = 0x3c00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  pack_k4(k4_sc, k4_mn, b.scales);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<uint8_t>((l & 0xF) | (((l + c) & 0xF) << 4));
  for (int l = 0; l < 32; ++l)
    b.qh[l] = static_cast<uint8_t>(l * 37);
  const auto x = decode(dtype::q5_k, &b, 256);
  // qh[1] = 37 = 0b00100101: bit 0 → element 1 gets +16, bit 2 → element 65.
  CHECK(x[1] == 1.0f * (1 + 16));
  CHECK(x[33] == 2.0f * 1 - 0.5f);  // bit 1 of qh[1] is 0: q = 1
  CHECK(x[65] == 3.0f * (1 + 16) - 1.0f);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const int h0 = (b.qh[l] >> (2 * c)) & 1;
      const int h1 = (b.qh[l] >> (2 * c + 1)) & 1;
      const int q0 = (l & 0xF) + 16 * h0;
      const int q1 = ((l + c) & 0xF) + 16 * h1;
      CHECK(x[64 * c + l] == static_cast<float>(k4_sc[2 * c] * q0) - 0.5f * static_cast<float>(k4_mn[2 * c]));
      CHECK(x[64 * c + 32 + l] ==
            static_cast<float>(k4_sc[2 * c + 1] * q1) - 0.5f * static_cast<float>(k4_mn[2 * c + 1]));
    }
  }
}

TEST_CASE("Q6_K block: ql/qh split and 16 signed scales", "[quant][kquant]") {
  block_q6_k b{};
  b.d = 0x3800;  // 0.5
  for (int g = 0; g < 16; ++g)
    b.scales[g] = static_cast<int8_t>((g % 2 ? -1 : 1) * (g + 1));
  for (int i = 0; i < 128; ++i)
    b.ql[i] = static_cast<uint8_t>(i * 29 + 3);
  for (int i = 0; i < 64; ++i)
    b.qh[i] = static_cast<uint8_t>(i * 53 + 11);
  const auto x = decode(dtype::q6_k, &b, 256);
  // Element 0: ql[0] = 3 (low nibble 3), qh[0] = 11 (bits 0..1 = 3) → q = 3 | 3<<4 = 51;
  // scale 1 → 0.5·1·(51−32) = 9.5.
  CHECK(x[0] == 9.5f);
  // Element 64: high nibble of ql[0] = 0, qh[0] bits 4..5 = 0 → q = 0; scale[4] = 5 → −80.
  CHECK(x[64] == -80.0f);
  // Element 16: scale[1] = −2; ql[16] = 16·29+3 = 467&255 = 211 (low 3), qh[16] = 16·53+11 = 859&255 = 91
  // (bits 0..1 = 3) → q = 51 → 0.5·(−2)·19 = −19.
  CHECK(x[16] == -19.0f);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, r = e % 128, c = r / 32, l = r % 32;
    const uint8_t qlb = b.ql[64 * half + l + 32 * (c & 1)];
    const int nib = c < 2 ? (qlb & 0xF) : (qlb >> 4);
    const int hb = (b.qh[32 * half + l] >> (2 * c)) & 3;
    const int q = nib | (hb << 4);
    const int scale = b.scales[8 * half + l / 16 + 2 * c];
    CHECK(x[static_cast<size_t>(e)] == 0.5f * static_cast<float>(scale) * static_cast<float>(q - 32));
  }
}

TEST_CASE("Q8_K and Q8_1 reference encoders", "[quant]") {
  std::vector<float> v(256);
  for (int i = 0; i < 256; ++i)
    v[static_cast<size_t>(i)] = std::sin(0.1f * static_cast<float>(i)) * 3.0f;
  v[100] = -4.0f;  // the signed max: scale maps it to −127
  block_q8_k k{};
  quantize_row_ref(dtype::q8_k, v.data(), &k, 256);
  CHECK(k.qs[100] == -127);
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i)
      s += k.qs[16 * g + i];
    CHECK(k.bsums[g] == s);
  }
  const auto back = decode(dtype::q8_k, &k, 256);
  for (int i = 0; i < 256; ++i)
    CHECK(std::fabs(back[static_cast<size_t>(i)] - v[static_cast<size_t>(i)]) <= 4.0f / 127 * 0.5f + 1e-6f);

  block_q8_1 q[8];
  quantize_row_ref(dtype::q8_1, v.data(), q, 256);
  for (const auto& b : q) {
    int s = 0;
    for (int8_t x : b.qs)
      s += x;
    CHECK(fp16_to_fp32(b.s) == Approx(static_cast<float>(s) * fp16_to_fp32(b.d)).epsilon(1e-3));
  }
}

TEST_CASE("quantize then dequantize stays close to the input", "[quant][roundtrip]") {
  struct bound {
    dtype t;
    double rel_rms;  // RMS error / RMS input
  };
  const bound bounds[] = {
      {dtype::f32, 0.0},    {dtype::f16, 5e-4},   {dtype::bf16, 4e-3},  {dtype::q8_0, 6e-3},
      {dtype::q8_k, 8e-3},  {dtype::q4_0, 0.12},  {dtype::q4_1, 0.09},  {dtype::q5_0, 0.06},
      {dtype::q5_1, 0.045}, {dtype::q4_k, 0.08},
      {dtype::q5_k, 0.04},  {dtype::q6_k, 0.018},
  };
  std::mt19937 rng(42);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(-2.0f, 3.0f);
  const int64_t n = 256 * 3;
  for (const auto& b : bounds) {
    for (int dist = 0; dist < 2; ++dist) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x)
        v = dist == 0 ? gauss(rng) : uni(rng);
      std::vector<uint8_t> q(row_bytes(b.t, n));
      quantize_row_ref(b.t, x.data(), q.data(), n);
      const auto y = decode(b.t, q.data(), n);
      double err = 0, ref = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(y[static_cast<size_t>(i)]) - x[static_cast<size_t>(i)];
        err += d * d;
        ref += static_cast<double>(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
      }
      INFO(to_string(b.t) << " dist " << dist << " rel rms " << std::sqrt(err / ref));
      CHECK(std::sqrt(err / ref) <= b.rel_rms);
    }
  }
}

TEST_CASE("all-zero rows encode and decode to zeros", "[quant]") {
  const dtype types[] = {dtype::f16,  dtype::bf16, dtype::q8_0, dtype::q8_1, dtype::q8_k,
                         dtype::q4_0, dtype::q4_1, dtype::q5_0, dtype::q5_1, dtype::q4_k,
                         dtype::q5_k, dtype::q6_k};
  const std::vector<float> zeros(512, 0.0f);
  for (dtype t : types) {
    std::vector<uint8_t> q(row_bytes(t, 512), 0xAB);
    quantize_row_ref(t, zeros.data(), q.data(), 512);
    const auto y = decode(t, q.data(), 512);
    for (float v : y)
      REQUIRE(v == 0.0f);
  }
}

TEST_CASE("unsupported types are rejected", "[quant]") {
  float out[32];
  uint8_t buf[64] = {};
  CHECK_THROWS_AS(dequantize_row_ref(dtype::q2_k, buf, out, 32), std::invalid_argument);
  CHECK_THROWS_AS(quantize_row_ref(dtype::q2_k, out, buf, 256), std::invalid_argument);
}
