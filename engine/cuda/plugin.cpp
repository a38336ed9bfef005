// The entry point of libllmux_cuda.so, which engine_factory loads with
// dlopen when a model asks for backend = "cuda". The engine's own code and
// the CUDA libraries live here; the rest of the engine (model loading,
// tokenizers, sampling) resolves against the llmux binary's exports.

#include <cstdio>
#include <exception>
#include <string>

#include "engine/cuda/cuda_engine.hpp"

/// Builds the engine for `model`; on failure returns null with the reason in
/// `error` (at most `error_len` bytes, NUL-terminated).
extern "C" __attribute__((visibility("default"))) llmux::engine::engine* llmux_cuda_make_engine(
  const llmux::config::model_config* model, const llmux::engine::engine_context* ctx, char* error,
  size_t error_len) {
  try {
    return llmux::engine::make_cuda_engine(*model, *ctx).release();
  } catch (const std::exception& e) {
    std::snprintf(error, error_len, "%s", e.what());
  } catch (...) {
    std::snprintf(error, error_len, "unknown error");
  }
  return nullptr;
}

namespace {

/// Measured on the device: copy bandwidth (a 1 GiB device-to-device copy
/// reads and writes each byte) and cuBLAS GEMM throughput at 8192³ in f16
/// and bf16, f32 accumulation. The floors `llmux bench engine` compares with.
std::string device_report() {
  namespace cu = llmux::cuda;
  std::string why;
  if (!cu::device_available(&why))
    throw cu::cuda_error("no usable CUDA device: " + why);
  cudaDeviceProp prop{};
  int dev = 0;
  cu::check(cudaGetDevice(&dev), "cudaGetDevice");
  cu::check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  cudaStream_t stream;
  cu::check(cudaStreamCreate(&stream), "cudaStreamCreate");
  cudaEvent_t a, b;
  cu::check(cudaEventCreate(&a), "cudaEventCreate");
  cu::check(cudaEventCreate(&b), "cudaEventCreate");
  auto time_ms = [&](auto&& work, int reps) {
    work();  // warm
    cu::check(cudaEventRecord(a, stream), "record");
    for (int i = 0; i < reps; ++i)
      work();
    cu::check(cudaEventRecord(b, stream), "record");
    cu::check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    cu::check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    return static_cast<double>(ms) / reps;
  };
  const size_t bytes = size_t{1} << 30;
  void *src = nullptr, *dst = nullptr;
  cu::check(cudaMalloc(&src, bytes), "cudaMalloc");
  cu::check(cudaMalloc(&dst, bytes), "cudaMalloc");
  const double copy_ms = time_ms([&] { cu::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "copy"); }, 10);
  const double copy_gbs = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3) / 1e9;
  cudaFree(src);
  cudaFree(dst);
  const int64_t n = 8192;
  void *w = nullptr, *x = nullptr, *y = nullptr;
  cu::check(cudaMalloc(&w, static_cast<size_t>(n * n) * 2), "cudaMalloc");
  cu::check(cudaMalloc(&x, static_cast<size_t>(n * n) * 2), "cudaMalloc");
  cu::check(cudaMalloc(&y, static_cast<size_t>(n * n) * 2), "cudaMalloc");
  cu::check(cudaMemset(w, 0, static_cast<size_t>(n * n) * 2), "memset");
  cu::check(cudaMemset(x, 0, static_cast<size_t>(n * n) * 2), "memset");
  double tflops[2];
  {
    cu::blas blas(stream);
    int i = 0;
    for (auto t : {cu::act::f16, cu::act::bf16}) {
      const double ms = time_ms([&] { blas.matmul(t, w, x, n, n, n, y); }, 10);
      tflops[i++] = 2.0 * static_cast<double>(n) * n * n / (ms * 1e-3) / 1e12;
    }
  }
  cudaFree(w);
  cudaFree(x);
  cudaFree(y);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(stream);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"device\":\"%s\",\"sm\":\"%d%d\",\"sms\":%d,\"memory_gib\":%.1f,\"copy_gb_s\":%.1f,"
                "\"gemm_f16_tflops\":%.1f,\"gemm_bf16_tflops\":%.1f}",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), copy_gbs, tflops[0], tflops[1]);
  return buf;
}

}  // namespace

/// The device's name and measured copy bandwidth and GEMM peak, as one JSON
/// object in `out`; false with the reason in `out` when there is no device.
extern "C" __attribute__((visibility("default"))) bool llmux_cuda_device_report(char* out, size_t out_len) {
  try {
    std::snprintf(out, out_len, "%s", device_report().c_str());
    return true;
  } catch (const std::exception& e) {
    std::snprintf(out, out_len, "%s", e.what());
  }
  return false;
}
