// libFuzzer target for the OpenAI request parser (net/openai_schema): what
// the edge makes of every /v1/completions and /v1/chat/completions body. On
// any bytes, for both endpoints, it must return a validated request or a
// 4xx error — never crash, hit UB or throw — and what it returns must hold:
//   * an error: status 400, a message, and an error body that is valid JSON
//     of OpenAI's shape {"error": {message, type, param, code}};
//   * a request: every field inside its documented range (n, max_tokens,
//     temperature, top_p, penalties, logprobs, stop strings, logit_bias),
//     the prompt either text or token ids, chat messages with known roles.
// The first byte picks the endpoint; the rest is the body.
// Seeds: tests/fuzz/openai_request_corpus/ (bodies the edge takes and refuses).

#include "net/openai_schema.hpp"

#include <cmath>
#include "tests/fuzz/fuzz_require.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

using llmux::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmux::net;
  if (size == 0)
    return 0;
  const auto kind = (data[0] & 1) ? api_kind::chat : api_kind::completions;
  const std::string_view body{reinterpret_cast<const char*>(data + 1), size - 1};
  auto parsed = parse_completion_request(body, kind);
  if (auto* e = std::get_if<api_error>(&parsed)) {
    require(e->status == 400);
    require(!e->message.empty());
    auto j = nlohmann::json::parse(error_body(*e), nullptr, false);
    require(j.is_object() && j.contains("error") && j["error"].is_object());
    require(j["error"].contains("message") && j["error"]["message"].is_string());
    require(j["error"].contains("type") && j["error"].contains("param") && j["error"].contains("code"));
    return 0;
  }
  const auto& r = std::get<completion_request>(parsed);
  require(r.kind == kind);
  require(!r.model.empty());
  require(r.n >= 1 && r.n <= max_choices);
  require(!r.max_tokens || *r.max_tokens >= 1);
  require(r.temperature >= 0 && r.temperature <= 2);
  require(r.top_p > 0 && r.top_p <= 1);
  require(r.min_p >= 0 && r.min_p <= 1);
  require(std::fabs(r.presence_penalty) <= 2 && std::fabs(r.frequency_penalty) <= 2);
  require(r.repetition_penalty > 0 && r.repetition_penalty <= 2);
  require(r.logprobs >= -1);
  require(r.stop.size() <= 4);
  for (const auto& [tok, bias] : r.logit_bias)
    require(tok >= 0 && bias >= -100 && bias <= 100);
  if (kind == api_kind::chat) {
    require(!r.messages.empty());
    for (const auto& m : r.messages)
      require(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool"
              || m.role == "developer");
  } else {
    require(r.prompt_is_tokens || r.prompt_tokens.empty());
    for (auto t : r.prompt_tokens)
      require(t >= 0);
  }
  return 0;
}
