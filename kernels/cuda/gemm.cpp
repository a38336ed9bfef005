#include "kernels/cuda/gemm.hpp"

#include <limits>
#include <string>

#include <cublas_v2.h>

namespace llmux::cuda {

namespace {

void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(std::string{what} + ": " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

cudaDataType_t data_type(act t) {
  switch (t) {
    case act::f32: return CUDA_R_32F;
    case act::f16: return CUDA_R_16F;
    case act::bf16: return CUDA_R_16BF;
  }
  throw cuda_error("unknown activation type");
}

}  // namespace

blas::blas(cudaStream_t stream) {
  check_blas(cublasCreate(&handle_), "cublasCreate");
  try {
    check(cudaMalloc(&workspace_, workspace_bytes), "cuBLAS workspace");
    set_stream(stream);
    // Split-K partial sums in f32, not in a 16-bit output type (cuBLAS's
    // default allows the latter): the header promises f32 accumulation.
    check_blas(cublasSetMathMode(handle_, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                                                    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
               "cublasSetMathMode");
  } catch (...) {
    cublasDestroy(handle_);  // the destructor does not run for a throwing constructor
    handle_ = nullptr;
    cudaFree(workspace_);
    throw;
  }
}

void blas::set_stream(cudaStream_t stream) {
  check_blas(cublasSetStream(handle_, stream), "cublasSetStream");
  // cublasSetStream resets the workspace to cuBLAS's own pool, which it
  // may allocate from inside a graph capture: ours, always.
  check_blas(cublasSetWorkspace(handle_, workspace_, workspace_bytes), "cublasSetWorkspace");
}

blas::~blas() {
  if (handle_ != nullptr)
    cublasDestroy(handle_);
  cudaFree(workspace_);
}

void blas::matmul(act t, const void* w, const void* x, int64_t m, int64_t n, int64_t k, void* y) {
  matmul(t, w, x, m, n, k, y, t);
}

void blas::matmul(act t, const void* w, const void* x, int64_t m, int64_t n, int64_t k, void* y, act y_type) {
  if (m == 0 || n == 0)
    return;
  // cuBLAS takes int dimensions; k = 0 would be an invalid leading dimension.
  constexpr int64_t int_max = std::numeric_limits<int>::max();
  if (m < 0 || n < 0 || k <= 0 || m > int_max || n > int_max || k > int_max)
    throw cuda_error("matmul: dimensions m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " +
                     std::to_string(k) + " outside cuBLAS's int range (k must be positive)");
  // Column-major view: yᵀ [n, m] = W [n, k] · xᵀ [k, m]. Row-major W [n, k]
  // is column-major [k, n] (ld k), used transposed; row-major x [m, k] is
  // column-major [k, m] (ld k); row-major y [m, n] is column-major [n, m].
  const float alpha = 1.0f, beta = 0.0f;
  const auto type = data_type(t);
  check_blas(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                          static_cast<int>(k), &alpha, w, type, static_cast<int>(k), x, type,
                          static_cast<int>(k), &beta, y, data_type(y_type), static_cast<int>(n), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

}  // namespace llmux::cuda
