#include "kernels/cpu/int8_rows.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace llmux::kernels {

void quantize_int8_rows(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    int8_t* qr = q + r * cols;
    float amax = 0.0f;
    for (int64_t j = 0; j < cols; ++j) {
      if (!std::isfinite(wr[j]))
        throw std::invalid_argument("quantize_int8_rows: row " + std::to_string(r) + " holds " +
                                    std::to_string(wr[j]) + " at column " + std::to_string(j));
      amax = std::max(amax, std::fabs(wr[j]));
    }
    const float scale = amax / 127.0f;
    scales[r] = scale;
    if (scale == 0.0f) {
      std::fill(qr, qr + cols, int8_t{0});
      continue;
    }
    // Division rather than a multiply by 1/scale, so that a multiple of the
    // scale divides back to its exact integer. |w| <= amax keeps the
    // quotient within 127 plus a rounding; the clamp is for that rounding.
    for (int64_t j = 0; j < cols; ++j)
      qr[j] = static_cast<int8_t>(std::clamp(std::round(wr[j] / scale), -127.0f, 127.0f));
  }
}

void dequantize_int8_rows(const int8_t* q, const float* scales, int64_t rows, int64_t cols, float* w) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      w[r * cols + j] = static_cast<float>(q[r * cols + j]) * scales[r];
}

}  // namespace llmux::kernels
