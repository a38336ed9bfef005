// Weight-only int8 GEMM (see int8.hpp): a GEMV kernel for decode batches,
// and dequantize-then-cuBLAS for larger m.

#include "kernels/cuda/int8.hpp"

#include <cstdint>
#include <limits>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/gemm.hpp"

namespace llmux::cuda {

size_t int8_scratch_bytes(act t, int64_t n, int64_t k) {
  return static_cast<size_t>(n) * static_cast<size_t>(k) * act_bytes(t);
}

namespace {

// -- Dequantize (the large-m path) ----------------------------------------------

/// out[row, j] = q[row, j] · scales[row] in the activation type; one block
/// per row.
template <typename T>
__global__ void dequantize_int8_kernel(const int8_t* __restrict__ q, const float* __restrict__ scales, int64_t k,
                                       T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const float s = scales[row];
  const int8_t* qr = q + row * k;
  T* o = out + row * k;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x)
    o[j] = from_f<T>(static_cast<float>(qr[j]) * s);
}

// -- GEMV (m <= int8_gemv_max_m) --------------------------------------------------
//
// Block: gemv_warps warps; warp w owns rows row0 .. row0 + R − 1 of W
// (R = gemv_rows_per_warp(M)). k is swept in tiles of gemv_tile columns;
// a tile is two steps of 512 columns, and in each step lane l owns the 16
// columns 16·l .. 16·l + 15 of the step: one 16-byte load per row. Per
// tile: (1) load this lane's weights of both steps (in flight while x is
// staged), (2) stage the tile of all M rows of x in shared memory as f32,
// (3) FMAs: each float4 of x read from shared memory serves the warp's R
// rows. After the last tile, each of the M · R sums is reduced across the
// warp and scaled.
//
// Shared layout: xs[m][slot] is a float4 of x[m, k0 + 512·s + 16·l + 4·v ..
// + 3] (step s, lane l, quarter v of the lane's 16 columns) at slot
// 128·s + 32·v + (l ^ 2v). In step (1)-(3) lane l reads slots 128·s + 32·v
// + (l ^ 2v) for fixed (s, v): 32 consecutive float4 in some order, free of
// bank conflicts. Staging walks x in k order (coalesced global reads),
// thread t holding 4 columns: consecutive threads are (l, v) = (l0, 0..3),
// (l0 + 1, 0..3), ...; without the XOR, 8 threads' float4 stores would hit
// only two bank groups (4-way conflicts); with it, the 8 slots of a
// quarter-warp are distinct mod 8.

constexpr int gemv_warps = 4;
constexpr int gemv_threads = gemv_warps * 32;
constexpr int gemv_chunk = 16;                       // int8 per lane per row and step: one 16-byte load
constexpr int gemv_step = 32 * gemv_chunk;           // 512 columns per step
constexpr int gemv_steps = 2;                        // steps per tile
constexpr int gemv_tile = gemv_steps * gemv_step;    // 1024 columns staged per tile
constexpr int gemv_tile_vec = gemv_tile / 4;         // float4 per staged x row per tile: 256

/// Rows of W per warp: each x value read from shared memory serves this
/// many rows from registers. 4 keeps shared-memory reads (4·M/R bytes per
/// weight) within what an SM serves at HBM speed for M <= 8; M = 1 takes 2
/// for more blocks on small n.
constexpr int gemv_rows_per_warp(int m) {
  return m == 1 ? 2 : 4;
}

/// The float4 slot of (step s, lane l, quarter v) in a staged x row.
__device__ __forceinline__ int gemv_slot(int s, int l, int v) {
  return 128 * s + 32 * v + (l ^ (2 * v));
}

/// Four int8 (the bytes of `word`, lowest first) as exact floats without
/// I2F, which sm_90 runs at a quarter of the FMA rate (16 per clock per SM,
/// about one HBM byte's worth): byte b, offset to b + 128 (the XOR), is
/// placed as the low mantissa byte of 2^23 (0x4B0000__), and subtracting
/// 2^23 + 128 leaves b. PRMT + FADD, both full rate.
__device__ __forceinline__ void int8x4_to_f32(uint32_t word, float out[4]) {
  const uint32_t u = word ^ 0x80808080u;
  out[0] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7540)) - 8388736.0f;
  out[1] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7541)) - 8388736.0f;
  out[2] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7542)) - 8388736.0f;
  out[3] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7543)) - 8388736.0f;
}

__device__ __forceinline__ uint32_t word_of(const int4& a, int v) {
  return static_cast<uint32_t>(v == 0 ? a.x : v == 1 ? a.y : v == 2 ? a.z : a.w);
}

/// Columns c .. c + 15 of a weight row of k: one 16-byte load when the row
/// is 16-byte aligned and the chunk lies inside it; else bytes, zeros past k
/// (k not a multiple of 16: rows start unaligned, and the last chunk is
/// partial).
__device__ __forceinline__ int4 load_weights(const int8_t* row, int64_t c, int64_t k) {
  if (c + gemv_chunk <= k && (reinterpret_cast<uintptr_t>(row) & 15) == 0)
    return __ldg(reinterpret_cast<const int4*>(row + c));
  uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (int j = 0; j < gemv_chunk; ++j)
    if (c + j < k)
      w[j >> 2] |= static_cast<uint32_t>(static_cast<uint8_t>(row[c + j])) << (8 * (j & 3));
  return make_int4(static_cast<int>(w[0]), static_cast<int>(w[1]), static_cast<int>(w[2]), static_cast<int>(w[3]));
}

template <typename T>
struct alignas(4 * sizeof(T)) four {
  T v[4];
};

/// x[e .. e + 3] of a row of k as f32, zeros past k. `vec`: the row's
/// 4-element groups are aligned, so a full group is one load.
template <typename T>
__device__ __forceinline__ float4 load_x4(const T* row, int64_t e, int64_t k, bool vec) {
  if (vec && e + 4 <= k) {
    const four<T> g = *reinterpret_cast<const four<T>*>(row + e);
    return make_float4(to_f(g.v[0]), to_f(g.v[1]), to_f(g.v[2]), to_f(g.v[3]));
  }
  return make_float4(e < k ? to_f(row[e]) : 0.0f, e + 1 < k ? to_f(row[e + 1]) : 0.0f,
                     e + 2 < k ? to_f(row[e + 2]) : 0.0f, e + 3 < k ? to_f(row[e + 3]) : 0.0f);
}

/// y[m, row] = scales[row] · Σ_j q[row, j] · x[m, j] for M rows of x, R rows
/// of W per warp. x_vec: x's rows are 4-element aligned (load_x4).
template <typename T, int M>
__global__ void __launch_bounds__(gemv_threads)
  gemv_int8_kernel(const int8_t* __restrict__ q, const float* __restrict__ scales, const T* __restrict__ x,
                   bool x_vec, int64_t n, int64_t k, void* __restrict__ y, bool y_f32) {
  constexpr int R = gemv_rows_per_warp(M);
  __shared__ float4 xs[M][gemv_tile_vec];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * gemv_warps + warp) * R;

  float acc[M][R];
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r)
      acc[i][r] = 0.0f;

  // Every warp runs every tile, rows past n included (as zeros): the
  // __syncthreads below need the whole block.
  for (int64_t k0 = 0; k0 < k; k0 += gemv_tile) {
    // (1) This lane's weights of the tile.
    int4 wq[gemv_steps][R];
#pragma unroll
    for (int s = 0; s < gemv_steps; ++s) {
      const int64_t c = k0 + s * gemv_step + lane * gemv_chunk;
#pragma unroll
      for (int r = 0; r < R; ++r)
        wq[s][r] = row0 + r < n ? load_weights(q + (row0 + r) * k, c, k) : make_int4(0, 0, 0, 0);
    }

    // (2) The tile of x, f32, zeros past k.
    __syncthreads();  // the previous tile's reads of xs are done
    for (int i = threadIdx.x; i < M * gemv_tile_vec; i += gemv_threads) {
      const int xm = i / gemv_tile_vec;  // row of x
      const int g = i % gemv_tile_vec;   // 4-column group of the tile, in k order: 128·s + 4·l + v
      xs[xm][gemv_slot(g >> 7, (g >> 2) & 31, g & 3)] = load_x4(x + xm * k, k0 + 4 * g, k, x_vec);
    }
    __syncthreads();

    // (3) FMAs, a quarter of the lane's 16 columns at a time.
#pragma unroll
    for (int s = 0; s < gemv_steps; ++s)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        float wf[R][4];
#pragma unroll
        for (int r = 0; r < R; ++r)
          int8x4_to_f32(word_of(wq[s][r], v), wf[r]);
#pragma unroll
        for (int i = 0; i < M; ++i) {
          const float4 xv = xs[i][gemv_slot(s, lane, v)];
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float a = acc[i][r];
            a = fmaf(wf[r][0], xv.x, a);
            a = fmaf(wf[r][1], xv.y, a);
            a = fmaf(wf[r][2], xv.z, a);
            a = fmaf(wf[r][3], xv.w, a);
            acc[i][r] = a;
          }
        }
      }
  }

#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = warp_sum(acc[i][r]);
      const int64_t row = row0 + r;
      if (lane == 0 && row < n) {
        const float out = sum * scales[row];
        if (y_f32)
          static_cast<float*>(y)[i * n + row] = out;
        else
          static_cast<T*>(y)[i * n + row] = from_f<T>(out);
      }
    }
}

template <typename T, int M>
void launch_gemv(const int8_weights& w, const T* x, void* y, bool y_f32, cudaStream_t stream) {
  constexpr int64_t rows_per_block = gemv_warps * gemv_rows_per_warp(M);
  const auto blocks = static_cast<unsigned>((w.n + rows_per_block - 1) / rows_per_block);
  const bool x_vec = w.k % 4 == 0 && reinterpret_cast<uintptr_t>(x) % sizeof(four<T>) == 0;
  gemv_int8_kernel<T, M><<<blocks, gemv_threads, 0, stream>>>(w.q, w.scales, x, x_vec, w.n, w.k, y, y_f32);
}

/// The GEMV instance for m (1 .. int8_gemv_max_m): the rows of x are a
/// template parameter so their sums live in registers.
template <typename T>
void gemv(const int8_weights& w, const T* x, int64_t m, void* y, bool y_f32, cudaStream_t stream) {
  static_assert(int8_gemv_max_m == 8, "one case per m below");
  switch (m) {
    case 1: return launch_gemv<T, 1>(w, x, y, y_f32, stream);
    case 2: return launch_gemv<T, 2>(w, x, y, y_f32, stream);
    case 3: return launch_gemv<T, 3>(w, x, y, y_f32, stream);
    case 4: return launch_gemv<T, 4>(w, x, y, y_f32, stream);
    case 5: return launch_gemv<T, 5>(w, x, y, y_f32, stream);
    case 6: return launch_gemv<T, 6>(w, x, y, y_f32, stream);
    case 7: return launch_gemv<T, 7>(w, x, y, y_f32, stream);
    case 8: return launch_gemv<T, 8>(w, x, y, y_f32, stream);
  }
  throw cuda_error("matmul_int8: no GEMV for m " + std::to_string(m));
}

}  // namespace

void matmul_int8(act t, const int8_weights& w, const void* x, int64_t m, void* y, act y_type, void* scratch,
                 size_t scratch_bytes, blas& cublas, cudaStream_t stream) {
  if (y_type != t && y_type != act::f32)
    throw cuda_error(std::string{"matmul_int8: output type "} + to_string(y_type) + " for " + to_string(t) +
                     " activations (must be the activation type or f32)");
  if (m == 0 || w.n == 0)
    return;
  constexpr int64_t int_max = std::numeric_limits<int>::max();
  if (m < 0 || w.n < 0 || w.k <= 0 || m > int_max || w.n > int_max || w.k > int_max)
    throw cuda_error("matmul_int8: dimensions m " + std::to_string(m) + ", n " + std::to_string(w.n) + ", k " +
                     std::to_string(w.k) + " outside int range (k must be positive)");

  if (m <= int8_gemv_max_m) {
    dispatch(t, [&](auto tag) {
      using T = decltype(tag);
      gemv<T>(w, static_cast<const T*>(x), m, y, y_type == act::f32, stream);
    });
    launched("matmul_int8: gemv_int8_kernel");
    return;
  }

  const size_t need = int8_scratch_bytes(t, w.n, w.k);
  if (scratch == nullptr || scratch_bytes < need || reinterpret_cast<uintptr_t>(scratch) % 16 != 0)
    throw cuda_error("matmul_int8: m " + std::to_string(m) + " over [" + std::to_string(w.n) + ", " +
                     std::to_string(w.k) + "] needs " + std::to_string(need) + " bytes of 16-byte aligned " +
                     "scratch, got " + std::to_string(scratch == nullptr ? 0 : scratch_bytes) + " at " +
                     std::to_string(reinterpret_cast<uintptr_t>(scratch)));
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dequantize_int8_kernel<T><<<static_cast<unsigned>(w.n), 256, 0, stream>>>(w.q, w.scales, w.k,
                                                                               static_cast<T*>(scratch));
  });
  launched("matmul_int8: dequantize_int8_kernel");
  cublas.matmul(t, scratch, x, m, w.n, w.k, y, y_type);
}

}  // namespace llmux::cuda
