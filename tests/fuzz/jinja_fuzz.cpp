// libFuzzer target for the Jinja engine (engine/jinja): a chat template
// comes from a model file, which the operator may not have written.
//
// Input: template text. It must parse or throw jinja::error; a template
// that parses must render a fixed conversation (two turns, one tool) to a
// string or throw jinja::error, within small limits on steps, output and
// depth. Nothing else: no crash, no UB, no unbounded recursion or loop.
// Seeds: tests/fuzz/jinja_corpus/ (the model templates of
// tests/data/chat_templates and a few odd ones).

#include "engine/jinja.hpp"

#include "tests/fuzz/fuzz_require.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

using namespace llmux::engine;

namespace {

const jinja::value& context() {
  static const jinja::value ctx = jinja::value::from_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "abc123XYZ", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "18 C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})"));
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  jinja::render_limits limits;
  limits.max_steps = 20000;
  limits.max_output = 1 << 16;
  limits.max_depth = 100;
  try {
    auto t = jinja::template_::parse(text);
    try {
      auto out = t.render(context(), 0, limits);
      llmux::fuzz::require(out.size() <= limits.max_output);
    } catch (const jinja::error&) {
    }
  } catch (const jinja::error&) {
  }
  return 0;
}
