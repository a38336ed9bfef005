// The profile JSON files, embedded as read-only data with the assembler's
// .incbin: no generated 4 MB C array to compile, and the file is read from
// its absolute path (LLMUX_A100_PROFILE_PATH, set by engine/CMakeLists.txt)
// so the build works from any directory. engine/CMakeLists.txt makes this
// object depend on the file, and passes its SHA-256 so that a compiler cache
// never hands back an object holding an older copy.

#include "engine/builtin_profiles.hpp"

#ifndef LLMUX_A100_PROFILE_PATH
#error "LLMUX_A100_PROFILE_PATH must name engine/profiles/a100_llama.json"
#endif
#ifndef LLMUX_A100_PROFILE_SHA256
#define LLMUX_A100_PROFILE_SHA256 "unknown"
#endif

// A terminating NUL is not needed (the end label bounds the text); hidden
// globals so the labels are not exported from the llmux binary.
__asm__(".section .rodata\n"
        ".global llmux_builtin_a100_json_begin\n"
        ".hidden llmux_builtin_a100_json_begin\n"
        ".global llmux_builtin_a100_json_end\n"
        ".hidden llmux_builtin_a100_json_end\n"
        "llmux_builtin_a100_json_begin:\n"
        ".incbin \"" LLMUX_A100_PROFILE_PATH "\"\n"
        "llmux_builtin_a100_json_end:\n"
        ".previous\n");

extern "C" {
extern const char llmux_builtin_a100_json_begin[];
extern const char llmux_builtin_a100_json_end[];
}

namespace llmux::engine::detail {

namespace {
// Keeps the content hash in the preprocessed source (see the top comment).
[[maybe_unused]] constexpr const char* a100_sha256 = LLMUX_A100_PROFILE_SHA256;
}  // namespace

std::string_view builtin_a100_json() {
  return {llmux_builtin_a100_json_begin,
          static_cast<size_t>(llmux_builtin_a100_json_end - llmux_builtin_a100_json_begin)};
}

}  // namespace llmux::engine::detail
