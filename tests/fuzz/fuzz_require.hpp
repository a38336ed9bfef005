#pragma once
// What every fuzz target's invariants use: a broken one traps, which
// libFuzzer reports as a crash with the input that broke it.

namespace llmux::fuzz {

inline void require(bool ok) {
  if (!ok)
    __builtin_trap();
}

}  // namespace llmux::fuzz
