#pragma once
/// The JSON text of the profiles compiled into the binary (see
/// engine/profiles/README.md). Only step_profile.cpp reads these; everything
/// else asks `step_profile::builtin_a100()`.

#include <string_view>

namespace llmux::engine::detail {

/// engine/profiles/a100_llama.json as it was at build time. Static storage,
/// never null; parsing is the caller's business (done once, lazily).
[[nodiscard]] std::string_view builtin_a100_json();

}  // namespace llmux::engine::detail
