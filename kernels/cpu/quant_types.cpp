#include "kernels/cpu/quant.hpp"

namespace llmux::kernels {

std::string to_string(dtype t) {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::q4_0: return "Q4_0";
    case dtype::q4_1: return "Q4_1";
    case dtype::q5_0: return "Q5_0";
    case dtype::q5_1: return "Q5_1";
    case dtype::q8_0: return "Q8_0";
    case dtype::q8_1: return "Q8_1";
    case dtype::q2_k: return "Q2_K";
    case dtype::q3_k: return "Q3_K";
    case dtype::q4_k: return "Q4_K";
    case dtype::q5_k: return "Q5_K";
    case dtype::q6_k: return "Q6_K";
    case dtype::q8_k: return "Q8_K";
    case dtype::bf16: return "BF16";
  }
  return "type " + std::to_string(static_cast<uint32_t>(t));
}

std::optional<dtype> supported_dtype(uint32_t gguf_type) {
  switch (static_cast<dtype>(gguf_type)) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16:
    case dtype::q8_0:
    case dtype::q4_0:
    case dtype::q4_1:
    case dtype::q5_0:
    case dtype::q5_1:
    case dtype::q4_k:
    case dtype::q5_k:
    case dtype::q6_k:
      return static_cast<dtype>(gguf_type);
    default:
      return std::nullopt;
  }
}

size_t block_elems(dtype t) {
  switch (t) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16:
      return 1;
    case dtype::q4_0:
    case dtype::q4_1:
    case dtype::q5_0:
    case dtype::q5_1:
    case dtype::q8_0:
    case dtype::q8_1:
      return 32;
    default:
      return 256;  // K-quants
  }
}

size_t block_bytes(dtype t) {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::q4_0: return 18;
    case dtype::q4_1: return 20;
    case dtype::q5_0: return 22;
    case dtype::q5_1: return 24;
    case dtype::q8_0: return 34;
    case dtype::q8_1: return 36;
    case dtype::q2_k: return 84;
    case dtype::q3_k: return 110;
    case dtype::q4_k: return 144;
    case dtype::q5_k: return 176;
    case dtype::q6_k: return 210;
    case dtype::q8_k: return 292;
  }
  return 0;
}

size_t row_bytes(dtype t, int64_t n) {
  return static_cast<size_t>(n) / block_elems(t) * block_bytes(t);
}

}  // namespace llmux::kernels
