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

/// y[m, n] = x[m, k] · W[n, k]ᵀ. Threads split the n output rows. On x86,
/// quantized weights go through tiled kernels (the 32-element block types
/// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: 4 W rows × 4 x rows share each unpacked
/// block, kernels/cpu/gemm_blocks.inc; the K-quants Q4_K, Q5_K, Q6_K: 2 × 4,
/// gemm_kquants.inc; on AVX2, Q4_0, Q4_1 and Q5_0 one output per vector lane
/// instead, gemm_lanes.inc) whose per-output summation order does not depend on m,
/// so a row's result is the same whatever else is in the batch. As
/// llama.cpp's CPU backend, x is first converted to vec_dot_type(W.type)
/// (below) and each output is an integer/fp dot product per block; matmul_ref
/// instead uses the exact f32 x against the decoded W, in double. y must not
/// overlap x. Throws std::invalid_argument for an unsupported W type or a
/// column count that is not a multiple of the block size.
void matmul(const matrix_view& w, const float* x, int64_t m, float* y, thread_pool& pool);
void matmul_ref(const matrix_view& w, const float* x, int64_t m, float* y);

/// Copies row `r` of W, decoded to f32, into out[cols] (embedding lookup).
void get_row(const matrix_view& w, int64_t r, float* out);

/// out = x / sqrt(mean(x²) + eps) · weight, for each of m rows of n, as
/// ggml (Σx² in double; (x·scale)·weight). out may be x (in place).
void rmsnorm(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out);
void rmsnorm_ref(const float* x, const float* weight, float eps, int64_t m, int64_t n, float* out);

/// out[i] = silu(gate[i]) · up[i], silu(x) = x / (1 + e^−x). out may be gate
/// or up (in place). The SIMD paths use ggml's vectorised expf.
void swiglu(const float* gate, const float* up, int64_t n, float* out);
void swiglu_ref(const float* gate, const float* up, int64_t n, float* out);

/// Rotary embedding in place on one vector of `heads` heads of `head_dim`,
/// at position `pos`, rotating the first `rot_dim` dims of each head.
/// neox = false: pairs (2i, 2i+1) (llama.cpp's NORM mode, Llama);
/// neox = true: pairs (i, i + rot_dim/2) (NEOX mode, Qwen2).
/// As ggml: theta_i = pos·base^(−2i/rot_dim), built by repeated float
/// products of powf(base, −2/rot_dim); cosf/sinf; later dims unchanged.
void rope_ref(float* x, int heads, int head_dim, int rot_dim, int64_t pos, float freq_base,
              bool neox);

/// In-place softmax over n values.
void softmax_ref(float* x, int64_t n);

/// Dot product of n floats.
[[nodiscard]] float dot_f32(const float* a, const float* b, int64_t n);

/// Rows of halves to floats and back (round to nearest even), F16C where
/// the CPU has it.
void fp16_to_fp32_row(const uint16_t* x, float* y, int64_t n);
void fp32_to_fp16_row(const float* x, uint16_t* y, int64_t n);

/// One query row of one head attending to `ctx` positions: out[d] =
/// Σ_j p_j·V[j], p = softmax(scale · q·K[j]), K and V `ctx` rows of d
/// floats (decoded from the f16 cache). Rounding as llama.cpp's CPU
/// attention over an f16 cache (ggml mul_mat converts the other operand to
/// f16): q is rounded to f16 before q·K, and p to f16 before the V sum;
/// Σ exp(x − max) is summed in double, as ggml's soft_max. `scores` is
/// scratch for ctx floats. attention_row_ref does the same in double
/// (with the same two f16 roundings), for tests.
void attention_row(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                   float scale, float* scores, float* out);
void attention_row_ref(const float* q, const float* k, const float* v, int64_t ctx, int64_t d,
                       float scale, float* out);

/// attention_row over the f16 cache as it is: K and V in runs of `run`
/// positions, k_runs[b] / v_runs[b] holding positions b·run .. b·run+run−1
/// (d halves each, contiguous), converted as they are read. The same result
/// as attention_row on the converted rows, bit for bit (f16 → f32 is
/// exact): no f32 copy of the context is written.
void attention_row_f16(const float* q, const uint16_t* const* k_runs, const uint16_t* const* v_runs,
                       int64_t run, int64_t ctx, int64_t d, float scale, float* scores, float* out);

// ---- The pieces matmul is built from, for callers that reuse activations
// (e.g. one x against several weight matrices of the same type). ----

/// The format llama.cpp's CPU backend converts activations to before the dot
/// product with W rows of type `w` (its vec_dot_type): F32→F32, F16→F16,
/// BF16→BF16, Q8_0/Q4_0/Q5_0→Q8_0, Q4_1/Q5_1→Q8_1, Q4_K/Q5_K/Q6_K→Q8_K.
[[nodiscard]] dtype vec_dot_type(dtype w);

/// Converts k floats (a multiple of block_elems(w)) to vec_dot_type(w):
/// row_bytes(vec_dot_type(w), k) bytes at dst. Q8_0/Q8_1 round as ggml's AVX
/// path does (scale 127/amax, ties to even); Q8_K as quantize_row_q8_K_ref.
void quantize_activation_row(dtype w, const float* x, void* dst, int64_t k);

/// Dot product of one W row of type `w` with an activation row made by
/// quantize_activation_row (for F32, the floats themselves). Integer dot
/// products per block, as llama.cpp's ggml_vec_dot_*.
[[nodiscard]] float vec_dot(dtype w, const void* w_row, const void* act_row, int64_t k);

/// Instruction sets the fast paths can use. The best the CPU supports is
/// picked on first use (__builtin_cpu_supports); every path gives the same
/// results up to float summation order.
enum class simd_level { portable = 0, avx2 = 1, avx512 = 2 };
[[nodiscard]] simd_level best_simd();
[[nodiscard]] simd_level active_simd();
[[nodiscard]] const char* to_string(simd_level level);
/// Tests and benchmarks: use `level` (clamped to best_simd()) from now on.
/// Not to be called while kernels run on other threads.
void force_simd(simd_level level);

}  // namespace llmux::kernels
