#include "kernels/cpu/ops.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// Portable kernels, the run-time dispatch and the plain references. The SIMD
// kernels live in ops_avx2.cpp / ops_avx512.cpp, compiled for those ISAs with
// target pragmas (the build flags stay generic) and only called after
// __builtin_cpu_supports said yes.

namespace llmux::kernels {

namespace detail {
// ops_avx2.cpp (AVX2 + FMA + F16C)
float avx2_dot_f32(const float* a, const float* b, int64_t n);
float avx2_vdot_f32(const void* w, const void* x, int64_t k);
float avx2_vdot_f16(const void* w, const void* x, int64_t k);
float avx2_vdot_bf16(const void* w, const void* x, int64_t k);
float avx2_vdot_q8_0(const void* w, const void* x, int64_t k);
float avx2_vdot_q4_0(const void* w, const void* x, int64_t k);
float avx2_vdot_q4_1(const void* w, const void* x, int64_t k);
float avx2_vdot_q4_k(const void* w, const void* x, int64_t k);
float avx2_vdot_q5_k(const void* w, const void* x, int64_t k);
float avx2_vdot_q6_k(const void* w, const void* x, int64_t k);
void avx2_to_f16(const float* x, void* dst, int64_t k);
void avx2_to_q8_0(const float* x, void* dst, int64_t k);
void avx2_to_q8_1(const float* x, void* dst, int64_t k);
double avx2_sum_squares(const float* x, int64_t n);
void avx2_scale_mul(const float* x, float scale, const float* w, int64_t n, float* out);
void avx2_swiglu(const float* gate, const float* up, int64_t n, float* out);
// The tiled matmul for weights of type w (gemm_blocks.inc), or nullptr: the
// per-pair vdot then.
using gemm_fn = void (*)(const void* w, size_t w_stride, int64_t rows, const void* act,
                         size_t act_stride, int64_t m, int64_t k, float* y, int64_t ldy);
gemm_fn avx2_gemm_for(dtype w);
void avx2_from_f16(const uint16_t* x, float* y, int64_t n);
void avx2_attention_row(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                        float scale, float* scores, float* out);
void avx2_attention_row_f16(const float* q, const uint16_t* const* k_runs, const uint16_t* const* v_runs,
                            int64_t run, int64_t ctx, int64_t d, float scale, float* scores, float* out);
// ops_avx512.cpp (AVX-512 F/BW/VL/VNNI)
float avx512_dot_f32(const float* a, const float* b, int64_t n);
float avx512_vdot_f32(const void* w, const void* x, int64_t k);
float avx512_vdot_f16(const void* w, const void* x, int64_t k);
float avx512_vdot_bf16(const void* w, const void* x, int64_t k);
float avx512_vdot_q8_0(const void* w, const void* x, int64_t k);
float avx512_vdot_q4_0(const void* w, const void* x, int64_t k);
float avx512_vdot_q4_1(const void* w, const void* x, int64_t k);
gemm_fn avx512_gemm_for(dtype w);

// Per-thread scratch for the gemm kernels (gemm_lanes.inc): at least `bytes`,
// reused across calls; here, where std::vector is not compiled for AVX2.
uint8_t* gemm_scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes)
    buf.resize(bytes);
  return buf.data();
}
}  // namespace detail

namespace {

using vdot_fn = float (*)(const void* w, const void* x, int64_t k);
using act_fn = void (*)(const float* x, void* dst, int64_t k);

// ---------------------------------------------------------------------------
// Portable kernels: the same integer arithmetic as the SIMD ones.
// ---------------------------------------------------------------------------

float portable_dot_f32(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j)
    acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

float portable_vdot_f32(const void* w, const void* x, int64_t k) {
  return portable_dot_f32(static_cast<const float*>(w), static_cast<const float*>(x), k);
}

// Every fp16 value as f32 (256 KiB, built on first use), as ggml's table.
const float* fp16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h)
      t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float portable_vdot_f16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  const float* t = fp16_table();
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j)
      acc[j] += t[a[i + j]] * t[b[i + j]];
  for (int j = 0; i < k; ++i, ++j)
    acc[j] += t[a[i]] * t[b[i]];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

float portable_vdot_bf16(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const uint16_t*>(x);
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j)
      acc[j] += bf16_bits_to_f32(a[i + j]) * bf16_bits_to_f32(b[i + j]);
  for (int j = 0; i < k; ++i, ++j)
    acc[j] += bf16_bits_to_f32(a[i]) * bf16_bits_to_f32(b[i]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

inline float f16(uint16_t h) { return fp16_table()[h]; }

float portable_vdot_q8_0(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q8_0*>(w);
  const auto* b = static_cast<const block_q8_0*>(x);
  float sumf = 0.0f;
  for (int64_t ib = 0; ib < k / 32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 32; ++j)
      sumi += a[ib].qs[j] * b[ib].qs[j];
    sumf += static_cast<float>(sumi) * (f16(a[ib].d) * f16(b[ib].d));
  }
  return sumf;
}

float portable_vdot_q4_0(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_0*>(w);
  const auto* b = static_cast<const block_q8_0*>(x);
  float sumf = 0.0f;
  for (int64_t ib = 0; ib < k / 32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((a[ib].qs[j] & 0x0F) - 8) * b[ib].qs[j];
      sumi += ((a[ib].qs[j] >> 4) - 8) * b[ib].qs[j + 16];
    }
    sumf += static_cast<float>(sumi) * (f16(a[ib].d) * f16(b[ib].d));
  }
  return sumf;
}

float portable_vdot_q4_1(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_1*>(w);
  const auto* b = static_cast<const block_q8_1*>(x);
  float sumf = 0.0f;
  for (int64_t ib = 0; ib < k / 32; ++ib) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (a[ib].qs[j] & 0x0F) * b[ib].qs[j];
      sumi += (a[ib].qs[j] >> 4) * b[ib].qs[j + 16];
    }
    sumf += (f16(a[ib].d) * f16(b[ib].d)) * static_cast<float>(sumi) + f16(a[ib].m) * f16(b[ib].s);
  }
  return sumf;
}

float portable_vdot_q5_0(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q5_0*>(w);
  const auto* b = static_cast<const block_q8_0*>(x);
  float sumf = 0.0f;
  for (int64_t ib = 0; ib < k / 32; ++ib) {
    int q[32];
    q5_values(a[ib].qs, a[ib].qh, q);
    int sumi = 0;
    for (int j = 0; j < 32; ++j)
      sumi += (q[j] - 16) * b[ib].qs[j];
    sumf += static_cast<float>(sumi) * (f16(a[ib].d) * f16(b[ib].d));
  }
  return sumf;
}

float portable_vdot_q5_1(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q5_1*>(w);
  const auto* b = static_cast<const block_q8_1*>(x);
  float sumf = 0.0f;
  for (int64_t ib = 0; ib < k / 32; ++ib) {
    int q[32];
    q5_values(a[ib].qs, a[ib].qh, q);
    int sumi = 0;
    for (int j = 0; j < 32; ++j)
      sumi += q[j] * b[ib].qs[j];
    sumf += (f16(a[ib].d) * f16(b[ib].d)) * static_cast<float>(sumi) + f16(a[ib].m) * f16(b[ib].s);
  }
  return sumf;
}

// The 8 six-bit scales and mins of a Q4_K/Q5_K block (ggml's get_scale_min_k4).
void unpack_k4_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63;
    mn[j] = q[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    mn[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

float portable_vdot_q4_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q4_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    uint8_t sc[8], mn[8];
    unpack_k4_scales(a[i].scales, sc, mn);
    int sumi = 0;
    int summs = 0;
    for (int j = 0; j < 4; ++j) {
      const uint8_t* q4 = a[i].qs + 32 * j;
      const int8_t* q8 = b[i].qs + 64 * j;
      int lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo += (q4[l] & 0xF) * q8[l];
        hi += (q4[l] >> 4) * q8[l + 32];
      }
      sumi += sc[2 * j] * lo + sc[2 * j + 1] * hi;
    }
    for (int j = 0; j < 8; ++j)
      summs += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    const float d = b[i].d * f16(a[i].d);
    const float dmin = b[i].d * f16(a[i].dmin);
    sumf += d * static_cast<float>(sumi) - dmin * static_cast<float>(summs);
  }
  return sumf;
}

float portable_vdot_q5_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q5_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    uint8_t sc[8], mn[8];
    unpack_k4_scales(a[i].scales, sc, mn);
    int sumi = 0;
    int summs = 0;
    for (int j = 0; j < 4; ++j) {
      const uint8_t* q4 = a[i].qs + 32 * j;
      const int8_t* q8 = b[i].qs + 64 * j;
      int lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        const int h0 = (a[i].qh[l] >> (2 * j)) & 1;
        const int h1 = (a[i].qh[l] >> (2 * j + 1)) & 1;
        lo += ((q4[l] & 0xF) | (h0 << 4)) * q8[l];
        hi += ((q4[l] >> 4) | (h1 << 4)) * q8[l + 32];
      }
      sumi += sc[2 * j] * lo + sc[2 * j + 1] * hi;
    }
    for (int j = 0; j < 8; ++j)
      summs += mn[j] * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    const float d = b[i].d * f16(a[i].d);
    const float dmin = b[i].d * f16(a[i].dmin);
    sumf += d * static_cast<float>(sumi) - dmin * static_cast<float>(summs);
  }
  return sumf;
}

float portable_vdot_q6_k(const void* w, const void* x, int64_t k) {
  const auto* a = static_cast<const block_q6_k*>(w);
  const auto* b = static_cast<const block_q8_k*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / 256; ++i) {
    int sumi = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = a[i].ql + 64 * half;
      const uint8_t* qh = a[i].qh + 32 * half;
      const int8_t* q8 = b[i].qs + 128 * half;
      const int8_t* sc = a[i].scales + 8 * half;
      for (int is = 0; is < 2; ++is) {
        int s1 = 0, s2 = 0, s3 = 0, s4 = 0;
        for (int l = 16 * is; l < 16 * is + 16; ++l) {
          s1 += (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32) * q8[l];
          s2 += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * q8[l + 32];
          s3 += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * q8[l + 64];
          s4 += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * q8[l + 96];
        }
        sumi += sc[is] * s1 + sc[is + 2] * s2 + sc[is + 4] * s3 + sc[is + 6] * s4;
      }
    }
    sumf += (f16(a[i].d) * b[i].d) * static_cast<float>(sumi);
  }
  return sumf;
}

// ggml's round-to-nearest-even through the float magic number (|x| < 2^22).
int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

void portable_to_f16(const float* x, void* dst, int64_t k) {
  auto* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < k; ++i)
    h[i] = fp32_to_fp16(x[i]);
}

void portable_to_bf16(const float* x, void* dst, int64_t k) {
  auto* h = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < k; ++i)
    h[i] = fp32_to_bf16(x[i]);
}

// Q8_0 / Q8_1 as ggml's AVX quantize_row_q8_0/_1: scale 127/amax, ties to even.
template <typename Block>
void portable_to_q8(const float* x, void* dst, int64_t k) {
  auto* y = static_cast<Block*>(dst);
  for (int64_t ib = 0; ib < k / 32; ++ib, x += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
      amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    y[ib].d = fp32_to_fp16(d);
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int q = std::max(-128, std::min(127, nearest_int(x[j] * id)));
      y[ib].qs[j] = static_cast<int8_t>(q);
      sum += q;
    }
    if constexpr (std::is_same_v<Block, block_q8_1>)
      y[ib].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

void to_q8_k(const float* x, void* dst, int64_t k) { quantize_row_ref(dtype::q8_k, x, dst, k); }

double portable_sum_squares(const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += static_cast<double>(x[i] * x[i]);
  return sum;
}

void portable_scale_mul(const float* x, float scale, const float* w, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = (x[i] * scale) * w[i];
}

void portable_swiglu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}

void portable_from_f16(const uint16_t* x, float* y, int64_t n) {
  const float* t = fp16_table();
  for (int64_t i = 0; i < n; ++i)
    y[i] = t[x[i]];
}

inline float round_f16(float x) { return f16(fp32_to_fp16(x)); }

void portable_attention_row(const float* q, const float* k, const float* v, int64_t ctx,
                            int64_t d, float scale, float* scores, float* out) {
  std::vector<float> qh(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i)
    qh[static_cast<size_t>(i)] = round_f16(q[i]);
  for (int64_t j = 0; j < ctx; ++j)
    scores[j] = portable_dot_f32(qh.data(), k + j * d, d) * scale;
  softmax_ref(scores, ctx);
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < ctx; ++j) {
    const float p = round_f16(scores[j]);
    for (int64_t i = 0; i < d; ++i)
      out[i] += p * v[j * d + i];
  }
}

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

struct kernel_set {
  float (*dot_f32)(const float*, const float*, int64_t);
  vdot_fn vdot_f32, vdot_f16, vdot_bf16, vdot_q8_0, vdot_q4_0, vdot_q4_1, vdot_q4_k, vdot_q5_k,
      vdot_q6_k;
  act_fn to_f16, to_bf16, to_q8_0, to_q8_1, to_q8_k;
  double (*sum_squares)(const float*, int64_t);
  void (*scale_mul)(const float*, float, const float*, int64_t, float*);
  void (*swiglu)(const float*, const float*, int64_t, float*);
  // Tiled matmuls by weight type (nullptr, or it returns nullptr: per-pair vdot).
  detail::gemm_fn (*gemm_for)(dtype);
  void (*from_f16)(const uint16_t*, float*, int64_t);
  void (*attention_row)(const float*, const float*, const float*, int64_t, int64_t, float, float*,
                        float*);
  // nullptr: attention_row_f16 converts the runs and calls attention_row.
  void (*attention_row_f16)(const float*, const uint16_t* const*, const uint16_t* const*, int64_t, int64_t,
                            int64_t, float, float*, float*);
  // Q5_0/Q5_1 have no SIMD vdot: on x86 their matmuls take the tiles
  // (gemm_for); vec_dot and the portable level use these.
  vdot_fn vdot_q5_0 = portable_vdot_q5_0, vdot_q5_1 = portable_vdot_q5_1;
};

constexpr kernel_set portable_set{
    portable_dot_f32,   portable_vdot_f32,    portable_vdot_f16,     portable_vdot_bf16,
    portable_vdot_q8_0, portable_vdot_q4_0,   portable_vdot_q4_1,    portable_vdot_q4_k,
    portable_vdot_q5_k, portable_vdot_q6_k,   portable_to_f16,       portable_to_bf16,
    portable_to_q8<block_q8_0>, portable_to_q8<block_q8_1>, to_q8_k, portable_sum_squares,
    portable_scale_mul, portable_swiglu, nullptr, portable_from_f16, portable_attention_row,
    nullptr,
};

#if defined(__x86_64__) || defined(__i386__)
#define LLMUX_X86 1

constexpr kernel_set avx2_set{
    detail::avx2_dot_f32,     detail::avx2_vdot_f32,  detail::avx2_vdot_f16,
    detail::avx2_vdot_bf16,   detail::avx2_vdot_q8_0, detail::avx2_vdot_q4_0,
    detail::avx2_vdot_q4_1,   detail::avx2_vdot_q4_k, detail::avx2_vdot_q5_k,
    detail::avx2_vdot_q6_k,   detail::avx2_to_f16,    portable_to_bf16,
    detail::avx2_to_q8_0,     detail::avx2_to_q8_1,   to_q8_k,
    detail::avx2_sum_squares, detail::avx2_scale_mul, detail::avx2_swiglu,
    detail::avx2_gemm_for,    detail::avx2_from_f16,  detail::avx2_attention_row,
    detail::avx2_attention_row_f16,
};

constexpr kernel_set avx512_set{
    detail::avx512_dot_f32,   detail::avx512_vdot_f32,  detail::avx512_vdot_f16,
    detail::avx512_vdot_bf16, detail::avx512_vdot_q8_0, detail::avx512_vdot_q4_0,
    detail::avx512_vdot_q4_1, detail::avx2_vdot_q4_k,   detail::avx2_vdot_q5_k,
    detail::avx2_vdot_q6_k,   detail::avx2_to_f16,      portable_to_bf16,
    detail::avx2_to_q8_0,     detail::avx2_to_q8_1,     to_q8_k,
    detail::avx2_sum_squares, detail::avx2_scale_mul,   detail::avx2_swiglu,
    detail::avx512_gemm_for, detail::avx2_from_f16,    detail::avx2_attention_row,
    detail::avx2_attention_row_f16,
};
#endif

simd_level detect_simd() {
#ifdef LLMUX_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512vnni");
  if (avx512)
    return simd_level::avx512;
  if (avx2)
    return simd_level::avx2;
#endif
  return simd_level::portable;
}

std::atomic<int>& forced_level() {
  static std::atomic<int> level{-1};
  return level;
}

const kernel_set& kernels_for(simd_level level) {
  switch (level) {
#ifdef LLMUX_X86
    case simd_level::avx512: return avx512_set;
    case simd_level::avx2: return avx2_set;
#endif
    default: return portable_set;
  }
}

const kernel_set& active_kernels() { return kernels_for(active_simd()); }

vdot_fn vdot_for(const kernel_set& ks, dtype w) {
  switch (w) {
    case dtype::f32: return ks.vdot_f32;
    case dtype::f16: return ks.vdot_f16;
    case dtype::bf16: return ks.vdot_bf16;
    case dtype::q8_0: return ks.vdot_q8_0;
    case dtype::q4_0: return ks.vdot_q4_0;
    case dtype::q4_1: return ks.vdot_q4_1;
    case dtype::q5_0: return ks.vdot_q5_0;
    case dtype::q5_1: return ks.vdot_q5_1;
    case dtype::q4_k: return ks.vdot_q4_k;
    case dtype::q5_k: return ks.vdot_q5_k;
    case dtype::q6_k: return ks.vdot_q6_k;
    default: throw std::invalid_argument("matmul: unsupported weight type " + to_string(w));
  }
}

act_fn act_for(const kernel_set& ks, dtype w) {
  switch (vec_dot_type(w)) {
    case dtype::f16: return ks.to_f16;
    case dtype::bf16: return ks.to_bf16;
    case dtype::q8_0: return ks.to_q8_0;
    case dtype::q8_1: return ks.to_q8_1;
    case dtype::q8_k: return ks.to_q8_k;
    default: return nullptr;  // f32: used as is
  }
}

void check_shape(const matrix_view& w) {
  if (w.cols % static_cast<int64_t>(block_elems(w.type)) != 0)
    throw std::invalid_argument("matmul: " + std::to_string(w.cols) + " columns is not a multiple of the " +
                                to_string(w.type) + " block size");
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

simd_level best_simd() {
  static const simd_level best = detect_simd();
  return best;
}

simd_level active_simd() {
  const int forced = forced_level().load(std::memory_order_relaxed);
  return forced < 0 ? best_simd() : static_cast<simd_level>(forced);
}

void force_simd(simd_level level) {
  const auto clamped = std::min(static_cast<int>(level), static_cast<int>(best_simd()));
  forced_level().store(clamped, std::memory_order_relaxed);
}

const char* to_string(simd_level level) {
  switch (level) {
    case simd_level::avx512: return "avx512";
    case simd_level::avx2: return "avx2";
    case simd_level::portable: return "portable";
  }
  return "unknown";
}

dtype vec_dot_type(dtype w) {
  switch (w) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16: return w;
    case dtype::q8_0:
    case dtype::q4_0:
    case dtype::q5_0: return dtype::q8_0;
    case dtype::q4_1:
    case dtype::q5_1: return dtype::q8_1;
    case dtype::q4_k:
    case dtype::q5_k:
    case dtype::q6_k: return dtype::q8_k;
    default: throw std::invalid_argument("vec_dot_type: unsupported weight type " + to_string(w));
  }
}

void quantize_activation_row(dtype w, const float* x, void* dst, int64_t k) {
  const act_fn fn = act_for(active_kernels(), w);
  if (fn)
    fn(x, dst, k);
  else
    std::memcpy(dst, x, static_cast<size_t>(k) * sizeof(float));
}

float vec_dot(dtype w, const void* w_row, const void* act_row, int64_t k) {
  return vdot_for(active_kernels(), w)(w_row, act_row, k);
}

void matmul(const matrix_view& w, const float* x, int64_t m, float* y, thread_pool& pool) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  if (m <= 0 || n <= 0)
    return;
  check_shape(w);
  const kernel_set& ks = active_kernels();
  const vdot_fn dot = vdot_for(ks, w.type);
  const act_fn to_act = act_for(ks, w.type);

  // Activations are converted once per call, into scratch owned by the
  // calling thread (reused across calls).
  const auto* act = reinterpret_cast<const uint8_t*>(x);
  size_t act_stride = static_cast<size_t>(k) * sizeof(float);
  if (to_act) {
    thread_local std::vector<uint8_t> scratch;
    act_stride = row_bytes(vec_dot_type(w.type), k);
    if (scratch.size() < act_stride * static_cast<size_t>(m))
      scratch.resize(act_stride * static_cast<size_t>(m));
    uint8_t* buf = scratch.data();
    if (m == 1) {
      to_act(x, buf, k);
    } else {
      pool.parallel_for(m, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i)
          to_act(x + i * k, buf + static_cast<size_t>(i) * act_stride, k);
      });
    }
    act = buf;
  }

  const auto* wdata = static_cast<const uint8_t*>(w.data);
  const size_t w_stride = row_bytes(w.type, k);
  if (const detail::gemm_fn gemm = ks.gemm_for ? ks.gemm_for(w.type) : nullptr) {
    pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
      gemm(wdata + static_cast<size_t>(begin) * w_stride, w_stride, end - begin, act,
                   act_stride, m, k, y + begin, n);
    });
    return;
  }
  // Tiles of W rows × activation rows, so both stay in cache when m is large.
  constexpr int64_t tile_n = 16;
  constexpr int64_t tile_m = 16;
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t r0 = begin; r0 < end; r0 += tile_n) {
      const int64_t r1 = std::min(end, r0 + tile_n);
      for (int64_t i0 = 0; i0 < m; i0 += tile_m) {
        const int64_t i1 = std::min(m, i0 + tile_m);
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* wr = wdata + static_cast<size_t>(r) * w_stride;
          for (int64_t i = i0; i < i1; ++i)
            y[i * n + r] = dot(wr, act + static_cast<size_t>(i) * act_stride, k);
        }
      }
    }
  });
}

void matmul_ref(const matrix_view& w, const float* x, int64_t m, float* y) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  check_shape(w);
  std::vector<float> row(static_cast<size_t>(k));
  const auto* wdata = static_cast<const uint8_t*>(w.data);
  const size_t w_stride = row_bytes(w.type, k);
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row_ref(w.type, wdata + static_cast<size_t>(r) * w_stride, row.data(), k);
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int64_t j = 0; j < k; ++j)
        sum += static_cast<double>(x[i * k + j]) * static_cast<double>(row[static_cast<size_t>(j)]);
      y[i * n + r] = static_cast<float>(sum);
    }
  }
}

void get_row(const matrix_view& w, int64_t r, float* out) {
  const auto* wdata = static_cast<const uint8_t*>(w.data);
  dequantize_row_ref(w.type, wdata + static_cast<size_t>(r) * row_bytes(w.type, w.cols), out, w.cols);
}

void rmsnorm(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out) {
  const kernel_set& ks = active_kernels();
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * n;
    const float mean = static_cast<float>(ks.sum_squares(xr, n) / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    ks.scale_mul(xr, scale, weight, n, out + i * n);
  }
}

// As ggml: Σx² in double, mean and scale in float, then (x·scale)·weight
// (rms_norm followed by the separate mul of llama.cpp's graph).
void rmsnorm_ref(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * n;
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j)
      sum += static_cast<double>(xr[j] * xr[j]);
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t j = 0; j < n; ++j)
      out[i * n + j] = (xr[j] * scale) * weight[j];
  }
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  active_kernels().swiglu(gate, up, n, out);
}

void swiglu_ref(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}

// ggml's rope (ext_factor 0, freq_scale 1, attn_factor 1): theta starts at
// pos and is multiplied by base^(-2/rot_dim) per pair, in float.
void rope_ref(float* x, int heads, int head_dim, int rot_dim, int64_t pos, float freq_base,
              bool neox) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rot_dim));
  std::vector<float> cache(static_cast<size_t>(rot_dim));
  float theta = static_cast<float>(pos);
  for (int i0 = 0; i0 < rot_dim; i0 += 2) {
    cache[static_cast<size_t>(i0)] = std::cos(theta);
    cache[static_cast<size_t>(i0) + 1] = std::sin(theta);
    theta *= theta_scale;
  }
  for (int h = 0; h < heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i0 = 0; i0 < rot_dim; i0 += 2) {
      const float cos_theta = cache[static_cast<size_t>(i0)];
      const float sin_theta = cache[static_cast<size_t>(i0) + 1];
      const int a = neox ? i0 / 2 : i0;
      const int b = neox ? i0 / 2 + rot_dim / 2 : i0 + 1;
      const float x0 = v[a];
      const float x1 = v[b];
      v[a] = x0 * cos_theta - x1 * sin_theta;
      v[b] = x0 * sin_theta + x1 * cos_theta;
    }
  }
}

// As ggml's soft_max: exp(x − max) summed in double, then scaled by 1/sum.
void softmax_ref(float* x, int64_t n) {
  if (n <= 0)
    return;
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += static_cast<double>(x[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i)
    x[i] *= inv;
}

float dot_f32(const float* a, const float* b, int64_t n) { return active_kernels().dot_f32(a, b, n); }

void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n) { active_kernels().from_f16(x, y, n); }

void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n) { active_kernels().to_f16(x, y, n); }

void attention_row(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                   float scale, float* scores, float* out) {
  if (ctx <= 0) {
    std::fill(out, out + d, 0.0f);
    return;
  }
  const kernel_set& ks = active_kernels();
  if (d % 8 == 0 && d <= 256)
    ks.attention_row(q, k, v, ctx, d, scale, scores, out);
  else
    portable_attention_row(q, k, v, ctx, d, scale, scores, out);
}

void attention_row_f16(const float* q, const uint16_t* const* k_runs, const uint16_t* const* v_runs,
                       int64_t run, int64_t ctx, int64_t d, float scale, float* scores, float* out) {
  if (ctx <= 0) {
    std::fill(out, out + d, 0.0f);
    return;
  }
  const kernel_set& ks = active_kernels();
  if (d % 8 == 0 && d <= 256 && ks.attention_row_f16) {
    ks.attention_row_f16(q, k_runs, v_runs, run, ctx, d, scale, scores, out);
    return;
  }
  thread_local std::vector<float> kf, vf;
  kf.resize(static_cast<size_t>(ctx * d));
  vf.resize(static_cast<size_t>(ctx * d));
  for (int64_t j0 = 0; j0 < ctx; j0 += run) {
    const int64_t n = std::min(run, ctx - j0);
    fp16_to_fp32_row(k_runs[j0 / run], &kf[static_cast<size_t>(j0 * d)], n * d);
    fp16_to_fp32_row(v_runs[j0 / run], &vf[static_cast<size_t>(j0 * d)], n * d);
  }
  attention_row(q, kf.data(), vf.data(), ctx, d, scale, scores, out);
}

void attention_row_ref(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                       float scale, float* out) {
  std::vector<double> qh(static_cast<size_t>(d)), s(static_cast<size_t>(ctx));
  for (int64_t i = 0; i < d; ++i)
    qh[static_cast<size_t>(i)] = fp16_to_fp32(fp32_to_fp16(q[i]));
  double mx = -INFINITY;
  for (int64_t j = 0; j < ctx; ++j) {
    double dot = 0.0;
    for (int64_t i = 0; i < d; ++i)
      dot += qh[static_cast<size_t>(i)] * static_cast<double>(k[j * d + i]);
    s[static_cast<size_t>(j)] = dot * static_cast<double>(scale);
    mx = std::max(mx, s[static_cast<size_t>(j)]);
  }
  double sum = 0.0;
  for (auto& x : s) {
    x = std::exp(x - mx);
    sum += x;
  }
  for (int64_t i = 0; i < d; ++i) {
    double acc = 0.0;
    for (int64_t j = 0; j < ctx; ++j) {
      const double p = fp16_to_fp32(fp32_to_fp16(static_cast<float>(s[static_cast<size_t>(j)] / sum)));
      acc += p * static_cast<double>(v[j * d + i]);
    }
    out[i] = static_cast<float>(acc);
  }
}

}  // namespace llmux::kernels
