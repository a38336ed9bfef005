// AVX2 + FMA + F16C kernels. Only called after __builtin_cpu_supports said
// yes (see ops.cpp). Everything after the target pragma is compiled for
// those ISAs, so this file must not instantiate templates or inline
// functions from other headers there: the linker could pick that copy for
// code that runs on any x86-64.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/quant.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace llmux::kernels::detail {

// y[i·ldy + r] = W row r · activation row i (see gemm_blocks.inc).
using gemm_fn = void (*)(const void* w, size_t w_stride, int64_t rows, const void* act,
                         size_t act_stride, int64_t m, int64_t k, float* y, int64_t ldy);

// Per-thread scratch of at least `bytes`, reused across calls (ops.cpp).
uint8_t* gemm_scratch(size_t bytes);

namespace {

inline float hsum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Σ x·y over 32 signed bytes, as 8 int32 lanes (ggml's sign trick:
// maddubs needs its first operand unsigned).
inline __m256i dot_i8_pairs(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
}

// Σ u·y over 32 unsigned (≤ 63) × signed bytes, as 16 int16 lanes.
inline __m256i dot_u8_i16(__m256i u, __m256i y) { return _mm256_maddubs_epi16(u, y); }

// Σ u·s over 32 unsigned (≤ 127) × signed bytes, as 8 int32 lanes.
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline __m256i dot_u8_i8_acc(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(acc, dot_u8_i8(u, s));
}

inline float hsum8(__m256 v) { return hsum(v); }

// Q5's fifth bits: byte j is 0x10 where bit j of the little-endian 32-bit qh
// is set (ggml's bytes_from_bits_32).
inline __m256i high_bits_32(const uint8_t* qh) {
  uint32_t x;
  std::memcpy(&x, qh, sizeof x);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                         0x0101010101010101, 0x0000000000000000);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(x)), shuf);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_and_si256(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

// Q8_0 on AVX2: maddubs saturates past 127 · 127 · 2, so q stays signed and
// takes the sign trick (dot_i8_pairs) instead of an offset.
struct q8_0_fmt {
  static constexpr size_t bytes = 34;
  static constexpr bool has_min = false;
  static constexpr int off = 0;
  static __m256i unpack(const uint8_t* b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)); }
  static __m256i dot(__m256i acc, __m256i w, __m256i a) { return _mm256_add_epi32(acc, dot_i8_pairs(w, a)); }
};

// acc + (Σ pairs of u·a as int16) × sc, per int32 lane (gemm_kquants.inc).
inline __m256i madd_scaled(__m256i u, __m256i a, __m256i sc, __m256i acc) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), sc));
}

// The tiles' shapes: AVX2 has 16 vector registers, but on the 2-vCPU EPYC
// (Zen 3) no shape timed apart from these (4×4 against 4×2, 2×4, 3×3, 4×3,
// 3×2 for the 32-element types; 2×4 against 2×2, 3×2, 1×4 for the K-quants),
// within the VM's run-to-run spread.
constexpr int BRM = 4, BRN = 4;  // gemm_blocks.inc's tile (Q8_0, Q5_1)
constexpr int KRM = 2, KRN = 4;  // gemm_kquants.inc's tile

#include "kernels/cpu/gemm_blocks.inc"
#include "kernels/cpu/gemm_kquants.inc"
#include "kernels/cpu/gemm_lanes.inc"

// ---- exp, as ggml's ggml_v_expf (ARM optimized-routines), so silu matches
// llama.cpp's vectorised one bit for bit. ----
inline __m256 v_expf(__m256 x) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
  const __m256i c = _mm256_castps_si256(
      _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(126), _CMP_GT_OQ));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
  if (!_mm256_movemask_ps(_mm256_castsi256_ps(c)))
    return _mm256_fmadd_ps(j, k, k);
  const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                     _mm256_set1_epi32(static_cast<int>(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256i d = _mm256_castps_si256(
      _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192), _CMP_GT_OQ));
  return _mm256_or_ps(
      _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
      _mm256_andnot_ps(_mm256_castsi256_ps(d),
                       _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                                    _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

inline __m256 v_silu(__m256 x) {
  const __m256 neg_x = _mm256_sub_ps(_mm256_setzero_ps(), x);
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1), v_expf(neg_x)));
}

inline __m256 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 load_bf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

inline float bf16f(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline int k_mins_dot(const uint8_t* mn, const int16_t* bsums) {
  int s = 0;
  for (int j = 0; j < 8; ++j)
    s += mn[j] * (bsums[2 * j] + bsums[2 * j + 1]);
  return s;
}

template <bool with_sum>
inline void to_q8_block(const float* x, uint16_t* d_out, int8_t* qs, uint16_t* s_out) {
  __m256 v0 = _mm256_loadu_ps(x);
  __m256 v1 = _mm256_loadu_ps(x + 8);
  __m256 v2 = _mm256_loadu_ps(x + 16);
  __m256 v3 = _mm256_loadu_ps(x + 24);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_andnot_ps(sign, v0);
  amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v1));
  amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v2));
  amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v3));
  __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float max_scalar = _mm_cvtss_f32(m4);
  const float d = max_scalar / 127.f;
  *d_out = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
  const __m256 mul = _mm256_set1_ps(max_scalar != 0.0f ? 127.f / max_scalar : 0.0f);
  __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if constexpr (with_sum) {
    const int sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    *s_out = _cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT);
  }
  i0 = _mm256_packs_epi32(i0, i1);
  i2 = _mm256_packs_epi32(i2, i3);
  i0 = _mm256_packs_epi16(i0, i2);
  i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), i0);
}

// One 32-element block: acc + d_w·d_a·Σ q_w·q_a.
inline __m256 block_q8_0_q8_0(const block_q8_0& a, const block_q8_0& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_pairs(qa, qb)), acc);
}

inline __m256 block_q4_0_q8_0(const block_q4_0& a, const block_q8_0& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = _mm256_sub_epi8(nibbles_32(a.qs), _mm256_set1_epi8(8));
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_pairs(qa, qb)), acc);
}

// The d·Σq·q_a part only; the m_w·s_a part is summed by the caller.
inline __m256 block_q4_1_q8_1(const block_q4_1& a, const block_q8_1& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = nibbles_32(a.qs);
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  const __m256i p = _mm256_madd_epi16(dot_u8_i16(qa, qb), _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

}  // namespace

float avx2_dot_f32(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i)
    sum += a[i] * b[i];
  return sum;
}

float avx2_vdot_f32(const void* w, const void* x, int64_t k) {
  return avx2_dot_f32(static_cast<const float*>(w), static_cast<const float*>(x), k);
}

float avx2_vdot_f16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    acc0 = _mm256_fmadd_ps(load_f16(a + i), load_f16(b + i), acc0);
    acc1 = _mm256_fmadd_ps(load_f16(a + i + 8), load_f16(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(load_f16(a + i + 16), load_f16(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(load_f16(a + i + 24), load_f16(b + i + 24), acc3);
  }
  for (; i + 8 <= k; i += 8)
    acc0 = _mm256_fmadd_ps(load_f16(a + i), load_f16(b + i), acc0);
  float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < k; ++i)
    sum += h2f(a[i]) * h2f(b[i]);
  return sum;
}

float avx2_vdot_bf16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    acc0 = _mm256_fmadd_ps(load_bf16(a + i), load_bf16(b + i), acc0);
    acc1 = _mm256_fmadd_ps(load_bf16(a + i + 8), load_bf16(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(load_bf16(a + i + 16), load_bf16(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(load_bf16(a + i + 24), load_bf16(b + i + 24), acc3);
  }
  for (; i + 8 <= k; i += 8)
    acc0 = _mm256_fmadd_ps(load_bf16(a + i), load_bf16(b + i), acc0);
  float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < k; ++i)
    sum += bf16f(a[i]) * bf16f(b[i]);
  return sum;
}

// The 32-element block types: two blocks per iteration into two
// accumulators, so consecutive FMAs do not wait on each other.
// The 32-element block types: two blocks per iteration into two
// accumulators, so consecutive FMAs do not wait on each other.
float avx2_vdot_q8_0(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q8_0*>(w);
  const auto* b = static_cast<const block_q8_0*>(x);
  const int64_t nb = k / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t ib = 0;
  for (; ib + 1 < nb; ib += 2) {
    acc0 = block_q8_0_q8_0(a[ib], b[ib], acc0);
    acc1 = block_q8_0_q8_0(a[ib + 1], b[ib + 1], acc1);
  }
  if (ib < nb)
    acc0 = block_q8_0_q8_0(a[ib], b[ib], acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float avx2_vdot_q4_0(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_0*>(w);
  const auto* b = static_cast<const block_q8_0*>(x);
  const int64_t nb = k / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t ib = 0;
  for (; ib + 1 < nb; ib += 2) {
    acc0 = block_q4_0_q8_0(a[ib], b[ib], acc0);
    acc1 = block_q4_0_q8_0(a[ib + 1], b[ib + 1], acc1);
  }
  if (ib < nb)
    acc0 = block_q4_0_q8_0(a[ib], b[ib], acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float avx2_vdot_q4_1(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_1*>(w);
  const auto* b = static_cast<const block_q8_1*>(x);
  const int64_t nb = k / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float summs = 0.0f;
  int64_t ib = 0;
  for (; ib + 1 < nb; ib += 2) {
    acc0 = block_q4_1_q8_1(a[ib], b[ib], acc0);
    acc1 = block_q4_1_q8_1(a[ib + 1], b[ib + 1], acc1);
    summs += h2f(a[ib].m) * h2f(b[ib].s);
    summs += h2f(a[ib + 1].m) * h2f(b[ib + 1].s);
  }
  if (ib < nb) {
    acc0 = block_q4_1_q8_1(a[ib], b[ib], acc0);
    summs += h2f(a[ib].m) * h2f(b[ib].s);
  }
  return hsum(_mm256_add_ps(acc0, acc1)) + summs;
}

float avx2_vdot_q4_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    uint8_t sc[8], mn[8];
    k4_scales_mins(a[i].scales, sc, mn);
    __m256i sumi = _mm256_setzero_si256();
    const uint8_t* q4 = a[i].qs;
    const int8_t* q8 = b[i].qs;
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q4 + 32 * j));
      const __m256i lo = _mm256_and_si256(bits, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
      const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 64 * j));
      const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 64 * j + 32));
      const __m256i p0 = _mm256_madd_epi16(dot_u8_i16(lo, y0), _mm256_set1_epi16(sc[2 * j]));
      const __m256i p1 = _mm256_madd_epi16(dot_u8_i16(hi, y1), _mm256_set1_epi16(sc[2 * j + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const int summs = k_mins_dot(mn, b[i].bsums);
    const float d = b[i].d * h2f(a[i].d);
    const float dmin = b[i].d * h2f(a[i].dmin);
    sumf += d * static_cast<float>(hsum_i32(sumi)) - dmin * static_cast<float>(summs);
  }
  return sumf;
}

float avx2_vdot_q5_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q5_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    uint8_t sc[8], mn[8];
    k4_scales_mins(a[i].scales, sc, mn);
    __m256i sumi = _mm256_setzero_si256();
    const uint8_t* q4 = a[i].qs;
    const int8_t* q8 = b[i].qs;
    const __m256i hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh));
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q4 + 32 * j));
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_slli_epi16(h0, 4));
      const __m256i hi =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), _mm256_slli_epi16(h1, 4));
      const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 64 * j));
      const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 64 * j + 32));
      const __m256i p0 = _mm256_madd_epi16(dot_u8_i16(lo, y0), _mm256_set1_epi16(sc[2 * j]));
      const __m256i p1 = _mm256_madd_epi16(dot_u8_i16(hi, y1), _mm256_set1_epi16(sc[2 * j + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const int summs = k_mins_dot(mn, b[i].bsums);
    const float d = b[i].d * h2f(a[i].d);
    const float dmin = b[i].d * h2f(a[i].dmin);
    sumf += d * static_cast<float>(hsum_i32(sumi)) - dmin * static_cast<float>(summs);
  }
  return sumf;
}

float avx2_vdot_q6_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q6_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m2 = _mm256_set1_epi8(3);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    __m256i sumi = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = a[i].ql + 64 * half;
      const uint8_t* qh = a[i].qh + 32 * half;
      const int8_t* q8 = b[i].qs + 128 * half;
      const int8_t* sc = a[i].scales + 8 * half;
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
      // q values 0..63 (the −32 offset is applied through bsums below).
      const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
      const __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
      const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
      const __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
      const __m256i qs[4] = {q1, q2, q3, q4};
      for (int c = 0; c < 4; ++c) {
        const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32 * c));
        // Each 32-byte chunk spans two groups of 16 with their own scale.
        const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(dot_u8_i16(qs[c], y), scale));
      }
    }
    int offset = 0;  // 32 · Σ scale·Σq8 per group of 16
    for (int g = 0; g < 16; ++g)
      offset += a[i].scales[g] * b[i].bsums[g];
    const int total = hsum_i32(sumi) - 32 * offset;
    sumf += (h2f(a[i].d) * b[i].d) * static_cast<float>(total);
  }
  return sumf;
}

void avx2_to_f16(const float* x, void* dst, int64_t k) {
  auto* h = static_cast<uint16_t*>(dst);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < k; ++i)
    h[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void avx2_to_q8_0(const float* x, void* dst, int64_t k) {
  auto* y = static_cast<block_q8_0*>(dst);
  for (int64_t ib = 0; ib < k / 32; ++ib)
    to_q8_block<false>(x + 32 * ib, &y[ib].d, y[ib].qs, nullptr);
}

void avx2_to_q8_1(const float* x, void* dst, int64_t k) {
  auto* y = static_cast<block_q8_1*>(dst);
  for (int64_t ib = 0; ib < k / 32; ++ib)
    to_q8_block<true>(x + 32 * ib, &y[ib].d, y[ib].qs, &y[ib].s);
}

double avx2_sum_squares(const float* x, int64_t n) {
  // Squares in float, sums in double, as ggml's rms_norm.
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 sq = _mm256_mul_ps(v, v);
    acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
    acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
  }
  const __m256d acc = _mm256_add_pd(acc0, acc1);
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  double sum = _mm_cvtsd_f64(s);
  for (; i < n; ++i) {
    const float sq = x[i] * x[i];
    sum += static_cast<double>(sq);
  }
  return sum;
}

void avx2_scale_mul(const float* x, float scale, const float* w, int64_t n, float* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(w + i)));
  for (; i < n; ++i) {
    const float v = x[i] * scale;
    out[i] = v * w[i];
  }
}

void avx2_swiglu(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v_silu(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
  for (; i < n; ++i)
    out[i] = (gate[i] / (1.0f + __builtin_expf(-gate[i]))) * up[i];
}

// Q4_0, Q4_1, Q5_0 and the K-quants through the lanes (gemm_lanes.inc), the
// rest through the tiles. Q8_0 and Q5_1 stay on the tiles: the lanes sum an output in
// another order than llama.cpp's AVX2 code for those two (each block's
// integer dot whole, then the blocks in float; it keeps 8 lanes of partial
// sums across blocks, as the tiles do), and through the lanes SmolLM2's
// top-5 log-probs moved past the 0.5 from llama.cpp's that
// tests/engine/smollm2_forward_test.cpp allows (Q8_0: 0.57, against 0.32
// through the tiles).
gemm_fn avx2_gemm_for(dtype w) {
  switch (w) {
    case dtype::q4_0: return lanes_gemm<q4_0_fmt>;
    case dtype::q4_1: return lanes_gemm<q4_1_fmt>;
    case dtype::q5_0: return lanes_gemm<q5_0_fmt>;
    case dtype::q4_k: return kq_lanes_gemm<q4_k_fmt>;
    case dtype::q5_k: return kq_lanes_gemm<q5_k_fmt>;
    case dtype::q6_k: return kq_lanes_gemm<q6_k_fmt>;
    default: return tiled_gemm_for(w);
  }
}

void avx2_from_f16(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; ++i)
    y[i] = _cvtsh_ss(x[i]);
}

namespace {
inline __m256 round_f16(__m256 v) { return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)); }
}  // namespace

namespace {

// K and V as attention_row takes them: ctx rows of d floats, one run.
struct f32_kv {
  const float* k;
  const float* v;
  int64_t run;
  const float* k_run(int64_t) const { return k; }
  const float* v_run(int64_t) const { return v; }
};

// K and V as the paged cache holds them: f16, in runs of `run` positions
// (run b: positions b·run ..).
struct f16_kv {
  const uint16_t* const* k;
  const uint16_t* const* v;
  int64_t run;
  const uint16_t* k_run(int64_t b) const { return k[b]; }
  const uint16_t* v_run(int64_t b) const { return v[b]; }
};

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return load_f16(p); }

// See attention_row in ops.hpp. d is a multiple of 8, at most 256 (the
// caller checks). f16 rows are converted as they are read (exactly), so
// both forms give the same result bit for bit.
template <class KV>
void attention_row_t(const float* q, const KV& kv, int64_t ctx, int64_t d, float scale, float* scores,
                     float* out) {
  alignas(32) float qh[256];
  for (int64_t i = 0; i < d; i += 8)
    _mm256_store_ps(qh + i, round_f16(_mm256_loadu_ps(q + i)));

  // Scores, and their max.
  float mx = -INFINITY;
  for (int64_t j0 = 0; j0 < ctx; j0 += kv.run) {
    const auto* kb = kv.k_run(j0 / kv.run);
    const int64_t n = std::min(kv.run, ctx - j0);
    for (int64_t jj = 0; jj < n; ++jj) {
      const auto* kr = kb + jj * d;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_load_ps(qh + i), load8(kr + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_load_ps(qh + i + 8), load8(kr + i + 8), s1);
      }
      if (i < d)
        s0 = _mm256_fmadd_ps(_mm256_load_ps(qh + i), load8(kr + i), s0);
      const float sc = hsum(_mm256_add_ps(s0, s1)) * scale;
      scores[j0 + jj] = sc;
      mx = std::max(mx, sc);
    }
  }

  // exp(x − max), summed in double (as ggml's soft_max), then the weights
  // p = e/Σ rounded to f16.
  const __m256 vmx = _mm256_set1_ps(mx);
  double sum = 0.0;
  int64_t j = 0;
  for (; j + 8 <= ctx; j += 8) {
    const __m256 e = v_expf(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vmx));
    _mm256_storeu_ps(scores + j, e);
    sum += static_cast<double>(hsum(e));
  }
  for (; j < ctx; ++j) {
    const float e = __builtin_expf(scores[j] - mx);
    scores[j] = e;
    sum += static_cast<double>(e);
  }
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  j = 0;
  for (; j + 8 <= ctx; j += 8)
    _mm256_storeu_ps(scores + j, round_f16(_mm256_mul_ps(_mm256_loadu_ps(scores + j), inv)));
  const float inv1 = static_cast<float>(1.0 / sum);
  for (; j < ctx; ++j)
    scores[j] = _cvtsh_ss(_cvtss_sh(scores[j] * inv1, _MM_FROUND_TO_NEAREST_INT));

  // out = Σ p_j·V_j, 64 dims (8 registers) at a time.
  for (int64_t i0 = 0; i0 < d; i0 += 64) {
    const int nv = static_cast<int>(std::min<int64_t>(64, d - i0) / 8);
    __m256 o[8];
    for (int r = 0; r < 8; ++r)
      o[r] = _mm256_setzero_ps();
    for (int64_t j0 = 0; j0 < ctx; j0 += kv.run) {
      const auto* vb = kv.v_run(j0 / kv.run) + i0;
      const int64_t n = std::min(kv.run, ctx - j0);
      for (int64_t jj = 0; jj < n; ++jj) {
        const __m256 p = _mm256_broadcast_ss(scores + j0 + jj);
        const auto* vr = vb + jj * d;
        for (int r = 0; r < nv; ++r)
          o[r] = _mm256_fmadd_ps(p, load8(vr + 8 * r), o[r]);
      }
    }
    for (int r = 0; r < nv; ++r)
      _mm256_storeu_ps(out + i0 + 8 * r, o[r]);
  }
}

}  // namespace

void avx2_attention_row(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                        float scale, float* scores, float* out) {
  attention_row_t(q, f32_kv{k, v, ctx}, ctx, d, scale, scores, out);
}

void avx2_attention_row_f16(const float* q, const uint16_t* const* k_runs, const uint16_t* const* v_runs,
                            int64_t run, int64_t ctx, int64_t d, float scale, float* scores, float* out) {
  attention_row_t(q, f16_kv{k_runs, v_runs, run}, ctx, d, scale, scores, out);
}

}  // namespace llmux::kernels::detail

#pragma GCC pop_options

#endif  // x86
