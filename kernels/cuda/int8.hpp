#pragma once
/// Weight-only int8 GEMM of the GPU engine: y = x · (scales ⊙ Wq)ᵀ for
/// row-major activations x [m, k] and int8 weights Wq [n, k] (GGUF's shape,
/// n output rows) with one f32 scale per output row, as quantize_int8_rows
/// (kernels/cpu/int8_rows.hpp) makes them on the host. Int8 weights halve
/// the bytes a decode step streams against f16 weights, and decode is
/// bound by those bytes.
///
/// Two paths, chosen by m:
///  - m <= int8_gemv_max_m (decode batches): a GEMV kernel that reads each
///    int8 weight once for all m rows. 4 warps per block; each warp owns 2
///    (m = 1) or 4 output rows and sweeps k with one 16-byte load of int8
///    per lane per row and step; the block stages 1024 columns of x at a
///    time in shared memory as f32, so each x value read serves every row
///    of the warp. Sums are f32, reduced across the warp, and multiplied
///    by the row's scale at the end.
///  - larger m (prefill): Wq is dequantized to the activation type into
///    the caller's scratch (the same q · scale in f32 as
///    dequantize_int8_rows, then rounded), and cuBLAS does the rest
///    (blas::matmul, f32 accumulation).
/// The cutoff: at m = 8 the GEMV issues 8 f32 FMAs (and one FADD to
/// convert) per weight byte, close to what an H100 SM computes per byte of
/// HBM it receives (128 FMA against ~13 bytes per clock: 3.35 TB/s over 132
/// SMs at 1.98 GHz), so beyond that it turns compute-bound on the CUDA
/// cores, while the other path's GEMM runs on tensor cores. That path moves
/// about 5 bytes per weight (dequantize reads 1 and writes 2, cuBLAS reads
/// 2) against the GEMV's 1, so the true crossover may lie higher; measure
/// before moving it.
///
/// Host functions; every pointer is device memory unless named otherwise;
/// the work is asynchronous on `stream` (and on the blas handle's stream,
/// which must be the same); launch errors throw cuda_error naming the launch.

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/ops.hpp"

namespace llmux::cuda {

class blas;

/// One int8 weight matrix on the device. Not owning.
struct int8_weights {
  const int8_t* q = nullptr;      ///< [n, k] row-major, values in [−127, 127]
  const float* scales = nullptr;  ///< [n]: row r of W is q[r, :] · scales[r]
  int64_t n = 0;                  ///< output rows
  int64_t k = 0;                  ///< input columns
};

/// The largest m that takes the GEMV path (see above); larger m need scratch.
inline constexpr int64_t int8_gemv_max_m = 8;

/// Bytes of scratch the m > int8_gemv_max_m path needs for an [n, k]
/// matrix: n · k · act_bytes(t) (W dequantized to the activation type).
/// Size the engine's buffer by its largest matrix.
[[nodiscard]] size_t int8_scratch_bytes(act t, int64_t n, int64_t k);

/// y[m, n] = x[m, k] · (w.scales ⊙ w.q)ᵀ, summed in f32. x has type `t`; y
/// has type `y_type`, which is `t` or f32 (logits); anything else throws.
/// y may not overlap x, the weights or scratch.
///
/// `scratch` (scratch_bytes bytes, 16-byte aligned) is used only when
/// m > int8_gemv_max_m, and then must hold int8_scratch_bytes(t, w.n, w.k),
/// else cuda_error; for smaller m it may be null. It is in use until the
/// GEMM is done on the stream. `cublas` is used only for the larger m too,
/// and must be bound to `stream` (blas::set_stream), so the GEMM runs after
/// the dequantize kernel. m or n = 0 does nothing; k must be positive and every
/// dimension at most INT_MAX (cuBLAS's int), else cuda_error.
///
/// The GEMV loads rows with 16-byte loads when they are 16-byte aligned
/// (w.q from cudaMalloc and k a multiple of 16, as every model's are), and
/// byte by byte otherwise: correct for any k, fast for aligned ones. Same
/// for x with 4-element loads (x aligned to 4 elements, k a multiple of 4).
void matmul_int8(act t, const int8_weights& w, const void* x, int64_t m, void* y, act y_type, void* scratch,
                 size_t scratch_bytes, blas& cublas, cudaStream_t stream);

}  // namespace llmux::cuda
