// Tool calling's pure core: the Hermes-style prompt, the grammar of a
// required call, and the streaming parser of <tool_call> blocks.

#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/tool_calls.hpp"

#include <catch2/catch.hpp>

using namespace llmux::engine;

namespace {

const std::vector<tool_function> tools = {
  {"get_weather", "Weather in a city",
   R"({"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city","unit"]})"},
  {"ping", "", ""},
};

bool matches(const std::string& gbnf, const std::string& text) {
  grammar_matcher m{grammar::parse(gbnf)};
  return m.accept(text) && m.can_end();
}

}  // namespace

TEST_CASE("tool prompt: tools in the system turn, calls and results in Hermes blocks", "[tools]") {
  chat_style style;
  style.default_system = "You are helpful.";
  std::vector<tool_turn> turns = {
    {"user", "Weather in Paris?", {}, ""},
    {"assistant", "", {{"call_1", "get_weather", R"({"city":"Paris","unit":"c"})"}}, ""},
    {"tool", "18 degrees", {}, "call_1"},
    {"tool", "sunny", {}, "call_2"},
  };
  const auto out = tool_prompt(style, turns, tools);
  REQUIRE(out.size() == 4);
  CHECK(out[0].role == "system");
  CHECK(out[0].content.rfind("You are helpful.\n\n# Tools", 0) == 0);
  CHECK(out[0].content.find(R"({"type":"function","function":{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object")")
        != std::string::npos);
  CHECK(out[0].content.find(R"({"type":"function","function":{"name":"ping","parameters":{}}})") != std::string::npos);
  CHECK(out[1].role == "user");
  CHECK(out[2].content == "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"unit\":\"c\"}}\n</tool_call>");
  CHECK(out[3].role == "user");  // both results, one turn
  CHECK(out[3].content == "<tool_response>\n18 degrees\n</tool_response>\n<tool_response>\nsunny\n</tool_response>");
  // The request's own system turn replaces the default; no tools: turns as they are.
  std::vector<tool_turn> with_system = {{"system", "Be brief.", {}, ""}, {"user", "hi", {}, ""}};
  const auto own = tool_prompt(style, with_system, tools);
  REQUIRE(own.size() == 2);
  CHECK(own[0].content.rfind("Be brief.\n\n# Tools", 0) == 0);
  const auto plain = tool_prompt(style, with_system, {});
  REQUIRE(plain.size() == 2);
  CHECK(plain[0].content == "Be brief.");
  CHECK(tools_supported(chat_format::chatml));
  CHECK_FALSE(tools_supported(chat_format::llama3));
}

TEST_CASE("tool grammar: a required call names a tool and follows its schema", "[tools][grammar]") {
  const auto any = tool_call_grammar(tools, "", false);
  CHECK(matches(any, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"f\"}}\n</tool_call>"));
  CHECK(matches(any, "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>"));
  CHECK_FALSE(matches(any, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"));
  CHECK_FALSE(matches(any, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"));
  CHECK_FALSE(matches(any, "Sure! <tool_call>"));
  const std::string two = "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>\n"
                          "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>";
  CHECK_FALSE(matches(any, two));
  CHECK(matches(tool_call_grammar(tools, "", true), two));
  const auto named = tool_call_grammar(tools, "ping", false);
  CHECK(matches(named, "<tool_call>\n{\"name\":\"ping\",\"arguments\":{}}\n</tool_call>"));
  CHECK_FALSE(matches(named, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"a\",\"unit\":\"c\"}}\n</tool_call>"));
  CHECK_THROWS_AS(tool_call_grammar(tools, "missing", false), schema_error);
}

TEST_CASE("tool parser: blocks leave the text, across any split", "[tools]") {
  const std::string text = "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                           "</tool_call>\n<tool_call>\n{\"name\": \"ping\"}\n</tool_call>";
  for (size_t cut = 1; cut < text.size(); cut += 3) {
    INFO("split at " << cut);
    tool_call_parser p;
    auto a = p.push(text.substr(0, cut));
    auto b = p.push(text.substr(cut));
    auto c = p.finish();
    const std::string content = a.content + b.content + c.content;
    std::vector<tool_call> calls = a.calls;
    calls.insert(calls.end(), b.calls.begin(), b.calls.end());
    calls.insert(calls.end(), c.calls.begin(), c.calls.end());
    CHECK(content == "Let me check.");
    REQUIRE(calls.size() == 2);
    CHECK(calls[0].name == "get_weather");
    CHECK(calls[0].arguments == R"({"city":"Paris"})");
    CHECK(calls[1].name == "ping");
    CHECK(calls[1].arguments == "{}");
    CHECK(p.calls_seen() == 2);
  }
  // A tail that may open a block waits; text that does not is sent.
  tool_call_parser p;
  CHECK(p.push("a <tool_c").content == "a ");
  CHECK(p.push("x").content == "<tool_cx");
  // A block that is not a call stays text, and so does one never closed.
  tool_call_parser q;
  CHECK(q.push("<tool_call>not json</tool_call>").content == "<tool_call>not json</tool_call>");
  auto open = q.push("<tool_call>{\"name\":");
  CHECK(open.content.empty());
  CHECK(q.finish().content == "<tool_call>{\"name\":");
  CHECK(q.calls_seen() == 0);
}
