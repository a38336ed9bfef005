#include "net/secret.hpp"

#include <catch2/catch.hpp>

using namespace llmux::net;

TEST_CASE("secrets compare equal only when every byte and the length match") {
  CHECK(constant_time_equal("sk-abc", "sk-abc"));
  CHECK(constant_time_equal("", ""));
  CHECK_FALSE(constant_time_equal("sk-abc", "sk-abd"));
  CHECK_FALSE(constant_time_equal("sk-abc", "sk-ab"));
  CHECK_FALSE(constant_time_equal("sk-ab", "sk-abc"));
  CHECK_FALSE(constant_time_equal("", "x"));
  // A key that is a prefix padded with NULs is still a different key.
  CHECK_FALSE(constant_time_equal(std::string_view{"ab\0", 3}, "ab"));
}

TEST_CASE("a key is accepted when it is one of the keys") {
  const std::vector<std::string> keys{"k1", "k2"};
  CHECK(key_accepted("k1", keys));
  CHECK(key_accepted("k2", keys));
  CHECK_FALSE(key_accepted("k3", keys));
  CHECK_FALSE(key_accepted("", keys));
  CHECK_FALSE(key_accepted("k1", {}));
}
