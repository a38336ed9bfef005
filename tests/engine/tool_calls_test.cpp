// Tool calling's pure core: the Hermes-style prompt, the grammar of a
// required call, and the streaming parser of <tool_call> blocks.

#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/tool_calls.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>


#include <nlohmann/json.hpp>

#include "engine/jinja.hpp"
#include "tests/engine/test_data.hpp"

using namespace llmux::engine;

namespace {

const std::vector<tool_function> tools = {
  {"get_weather", "Weather in a city",
   R"({"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city","unit"]})"},
  {"ping", "", ""},
};

const std::string templates = LLMUX_SOURCE_DIR "/tests/data/chat_templates/";


chat_style style_of(const std::string& template_file) {
  return make_chat_style(llmux::test::read_text(templates + template_file), "<s>", "</s>");
}

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

TEST_CASE("tools are offered where calls can be read back", "[tools]") {
  chat_style builtin;
  CHECK(tools_supported(builtin));  // ChatML: the Hermes form is written in
  builtin.format = chat_format::llama3;
  CHECK_FALSE(tools_supported(builtin));
  CHECK(tools_supported(style_of("qwen3.jinja")));   // writes tools, asks for <tool_call>
  CHECK(tools_supported(style_of("smollm2.jinja")));  // knows no tools: ChatML, written in
  CHECK(tool_format_of(style_of("llama3.1_json.jinja")) == tool_format::llama3_json);
  CHECK(tool_format_of(style_of("llama3.2.jinja")) == tool_format::llama3_json);
  CHECK(tool_format_of(style_of("hermes.jinja")) == tool_format::hermes);
  CHECK(tool_format_of(style_of("mistral_nemo.jinja")) == tool_format::mistral);
  CHECK(tool_format_of(style_of("mistral_tools_vllm.jinja")) == tool_format::mistral);
  CHECK_FALSE(tools_supported(style_of("deepseek_r1_distill.jinja")));  // its own markers: not read
}

TEST_CASE("render_chat gives the model's template what vLLM gives it", "[tools][jinja]") {
  // The tool_round_trip conversation of make_reference.py as an OpenAI
  // request carries it (arguments and parameters as JSON text, no tool
  // `name`): rendered through render_chat, it must equal jinja2's rendering
  // of the reference context.
  setenv("TZ", "UTC", 1);
  tzset();
  auto ref = nlohmann::ordered_json::parse(llmux::test::read_text(templates + "reference.json"));
  std::vector<tool_function> fns;
  std::vector<tool_turn> turns;
  for (const auto& c : ref["cases"]) {
    if (c["case"] != "tool_round_trip" || c["template"] != "qwen3.jinja")
      continue;
    for (const auto& t : c["context"]["tools"])
      fns.push_back({t["function"]["name"], t["function"]["description"], t["function"]["parameters"].dump()});
    for (const auto& m : c["context"]["messages"]) {
      tool_turn t{m["role"], m["content"].is_string() ? m["content"].get<std::string>() : "", {}, ""};
      if (m.contains("tool_calls"))
        for (const auto& call : m["tool_calls"])
          t.calls.push_back({call["id"], call["function"]["name"], call["function"]["arguments"].dump()});
      if (m.contains("tool_call_id"))
        t.tool_call_id = m["tool_call_id"];
      turns.push_back(std::move(t));
    }
  }
  REQUIRE(turns.size() == 5);
  int compared = 0;
  for (const auto& c : ref["cases"]) {
    if (c["case"] != "tool_round_trip" || !c.contains("output"))
      continue;
    const std::string file = c["template"];
    if (file == "features.jinja" || file == "deepseek_r1_distill.jinja")
      continue;  // prints the whole context / concatenates arguments as text
    INFO(file);
    auto style = style_of(file);
    if (!style.template_tools)
      continue;  // tools go in as Hermes turns: not the reference's input
    auto got = render_chat(style, turns, fns, "", static_cast<std::time_t>(ref["now"].get<int64_t>()));
    CHECK(got.fallback.empty());
    CHECK(got.text == c["output"].get<std::string>());
    ++compared;
  }
  CHECK(compared >= 6);  // Llama 3.1/3.2, Mistral x2, Hermes, Qwen3, Qwen2.5-Coder
}

TEST_CASE("render_chat: BOS, kwargs, refusals and the fallback", "[tools][jinja]") {
  std::vector<tool_turn> hi = {{"user", "hi", {}, ""}};
  auto llama = render_chat(style_of("llama3.2.jinja"), hi, {});
  CHECK(llama.starts_with_bos);  // the tokenizer must not add a second
  CHECK(llama.text.rfind("<s><|start_header_id|>system", 0) == 0);
  CHECK_FALSE(render_chat(style_of("qwen3.jinja"), hi, {}).starts_with_bos);

  // vLLM's chat_template_kwargs reach the template.
  auto qwen = style_of("qwen3.jinja");
  CHECK(render_chat(qwen, hi, {}, R"({"enable_thinking": false})").text
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");

  // The template's own refusal is the caller's 400, not a fallback.
  std::vector<tool_turn> twice = {{"user", "one", {}, ""}, {"user", "two", {}, ""}};
  CHECK_THROWS_AS(render_chat(style_of("mistral_nemo.jinja"), twice, {}), jinja::template_error);

  // A template that parses but fails to render: the built-in format, and why.
  auto broken = make_chat_style("<|im_start|>{{ messages | nosuchfilter }}", "", "");
  REQUIRE(broken.jinja);
  auto fb = render_chat(broken, hi, {});
  CHECK(fb.fallback.find("nosuchfilter") != std::string::npos);
  CHECK(fb.text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // One that does not parse has no template at all, and says why.
  auto unparsed = make_chat_style("{% include 'x.jinja' %}", "", "");
  CHECK_FALSE(unparsed.jinja);
  CHECK(unparsed.template_error.find("not supported") != std::string::npos);

  // A template that knows no tools (SmolLM2's) gets them written into the
  // turns in Hermes form: the same text as the built-in ChatML rendering.
  auto smol = style_of("smollm2.jinja");
  REQUIRE(smol.jinja);
  auto with_tools = render_chat(smol, hi, tools);
  CHECK(with_tools.text.find("# Tools") != std::string::npos);
  CHECK(with_tools.text == apply_chat_template(smol, tool_prompt(smol, hi, tools)));
  CHECK(render_chat(smol, hi, {}).text == apply_chat_template(smol, tool_prompt(smol, hi, {})));
}

TEST_CASE("Llama 3.1 calls: the grammar of a required call and the parser of the answer", "[tools]") {
  const auto one = tool_call_grammar(tools, "", false, tool_format::llama3_json);
  CHECK(matches(one, R"({"name": "get_weather", "parameters": {"city": "Oslo", "unit": "c"}})"));
  CHECK_FALSE(matches(one, R"({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}})"));
  CHECK_FALSE(matches(one, R"(<tool_call>{"name": "ping", "parameters": {}}</tool_call>)"));
  const std::string two = R"({"name": "ping", "parameters": {}}; {"name": "ping", "parameters": {}})";
  CHECK_FALSE(matches(one, two));
  CHECK(matches(tool_call_grammar(tools, "", true, tool_format::llama3_json), two));

  // Streamed in pieces: held to the end, then read as calls.
  tool_call_parser p(tool_format::llama3_json);
  std::string content;
  for (const char* piece : {" ", "{\"name\": \"get_", "weather\", \"parameters\": {\"city\": \"a;b}\"}}",
                            "; {\"name\": \"ping\", \"arguments\": {}}"}) {
    auto d = p.push(piece);
    content += d.content;
    CHECK(d.calls.empty());
  }
  auto end = p.finish();
  CHECK(content + end.content == "");
  REQUIRE(end.calls.size() == 2);
  CHECK(end.calls[0].name == "get_weather");
  CHECK(end.calls[0].arguments == R"({"city":"a;b}"})");
  CHECK(end.calls[1].name == "ping");
  CHECK(p.calls_seen() == 2);

  // Text is content as it streams; JSON that is not a call stays text.
  tool_call_parser text(tool_format::llama3_json);
  CHECK(text.push("  Hello").content == "  Hello");
  CHECK(text.push(" {there}").content == " {there}");
  CHECK(text.finish().calls.empty());
  tool_call_parser not_call(tool_format::llama3_json);
  CHECK(not_call.push(R"({"answer": 42})").content.empty());
  auto e = not_call.finish();
  CHECK(e.calls.empty());
  CHECK(e.content == R"({"answer": 42})");
  tool_call_parser tagged(tool_format::llama3_json);
  CHECK(tagged.push("<|python").content.empty());  // could be <|python_tag|>
  CHECK(tagged.push(R"(_tag|>{"name": "ping", "parameters": {}})").content.empty());
  auto te = tagged.finish();
  REQUIRE(te.calls.size() == 1);
  CHECK(te.calls[0].name == "ping");
}

TEST_CASE("Mistral calls: an array after [TOOL_CALLS], and ids of 9 characters", "[tools]") {
  const auto one = tool_call_grammar(tools, "", false, tool_format::mistral);
  CHECK(matches(one, R"([{"name": "ping", "arguments": {}}])"));
  CHECK_FALSE(matches(one, R"([{"name": "ping", "arguments": {}}, {"name": "ping", "arguments": {}}])"));
  CHECK(matches(tool_call_grammar(tools, "", true, tool_format::mistral),
                R"([{"name": "ping", "arguments": {}}, {"name": "ping", "arguments": {}}])"));

  for (const char* text : {R"([TOOL_CALLS][{"name": "ping", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "x"}}])",
                           R"( [{"name": "ping", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "x"}}])"}) {
    tool_call_parser p(tool_format::mistral);
    std::string t = text;
    auto a = p.push(t.substr(0, 7));
    auto b = p.push(t.substr(7));
    auto e = p.finish();
    CHECK(a.content + b.content + e.content == "");
    REQUIRE(e.calls.size() == 2);
    CHECK(e.calls[1].arguments == R"({"city":"x"})");
  }
  tool_call_parser text(tool_format::mistral);
  CHECK(text.push("Sure [1]").content == "Sure [1]");
  tool_call_parser bracket(tool_format::mistral);
  CHECK(bracket.push("[1] first").content.empty());
  CHECK(bracket.finish().content == "[1] first");  // not calls: the text as written

  const auto id = tool_call_id(tool_format::mistral, 12345, 0);
  CHECK(id.size() == 9);
  CHECK(std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }));
  CHECK(id != tool_call_id(tool_format::mistral, 12345, 1));
  CHECK(tool_call_id(tool_format::hermes, 1, 2) == "call_0000000000000042");

  // A history with the longer ids other servers make: the template gets
  // their last 9 characters (it refuses any other length).
  std::vector<tool_turn> turns = {{"user", "weather?", {}, ""},
                                  {"assistant", "", {{"call_0123456789abcdef", "get_weather", R"({"city":"x"})"}}, ""},
                                  {"tool", "sunny", {}, "call_0123456789abcdef"}};
  auto out = render_chat(style_of("mistral_nemo.jinja"), turns, tools);
  CHECK(out.text.find(R"("id": "789abcdef"})") != std::string::npos);
  CHECK(out.text.find(R"("call_id": "789abcdef"})") != std::string::npos);
}
