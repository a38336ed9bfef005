#pragma once
// Skipping a test whose input is missing, visibly: ctest reports it as
// "Skipped", never as a pass.

#include <cstdlib>
#include <iostream>
#include <string>

namespace llmux::test {

/// Exit code ctest reads as a skip: every Catch test case is registered with
/// SKIP_RETURN_CODE 77 (tests/CMakeLists.txt, `llmux_test`; the cuda tests
/// set it themselves) and, under ctest, runs in a process of its own.
constexpr int skip_code = 77;

/// Ends the running test case as skipped: prints why and exits with 77. Run
/// outside ctest (the binary with no filter), the process stops here; run
/// the other cases by name or tag.
[[noreturn]] inline void skip_test(const std::string& why) {
  std::cout << "SKIPPED: " << why << std::endl;
  std::exit(skip_code);
}

}  // namespace llmux::test
