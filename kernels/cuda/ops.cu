// CUDA kernels of the forward pass (see ops.hpp). Straightforward first
// versions: one block per row (norms, embedding, sampling), one thread per
// element pair or element (RoPE, SwiGLU, KV append), and attention with one
// block of four warps per (query row, head), warps striding over positions
// with an online softmax that is merged at the end. f32 accumulation
// everywhere.

#include "kernels/cuda/ops.hpp"
#include "kernels/cuda/device_util.cuh"

#include <algorithm>
#include <cmath>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace llmux::cuda {

size_t act_bytes(act t) {
  return t == act::f32 ? 4 : 2;
}

const char* to_string(act t) {
  switch (t) {
    case act::f32: return "f32";
    case act::f16: return "f16";
    case act::bf16: return "bf16";
  }
  return "?";
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw cuda_error(std::string{what} + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

bool device_available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why != nullptr)
      *why = std::string{cudaGetErrorName(e)} + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear it
    return false;
  }
  if (n == 0) {
    if (why != nullptr)
      *why = "the CUDA runtime sees no device";
    return false;
  }
  return true;
}

namespace {

__device__ __forceinline__ float half_bits_to_f(uint16_t b) {
  return __half2float(__ushort_as_half(b));
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every
/// thread gets the total. Safe to call repeatedly.
__device__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // an earlier call may still read part/total
  if (lane == 0)
    part[w] = v;
  __syncthreads();
  if (w == 0) {
    float s = lane < static_cast<int>(blockDim.x >> 5) ? part[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0)
      total = s;
  }
  __syncthreads();
  return total;
}

unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// -- RMSNorm with the residual add -------------------------------------------

template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* residual, T* h_out, const T* weight, float eps,
                               int64_t n, T* out) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  const T* rr = residual != nullptr ? residual + row * n : nullptr;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float h = to_f(xr[i]) + (rr != nullptr ? to_f(rr[i]) : 0.0f);
    ss += h * h;
  }
  ss = block_sum(ss);
  const float scale = rsqrtf(ss / static_cast<float>(n) + eps);
  // Each element is read and then written by the same thread, so out and
  // h_out may alias x or residual.
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float h = to_f(xr[i]) + (rr != nullptr ? to_f(rr[i]) : 0.0f);
    if (h_out != nullptr)
      h_out[row * n + i] = from_f<T>(h);
    out[row * n + i] = from_f<T>(h * scale * to_f(weight[i]));
  }
}

// -- RoPE ----------------------------------------------------------------------

template <typename T>
__global__ void rope_kernel(T* x, int heads, int head_dim, int rot_dim, const int32_t* positions,
                            float theta_scale, bool neox) {
  const int64_t row = blockIdx.x;
  const int h = blockIdx.y;
  T* v = x + (row * heads + h) * head_dim;
  const float pos = static_cast<float>(positions[row]);
  const int half = rot_dim / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // As ggml and the CPU engine: theta_i by i float products of
    // base^(−2/rot_dim) (computed on the host), so the angles match theirs
    // bit for bit even at far positions.
    float theta = pos;
    for (int k = 0; k < i; ++k)
      theta *= theta_scale;
    float s, c;
    sincosf(theta, &s, &c);
    const int a = neox ? i : 2 * i;
    const int b = neox ? i + half : 2 * i + 1;
    const float x0 = to_f(v[a]), x1 = to_f(v[b]);
    v[a] = from_f<T>(x0 * c - x1 * s);
    v[b] = from_f<T>(x0 * s + x1 * c);
  }
}

// -- SwiGLU, embedding -----------------------------------------------------------

template <typename T>
__global__ void swiglu_kernel(const T* gate, const T* up, int64_t n, T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = to_f(gate[i]);
    out[i] = from_f<T>(g / (1.0f + expf(-g)) * to_f(up[i]));
  }
}

template <typename T>
__global__ void add_bias_kernel(T* x, const T* bias, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f<T>(to_f(x[i]) + to_f(bias[i % n]));
}

template <typename T>
__global__ void embedding_kernel(const T* table, const int32_t* ids, int64_t n, T* out) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(ids[row]) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    out[row * n + i] = src[i];
}

// -- Paged KV ------------------------------------------------------------------

template <typename T>
__global__ void kv_append_kernel(const T* k, const T* v, int layer, paged_kv kv) {
  const int64_t row = blockIdx.x;
  const int kvh = blockIdx.y;
  const int64_t pos = kv.positions[row];
  const int32_t id = block_of(kv, kv.table_start[row], layer, kvh, pos);
  uint16_t* block = kv.arena + static_cast<int64_t>(id) * kv.block_elems;
  const int64_t slot = (pos % kv.block_tokens) * kv.head_dim;
  const int64_t src = (row * kv.n_head_kv + kvh) * kv.head_dim;
  for (int d = threadIdx.x; d < kv.head_dim; d += blockDim.x) {
    block[slot + d] = __half_as_ushort(__float2half_rn(to_f(k[src + d])));
    block[static_cast<int64_t>(kv.block_tokens) * kv.head_dim + slot + d] =
      __half_as_ushort(__float2half_rn(to_f(v[src + d])));
  }
}

constexpr int attn_warps = 4;

/// Decode attention, GQA-grouped: a block of four warps per (row, KV head,
/// group of up to GMAX of its query heads), so each K and V row is read
/// once for the group's heads rather than once per head. Warps stride
/// over positions with an online softmax per head, merged at the end;
/// lanes hold DPL dims each (head_dim <= 32 · DPL).
template <typename T, int GMAX, int DPL>
__global__ void __launch_bounds__(attn_warps * 32)
  attention_kernel(const T* q, int n_head, int layer, float scale, paged_kv kv, T* out, const int32_t* row_ids) {
  const int64_t row = row_ids != nullptr ? row_ids[blockIdx.x] : blockIdx.x;
  const int D = kv.head_dim;
  const int group = n_head / kv.n_head_kv;
  const int subs = (group + GMAX - 1) / GMAX;  // blocks per KV head
  const int kvh = blockIdx.y / subs;
  const int h0 = kvh * group + (blockIdx.y % subs) * GMAX;  // this block's first query head
  const int heads = min(GMAX, kvh * group + group - h0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t ctx = static_cast<int64_t>(kv.positions[row]) + 1;
  const int32_t start = kv.table_start[row];

  float qv[GMAX][DPL], acc[GMAX][DPL], m[GMAX], l[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    const T* qr = q + (row * n_head + h0 + min(g, heads - 1)) * D;
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      qv[g][k] = d < D && g < heads ? to_f(qr[d]) : 0.0f;
      acc[g][k] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  for (int64_t j = warp; j < ctx; j += attn_warps) {
    const int32_t id = block_of(kv, start, layer, kvh, j);
    const uint16_t* block = kv.arena + static_cast<int64_t>(id) * kv.block_elems;
    const int64_t slot = (j % kv.block_tokens) * D;
    const uint16_t* kr = block + slot;
    const uint16_t* vr = block + static_cast<int64_t>(kv.block_tokens) * D + slot;
    float kf[DPL], vf[DPL];
#pragma unroll
    for (int k = 0; k < DPL; ++k) {
      const int d = lane + 32 * k;
      kf[k] = d < D ? half_bits_to_f(kr[d]) : 0.0f;
      vf[k] = d < D ? half_bits_to_f(vr[d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < DPL; ++k)
        s += qv[g][k] * kf[k];
      s = warp_sum(s) * scale;
      const float m_new = fmaxf(m[g], s);
      const float corr = expf(m[g] - m_new);
      const float p = expf(s - m_new);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int k = 0; k < DPL; ++k)
        acc[g][k] = acc[g][k] * corr + p * vf[k];
      m[g] = m_new;
    }
  }
  // Merge the warps per head: rescale each to the largest maximum.
  __shared__ float wm[attn_warps][GMAX], wl[attn_warps][GMAX];
  __shared__ float wacc[attn_warps][GMAX][32 * DPL];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (lane == 0) {
      wm[warp][g] = m[g];
      wl[warp][g] = l[g];
    }
#pragma unroll
    for (int k = 0; k < DPL; ++k)
      wacc[warp][g][lane + 32 * k] = acc[g][k];
  }
  __syncthreads();
  for (int g = 0; g < heads; ++g) {
    float big = -INFINITY;
    for (int w = 0; w < attn_warps; ++w)
      big = fmaxf(big, wm[w][g]);
    float total = 0.0f;
    for (int w = 0; w < attn_warps; ++w)
      total += wl[w][g] * expf(wm[w][g] - big);  // a warp with no position: l = 0
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float o = 0.0f;
      for (int w = 0; w < attn_warps; ++w)
        o += wacc[w][g][d] * expf(wm[w][g] - big);
      out[(row * n_head + h0 + g) * D + d] = from_f<T>(o / total);
    }
  }
}

// -- Greedy sampling ---------------------------------------------------------------

__global__ void argmax_logprob_kernel(const float* logits, int64_t vocab, int32_t* ids, float* logprob) {
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  float best = -INFINITY;
  int32_t best_id = INT32_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (x[i] > best) {  // strided ascending: the first (lowest) id wins ties per thread
      best = x[i];
      best_id = static_cast<int32_t>(i);
    }
  // Warp, then block: the larger value wins, the lower id on ties.
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, best_id, o);
    if (ov > best || (ov == best && oi < best_id)) {
      best = ov;
      best_id = oi;
    }
  }
  __shared__ float wv[32];
  __shared__ int32_t wi[32];
  __shared__ float row_max;
  __shared__ int32_t row_id;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) {
    wv[w] = best;
    wi[w] = best_id;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float bv = wv[0];
    int32_t bi = wi[0];
    for (int k = 1; k < static_cast<int>(blockDim.x >> 5); ++k)
      if (wv[k] > bv || (wv[k] == bv && wi[k] < bi)) {
        bv = wv[k];
        bi = wi[k];
      }
    row_max = bv;
    // A row of NaN or -inf alone updates no thread: answer id 0 (its
    // logprob comes out NaN) rather than INT32_MAX, which the next step's
    // embedding would read far out of bounds.
    row_id = bi == INT32_MAX ? 0 : bi;
  }
  __syncthreads();
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    sum += expf(x[i] - row_max);
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    ids[row] = row_id;
    if (logprob != nullptr)
      logprob[row] = -logf(sum);  // x[id] − max − log Σ, and x[id] = max
  }
}

}  // namespace

void rmsnorm(act t, const void* x, const void* residual, void* h_out, const void* weight, float eps,
             int64_t rows, int64_t n, void* out, cudaStream_t stream) {
  if (rows == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_kernel<T><<<static_cast<unsigned>(rows), 256, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<T*>(h_out),
      static_cast<const T*>(weight), eps, n, static_cast<T*>(out));
  });
  launched("rmsnorm");
}

void rope(act t, void* x, int64_t rows, int heads, int head_dim, int rot_dim, const int32_t* positions,
          float base, bool neox, cudaStream_t stream) {
  if (rows == 0)
    return;
  if (rot_dim > head_dim || rot_dim % 2 != 0)
    throw cuda_error("rope: rot_dim must be even and at most head_dim");
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    rope_kernel<T><<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(heads)), 64, 0, stream>>>(
      static_cast<T*>(x), heads, head_dim, rot_dim, positions,
      std::pow(base, -2.0f / static_cast<float>(rot_dim)), neox);
  });
  launched("rope");
}

void swiglu(act t, const void* gate, const void* up, int64_t n, void* out, cudaStream_t stream) {
  if (n == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = std::min<unsigned>(blocks_for(n, 256), 65535u);
    swiglu_kernel<T><<<grid, 256, 0, stream>>>(static_cast<const T*>(gate), static_cast<const T*>(up), n,
                                               static_cast<T*>(out));
  });
  launched("swiglu");
}

void add_bias(act t, void* x, const void* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = std::min<unsigned>(blocks_for(rows * n, 256), 65535u);
    add_bias_kernel<T><<<grid, 256, 0, stream>>>(static_cast<T*>(x), static_cast<const T*>(bias), rows, n);
  });
  launched("add_bias");
}

void embedding(act t, const void* table, const int32_t* ids, int64_t rows, int64_t n, void* out,
               cudaStream_t stream) {
  if (rows == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    embedding_kernel<T><<<static_cast<unsigned>(rows), 256, 0, stream>>>(static_cast<const T*>(table), ids, n,
                                                                          static_cast<T*>(out));
  });
  launched("embedding");
}

void kv_append(act t, const void* k, const void* v, int64_t rows, int layer, const paged_kv& kv,
               cudaStream_t stream) {
  if (rows == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    kv_append_kernel<T><<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(kv.n_head_kv)), 64, 0,
                          stream>>>(static_cast<const T*>(k), static_cast<const T*>(v), layer, kv);
  });
  launched("kv_append");
}

void paged_attention(act t, const void* q, int64_t rows, int n_head, int layer, float scale,
                     const paged_kv& kv, void* out, cudaStream_t stream, const int32_t* row_ids) {
  if (rows == 0)
    return;
  if (kv.head_dim > 256)
    throw cuda_error("paged_attention: head_dim above 256");
  if (kv.n_head_kv <= 0 || n_head % kv.n_head_kv != 0)
    throw cuda_error("paged_attention: n_head must be a multiple of n_head_kv");
  const int group = n_head / kv.n_head_kv;
  // Query heads per block: the whole GQA group up to 8 (then several
  // blocks per KV head); 1 for MHA.
  const int gmax = group == 1 ? 1 : group <= 4 ? 4 : 8;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(kv.n_head_kv * ((group + gmax - 1) / gmax)));
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel) {
      kernel<<<grid, attn_warps * 32, 0, stream>>>(static_cast<const T*>(q), n_head, layer, scale, kv,
                                                   static_cast<T*>(out), row_ids);
    };
    const bool wide = kv.head_dim > 128;
    if (gmax == 1)
      wide ? launch(attention_kernel<T, 1, 8>) : launch(attention_kernel<T, 1, 4>);
    else if (gmax == 4)
      wide ? launch(attention_kernel<T, 4, 8>) : launch(attention_kernel<T, 4, 4>);
    else
      wide ? launch(attention_kernel<T, 8, 8>) : launch(attention_kernel<T, 8, 4>);
  });
  launched("paged_attention");
}

void argmax_logprob(const float* logits, int64_t rows, int64_t vocab, int32_t* ids, float* logprob,
                    cudaStream_t stream) {
  if (rows == 0)
    return;
  argmax_logprob_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(logits, vocab, ids, logprob);
  launched("argmax_logprob");
}

namespace {

/// Uniform in [0, 1) from splitmix64 of (seed, i): 24 bits of it.
__device__ __forceinline__ float hash_uniform(uint64_t seed, int64_t i) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

template <typename T>
__global__ void fill_uniform_kernel(T* x, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f<T>((2.0f * hash_uniform(seed, i) - 1.0f) * scale);
}

__global__ void fill_uniform_int8_kernel(int8_t* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = static_cast<int8_t>(static_cast<int>(hash_uniform(seed, i) * 255.0f) - 127);  // -127 .. 127
}

template <typename T>
__global__ void fill_value_kernel(T* x, int64_t n, float value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f<T>(value);
}

}  // namespace

void fill_uniform(act t, void* x, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    fill_uniform_kernel<T><<<std::min<unsigned>(blocks_for(n, 256), 65535u), 256, 0, stream>>>(
      static_cast<T*>(x), n, seed, scale);
  });
  launched("fill_uniform");
}

void fill_uniform_int8(int8_t* x, int64_t n, uint64_t seed, cudaStream_t stream) {
  if (n == 0)
    return;
  fill_uniform_int8_kernel<<<std::min<unsigned>(blocks_for(n, 256), 65535u), 256, 0, stream>>>(x, n, seed);
  launched("fill_uniform_int8");
}

void fill_value(act t, void* x, int64_t n, float value, cudaStream_t stream) {
  if (n == 0)
    return;
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    fill_value_kernel<T><<<std::min<unsigned>(blocks_for(n, 256), 65535u), 256, 0, stream>>>(static_cast<T*>(x),
                                                                                              n, value);
  });
  launched("fill_value");
}

}  // namespace llmux::cuda
