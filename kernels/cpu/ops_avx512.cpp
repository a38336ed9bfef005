// AVX-512 (F, BW, VL, VNNI) kernels: 16-wide float dot products, VNNI
// integer dot products for the 32-element block types, and the tiled
// matmuls (gemm_blocks.inc, gemm_kquants.inc) compiled with VNNI. The
// K-quants' per-pair vec_dot stays the AVX2 one. Same rules as ops_avx2.cpp: only called after
// __builtin_cpu_supports said yes; no templates or inline functions from other
// headers after the target pragma.

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/quant.hpp"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics self-initialise their "undefined" vectors and
// then warn about it (GCC bug 105593); nothing here reads such a value.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace llmux::kernels::detail {

// y[i·ldy + r] = W row r · activation row i (see gemm_blocks.inc).
using gemm_fn = void (*)(const void* w, size_t w_stride, int64_t rows, const void* act,
                         size_t act_stride, int64_t m, int64_t k, float* y, int64_t ldy);

namespace {

inline float hsum8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// (Not _mm512_reduce_add_ps: GCC 12 warns inside it.)
inline float hsum16(__m512 v) {
  const __m512 swapped = _mm512_shuffle_f32x4(v, v, 0x4E);  // 256-bit halves swapped
  return hsum8(_mm512_castps512_ps256(_mm512_add_ps(v, swapped)));
}

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float bf16f(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline __m512 load_f16x16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512 load_bf16x16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

// Σ x·y of signed bytes in 8 int32 lanes: |x| · (y with x's sign), one VNNI op.
inline __m256i dot_i8(__m256i x, __m256i y) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// Σ u·s over 32 unsigned × signed bytes, as 8 int32 lanes: one VNNI op.
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

inline __m256i dot_u8_i8_acc(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }

// Q5's fifth bits: byte j is 0x10 where bit j of the little-endian 32-bit qh
// is set, the 32 bits as a byte mask (AVX-512 BW).
inline __m256i high_bits_32(const uint8_t* qh) {
  uint32_t x;
  std::memcpy(&x, qh, sizeof x);
  return _mm256_maskz_mov_epi8(static_cast<__mmask32>(x), _mm256_set1_epi8(0x10));
}

// Q8_0 with VNNI: q + 128 as unsigned bytes (q ^ 0x80), then Σ 128·a off.
struct q8_0_fmt {
  static constexpr size_t bytes = 34;
  static constexpr bool has_min = false;
  static constexpr int off = 128;
  static __m256i unpack(const uint8_t* b) {
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  }
  static __m256i dot(__m256i acc, __m256i w, __m256i a) { return dot_u8_i8_acc(acc, w, a); }
};

// acc + (Σ pairs of u·a as int16) × sc, per int32 lane (gemm_kquants.inc).
inline __m256i madd_scaled(__m256i u, __m256i a, __m256i sc, __m256i acc) {
  return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, a), sc);
}

constexpr int BRM = 4, BRN = 4;  // gemm_blocks.inc's tile
constexpr int KRM = 2, KRN = 4;  // gemm_kquants.inc's tile

#include "kernels/cpu/gemm_blocks.inc"
#include "kernels/cpu/gemm_kquants.inc"

// One 32-element block: acc + d_w·d_a·Σ q_w·q_a.
inline __m256 block_q8_0_q8_0(const block_q8_0& a, const block_q8_0& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qa, qb)), acc);
}

inline __m256 block_q4_0_q8_0(const block_q4_0& a, const block_q8_0& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = _mm256_sub_epi8(nibbles_32(a.qs), _mm256_set1_epi8(8));
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qa, qb)), acc);
}

// The d·Σq·q_a part only; the m_w·s_a part is summed by the caller.
inline __m256 block_q4_1_q8_1(const block_q4_1& a, const block_q8_1& b, __m256 acc) {
  const __m256 d = _mm256_set1_ps(h2f(a.d) * h2f(b.d));
  const __m256i qa = nibbles_32(a.qs);
  const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qa, qb);
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

}  // namespace

float avx512_dot_f32(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16)
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  if (i < n) {  // masked tail: no scalar loop
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return hsum16(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

float avx512_vdot_f32(const void* w, const void* x, int64_t k) {
  return avx512_dot_f32(static_cast<const float*>(w), static_cast<const float*>(x), k);
}

float avx512_vdot_f16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    acc0 = _mm512_fmadd_ps(load_f16x16(a + i), load_f16x16(b + i), acc0);
    acc1 = _mm512_fmadd_ps(load_f16x16(a + i + 16), load_f16x16(b + i + 16), acc1);
  }
  for (; i + 16 <= k; i += 16)
    acc0 = _mm512_fmadd_ps(load_f16x16(a + i), load_f16x16(b + i), acc0);
  float sum = hsum16(_mm512_add_ps(acc0, acc1));
  for (; i < k; ++i)
    sum += h2f(a[i]) * h2f(b[i]);
  return sum;
}

float avx512_vdot_bf16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    acc0 = _mm512_fmadd_ps(load_bf16x16(a + i), load_bf16x16(b + i), acc0);
    acc1 = _mm512_fmadd_ps(load_bf16x16(a + i + 16), load_bf16x16(b + i + 16), acc1);
  }
  for (; i + 16 <= k; i += 16)
    acc0 = _mm512_fmadd_ps(load_bf16x16(a + i), load_bf16x16(b + i), acc0);
  float sum = hsum16(_mm512_add_ps(acc0, acc1));
  for (; i < k; ++i)
    sum += bf16f(a[i]) * bf16f(b[i]);
  return sum;
}

// Two blocks per iteration into two accumulators (see ops_avx2.cpp).
// The 32-element block types: two blocks per iteration into two
// accumulators, so consecutive FMAs do not wait on each other.
float avx512_vdot_q8_0(const void* w, const void* x, int64_t k) {
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
  return hsum8(_mm256_add_ps(acc0, acc1));
}

float avx512_vdot_q4_0(const void* w, const void* x, int64_t k) {
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
  return hsum8(_mm256_add_ps(acc0, acc1));
}

float avx512_vdot_q4_1(const void* w, const void* x, int64_t k) {
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
  return hsum8(_mm256_add_ps(acc0, acc1)) + summs;
}

gemm_fn avx512_gemm_for(dtype w) {
  return tiled_gemm_for(w);
}

}  // namespace llmux::kernels::detail

#pragma GCC pop_options
#pragma GCC diagnostic pop

#endif  // x86
