#include "kernels/cpu/quant.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>

// The decoders below must equal ggml's bit for bit, so every product and sum
// is written in ggml's order and must not be fused into an FMA.
#pragma GCC optimize("fp-contract=off")

namespace llmux::kernels {

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant · 2^-24, exact in f32.
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31)
    return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u)  // NaN: keep it quiet, keep the top of the payload
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u)  // >= 65520 rounds to infinity (and inf itself)
    return static_cast<uint16_t>(sign | 0x7c00u);
  const uint32_t exp = ax >> 23;
  if (exp >= 113) {
    // Normal half: drop 13 mantissa bits, round to nearest even. A carry
    // into the exponent field is the right answer.
    uint32_t h = ((exp - 112) << 10) | ((ax & 0x7fffffu) >> 13);
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
      ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (exp < 102)  // below 2^-25: rounds to zero
    return sign;
  // Subnormal half: count of 2^-24 units, round to nearest even (may carry
  // into the smallest normal, which is the right encoding too).
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - exp;  // 14..24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u)))
    ++q;
  return static_cast<uint16_t>(sign | q);
}

float bf16_to_fp32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: force quiet (as ggml)
    return static_cast<uint16_t>((u >> 16) | 64u);
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

namespace {

constexpr int qk_k = 256;
constexpr float group_max_eps = 1e-15f;

// ggml's round-to-nearest-even through the float magic number (|x| < 2^22).
int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// ---- decoders (ggml's dequantize_row_*) ----

void dequant_q8_0(const block_q8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 32; ++j)
      y[i * 32 + j] = x[i].qs[j] * d;
  }
}

void dequant_q8_1(const block_q8_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 32; ++j)
      y[i * 32 + j] = x[i].qs[j] * d;
  }
}

void dequant_q4_0(const block_q4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[i * 32 + j] = x0 * d;
      y[i * 32 + j + 16] = x1 * d;
    }
  }
}

void dequant_q4_1(const block_q4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      const int x0 = x[i].qs[j] & 0x0F;
      const int x1 = x[i].qs[j] >> 4;
      y[i * 32 + j] = x0 * d + m;
      y[i * 32 + j + 16] = x1 * d + m;
    }
  }
}

void dequant_q5_0(const block_q5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    int q[32];
    q5_values(x[i].qs, x[i].qh, q);
    for (int j = 0; j < 32; ++j)
      y[i * 32 + j] = static_cast<float>(q[j] - 16) * d;
  }
}

void dequant_q5_1(const block_q5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    int q[32];
    q5_values(x[i].qs, x[i].qh, q);
    for (int j = 0; j < 32; ++j)
      y[i * 32 + j] = static_cast<float>(q[j]) * d + m;
  }
}

void dequant_q4_k(const block_q4_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < qk_k; j += 64) {
      get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void dequant_q5_k(const block_q5_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < qk_k; j += 64) {
      get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void dequant_q6_k(const block_q6_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < qk_k; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int8_t q3 = static_cast<int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void dequant_q8_k(const block_q8_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < qk_k; ++j)
      *y++ = x[i].d * x[i].qs[j];
}

// ---- encoders (ggml's quantize_row_*_ref) ----

void quant_q8_0(const float* x, block_q8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
      amax = std::max(amax, std::fabs(x[i * 32 + j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < 32; ++j)
      y[i].qs[j] = static_cast<int8_t>(std::roundf(x[i * 32 + j] * id));
  }
}

void quant_q8_1(const float* x, block_q8_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
      amax = std::max(amax, std::fabs(x[i * 32 + j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    int sum = 0;
    for (int j = 0; j < 16; ++j) {
      const float v0 = x[i * 32 + j] * id;
      const float v1 = x[i * 32 + 16 + j] * id;
      y[i].qs[j] = static_cast<int8_t>(std::roundf(v0));
      y[i].qs[16 + j] = static_cast<int8_t>(std::roundf(v1));
      sum += y[i].qs[j];
      sum += y[i].qs[16 + j];
    }
    y[i].s = fp32_to_fp16(static_cast<float>(sum) * d);
  }
}

// The value of largest magnitude among a block's 32 (the first such, with
// its sign), as ggml's Q4_0/Q5_0 encoders pick it.
float signed_absmax_32(const float* x) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void quant_q4_0(const float* x, block_q4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = signed_absmax_32(x + i * 32) / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[i * 32 + j] * id;
      const float x1 = x[i * 32 + 16 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

// Packs 32 five-bit q (element order) into a Q5 block's qs and qh.
void pack_q5(const uint32_t (&q)[32], uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
    h |= ((q[j] & 0x10u) >> 4) << j;
    h |= ((q[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh, &h, sizeof h);
}

void quant_q5_0(const float* x, block_q5_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = signed_absmax_32(x + i * 32) / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    uint32_t q[32];
    for (int j = 0; j < 32; ++j)
      q[j] = static_cast<uint32_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x[i * 32 + j] * id + 16.5f))));
    pack_q5(q, y[i].qs, y[i].qh);
  }
}

void quant_q5_1(const float* x, block_q5_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      min = std::min(min, x[i * 32 + j]);
      max = std::max(max, x[i * 32 + j]);
    }
    const float d = (max - min) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(min);
    uint32_t q[32];
    for (int j = 0; j < 32; ++j)
      q[j] = static_cast<uint8_t>((x[i * 32 + j] - min) * id + 0.5f);
    pack_q5(q, y[i].qs, y[i].qh);
  }
}

void quant_q4_1(const float* x, block_q4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      const float v = x[i * 32 + j];
      if (v < min)
        min = v;
      if (v > max)
        max = v;
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(min);
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[i * 32 + j] - min) * id;
      const float x1 = (x[i * 32 + 16 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

// ggml's make_qkx2_quants: a scale and min for n values in [0, nmax],
// searched over nstep+1 candidate scales, minimising weighted squared error.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min)
      min = x[i];
    if (x[i] > max)
      max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0)
    min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i)
      L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i)
          L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// ggml's make_qx_quants with rmse_type 1 and no importance weights: a signed
// scale for n values in [-nmax, nmax-1], L holds value + nmax.
float make_qx_quants_rmse1(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < group_max_eps) {
    for (int i = 0; i < n; ++i)
      L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0)
      continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Shared by Q4_K and Q5_K: 8 sub-block scales/mins as 6-bit values packed
// into scales[12], then the per-element levels in [0, nmax].
void quant_k_scales(const float* x, int nmax, float rmin, int nstep, uint8_t* L, uint8_t packed[12],
                    uint16_t* d_out, uint16_t* dmin_out) {
  uint8_t Laux[32];
  float weights[32];
  float mins[qk_k / 32];
  float scales[qk_k / 32];
  float max_scale = 0;
  float max_min = 0;
  for (int j = 0; j < qk_k / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l)
      sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l)
      weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                 0.1f, nstep, false);
    if (scales[j] > max_scale)
      max_scale = scales[j];
    if (mins[j] > max_min)
      max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(packed, 0, 12);
  for (int j = 0; j < qk_k / 32; ++j) {
    uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j - 0] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  *d_out = fp32_to_fp16(max_scale / 63.f);
  *dmin_out = fp32_to_fp16(max_min / 63.f);
  uint8_t sc, m;
  for (int j = 0; j < qk_k / 32; ++j) {
    get_scale_min_k4(j, packed, &sc, &m);
    const float d = fp16_to_fp32(*d_out) * sc;
    if (d == 0.0f)
      continue;
    const float dm = fp16_to_fp32(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

void quant_q4_k(const float* x, block_q4_k* y, int64_t nb) {
  uint8_t L[qk_k];
  for (int64_t i = 0; i < nb; ++i) {
    quant_k_scales(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < qk_k; j += 64) {
      for (int l = 0; l < 32; ++l)
        q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
    x += qk_k;
  }
}

void quant_q5_k(const float* x, block_q5_k* y, int64_t nb) {
  uint8_t L[qk_k];
  for (int64_t i = 0; i < nb; ++i) {
    quant_k_scales(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, qk_k / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < qk_k; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        int l2 = L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
      ql += 32;
    }
    x += qk_k;
  }
}

void quant_q6_k(const float* x, block_q6_k* y, int64_t nb) {
  int8_t L[qk_k];
  float scales[qk_k / 16];
  for (int64_t i = 0; i < nb; ++i) {
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < qk_k / 16; ++ib) {
      const float scale = make_qx_quants_rmse1(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < group_max_eps) {
      std::memset(&y[i], 0, sizeof(block_q6_k));
      y[i].d = fp32_to_fp16(0.f);
      x += qk_k;
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < qk_k / 16; ++ib)
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < qk_k / 16; ++j) {
      const float d = fp16_to_fp32(y[i].d) * y[i].scales[j];
      if (d == 0.0f)
        continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < qk_k; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                     ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
    x += qk_k;
  }
}

void quant_q8_k(const float* x, block_q8_k* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    float max = 0;
    float amax = 0;
    for (int j = 0; j < qk_k; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      y[i].d = 0;
      std::memset(y[i].qs, 0, qk_k);
      std::memset(y[i].bsums, 0, sizeof y[i].bsums);
      x += qk_k;
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < qk_k; ++j) {
      const int v = nearest_int(iscale * x[j]);
      y[i].qs[j] = static_cast<int8_t>(std::min(127, v));
    }
    for (int j = 0; j < qk_k / 16; ++j) {
      int sum = 0;
      for (int ii = 0; ii < 16; ++ii)
        sum += y[i].qs[j * 16 + ii];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1 / iscale;
    x += qk_k;
  }
}

[[noreturn]] void unsupported(const char* what, dtype t) {
  throw std::invalid_argument(std::string(what) + ": unsupported type " + to_string(t));
}

}  // namespace

void q5_values(const uint8_t* qs, const uint8_t* qh, int (&q)[32]) {
  uint32_t h;
  std::memcpy(&h, qh, sizeof h);
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int>((qs[j] & 0x0F) | (((h >> j) & 1u) << 4));
    q[j + 16] = static_cast<int>((qs[j] >> 4) | (((h >> (j + 16)) & 1u) << 4));
  }
}

void dequantize_row_ref(dtype t, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / static_cast<int64_t>(block_elems(t));
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case dtype::f16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i)
        dst[i] = fp16_to_fp32(h[i]);
      return;
    }
    case dtype::bf16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i)
        dst[i] = bf16_to_fp32(h[i]);
      return;
    }
    case dtype::q8_0: return dequant_q8_0(static_cast<const block_q8_0*>(src), dst, nb);
    case dtype::q8_1: return dequant_q8_1(static_cast<const block_q8_1*>(src), dst, nb);
    case dtype::q4_0: return dequant_q4_0(static_cast<const block_q4_0*>(src), dst, nb);
    case dtype::q4_1: return dequant_q4_1(static_cast<const block_q4_1*>(src), dst, nb);
    case dtype::q5_0: return dequant_q5_0(static_cast<const block_q5_0*>(src), dst, nb);
    case dtype::q5_1: return dequant_q5_1(static_cast<const block_q5_1*>(src), dst, nb);
    case dtype::q4_k: return dequant_q4_k(static_cast<const block_q4_k*>(src), dst, nb);
    case dtype::q5_k: return dequant_q5_k(static_cast<const block_q5_k*>(src), dst, nb);
    case dtype::q6_k: return dequant_q6_k(static_cast<const block_q6_k*>(src), dst, nb);
    case dtype::q8_k: return dequant_q8_k(static_cast<const block_q8_k*>(src), dst, nb);
    default: unsupported("dequantize_row_ref", t);
  }
}

void quantize_row_ref(dtype t, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / static_cast<int64_t>(block_elems(t));
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case dtype::f16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i)
        h[i] = fp32_to_fp16(src[i]);
      return;
    }
    case dtype::bf16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i)
        h[i] = fp32_to_bf16(src[i]);
      return;
    }
    case dtype::q8_0: return quant_q8_0(src, static_cast<block_q8_0*>(dst), nb);
    case dtype::q8_1: return quant_q8_1(src, static_cast<block_q8_1*>(dst), nb);
    case dtype::q4_0: return quant_q4_0(src, static_cast<block_q4_0*>(dst), nb);
    case dtype::q4_1: return quant_q4_1(src, static_cast<block_q4_1*>(dst), nb);
    case dtype::q5_0: return quant_q5_0(src, static_cast<block_q5_0*>(dst), nb);
    case dtype::q5_1: return quant_q5_1(src, static_cast<block_q5_1*>(dst), nb);
    case dtype::q4_k: return quant_q4_k(src, static_cast<block_q4_k*>(dst), nb);
    case dtype::q5_k: return quant_q5_k(src, static_cast<block_q5_k*>(dst), nb);
    case dtype::q6_k: return quant_q6_k(src, static_cast<block_q6_k*>(dst), nb);
    case dtype::q8_k: return quant_q8_k(src, static_cast<block_q8_k*>(dst), nb);
    default: unsupported("quantize_row_ref", t);
  }
}

}  // namespace llmux::kernels
