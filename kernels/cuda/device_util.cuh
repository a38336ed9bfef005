#pragma once
// Device helpers shared by the CUDA kernel files (ops.cu, int8.cu):
// conversions between the activation types and f32, a warp sum, the
// dispatch from `act` to a kernel's element type, and the launch check.
// Compiled into each .cu that includes it (internal linkage).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/ops.hpp"

namespace llmux::cuda {
namespace {

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Runs f(T{}) for the activation type `t`.
template <class F>
void dispatch(act t, F&& f) {
  switch (t) {
    case act::f32: f(float{}); return;
    case act::f16: f(__half{}); return;
    case act::bf16: f(__nv_bfloat16{}); return;
  }
  throw cuda_error("unknown activation type");
}

/// The physical block holding position `pos` of (layer, kv head) for the
/// sequence whose table starts at token-block `start`.
__device__ __forceinline__ int32_t block_of(const paged_kv& kv, int32_t start, int layer, int kvh,
                                            int64_t pos) {
  const int64_t tb = start + pos / kv.block_tokens;
  const int heads = kv.table_heads > 0 ? kv.table_heads : kv.n_head_kv;
  return kv.tables[tb * kv.per_tb + static_cast<int64_t>(layer) * heads + kv.head_base + kvh];
}

inline void launched(const char* what) {
  check(cudaGetLastError(), what);
}

}  // namespace
}  // namespace llmux::cuda
