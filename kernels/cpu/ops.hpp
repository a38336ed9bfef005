#pragma once
/// CPU compute kernels of the transformer forward pass. Each has a plain
/// reference (`*_ref`) that tests compare the fast path against; the fast
/// path picks AVX-512, AVX2 or portable code at run time.
///
/// Shapes: row-major; `x` is [m, k] activations in f32; a weight matrix W is
/// [n, k] (n output rows of k elements) in any supported dtype, as stored in
/// GGUF. Units: element counts. No allocation on the fast path except the
/// per-thread scratch a call needs.

#include <cstdint>

#include "kernels/cpu/quant.hpp"
#include "kernels/cpu/thread_pool.hpp"

namespace llmux::kernels {

/// A weight matrix: `rows` rows of `cols` elements of `type`, row stride
/// row_bytes(type, cols). Non-owning.
struct matrix_view {
  const void* data = nullptr;
  dtype type = dtype::f32;
  int64_t rows = 0;
  int64_t cols = 0;
};

/// y[m, n] = x[m, k] · W[n, k]ᵀ. Threads split the n output rows.
void matmul(const matrix_view& w, const float* x, int64_t m, float* y, thread_pool& pool);
void matmul_ref(const matrix_view& w, const float* x, int64_t m, float* y);

/// Copies row `r` of W, decoded to f32, into out[cols] (embedding lookup).
void get_row(const matrix_view& w, int64_t r, float* out);

/// out = x / sqrt(mean(x²) + eps) · weight, for each of m rows of n.
void rmsnorm(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out);
void rmsnorm_ref(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out);

/// out[i] = silu(gate[i]) · up[i]
void swiglu(const float* gate, const float* up, int64_t n, float* out);
void swiglu_ref(const float* gate, const float* up, int64_t n, float* out);

/// Rotary embedding in place on one vector of `heads` heads of `head_dim`,
/// at position `pos`, rotating the first `rot_dim` dims of each head.
/// neox = false: pairs (2i, 2i+1) (llama.cpp's NORM mode, Llama);
/// neox = true: pairs (i, i + rot_dim/2) (NEOX mode, Qwen2).
void rope_ref(float* x, int heads, int head_dim, int rot_dim, int64_t pos, float freq_base,
              bool neox);

/// In-place softmax over n values.
void softmax_ref(float* x, int64_t n);

/// Dot product of n floats.
[[nodiscard]] float dot_f32(const float* a, const float* b, int64_t n);

}  // namespace llmux::kernels
