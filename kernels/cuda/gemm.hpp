#pragma once
/// GEMMs of the GPU engine through cuBLAS: y = x · Wᵀ for row-major
/// activations x [m, k] and weights W [n, k] (as GGUF stores them, n output
/// rows), in the activation type, accumulated in f32.

#include <cstdint>

#include "kernels/cuda/ops.hpp"

struct cublasContext;

namespace llmux::cuda {

/// One cuBLAS handle bound to one stream, with its own workspace (so its
/// GEMMs can be captured into CUDA graphs); use it from one thread at a time.
class blas {
public:
  explicit blas(cudaStream_t stream);
  ~blas();
  blas(const blas&) = delete;
  /// Later calls run on `stream` (a job moved to another SM partition).
  void set_stream(cudaStream_t stream);
  blas& operator=(const blas&) = delete;

  /// y[m, n] = x[m, k] · W[n, k]ᵀ; y may not overlap x or W. y has type
  /// `y_type` (the activation type by default; f32 for logits).
  void matmul(act t, const void* w, const void* x, int64_t m, int64_t n, int64_t k, void* y);
  void matmul(act t, const void* w, const void* x, int64_t m, int64_t n, int64_t k, void* y, act y_type);

  /// 32 MiB, as NVIDIA recommends for Hopper.
  static constexpr size_t workspace_bytes = size_t{32} << 20;

private:
  cublasContext* handle_ = nullptr;
  void* workspace_ = nullptr;
};

}  // namespace llmux::cuda
