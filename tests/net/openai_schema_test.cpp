#include "net/openai_schema.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace llmux::net;
using nlohmann::json;

namespace {

completion_request parse_ok(const std::string& body, api_kind kind) {
  auto result = parse_completion_request(body, kind);
  if (const auto* e = std::get_if<api_error>(&result)) FAIL("unexpected error: " << e->message << " (param " << e->param << ")");
  return std::get<completion_request>(result);
}

api_error parse_err(const std::string& body, api_kind kind) {
  auto result = parse_completion_request(body, kind);
  REQUIRE(std::holds_alternative<api_error>(result));
  return std::get<api_error>(result);
}

/// Every parser error is a 400 invalid_request_error naming the field.
void check_error(const std::string& body, api_kind kind, const std::string& param, const std::string& needle) {
  INFO("body: " << body);
  const api_error e = parse_err(body, kind);
  INFO("message: " << e.message);
  CHECK(e.status == 400);
  CHECK(e.type == "invalid_request_error");
  CHECK(e.param == param);
  CHECK(e.message.find(needle) != std::string::npos);
}

void check_completions_error(const std::string& fields, const std::string& param, const std::string& needle) {
  check_error(R"({"model":"m","prompt":"hi")" + fields + "}", api_kind::completions, param, needle);
}

void check_chat_error(const std::string& fields, const std::string& param, const std::string& needle) {
  check_error(R"({"model":"m","messages":[{"role":"user","content":"hi"}])" + fields + "}", api_kind::chat, param,
              needle);
}

response_meta meta_for(api_kind kind) {
  response_meta m;
  m.kind = kind;
  m.id = kind == api_kind::chat ? "chatcmpl-abc" : "cmpl-abc";
  m.created = 1700000000;
  m.model = "llama-3-8b";
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------
// Parsing: happy paths

TEST_CASE("completions: minimal body gets OpenAI defaults", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"Hello"})", api_kind::completions);
  CHECK(r.kind == api_kind::completions);
  CHECK(r.model == "m");
  CHECK(r.prompt == "Hello");
  CHECK_FALSE(r.prompt_is_tokens);
  CHECK(r.prompt_tokens.empty());
  CHECK_FALSE(r.stream);
  CHECK_FALSE(r.include_usage);
  CHECK_FALSE(r.max_tokens.has_value());
  CHECK(r.temperature == 1.0);
  CHECK(r.top_p == 1.0);
  CHECK_FALSE(r.seed.has_value());
  CHECK(r.n == 1);
  CHECK(r.stop.empty());
  CHECK(r.user.empty());
}

TEST_CASE("completions: an array of one string is a plain prompt", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":["Once upon"]})", api_kind::completions);
  CHECK(r.prompt == "Once upon");
  CHECK_FALSE(r.prompt_is_tokens);
}

TEST_CASE("completions: an array of integers is a token-id prompt", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":[1, 15043, 0, 2147483647]})", api_kind::completions);
  CHECK(r.prompt_is_tokens);
  CHECK(r.prompt_tokens == std::vector<int32_t>{1, 15043, 0, 2147483647});
  CHECK(r.prompt.empty());
}

TEST_CASE("completions: every optional field is read", "[openai][parse]") {
  const auto r = parse_ok(R"({
    "model": "m", "prompt": "x", "stream": true, "stream_options": {"include_usage": true},
    "max_tokens": 64, "temperature": 0, "top_p": 0.5, "seed": 42, "n": 1,
    "stop": ["\n\n", "END"], "user": "alice", "logit_bias": {"50256": -100}, "frequency_penalty": 0.1
  })",
                          api_kind::completions);
  CHECK(r.stream);
  CHECK(r.include_usage);
  REQUIRE(r.max_tokens.has_value());
  CHECK(*r.max_tokens == 64);
  CHECK(r.temperature == 0.0);  // an integer where a float is expected
  CHECK(r.top_p == 0.5);
  REQUIRE(r.seed.has_value());
  CHECK(*r.seed == 42u);
  CHECK(r.n == 1);
  CHECK(r.stop == std::vector<std::string>{"\n\n", "END"});
  CHECK(r.user == "alice");
}

TEST_CASE("stop may be a single string", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"x","stop":"###"})", api_kind::completions);
  CHECK(r.stop == std::vector<std::string>{"###"});
}

TEST_CASE("a negative seed keeps its bits as uint64", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"x","seed":-1})", api_kind::completions);
  REQUIRE(r.seed.has_value());
  CHECK(*r.seed == UINT64_MAX);
  const auto big = parse_ok(R"({"model":"m","prompt":"x","seed":18446744073709551615})", api_kind::completions);
  CHECK(*big.seed == UINT64_MAX);
}

TEST_CASE("explicit nulls mean defaults", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"x","stream":null,"stream_options":null,"max_tokens":null,
                             "max_completion_tokens":null,"temperature":null,"top_p":null,"seed":null,"n":null,
                             "stop":null,"user":null})",
                          api_kind::completions);
  CHECK_FALSE(r.stream);
  CHECK_FALSE(r.max_tokens.has_value());
  CHECK(r.temperature == 1.0);
  CHECK_FALSE(r.seed.has_value());
  CHECK(r.stop.empty());
}

TEST_CASE("max_completion_tokens wins over max_tokens", "[openai][parse]") {
  const std::string messages = R"("messages":[{"role":"user","content":"hi"}])";
  auto r = parse_ok(R"({"model":"m",)" + messages + R"(,"max_tokens":10,"max_completion_tokens":20})", api_kind::chat);
  CHECK(r.max_tokens == 20);
  r = parse_ok(R"({"model":"m",)" + messages + R"(,"max_completion_tokens":20,"max_tokens":10})", api_kind::chat);
  CHECK(r.max_tokens == 20);
  r = parse_ok(R"({"model":"m",)" + messages + R"(,"max_tokens":10})", api_kind::chat);
  CHECK(r.max_tokens == 10);
  r = parse_ok(R"({"model":"m",)" + messages + R"(,"max_tokens":10,"max_completion_tokens":null})", api_kind::chat);
  CHECK(r.max_tokens == 10);
}

TEST_CASE("chat: messages with string, null and text-part content", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","messages":[
      {"role":"developer","content":"Be brief."},
      {"role":"system","content":"sys"},
      {"role":"user","content":[{"type":"text","text":"Hello, "},{"type":"text","text":"world"}]},
      {"role":"assistant","content":null},
      {"role":"tool","content":"42","tool_call_id":"t1"}
    ]})",
                          api_kind::chat);
  CHECK(r.kind == api_kind::chat);
  REQUIRE(r.messages.size() == 5);
  CHECK(r.messages[0].role == "developer");
  CHECK(r.messages[0].content == "Be brief.");
  CHECK(r.messages[1].role == "system");
  CHECK(r.messages[2].role == "user");
  CHECK(r.messages[2].content == "Hello, world");
  CHECK(r.messages[3].role == "assistant");
  CHECK(r.messages[3].content.empty());
  CHECK(r.messages[4].role == "tool");
  CHECK(r.messages[4].content == "42");
}

TEST_CASE("chat: stream_options.include_usage with stream", "[openai][parse]") {
  auto r = parse_ok(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                       "stream_options":{"include_usage":true}})",
                    api_kind::chat);
  CHECK(r.stream);
  CHECK(r.include_usage);
  r = parse_ok(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{}})",
               api_kind::chat);
  CHECK(r.stream);
  CHECK_FALSE(r.include_usage);
}

TEST_CASE("each kind ignores the other kind's input field", "[openai][parse]") {
  const auto chat = parse_ok(R"({"model":"m","prompt":"ignored","messages":[{"role":"user","content":"hi"}]})",
                             api_kind::chat);
  CHECK(chat.prompt.empty());
  CHECK(chat.messages.size() == 1);
  check_error(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", api_kind::completions, "prompt",
              "Missing required parameter");
}

// ---------------------------------------------------------------------------
// Parsing: one test per error

TEST_CASE("error: malformed JSON", "[openai][error]") {
  const api_error e = parse_err(R"({"model": "m", )", api_kind::completions);
  CHECK(e.status == 400);
  CHECK(e.param.empty());
  CHECK(e.message.rfind("Malformed JSON in request body: ", 0) == 0);
  CHECK(e.message.size() > std::string("Malformed JSON in request body: ").size());
}

TEST_CASE("error: empty body", "[openai][error]") { check_error("", api_kind::chat, "", "Malformed JSON"); }

TEST_CASE("error: a number beyond a double's range is a malformed body, not an internal error",
          "[openai][error]") {
  // Found by tests/fuzz/openai_request_fuzz: nlohmann throws out_of_range
  // (not parse_error) for 1e999; the edge answered 500 "internal error".
  check_error(R"({"model": "m", "prompt": "x", "temperature": 1e999})", api_kind::completions, "",
              "number overflow");
  check_error(R"({"model": "m", "messages": [], "max_tokens": -1e400})", api_kind::chat, "", "Malformed JSON");
}

TEST_CASE("error: body is not an object", "[openai][error]") {
  check_error(R"(["model","m"])", api_kind::completions, "", "must be a JSON object");
}

TEST_CASE("error: model missing", "[openai][error]") {
  check_error(R"({"prompt":"x"})", api_kind::completions, "model", "Missing required parameter: 'model'");
}

TEST_CASE("error: model not a string", "[openai][error]") {
  check_error(R"({"model":7,"prompt":"x"})", api_kind::completions, "model", "'model' must be a string, got number");
}

TEST_CASE("error: model empty", "[openai][error]") {
  check_error(R"({"model":"","prompt":"x"})", api_kind::completions, "model", "must not be empty");
}

TEST_CASE("error: prompt missing", "[openai][error]") {
  check_error(R"({"model":"m"})", api_kind::completions, "prompt", "Missing required parameter: 'prompt'");
}

TEST_CASE("error: batched string prompts", "[openai][error]") {
  check_error(R"({"model":"m","prompt":["a","b"]})", api_kind::completions, "prompt",
              "batched prompts are not supported");
}

TEST_CASE("error: batched token prompts", "[openai][error]") {
  check_error(R"({"model":"m","prompt":[[1,2],[3]]})", api_kind::completions, "prompt",
              "batched prompts are not supported");
}

TEST_CASE("error: prompt of the wrong type", "[openai][error]") {
  check_error(R"({"model":"m","prompt":{"text":"x"}})", api_kind::completions, "prompt", "got object");
}

TEST_CASE("error: prompt mixing strings and token ids", "[openai][error]") {
  check_error(R"({"model":"m","prompt":["a",1]})", api_kind::completions, "prompt", "array of token ids");
}

TEST_CASE("error: empty prompt array", "[openai][error]") {
  check_error(R"({"model":"m","prompt":[]})", api_kind::completions, "prompt", "must not be empty");
}

TEST_CASE("error: negative token id", "[openai][error]") {
  check_error(R"({"model":"m","prompt":[1,-5]})", api_kind::completions, "prompt", "got -5");
}

TEST_CASE("error: token id beyond int32", "[openai][error]") {
  check_error(R"({"model":"m","prompt":[4294967296]})", api_kind::completions, "prompt", "token ids must be");
}

TEST_CASE("error: messages missing", "[openai][error]") {
  check_error(R"({"model":"m"})", api_kind::chat, "messages", "Missing required parameter: 'messages'");
}

TEST_CASE("error: messages not an array", "[openai][error]") {
  check_error(R"({"model":"m","messages":"hi"})", api_kind::chat, "messages", "'messages' must be an array, got string");
}

TEST_CASE("error: messages empty", "[openai][error]") {
  check_error(R"({"model":"m","messages":[]})", api_kind::chat, "messages", "at least one message");
}

TEST_CASE("error: message not an object", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"user","content":"a"},"b"]})", api_kind::chat, "messages[1]",
              "must be an object");
}

TEST_CASE("error: role missing", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"content":"a"}]})", api_kind::chat, "messages[0].role",
              "Missing required parameter");
}

TEST_CASE("error: unknown role", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"wizard","content":"a"}]})", api_kind::chat, "messages[0].role",
              "'wizard'");
}

TEST_CASE("error: role not a string", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":1,"content":"a"}]})", api_kind::chat, "messages[0].role",
              "must be a string, got number");
}

TEST_CASE("error: user message without content", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"user"}]})", api_kind::chat, "messages[0].content",
              "Missing required parameter");
}

TEST_CASE("error: content of the wrong type", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"user","content":5}]})", api_kind::chat, "messages[0].content",
              "got number");
}

TEST_CASE("error: image content part", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[
                 {"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"http://x"}}]}]})",
              api_kind::chat, "messages[1].content", "'image_url' is not supported");
}

TEST_CASE("error: text part without text", "[openai][error]") {
  check_error(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]})", api_kind::chat,
              "messages[0].content", "text");
}

TEST_CASE("error: stream not a boolean", "[openai][error]") {
  check_chat_error(R"(,"stream":"yes")", "stream", "'stream' must be a boolean, got string");
}

TEST_CASE("error: stream_options without stream", "[openai][error]") {
  check_chat_error(R"(,"stream_options":{"include_usage":true})", "stream_options", "only allowed when 'stream'");
  check_chat_error(R"(,"stream":false,"stream_options":{"include_usage":true})", "stream_options",
                   "only allowed when 'stream'");
}

TEST_CASE("error: stream_options not an object", "[openai][error]") {
  check_chat_error(R"(,"stream":true,"stream_options":true)", "stream_options", "must be an object, got boolean");
}

TEST_CASE("error: include_usage not a boolean", "[openai][error]") {
  check_chat_error(R"(,"stream":true,"stream_options":{"include_usage":1})", "stream_options.include_usage",
                   "must be a boolean");
}

TEST_CASE("error: max_tokens below 1", "[openai][error]") {
  check_completions_error(R"(,"max_tokens":0)", "max_tokens", "at least 1");
}

TEST_CASE("error: max_tokens not an integer", "[openai][error]") {
  check_completions_error(R"(,"max_tokens":"10")", "max_tokens", "'max_tokens' must be an integer, got string");
  check_completions_error(R"(,"max_tokens":2.5)", "max_tokens", "must be an integer");
}

TEST_CASE("error: max_tokens beyond int", "[openai][error]") {
  check_completions_error(R"(,"max_tokens":99999999999)", "max_tokens", "at most");
}

TEST_CASE("error: max_completion_tokens below 1", "[openai][error]") {
  check_chat_error(R"(,"max_completion_tokens":-3)", "max_completion_tokens", "at least 1");
}

TEST_CASE("error: temperature of the wrong type", "[openai][error]") {
  check_completions_error(R"(,"temperature":"hot")", "temperature", "'temperature' must be a number, got string");
}

TEST_CASE("error: temperature out of range", "[openai][error]") {
  check_completions_error(R"(,"temperature":2.5)", "temperature", "between 0 and 2");
  check_completions_error(R"(,"temperature":-0.1)", "temperature", "between 0 and 2");
}

TEST_CASE("error: top_p of zero", "[openai][error]") {
  check_completions_error(R"(,"top_p":0)", "top_p", "greater than 0");
}

TEST_CASE("error: top_p above one", "[openai][error]") {
  check_completions_error(R"(,"top_p":1.01)", "top_p", "at most 1");
}

TEST_CASE("error: seed not an integer", "[openai][error]") {
  check_completions_error(R"(,"seed":1.5)", "seed", "'seed' must be an integer, got number");
}

TEST_CASE("n up to max_choices is accepted", "[openai]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"x","n":3})", api_kind::completions);
  CHECK(r.n == 3);
  CHECK(parse_ok(R"({"model":"m","prompt":"x","n":16})", api_kind::completions).n == max_choices);
}

TEST_CASE("error: n above max_choices", "[openai][error]") {
  check_completions_error(R"(,"n":17)", "n", "'n' must be at most 16, got 17");
}

TEST_CASE("echo: completions only, and not with logprobs", "[openai]") {
  CHECK(parse_ok(R"({"model":"m","prompt":"x","echo":true})", api_kind::completions).echo);
  CHECK_FALSE(parse_ok(R"({"model":"m","prompt":"x"})", api_kind::completions).echo);
  // OpenAI's chat has no echo, but vLLM's does (the last message leads the
  // answer): refused rather than ignored, so its users are not surprised.
  check_chat_error(R"(,"echo":true)", "echo", "chat does not echo");
  check_completions_error(R"(,"echo":1)", "echo", "must be a boolean");
  check_completions_error(R"(,"echo":true,"logprobs":2)", "echo", "prompt log-probabilities");
}

TEST_CASE("error: n below one", "[openai][error]") {
  check_completions_error(R"(,"n":0)", "n", "at least 1");
}

TEST_CASE("error: n not an integer", "[openai][error]") {
  check_completions_error(R"(,"n":true)", "n", "must be an integer, got boolean");
}

TEST_CASE("error: more than four stop sequences", "[openai][error]") {
  check_completions_error(R"(,"stop":["a","b","c","d","e"])", "stop", "at most 4");
}

TEST_CASE("error: stop sequence not a string", "[openai][error]") {
  check_completions_error(R"(,"stop":["a",3])", "stop", "'stop[1]' must be a string");
}

TEST_CASE("error: stop of the wrong type", "[openai][error]") {
  check_completions_error(R"(,"stop":{"a":1})", "stop", "got object");
}

TEST_CASE("error: user not a string", "[openai][error]") {
  check_completions_error(R"(,"user":123)", "user", "'user' must be a string, got number");
}

// ---------------------------------------------------------------------------
// Rendering

TEST_CASE("error_body has OpenAI's shape, nulls for empty param and code", "[openai][render]") {
  api_error e;
  e.message = "bad \"thing\"";
  json j = json::parse(error_body(e));
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["message"] == "bad \"thing\"");
  CHECK(j["error"]["type"] == "invalid_request_error");
  CHECK(j["error"]["param"].is_null());
  CHECK(j["error"]["code"].is_null());

  e.param = "temperature";
  e.code = "invalid_type";
  e.type = "server_error";
  j = json::parse(error_body(e));
  CHECK(j["error"]["param"] == "temperature");
  CHECK(j["error"]["code"] == "invalid_type");
  CHECK(j["error"]["type"] == "server_error");
  CHECK(j.size() == 1);
  CHECK(j["error"].size() == 4);
}

TEST_CASE("a parse error renders through error_body", "[openai][render]") {
  const api_error e = parse_err(R"({"model":"m","prompt":"x","n":30})", api_kind::completions);
  const json j = json::parse(error_body(e));
  CHECK(j["error"]["param"] == "n");
  CHECK(j["error"]["message"] == "'n' must be at most 16, got 30");
}

TEST_CASE("render_completion: several choices, each with its index", "[openai][render]") {
  const std::vector<logprob_entry> lps{{"a", -0.5f, {}, 0}};
  const json j = json::parse(render_completion(
    meta_for(api_kind::completions),
    {choice_result{"one", "stop", nullptr}, choice_result{"two", "length", &lps}}, {3, 4}));
  REQUIRE(j["choices"].size() == 2);
  CHECK(j["choices"][0]["index"] == 0);
  CHECK(j["choices"][0]["text"] == "one");
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  CHECK(j["choices"][0]["logprobs"].is_null());
  CHECK(j["choices"][1]["index"] == 1);
  CHECK(j["choices"][1]["text"] == "two");
  CHECK(j["choices"][1]["finish_reason"] == "length");
  CHECK(j["choices"][1]["logprobs"]["tokens"] == json::array({"a"}));
  CHECK(j["usage"]["total_tokens"] == 7);
}

TEST_CASE("render_chunk carries the choice index", "[openai][render]") {
  const json j = json::parse(render_chunk(meta_for(api_kind::chat), "hi", false, "", nullptr, 2));
  CHECK(j["choices"][0]["index"] == 2);
  CHECK(j["choices"][0]["delta"]["content"] == "hi");
}

TEST_CASE("render_completion: text_completion", "[openai][render]") {
  const json j = json::parse(render_completion(meta_for(api_kind::completions), "four", "length", {5, 7}));
  CHECK(j["id"] == "cmpl-abc");
  CHECK(j["object"] == "text_completion");
  CHECK(j["created"] == 1700000000);
  CHECK(j["model"] == "llama-3-8b");
  CHECK_FALSE(j.contains("system_fingerprint"));
  REQUIRE(j["choices"].size() == 1);
  const json& c = j["choices"][0];
  CHECK(c["index"] == 0);
  CHECK(c["text"] == "four");
  CHECK(c.contains("logprobs"));
  CHECK(c["logprobs"].is_null());
  CHECK(c["finish_reason"] == "length");
  CHECK_FALSE(c.contains("message"));
  CHECK(j["usage"]["prompt_tokens"] == 5);
  CHECK(j["usage"]["completion_tokens"] == 7);
  CHECK(j["usage"]["total_tokens"] == 12);
}

TEST_CASE("render_completion: chat.completion", "[openai][render]") {
  response_meta meta = meta_for(api_kind::chat);
  meta.system_fingerprint = "fp_llmux";
  const json j = json::parse(render_completion(meta, "Hi there", "stop", {10, 2}));
  CHECK(j["id"] == "chatcmpl-abc");
  CHECK(j["object"] == "chat.completion");
  CHECK(j["created"] == 1700000000);
  CHECK(j["model"] == "llama-3-8b");
  CHECK(j["system_fingerprint"] == "fp_llmux");
  REQUIRE(j["choices"].size() == 1);
  const json& c = j["choices"][0];
  CHECK(c["index"] == 0);
  CHECK(c["message"]["role"] == "assistant");
  CHECK(c["message"]["content"] == "Hi there");
  CHECK(c["logprobs"].is_null());
  CHECK(c["finish_reason"] == "stop");
  CHECK_FALSE(c.contains("text"));
  CHECK(j["usage"]["prompt_tokens"] == 10);
  CHECK(j["usage"]["completion_tokens"] == 2);
  CHECK(j["usage"]["total_tokens"] == 12);
}

TEST_CASE("render_chunk: text_completion chunks", "[openai][render]") {
  const auto meta = meta_for(api_kind::completions);
  json j = json::parse(render_chunk(meta, "Hel", true, ""));
  CHECK(j["id"] == "cmpl-abc");
  CHECK(j["object"] == "text_completion");
  CHECK(j["created"] == 1700000000);
  CHECK(j["model"] == "llama-3-8b");
  CHECK_FALSE(j.contains("usage"));
  REQUIRE(j["choices"].size() == 1);
  CHECK(j["choices"][0]["index"] == 0);
  CHECK(j["choices"][0]["text"] == "Hel");
  CHECK(j["choices"][0]["logprobs"].is_null());
  CHECK(j["choices"][0].contains("finish_reason"));
  CHECK(j["choices"][0]["finish_reason"].is_null());

  j = json::parse(render_chunk(meta, "", false, "stop"));
  CHECK(j["choices"][0]["text"] == "");
  CHECK(j["choices"][0]["finish_reason"] == "stop");
}

TEST_CASE("render_chunk: chat deltas", "[openai][render]") {
  const auto meta = meta_for(api_kind::chat);

  json first = json::parse(render_chunk(meta, "", true, ""));
  CHECK(first["id"] == "chatcmpl-abc");
  CHECK(first["object"] == "chat.completion.chunk");
  CHECK(first["created"] == 1700000000);
  CHECK(first["model"] == "llama-3-8b");
  CHECK_FALSE(first.contains("usage"));
  REQUIRE(first["choices"].size() == 1);
  CHECK(first["choices"][0]["index"] == 0);
  CHECK(first["choices"][0]["delta"] == json{{"role", "assistant"}, {"content", ""}});
  CHECK(first["choices"][0]["logprobs"].is_null());
  CHECK(first["choices"][0]["finish_reason"].is_null());

  json first_with_text = json::parse(render_chunk(meta, "Hi", true, ""));
  CHECK(first_with_text["choices"][0]["delta"] == json{{"role", "assistant"}, {"content", "Hi"}});

  json middle = json::parse(render_chunk(meta, " there", false, ""));
  CHECK(middle["choices"][0]["delta"] == json{{"content", " there"}});
  CHECK(middle["choices"][0]["finish_reason"].is_null());

  json last = json::parse(render_chunk(meta, "", false, "stop"));
  CHECK(last["choices"][0]["delta"].is_object());
  CHECK(last["choices"][0]["delta"].empty());
  CHECK(last["choices"][0]["finish_reason"] == "stop");

  json last_with_text = json::parse(render_chunk(meta, "!", false, "length"));
  CHECK(last_with_text["choices"][0]["delta"] == json{{"content", "!"}});
  CHECK(last_with_text["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("render_chunk: system_fingerprint only when set", "[openai][render]") {
  auto meta = meta_for(api_kind::chat);
  CHECK_FALSE(json::parse(render_chunk(meta, "a", false, "")).contains("system_fingerprint"));
  meta.system_fingerprint = "fp_1";
  CHECK(json::parse(render_chunk(meta, "a", false, ""))["system_fingerprint"] == "fp_1");
}

TEST_CASE("render_usage_chunk: empty choices plus usage", "[openai][render]") {
  for (api_kind kind : {api_kind::completions, api_kind::chat}) {
    const json j = json::parse(render_usage_chunk(meta_for(kind), {3, 4}));
    CHECK(j["object"] == (kind == api_kind::chat ? "chat.completion.chunk" : "text_completion"));
    CHECK(j["id"] == (kind == api_kind::chat ? "chatcmpl-abc" : "cmpl-abc"));
    CHECK(j["created"] == 1700000000);
    CHECK(j["model"] == "llama-3-8b");
    CHECK(j["choices"].is_array());
    CHECK(j["choices"].empty());
    CHECK(j["usage"]["prompt_tokens"] == 3);
    CHECK(j["usage"]["completion_tokens"] == 4);
    CHECK(j["usage"]["total_tokens"] == 7);
  }
}

TEST_CASE("render_models lists every card", "[openai][render]") {
  const json j = json::parse(render_models({{"llama", "cuda", 2}, {"tiny", "sim", 0}}, 1234));
  CHECK(j["object"] == "list");
  REQUIRE(j["data"].size() == 2);
  CHECK(j["data"][0]["id"] == "llama");
  CHECK(j["data"][0]["object"] == "model");
  CHECK(j["data"][0]["created"] == 1234);
  CHECK(j["data"][0]["owned_by"] == "llmux");
  CHECK(j["data"][0]["backend"] == "cuda");
  CHECK(j["data"][0]["replicas"] == 2);
  CHECK(j["data"][1]["id"] == "tiny");
  CHECK(j["data"][1]["backend"] == "sim");
  CHECK(j["data"][1]["replicas"] == 0);

  const json empty = json::parse(render_models({}, 1));
  CHECK(empty["data"].is_array());
  CHECK(empty["data"].empty());
}

TEST_CASE("hostile text still renders valid JSON", "[openai][render]") {
  const std::string nasty = std::string("say \"hi\"\n\tback\\slash \x01\x1f end ") + "\xff\xfe broken \xc3";
  const auto meta = meta_for(api_kind::chat);
  for (const std::string& out : {render_completion(meta, nasty, "stop", {}), render_chunk(meta, nasty, true, ""),
                                 render_chunk(meta_for(api_kind::completions), nasty, false, "")}) {
    INFO(out);
    // One SSE data line per event: no raw newline may appear in the JSON.
    CHECK(out.find('\n') == std::string::npos);
    json j;
    REQUIRE_NOTHROW(j = json::parse(out));
    const json& c = j["choices"][0];
    const std::string text = c.contains("message") ? c["message"]["content"].get<std::string>()
                             : c.contains("delta")  ? c["delta"]["content"].get<std::string>()
                                                    : c["text"].get<std::string>();
    CHECK(text.rfind("say \"hi\"\n\tback\\slash \x01\x1f end ", 0) == 0);
    CHECK(text.find("\xEF\xBF\xBD") != std::string::npos);  // U+FFFD replaced the invalid bytes
  }

  api_error e;
  e.message = "bad \xff value";
  REQUIRE_NOTHROW(json::parse(error_body(e)));
}

TEST_CASE("SSE framing", "[openai][sse]") {
  CHECK(sse_event(R"({"a":1})") == "data: {\"a\":1}\n\n");
  CHECK(sse_done() == "data: [DONE]\n\n");

  const std::string ev = sse_event(render_chunk(meta_for(api_kind::chat), "x\ny", false, ""));
  REQUIRE(ev.rfind("data: ", 0) == 0);
  REQUIRE(ev.size() >= 8);
  CHECK(ev.substr(ev.size() - 2) == "\n\n");
  const std::string payload = ev.substr(6, ev.size() - 8);
  CHECK(payload.find('\n') == std::string::npos);
  CHECK(json::parse(payload)["choices"][0]["delta"]["content"] == "x\ny");
}

TEST_CASE("sampling extensions: top_k, min_p, penalties and logit_bias are read", "[openai][parse]") {
  const auto r = parse_ok(R"({"model":"m","prompt":"x","top_k":40,"min_p":0.05,
    "presence_penalty":0.5,"frequency_penalty":-1,"repetition_penalty":1.1,
    "logit_bias":{"50256":-100,"7":2.5}})", api_kind::completions);
  CHECK(r.top_k == 40);
  CHECK(r.min_p == Approx(0.05));
  CHECK(r.presence_penalty == Approx(0.5));
  CHECK(r.frequency_penalty == Approx(-1.0));
  CHECK(r.repetition_penalty == Approx(1.1));
  REQUIRE(r.logit_bias.size() == 2);
  // nlohmann keeps object keys sorted: "50256" < "7".
  CHECK(r.logit_bias[0] == std::pair<int32_t, float>{50256, -100.0f});
  CHECK(r.logit_bias[1] == std::pair<int32_t, float>{7, 2.5f});
  CHECK(parse_ok(R"({"model":"m","prompt":"x","top_k":-1})", api_kind::completions).top_k == 0);
}

TEST_CASE("sampling extensions: out-of-range values are 400s naming the field", "[openai][parse]") {
  check_completions_error(R"(,"top_k":-2)", "top_k", "top_k");
  check_completions_error(R"(,"min_p":1.5)", "min_p", "between 0 and 1");
  check_completions_error(R"(,"presence_penalty":3)", "presence_penalty", "between -2 and 2");
  check_completions_error(R"(,"frequency_penalty":"high")", "frequency_penalty", "number");
  check_completions_error(R"(,"repetition_penalty":0)", "repetition_penalty", "greater than 0");
  check_completions_error(R"(,"logit_bias":[1,2])", "logit_bias", "object");
  check_completions_error(R"(,"logit_bias":{"abc":1})", "logit_bias", "token ids");
  check_completions_error(R"(,"logit_bias":{"5":101})", "logit_bias", "between -100 and 100");
}

TEST_CASE("logprobs: completions take a count, chat a flag plus top_logprobs", "[openai][parse]") {
  CHECK(parse_ok(R"({"model":"m","prompt":"x"})", api_kind::completions).logprobs == -1);
  CHECK(parse_ok(R"({"model":"m","prompt":"x","logprobs":3})", api_kind::completions).logprobs == 3);
  const std::string msgs = R"("messages":[{"role":"user","content":"hi"}])";
  CHECK(parse_ok(R"({"model":"m",)" + msgs + R"(,"logprobs":true})", api_kind::chat).logprobs == 0);
  CHECK(parse_ok(R"({"model":"m",)" + msgs + R"(,"logprobs":true,"top_logprobs":4})", api_kind::chat)
          .logprobs == 4);
  check_completions_error(R"(,"logprobs":21)", "logprobs", "between 0 and 20");
  check_chat_error(R"(,"top_logprobs":2)", "top_logprobs", "requires 'logprobs'");
}

TEST_CASE("logprobs render in OpenAI's shape for each kind", "[openai][render]") {
  std::vector<logprob_entry> lps{{"Hi", -0.5f, {{"Hi", -0.5f}, {"Yo", -1.5f}}, 0},
                                 {"!", -0.25f, {{"!", -0.25f}}, 2}};
  auto comp = nlohmann::json::parse(
    render_completion(meta_for(api_kind::completions), "Hi!", "length", {1, 2}, &lps));
  const auto& c = comp["choices"][0]["logprobs"];
  CHECK(c["tokens"] == nlohmann::json::array({"Hi", "!"}));
  CHECK(c["token_logprobs"][1].get<double>() == Approx(-0.25));
  CHECK(c["top_logprobs"][0]["Yo"].get<double>() == Approx(-1.5));
  CHECK(c["text_offset"] == nlohmann::json::array({0, 2}));
  auto chat = nlohmann::json::parse(render_chunk(meta_for(api_kind::chat), "Hi!", false, "", &lps));
  const auto& content = chat["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == 2);
  CHECK(content[0]["bytes"] == nlohmann::json::array({72, 105}));
  CHECK(content[0]["top_logprobs"][1]["token"] == "Yo");
  // Without entries the field stays null, as before.
  auto plain = nlohmann::json::parse(render_chunk(meta_for(api_kind::chat), "Hi", false, ""));
  CHECK(plain["choices"][0]["logprobs"].is_null());
}

// ---------------------------------------------------------------------------
// Fields llmux refuses rather than ignore, and vLLM's extras

TEST_CASE("refused fields: a 400 naming the field, unless null or neutral", "[openai][parse]") {
  // Written from OpenAI's and vLLM's API references, not from the table.
  check_completions_error(R"(,"best_of":3)", "best_of", "best_of");
  check_completions_error(R"(,"n":2,"best_of":1)", "best_of", "at least 'n'");
  check_completions_error(R"(,"suffix":" the end")", "suffix", "suffix");
  check_chat_error(R"(,"audio":{"voice":"alloy","format":"wav"})", "audio", "audio");
  check_chat_error(R"(,"modalities":["text","audio"])", "modalities", "text");
  check_chat_error(R"(,"prediction":{"type":"content","content":"x"})", "prediction", "predicted");
  check_chat_error(R"(,"functions":[{"name":"f"}])", "functions", "functions");
  check_completions_error(R"(,"use_beam_search":true)", "use_beam_search", "beam");
  check_chat_error(R"(,"echo":true)", "echo", "echo");
  check_chat_error(R"(,"add_generation_prompt":false)", "add_generation_prompt", "assistant");
  for (const auto& e : {parse_err(R"({"model":"m","prompt":"x","best_of":2})", api_kind::completions)})
    CHECK(e.code == "unsupported_parameter");

  // Neutral values and nulls pass.
  parse_ok(R"({"model":"m","prompt":"x","best_of":1,"suffix":"","use_beam_search":false})", api_kind::completions);
  parse_ok(R"({"model":"m","prompt":"x","n":3,"best_of":3})", api_kind::completions);
  parse_ok(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"audio":null,"modalities":["text"],)"
           R"("tools":[],"tool_choice":"none","response_format":{"type":"text"},"echo":false,)"
           R"("parallel_tool_calls":true,"store":false,"metadata":{"a":"b"},"service_tier":"auto"})",
           api_kind::chat);
  // A completions-only field in a chat body is unknown there, and ignored.
  parse_ok(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"suffix":"x","best_of":4})", api_kind::chat);
  CHECK_FALSE(unsupported_fields().empty());
}

TEST_CASE("vLLM extras: parsed, defaulted and range-checked", "[openai][parse]") {
  auto d = parse_ok(R"({"model":"m","prompt":"x"})", api_kind::completions);
  CHECK_FALSE(d.ignore_eos);
  CHECK(d.min_tokens == 0);
  CHECK(d.stop_token_ids.empty());
  CHECK_FALSE(d.include_stop_str_in_output);
  CHECK(d.skip_special_tokens);
  CHECK_FALSE(d.truncate_prompt_tokens);

  auto r = parse_ok(R"({"model":"m","prompt":"x","ignore_eos":true,"min_tokens":4,"max_tokens":8,)"
                    R"("stop_token_ids":[2,7],"include_stop_str_in_output":true,"skip_special_tokens":false,)"
                    R"("truncate_prompt_tokens":16,"stream":true,)"
                    R"("stream_options":{"include_usage":true,"continuous_usage_stats":true}})",
                    api_kind::completions);
  CHECK(r.ignore_eos);
  CHECK(r.min_tokens == 4);
  CHECK(r.stop_token_ids == std::vector<int32_t>{2, 7});
  CHECK(r.include_stop_str_in_output);
  CHECK_FALSE(r.skip_special_tokens);
  CHECK(r.truncate_prompt_tokens == 16);
  CHECK(r.continuous_usage_stats);
  CHECK_FALSE(parse_ok(R"({"model":"m","prompt":"x","truncate_prompt_tokens":-1})", api_kind::completions)
                .truncate_prompt_tokens);

  check_completions_error(R"(,"ignore_eos":"yes")", "ignore_eos", "boolean");
  check_completions_error(R"(,"min_tokens":-1)", "min_tokens", "at least 0");
  check_completions_error(R"(,"min_tokens":9,"max_tokens":8)", "min_tokens", "at most 'max_tokens'");
  check_completions_error(R"(,"stop_token_ids":5)", "stop_token_ids", "array");
  check_completions_error(R"(,"stop_token_ids":[-3])", "stop_token_ids", "token ids");
  check_completions_error(R"(,"truncate_prompt_tokens":0)", "truncate_prompt_tokens", "at least 1");
}

TEST_CASE("continuous usage: a chunk carries the counts so far", "[openai][render]") {
  usage_counts u{7, 3};
  auto j = json::parse(render_chunk(meta_for(api_kind::chat), "hi", false, "", nullptr, 0, &u));
  CHECK(j["usage"]["prompt_tokens"] == 7);
  CHECK(j["usage"]["completion_tokens"] == 3);
  CHECK(j["usage"]["total_tokens"] == 10);
  CHECK_FALSE(json::parse(render_chunk(meta_for(api_kind::chat), "hi", false, "")).contains("usage"));
}

TEST_CASE("structured outputs: each source becomes one constraint", "[openai][parse]") {
  const std::string chat = R"({"model":"m","messages":[{"role":"user","content":"hi"}],)";
  auto r = parse_ok(chat + R"("response_format":{"type":"json_object"}})", api_kind::chat);
  CHECK(r.constraint.kind == constraint_kind::json_object);
  CHECK(r.constraint.param == "response_format");
  CHECK(parse_ok(chat + R"("response_format":{"type":"text"}})", api_kind::chat).constraint.kind ==
        constraint_kind::none);
  // The schema keeps the order its properties were written in.
  r = parse_ok(chat + R"("response_format":{"type":"json_schema","json_schema":{"name":"p","strict":true,)"
                      R"("schema":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}}}}}})",
               api_kind::chat);
  CHECK(r.constraint.kind == constraint_kind::json_schema);
  CHECK(r.constraint.text.find("zeta") < r.constraint.text.find("alpha"));
  r = parse_ok(R"({"model":"m","prompt":"x","guided_json":"{\"type\":\"integer\"}"})", api_kind::completions);
  CHECK(r.constraint.kind == constraint_kind::json_schema);
  CHECK(r.constraint.text == R"({"type":"integer"})");
  r = parse_ok(R"({"model":"m","prompt":"x","guided_choice":["yes","no"]})", api_kind::completions);
  CHECK(r.constraint.choices == std::vector<std::string>{"yes", "no"});
  r = parse_ok(R"({"model":"m","prompt":"x","guided_grammar":"root ::= \"a\""})", api_kind::completions);
  CHECK(r.constraint.kind == constraint_kind::grammar);
  r = parse_ok(R"({"model":"m","prompt":"x","structured_outputs":{"choice":["a"]}})", api_kind::completions);
  CHECK(r.constraint.kind == constraint_kind::choice);
  CHECK(r.constraint.param == "structured_outputs");

  check_chat_error(R"(,"response_format":{"type":"xml"})", "response_format", "Invalid value");
  check_chat_error(R"(,"response_format":{"type":"json_schema"})", "response_format.json_schema", "Missing");
  check_chat_error(R"(,"response_format":{"type":"json_schema","json_schema":{"name":"x"}})",
                   "response_format.json_schema.schema", "Missing");
  check_completions_error(R"(,"guided_json":"{not json")", "guided_json", "not a JSON schema");
  check_completions_error(R"(,"guided_choice":[])", "guided_choice", "non-empty");
  check_completions_error(R"(,"guided_choice":["a",1])", "guided_choice", "string");
  check_completions_error(R"(,"guided_grammar":"")", "guided_grammar", "must not be empty");
  check_completions_error(R"(,"guided_choice":["a"],"guided_json":{"type":"string"})", "guided_choice", "give one");
  r = parse_ok(R"({"model":"m","prompt":"x","guided_regex":"[0-9]+"})", api_kind::completions);
  CHECK(r.constraint.kind == constraint_kind::regex);
  CHECK(r.constraint.text == "[0-9]+");
  r = parse_ok(R"({"model":"m","prompt":"x","structured_outputs":{"regex":"a|b"}})", api_kind::completions);
  CHECK(r.constraint.kind == constraint_kind::regex);
  check_completions_error(R"(,"guided_regex":5)", "guided_regex", "string");
}

TEST_CASE("tools: functions, tool_choice and the calls in the history", "[openai][parse][tools]") {
  const std::string chat = R"({"model":"m","messages":[{"role":"user","content":"hi"}],)";
  const std::string fn = R"({"type":"function","function":{"name":"get_weather","description":"d",)"
                         R"("parameters":{"type":"object","properties":{"city":{"type":"string"}}}}})";
  auto r = parse_ok(chat + R"("tools":[)" + fn + "]}", api_kind::chat);
  REQUIRE(r.tools.size() == 1);
  CHECK(r.tools[0].name == "get_weather");
  CHECK(r.tools[0].description == "d");
  CHECK(r.tools[0].parameters.find("city") != std::string::npos);
  CHECK(r.tool_choice == tool_choice_kind::auto_);
  CHECK(r.parallel_tool_calls);
  CHECK(parse_ok(chat + R"("tools":[)" + fn + R"(],"tool_choice":"required","parallel_tool_calls":false})",
                 api_kind::chat).tool_choice == tool_choice_kind::required);
  r = parse_ok(chat + R"("tools":[)" + fn + R"(],"tool_choice":{"type":"function","function":{"name":"get_weather"}}})",
               api_kind::chat);
  CHECK(r.tool_choice == tool_choice_kind::named);
  CHECK(r.tool_choice_name == "get_weather");
  CHECK(parse_ok(chat + R"("tool_choice":"auto"})", api_kind::chat).tool_choice == tool_choice_kind::none);

  r = parse_ok(R"({"model":"m","messages":[{"role":"user","content":"w?"},)"
               R"({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",)"
               R"("function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},)"
               R"({"role":"tool","tool_call_id":"call_1","content":"18C"}]})",
               api_kind::chat);
  REQUIRE(r.messages.size() == 3);
  REQUIRE(r.messages[1].tool_calls.size() == 1);
  CHECK(r.messages[1].tool_calls[0].id == "call_1");
  CHECK(r.messages[1].tool_calls[0].arguments == R"({"city":"Paris"})");
  CHECK(r.messages[2].tool_call_id == "call_1");

  check_chat_error(R"(,"tools":[{"type":"retrieval"}])", "tools", "must be 'function'");
  check_chat_error(R"(,"tools":[{"type":"function","function":{"name":"bad name"}}])", "tools", "letters, digits");
  check_chat_error(R"(,"tools":[)" + fn + "," + fn + "]", "tools", "two tools");
  check_chat_error(R"(,"tool_choice":"required")", "tool_choice", "'tools' is empty");
  check_chat_error(R"(,"tools":[)" + fn + R"(],"tool_choice":{"type":"function","function":{"name":"other"}})",
                   "tool_choice", "does not have");
  check_chat_error(R"(,"tools":[)" + fn + R"(],"tool_choice":"sometimes")", "tool_choice", "Invalid value");
  check_chat_error(R"(,"tools":[)" + fn + R"(],"tool_choice":"required","guided_choice":["a"])", "tool_choice",
                   "give one");
  check_error(R"({"model":"m","messages":[{"role":"tool","content":"x"}]})", api_kind::chat,
              "messages[0].tool_call_id", "Missing");
}

TEST_CASE("tool calls render in OpenAI's shape", "[openai][render][tools]") {
  std::vector<function_call> calls = {{"call_a", "get_weather", R"({"city":"Paris"})"}};
  auto j = json::parse(render_completion(meta_for(api_kind::chat), {choice_result{"\n", "tool_calls", nullptr, &calls}},
                                         usage_counts{3, 4}));
  const auto& msg = j["choices"][0]["message"];
  CHECK(msg["content"].is_null());
  CHECK(msg["tool_calls"][0]["id"] == "call_a");
  CHECK(msg["tool_calls"][0]["type"] == "function");
  CHECK(msg["tool_calls"][0]["function"]["name"] == "get_weather");
  CHECK(msg["tool_calls"][0]["function"]["arguments"] == R"({"city":"Paris"})");
  CHECK(j["choices"][0]["finish_reason"] == "tool_calls");
  auto chunk = json::parse(render_chunk(meta_for(api_kind::chat), "", false, "", nullptr, 0, nullptr, &calls, 2));
  CHECK(chunk["choices"][0]["delta"]["tool_calls"][0]["index"] == 2);
  CHECK_FALSE(chunk["choices"][0]["delta"].contains("content"));
}
