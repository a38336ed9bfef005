#pragma once
/// splitmix64: a stateless, well-mixed 64-bit hash. Used where outputs must
/// depend only on their inputs (sim tokens, seeded sampling).

#include <cstdint>

namespace llmux::engine {

[[nodiscard]] inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace llmux::engine
