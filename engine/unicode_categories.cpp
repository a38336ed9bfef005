#include "engine/unicode_categories.hpp"

#include <algorithm>
#include <array>

namespace llmux::engine::unicode {

namespace {

category lookup(uint32_t cpt) {
  using detail::category_range;
  const category_range* begin = detail::category_ranges;
  const category_range* end = begin + detail::category_range_count;
  // Last range whose first code point is <= cpt.
  auto it = std::upper_bound(begin, end, cpt,
                             [](uint32_t c, const category_range& r) { return c < r.first; });
  return static_cast<category>((it - 1)->flag);
}

// ASCII dominates real text: answer it from a small array.
const std::array<category, 128>& ascii_categories() {
  static const std::array<category, 128> table = [] {
    std::array<category, 128> t{};
    for (uint32_t c = 0; c < 128; ++c)
      t[c] = lookup(c);
    return t;
  }();
  return table;
}

}  // namespace

category category_of(uint32_t cpt) {
  if (cpt < 128)
    return ascii_categories()[cpt];
  if (cpt >= 0x110000)
    return undefined;
  return lookup(cpt);
}

bool is_whitespace(uint32_t cpt) {
  // PropList.txt White_Space, the set llama.cpp's `\s` uses.
  return (cpt >= 0x09 && cpt <= 0x0D) || cpt == 0x20 || cpt == 0x85 || cpt == 0xA0
         || cpt == 0x1680 || (cpt >= 0x2000 && cpt <= 0x200A) || cpt == 0x2028 || cpt == 0x2029
         || cpt == 0x202F || cpt == 0x205F || cpt == 0x3000;
}

size_t utf8_sequence_length(unsigned char lead) {
  static constexpr size_t by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return by_high_nibble[lead >> 4];
}

std::vector<uint32_t> decode_utf8(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const size_t n = text.size();
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  auto is_cont = [&](size_t i) { return i < n && (byte(i) & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    unsigned char b0 = byte(i);
    // Like llama.cpp: the lead byte alone picks the length; only the
    // continuation bytes are checked (no overlong or surrogate checks).
    if (b0 < 0x80) {
      out.push_back(b0);
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && is_cont(i + 1)) {
      out.push_back((uint32_t(b0 & 0x1F) << 6) | (byte(i + 1) & 0x3F));
      i += 2;
    } else if ((b0 & 0xF0) == 0xE0 && is_cont(i + 1) && is_cont(i + 2)) {
      out.push_back((uint32_t(b0 & 0x0F) << 12) | (uint32_t(byte(i + 1) & 0x3F) << 6)
                    | (byte(i + 2) & 0x3F));
      i += 3;
    } else if ((b0 & 0xF8) == 0xF0 && is_cont(i + 1) && is_cont(i + 2) && is_cont(i + 3)) {
      out.push_back((uint32_t(b0 & 0x07) << 18) | (uint32_t(byte(i + 1) & 0x3F) << 12)
                    | (uint32_t(byte(i + 2) & 0x3F) << 6) | (byte(i + 3) & 0x3F));
      i += 4;
    } else {
      out.push_back(0xFFFD);  // one invalid byte, one replacement character
      i += 1;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cpt) {
  if (cpt > 0x10FFFF)
    cpt = 0xFFFD;
  if (cpt < 0x80) {
    out.push_back(static_cast<char>(cpt));
  } else if (cpt < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cpt >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cpt >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
}

}  // namespace llmux::engine::unicode
