#pragma once
/// Comparing secrets (API keys, admin tokens) without telling their
/// contents through timing: every byte of the longer one is looked at,
/// whatever matches. Pure, header-only.

#include <cstddef>
#include <string_view>
#include <vector>
#include <string>

namespace llmux::net {

[[nodiscard]] inline bool constant_time_equal(std::string_view a, std::string_view b) {
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff = static_cast<unsigned char>(diff | (x ^ y));
  }
  return diff == 0;
}

/// `key` is one of `keys` (each compared in constant time, all of them).
[[nodiscard]] inline bool key_accepted(std::string_view key, const std::vector<std::string>& keys) {
  bool found = false;
  for (const auto& k : keys)
    found = constant_time_equal(key, k) || found;
  return found;
}

}  // namespace llmux::net
