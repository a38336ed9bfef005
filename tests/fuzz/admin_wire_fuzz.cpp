// libFuzzer target for the admin port's request check (net/admin_wire):
// what the server does with a request frame's body before any handler sees
// it. On any bytes it must decide without crashing, hitting UB or throwing:
//   * handed on only as a msgpack map carrying the right token;
//   * otherwise an error map {"ok": false, "error": "..."} that encodes as
//     msgpack again (the server sends it), and a hang-up for a bad token.
// The first byte picks whether a token is configured.

#include "net/admin_wire.hpp"

#include "tests/fuzz/fuzz_require.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

using llmux::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  const std::string token = (data[0] & 1) ? "s3cret" : "";
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto c = llmux::net::check_admin_request(body, token);
  if (c.ok) {
    require(c.request.is_object());
    require(!c.hang_up);
    if (!token.empty())
      require(c.request.contains("token") && c.request["token"] == token);
    return 0;
  }
  require(c.response.is_object());
  require(c.response.contains("ok") && c.response["ok"] == false);
  require(c.response.contains("error") && c.response["error"].is_string());
  require(!c.response["error"].get<std::string>().empty());
  require(!c.hang_up || !token.empty());
  require(!nlohmann::json::to_msgpack(c.response).empty());
  return 0;
}
