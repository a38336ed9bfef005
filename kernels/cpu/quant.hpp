#pragma once
/// Weight formats (llama.cpp's ggml types) and their plain reference
/// conversions to float. The numbering is GGUF's (it is stored in files).
///
/// Blocks: a row of `n` elements of a quantised type is n / block_elems(t)
/// blocks of block_bytes(t) bytes each, laid out as in ggml:
///   Q8_0 {f16 d; int8 qs[32]}                      32 elems, 34 bytes
///   Q4_0 {f16 d; u8 qs[16]}                        32 elems, 18 bytes  (x = d·(q−8))
///   Q4_1 {f16 d; f16 m; u8 qs[16]}                 32 elems, 20 bytes  (x = d·q + m)
///   Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}              32 elems, 22 bytes  (x = d·(q−16))
///   Q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}       32 elems, 24 bytes  (x = d·q + m)
///   Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}               256 elems, 144 bytes
///   Q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}    256 elems, 176 bytes
///   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}              256 elems, 210 bytes
/// (4-bit nibbles: low nibbles are elements 0..15 of a 32-block, high
/// nibbles 16..31, as ggml does; Q5_0/Q5_1's fifth bit of element j is bit
/// j of the little-endian 32-bit qh.)
///
/// Pure functions; no allocation; safe from any thread.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace llmux::kernels {

enum class dtype : uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  bf16 = 30,
};

/// Name as llama.cpp prints it ("F32", "Q4_K", ...), or "type N" if unknown.
[[nodiscard]] std::string to_string(dtype t);
/// The dtype for a GGUF type number, if llmux can compute with it
/// (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
[[nodiscard]] std::optional<dtype> supported_dtype(uint32_t gguf_type);
/// Elements per block (1 for F32/F16/BF16).
[[nodiscard]] size_t block_elems(dtype t);
/// Bytes per block.
[[nodiscard]] size_t block_bytes(dtype t);
/// Bytes of a row of `n` elements (n must be a multiple of block_elems).
[[nodiscard]] size_t row_bytes(dtype t, int64_t n);

[[nodiscard]] float fp16_to_fp32(uint16_t h);
[[nodiscard]] uint16_t fp32_to_fp16(float f);  ///< round to nearest even
[[nodiscard]] float bf16_to_fp32(uint16_t h);
[[nodiscard]] uint16_t fp32_to_bf16(float f);  ///< round to nearest even

/// Block layouts, byte for byte as ggml's (fp16 fields hold raw IEEE half
/// bits). Q8_1 and Q8_K are never stored in GGUF weights here; they are the
/// activation formats of the integer dot products (see ops.hpp).
struct block_q8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct block_q8_1 {
  uint16_t d;
  uint16_t s;  ///< d · Σ qs
  int8_t qs[32];
};
struct block_q4_0 {
  uint16_t d;
  uint8_t qs[16];
};
struct block_q4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
struct block_q5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct block_q5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
/// 8 sub-blocks of 32; 6-bit scale and min per sub-block packed in scales[12]
/// (ggml's get_scale_min_k4); x = d·sc·q − dmin·m.
struct block_q4_k {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
/// As Q4_K plus a fifth bit per element in qh.
struct block_q5_k {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
/// 16 sub-blocks of 16; x = d·scales[j]·(q − 32), q 6 bits split in ql/qh.
struct block_q6_k {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
struct block_q8_k {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  ///< Σ qs over each group of 16
};
static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q8_1) == 36 && sizeof(block_q4_0) == 18 &&
                  sizeof(block_q4_1) == 20 && sizeof(block_q5_0) == 22 && sizeof(block_q5_1) == 24 &&
                  sizeof(block_q4_k) == 144 &&
                  sizeof(block_q5_k) == 176 && sizeof(block_q6_k) == 210 &&
                  sizeof(block_q8_k) == 292,
              "ggml block layouts");

/// The 32 five-bit q (0..31) of a Q5_0/Q5_1 block, element order: low
/// nibbles of qs are elements 0..15, high nibbles 16..31, bit j of the
/// little-endian 32-bit qh is element j's fifth bit.
void q5_values(const uint8_t* qs, const uint8_t* qh, int (&q)[32]);

/// Reference: decodes `n` elements (a multiple of block_elems(t)) of type `t`
/// at `src` into `dst`, exactly as ggml's dequantize_row_* (bit for bit).
/// Types: those supported_dtype() accepts, plus Q8_1 and Q8_K. Throws
/// std::invalid_argument for any other type.
void dequantize_row_ref(dtype t, const void* src, float* dst, int64_t n);

/// Reference quantizers (for tests and dummy weights): encode `n` floats as
/// type `t` into `dst` (row_bytes(t, n) bytes), the way ggml's reference
/// quantizers do (scale from the block's max |x|, round to nearest; the
/// K-quants with ggml's quantize_row_q*_K_ref search). Same types as
/// dequantize_row_ref.
void quantize_row_ref(dtype t, const float* src, void* dst, int64_t n);

}  // namespace llmux::kernels
