#pragma once
/// Unicode facts the tokenizers need, matching llama.cpp's `unicode.cpp`
/// exactly (the same table version, the same handling of invalid UTF-8), so
/// that our pre-tokenizers split text where llama.cpp splits it.
///
/// Pure functions over immutable tables; safe from any thread.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmux::engine::unicode {

/// One bit per general category group; every code point has exactly one
/// (values as llama.cpp's `unicode_cpt_flags`).
enum category : uint8_t {
  undefined = 0x01,    ///< Cn: unassigned (also code points past U+10FFFF)
  number = 0x02,       ///< \p{N}
  letter = 0x04,       ///< \p{L}
  separator = 0x08,    ///< \p{Z}
  mark = 0x10,         ///< \p{M}
  punctuation = 0x20,  ///< \p{P}
  symbol = 0x40,       ///< \p{S}
  control = 0x80,      ///< \p{C} except Cn
};

/// General category of a code point (Unicode 15.1, as llama.cpp).
[[nodiscard]] category category_of(uint32_t cpt);

/// Unicode White_Space: what `\s` matches in the pre-tokenizer regexes.
[[nodiscard]] bool is_whitespace(uint32_t cpt);

/// Bytes in the UTF-8 sequence that `lead` starts, from its high nibble only
/// (1 for ASCII and for stray continuation bytes), as llama.cpp's
/// `unicode_len_utf8`.
[[nodiscard]] size_t utf8_sequence_length(unsigned char lead);

/// Code points of `text`. A byte that does not start a well-formed sequence
/// becomes U+FFFD and decoding resumes at the next byte — llama.cpp's lossy
/// rule, so invalid input tokenizes as it does there.
[[nodiscard]] std::vector<uint32_t> decode_utf8(std::string_view text);

/// Appends the UTF-8 form of `cpt` (code points past U+10FFFF become U+FFFD).
void append_utf8(std::string& out, uint32_t cpt);

namespace detail {
struct category_range {
  uint32_t first;  ///< first code point of the range
  uint8_t flag;    ///< a `category` value
};
extern const category_range category_ranges[];  // engine/unicode_category_table.cpp
extern const size_t category_range_count;
}  // namespace detail

}  // namespace llmux::engine::unicode
