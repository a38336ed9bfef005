#pragma once
/// Symmetric per-output-row int8 weights, the format of the GPU engine's
/// weight-only GEMM (kernels/cuda/int8.hpp): a [rows, cols] f32 matrix
/// becomes int8 values q [rows, cols] and one f32 scale per row, with
/// w ≈ q · scale. One scale per output row (not per block, as GGUF's Q8_0)
/// so the GPU kernel can apply it once, after the row's dot product.
///
/// The engine quantizes on the host while loading and uploads q and the
/// scales; tests use dequantize_int8_rows as the reference's weights.
///
/// Pure functions; no allocation; safe from any thread. Pointers are host
/// memory, rows row-major and contiguous (row stride = cols).

#include <cstdint>

namespace llmux::kernels {

/// Per row r: scales[r] = max_j |w[r, j]| / 127, and q[r, j] =
/// round(w[r, j] / scales[r]) (half away from zero) clamped to [−127, 127],
/// so every element is within scales[r] / 2 of q · scale, and a value that
/// is an integer multiple of the scale (up to 127 of them) comes back
/// exactly (both for rows whose scale is a normal float: max |w| above
/// about 1.5e-36). A row whose scale is 0 (all zeros, or a max so small the scale
/// underflows) gets q = 0. `w` must be finite: throws std::invalid_argument
/// naming the first row holding a NaN or an infinity (q and scales are then
/// unspecified). q holds rows · cols values, scales holds rows.
void quantize_int8_rows(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales);

/// w[r, j] = q[r, j] · scales[r] (one f32 multiply, as the GPU's dequantize
/// kernel does), for the reference and for tests.
void dequantize_int8_rows(const int8_t* q, const float* scales, int64_t rows, int64_t cols, float* w);

}  // namespace llmux::kernels
