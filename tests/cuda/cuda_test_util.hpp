#pragma once
// Shared by the CUDA kernel test files: host conversions to the activation
// types, device buffers that can be poisoned, random inputs, and the
// relative-error comparison. Header-only (inline), for the test binaries.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/cuda/ops.hpp"

namespace llmux::cuda::test {

namespace cu = llmux::cuda;
namespace cpu = llmux::kernels;
using llmux::cuda::act;

// -- Host conversions ---------------------------------------------------------

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Bytes of `x` in activation type t.
inline std::vector<uint8_t> encode(act t, const std::vector<float>& x) {
  std::vector<uint8_t> out(x.size() * cu::act_bytes(t));
  if (t == act::f32) {
    std::memcpy(out.data(), x.data(), out.size());
  } else if (t == act::f16) {
    cpu::fp32_to_fp16_row(x.data(), reinterpret_cast<uint16_t*>(out.data()), static_cast<int64_t>(x.size()));
  } else {
    auto* o = reinterpret_cast<uint16_t*>(out.data());
    for (size_t i = 0; i < x.size(); ++i)
      o[i] = f32_to_bf16(x[i]);
  }
  return out;
}

inline std::vector<float> decode(act t, const std::vector<uint8_t>& b) {
  std::vector<float> out(b.size() / cu::act_bytes(t));
  if (t == act::f32) {
    std::memcpy(out.data(), b.data(), b.size());
  } else if (t == act::f16) {
    cpu::fp16_to_fp32_row(reinterpret_cast<const uint16_t*>(b.data()), out.data(), static_cast<int64_t>(out.size()));
  } else {
    const auto* in = reinterpret_cast<const uint16_t*>(b.data());
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = bf16_to_f32(in[i]);
  }
  return out;
}

/// `x` as the activation type holds it.
inline std::vector<float> rounded(act t, const std::vector<float>& x) {
  return decode(t, encode(t, x));
}

/// Relative bound per type: about an output rounding plus f32 arithmetic.
inline double tolerance(act t) {
  return t == act::f32 ? 2e-5 : t == act::f16 ? 2e-3 : 1.6e-2;
}

// -- Device memory ------------------------------------------------------------

struct device_buffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit device_buffer(size_t n) : bytes(n) { cu::check(cudaMalloc(&p, std::max<size_t>(n, 1)), "cudaMalloc"); }
  ~device_buffer() {
    cudaDeviceSynchronize();  // a kernel launched on it may still run
    cudaFree(p);
  }
  device_buffer(device_buffer&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer& operator=(device_buffer&&) = delete;
  void upload(const void* src) { cu::check(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice), "upload"); }
  void poison() { cu::check(cudaMemset(p, 0xFF, bytes), "poison"); }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> out(bytes);
    cu::check(cudaDeviceSynchronize(), "sync");
    cu::check(cudaMemcpy(out.data(), p, bytes, cudaMemcpyDeviceToHost), "download");
    return out;
  }
  template <typename T>
  T* as() { return static_cast<T*>(p); }
};

inline device_buffer upload_act(act t, const std::vector<float>& x) {
  device_buffer b(x.size() * cu::act_bytes(t));
  auto bytes = encode(t, x);
  b.upload(bytes.data());
  return b;
}

template <typename T>
inline device_buffer upload_vec(const std::vector<T>& x) {
  device_buffer b(x.size() * sizeof(T));
  b.upload(x.data());
  return b;
}

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(n);
  for (auto& v : x)
    v = u(rng);
  return x;
}

/// Every element within tol · (|want| + rms(want)); NaN (an unwritten,
/// poisoned element) always fails. Reports the first miss.
inline void require_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                   const std::string& what) {
  REQUIRE(got.size() == want.size());
  double rms = 0;
  for (float w : want)
    rms += static_cast<double>(w) * w;
  rms = std::sqrt(rms / std::max<size_t>(want.size(), 1));
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= tol * (std::fabs(want[i]) + rms))) {
      if (bad++ == 0)
        first = i;
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements off; first at " << first << ": got "
            << got[first] << ", want " << want[first] << " (tol " << tol << ")");
  CHECK(bad == 0);
}

inline const act all_types[] = {act::f32, act::f16, act::bf16};

}  // namespace llmux::cuda::test
