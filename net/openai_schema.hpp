#pragma once
/// The OpenAI wire format: request bodies → typed requests (with validation),
/// and typed results → response bodies, SSE chunks and error bodies.
///
/// Pure functions, no I/O, no CAF; safe to call from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace llmux::net {

enum class api_kind { completions, chat };

/// A function call, as in an assistant message's `tool_calls` and in a response.
struct function_call {
  std::string id;
  std::string name;
  std::string arguments;  ///< JSON text
};

struct chat_message {
  std::string role;     ///< "system" | "user" | "assistant" | "tool" | "developer"
  std::string content;  ///< text; an array of {type:"text",text} parts is joined
  std::vector<function_call> tool_calls;  ///< assistant: the calls it made
  std::string tool_call_id;               ///< tool: the call this result answers
};

/// A function the model may call (`tools`, type "function").
struct tool_spec {
  std::string name;
  std::string description;
  std::string parameters;  ///< JSON Schema as JSON text; empty: none given
};

enum class tool_choice_kind { none, auto_, required, named };

/// What the output must be (structured outputs): from `response_format`,
/// vLLM's `guided_json` / `guided_choice` / `guided_grammar` / `guided_regex`, or its newer
/// `structured_outputs` object. At most one per request.
enum class constraint_kind { none, json_object, json_schema, choice, grammar, regex };
struct output_constraint {
  constraint_kind kind = constraint_kind::none;
  std::string text;                  ///< json_schema: the schema (JSON text); grammar: GBNF; regex: the pattern
  std::vector<std::string> choices;  ///< choice
  std::string param;                 ///< the field it came from, for errors
};

/// A validated `/v1/completions` or `/v1/chat/completions` body.
struct completion_request {
  api_kind kind = api_kind::completions;
  std::string model;
  std::string prompt;                  ///< completions: the prompt text
  std::vector<int32_t> prompt_tokens;  ///< completions: prompt given as token ids
  bool prompt_is_tokens = false;
  std::vector<chat_message> messages;  ///< chat
  bool stream = false;
  bool include_usage = false;          ///< stream_options.include_usage
  std::optional<int> max_tokens;       ///< max_tokens or max_completion_tokens (>= 1)
  double temperature = 1.0;            ///< [0, 2]
  double top_p = 1.0;                  ///< (0, 1]
  int top_k = 0;                       ///< 0 or -1: off (vLLM extension)
  double min_p = 0.0;                  ///< [0, 1] (vLLM extension)
  double presence_penalty = 0.0;       ///< [-2, 2]
  double frequency_penalty = 0.0;      ///< [-2, 2]
  double repetition_penalty = 1.0;     ///< (0, 2] (vLLM extension); 1 = off
  std::vector<std::pair<int32_t, float>> logit_bias;  ///< token id → bias in [-100, 100]
  int logprobs = -1;  ///< -1: none; k >= 0: each token's log-prob and its top-k alternatives
                      ///< (completions: `logprobs: k`; chat: `logprobs: true` + `top_logprobs: k`)
  std::optional<uint64_t> seed;
  int n = 1;                           ///< choices per request, 1..max_choices
  std::vector<std::string> stop;       ///< string or list of up to 4 strings
  bool echo = false;                   ///< completions: the prompt text leads the choice's text
  std::string user;

  // vLLM's extensions (its SamplingParams), as its OpenAI server reads them.
  bool ignore_eos = false;          ///< keep generating past EOS (the EOS token adds no text)
  int min_tokens = 0;               ///< EOS and stop_token_ids are masked until this many are out
  std::vector<int32_t> stop_token_ids;  ///< end with "stop" when one is sampled (it adds no text)
  bool include_stop_str_in_output = false;  ///< a matched stop string ends the text instead of being cut
  bool skip_special_tokens = true;  ///< false: control tokens' text (<|im_end|>) shows in the output
  bool continuous_usage_stats = false;  ///< stream_options: every chunk carries usage so far
  std::optional<int> truncate_prompt_tokens;  ///< keep only the prompt's last k tokens (>= 1)
  output_constraint constraint;
  std::vector<tool_spec> tools;
  tool_choice_kind tool_choice = tool_choice_kind::none;  ///< auto when tools are given
  std::string tool_choice_name;                           ///< named
  bool parallel_tool_calls = true;
  /// chat: vLLM's chat_template_kwargs (a JSON object's text; empty: none),
  /// variables for the model's chat template such as enable_thinking.
  std::string chat_template_kwargs;
};

/// A request field llmux refuses (when set to anything but its neutral
/// value), for the kind it belongs to, and why.
struct unsupported_field {
  const char* name;
  bool chat;         ///< a field of /v1/chat/completions
  bool completions;  ///< a field of /v1/completions
  const char* why;
};
/// Every field `parse_completion_request` refuses, for docs and tests.
[[nodiscard]] const std::vector<unsupported_field>& unsupported_fields();

/// Most choices (`n`) one request may ask for: each is a sequence of its own.
inline constexpr int max_choices = 16;

/// An error as OpenAI returns it: HTTP status + {"error":{message,type,param,code}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  ///< empty → JSON null
  std::string code;   ///< empty → JSON null
};

/// Parses and validates a body. Malformed JSON, a non-object body, a missing
/// or mistyped required field, or an out-of-range value → `api_error` with
/// status 400 naming the field in `param` and the message. A known field
/// asking for what llmux does not do (`best_of` > `n`, `suffix`, `audio`,
/// non-text `modalities`, `tools`, beam search, …) is a 400 naming it too,
/// never silently ignored; `unsupported_fields` lists them. Unknown fields
/// are ignored (as OpenAI does).
[[nodiscard]] std::variant<completion_request, api_error>
parse_completion_request(std::string_view body, api_kind kind);

/// `{"error":{"message":...,"type":...,"param":...,"code":...}}`
[[nodiscard]] std::string error_body(const api_error& e);

struct usage_counts {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

/// Identity of one response: id ("cmpl-..." / "chatcmpl-..."), created (unix s), model.
struct response_meta {
  api_kind kind = api_kind::completions;
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string system_fingerprint;  ///< empty → omitted
};

/// One generated token's log-probability and its top alternatives.
struct logprob_entry {
  std::string token;  ///< the token's text (its bytes; may be part of a UTF-8 character)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  ///< most likely tokens at that position
  int64_t text_offset = 0;  ///< completions: where the token starts in the choice's text
};

/// Non-streaming body with one choice: `text_completion` or `chat.completion`
/// (message {role:"assistant", content}), finish_reason, usage. With
/// `logprobs`, choice.logprobs takes OpenAI's shape for the kind (chat:
/// {content:[{token,logprob,bytes,top_logprobs}]}; completions: {tokens,
/// token_logprobs, top_logprobs, text_offset}); otherwise it is null.
/// One choice of a non-streaming response.
struct choice_result {
  std::string text;
  std::string finish_reason;
  const std::vector<logprob_entry>* logprobs = nullptr;
  const std::vector<function_call>* tool_calls = nullptr;  ///< chat: message.tool_calls (content null if empty)
};
[[nodiscard]] std::string render_completion(const response_meta& meta,
                                            const std::vector<choice_result>& choices,
                                            const usage_counts& usage);
/// The same with one choice.
[[nodiscard]] std::string render_completion(const response_meta& meta, const std::string& text,
                                            const std::string& finish_reason,
                                            const usage_counts& usage,
                                            const std::vector<logprob_entry>* logprobs = nullptr);

/// One streaming chunk (the JSON, without SSE framing) for choice `index`:
/// `text_completion` {text} or `chat.completion.chunk` {delta:{role?,content?}}.
/// `first` adds role "assistant" (and `content`, even if empty) to a chat
/// delta; later chat deltas carry `content` only when `delta_text` is
/// non-empty, so the closing chunk is `delta: {}`. An empty `finish_reason`
/// becomes null. Chunks carry no `usage` key: token counts go in the separate
/// `render_usage_chunk`.
/// `usage` (vLLM's `continuous_usage_stats`) adds the counts so far.
/// `tool_calls` (chat) adds delta.tool_calls, each whole in one delta, with
/// its index among the choice's calls from `first_call_index`.
[[nodiscard]] std::string render_chunk(const response_meta& meta, const std::string& delta_text,
                                       bool first, const std::string& finish_reason,
                                       const std::vector<logprob_entry>* logprobs = nullptr,
                                       int index = 0, const usage_counts* usage = nullptr,
                                       const std::vector<function_call>* tool_calls = nullptr,
                                       int first_call_index = 0);

/// The final usage-only chunk of `stream_options.include_usage`: `choices: []`.
[[nodiscard]] std::string render_usage_chunk(const response_meta& meta, const usage_counts& usage);

/// `data: <json>\n\n`
[[nodiscard]] std::string sse_event(const std::string& json);
/// `data: [DONE]\n\n`
[[nodiscard]] std::string sse_done();

/// `GET /v1/models`: {"object":"list","data":[{id, object:"model", created, owned_by:"llmux",
/// backend, replicas, max_model_len}]}
struct model_card {
  std::string id;
  std::string backend;    ///< "sim" | "cpu" | "cuda"
  int replicas = 0;       ///< live replicas
  int max_model_len = 0;  ///< context length in tokens (vLLM's field); 0: omitted
  /// "ready", "loading" or "sleeping" (a request wakes it); empty: omitted.
  std::string state;
};
[[nodiscard]] std::string render_models(const std::vector<model_card>& models, int64_t created);

}  // namespace llmux::net
