#include "net/openai_schema.hpp"

#include <algorithm>
#include <cctype>

#include <cstdlib>

#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

namespace llmux::net {
namespace {

/// Ordered: a JSON schema in a body keeps its properties in the order written
/// (structured outputs generate them in that order, as OpenAI does).
using json = nlohmann::ordered_json;
/// Rendering keeps OpenAI's field order so responses diff cleanly against theirs.
using ordered_json = nlohmann::ordered_json;

/// Thrown inside the parser and turned into the returned `api_error`; keeps
/// every check a single line instead of threading results through helpers.
struct request_error {
  api_error error;
};

[[noreturn]] void fail(std::string param, std::string message, std::string code = {}) {
  api_error e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  throw request_error{std::move(e)};
}

[[noreturn]] void fail_type(const std::string& param, const char* expected, const json& got) {
  fail(param, "'" + param + "' must be " + expected + ", got " + got.type_name(), "invalid_type");
}

[[noreturn]] void fail_missing(const std::string& param) {
  fail(param, "Missing required parameter: '" + param + "'.", "missing_required_parameter");
}

/// Shortest round-trip text of a number, for messages ("got 2.5", not "2.500000").
std::string number_text(const json& v) { return v.dump(); }

/// The field, or nullptr when absent or null: OpenAI treats an explicit null
/// as "use the default" for every optional field.
const json* optional_field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& required_field(const json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) fail_missing(name);
  return *it;
}

bool integral_float(const json& v) {
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && std::trunc(d) == d;
}

/// An integer field, saturated to int64 (callers range-check). JSON has one
/// number type, so `5.0` is accepted as 5; `5.5` is not.
int64_t get_integer(const json& v, const std::string& param) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (integral_float(v)) {
    const double d = v.get<double>();
    if (d >= 9.2e18) return INT64_MAX;
    if (d <= -9.2e18) return INT64_MIN;
    return static_cast<int64_t>(d);
  }
  fail_type(param, "an integer", v);
}

double get_number(const json& v, const std::string& param) {
  if (!v.is_number()) fail_type(param, "a number", v);
  return v.get<double>();
}

bool get_bool(const json& v, const std::string& param) {
  if (!v.is_boolean()) fail_type(param, "a boolean", v);
  return v.get<bool>();
}

const std::string& get_string(const json& v, const std::string& param) {
  if (!v.is_string()) fail_type(param, "a string", v);
  return v.get_ref<const std::string&>();
}

/// max_tokens / max_completion_tokens: an int >= 1.
int get_token_limit(const json& v, const std::string& param) {
  const int64_t n = get_integer(v, param);
  if (n < 1) fail(param, "'" + param + "' must be at least 1, got " + std::to_string(n), "integer_below_min_value");
  if (n > INT_MAX) {
    fail(param, "'" + param + "' must be at most " + std::to_string(INT_MAX) + ", got " + number_text(v),
         "integer_above_max_value");
  }
  return static_cast<int>(n);
}

void parse_prompt(const json& body, completion_request& req) {
  const json& p = required_field(body, "prompt");
  if (p.is_string()) {
    req.prompt = p.get<std::string>();
    return;
  }
  if (!p.is_array()) fail_type("prompt", "a string or an array", p);
  if (p.empty()) fail("prompt", "'prompt' must not be empty");

  bool all_integers = true;
  bool all_strings = true;
  bool any_array = false;
  for (const auto& e : p) {
    all_integers = all_integers && e.is_number_integer();
    all_strings = all_strings && e.is_string();
    any_array = any_array || e.is_array();
  }
  if (all_integers) {
    req.prompt_tokens.reserve(p.size());
    for (const auto& e : p) {
      const bool in_range = e.is_number_unsigned() ? e.get<uint64_t>() <= INT32_MAX
                                                   : e.get<int64_t>() >= 0 && e.get<int64_t>() <= INT32_MAX;
      if (!in_range) {
        fail("prompt", "'prompt' token ids must be between 0 and " + std::to_string(INT32_MAX) + ", got " +
                           number_text(e));
      }
      req.prompt_tokens.push_back(static_cast<int32_t>(e.get<int64_t>()));
    }
    req.prompt_is_tokens = true;
    return;
  }
  if (all_strings && p.size() == 1) {
    req.prompt = p[0].get<std::string>();
    return;
  }
  // Several strings or a list of token lists is OpenAI's batch form: one
  // choice per prompt, which needs n-way fan-out we do not do yet.
  if (any_array || all_strings) fail("prompt", "batched prompts are not supported");
  fail("prompt", "'prompt' must be a string, an array of one string or an array of token ids", "invalid_type");
}

bool known_role(const std::string& role) {
  return role == "system" || role == "user" || role == "assistant" || role == "tool" || role == "developer";
}

std::string parse_content(const json& msg, const std::string& at, const std::string& role) {
  const std::string param = at + ".content";
  auto it = msg.find("content");
  if (it == msg.end()) {
    // Only assistant turns may omit content (they carried tool calls instead).
    if (role == "assistant") return {};
    fail_missing(param);
  }
  const json& c = *it;
  if (c.is_null()) return {};
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) fail_type(param, "a string, an array of content parts or null", c);

  std::string text;
  for (size_t j = 0; j < c.size(); ++j) {
    const json& part = c[j];
    const std::string part_at = param + "[" + std::to_string(j) + "]";
    if (!part.is_object()) fail(param, "'" + part_at + "' must be an object, got " + part.type_name(), "invalid_type");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      fail(param, "'" + part_at + ".type' is required and must be a string", "invalid_type");
    }
    if (type->get_ref<const std::string&>() != "text") {
      fail(param, "'" + part_at + "': content part type '" + type->get<std::string>() +
                      "' is not supported; only 'text' parts are");
    }
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) {
      fail(param, "'" + part_at + ".text' is required and must be a string", "invalid_type");
    }
    text += t->get_ref<const std::string&>();
  }
  return text;
}

void parse_messages(const json& body, completion_request& req) {
  const json& m = required_field(body, "messages");
  if (!m.is_array()) fail_type("messages", "an array", m);
  if (m.empty()) fail("messages", "'messages' must contain at least one message");
  req.messages.reserve(m.size());
  for (size_t i = 0; i < m.size(); ++i) {
    const json& msg = m[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) fail_type(at, "an object", msg);
    auto role_it = msg.find("role");
    if (role_it == msg.end() || role_it->is_null()) fail_missing(at + ".role");
    const std::string& role = get_string(*role_it, at + ".role");
    if (!known_role(role)) {
      fail(at + ".role",
           "Invalid value: '" + role +
               "'. Supported values are: 'system', 'user', 'assistant', 'tool' and 'developer'.",
           "invalid_value");
    }
    chat_message out;
    out.role = role;
    out.content = parse_content(msg, at, role);
    if (role == "assistant") {
      if (const json* calls = optional_field(msg, "tool_calls")) {
        if (!calls->is_array()) fail_type(at + ".tool_calls", "an array", *calls);
        for (size_t k = 0; k < calls->size(); ++k) {
          const json& c = (*calls)[k];
          const std::string cat = at + ".tool_calls[" + std::to_string(k) + "]";
          if (!c.is_object()) fail_type(cat, "an object", c);
          function_call fc;
          if (const json* id = optional_field(c, "id")) fc.id = get_string(*id, cat + ".id");
          const json* fn = optional_field(c, "function");
          if (!fn || !fn->is_object()) fail_missing(cat + ".function");
          fc.name = get_string(required_field(*fn, "name"), cat + ".function.name");
          if (const json* a = optional_field(*fn, "arguments"))
            fc.arguments = a->is_string() ? a->get<std::string>() : a->dump();
          out.tool_calls.push_back(std::move(fc));
        }
      }
    } else if (role == "tool") {
      const json* id = optional_field(msg, "tool_call_id");
      if (!id) fail_missing(at + ".tool_call_id");
      out.tool_call_id = get_string(*id, at + ".tool_call_id");
    }
    req.messages.push_back(std::move(out));
  }
}

void parse_stop(const json& body, completion_request& req) {
  const json* s = optional_field(body, "stop");
  if (!s) return;
  // An empty stop string would match at every position and end generation
  // before it starts; drop it rather than surprise the caller.
  if (s->is_string()) {
    if (!s->get_ref<const std::string&>().empty()) req.stop.push_back(s->get<std::string>());
    return;
  }
  if (!s->is_array()) fail_type("stop", "a string, an array of strings or null", *s);
  if (s->size() > 4) fail("stop", "'stop' may contain at most 4 sequences, got " + std::to_string(s->size()));
  for (size_t i = 0; i < s->size(); ++i) {
    const json& e = (*s)[i];
    if (!e.is_string()) {
      fail("stop", "'stop[" + std::to_string(i) + "]' must be a string, got " + e.type_name(), "invalid_type");
    }
    if (!e.get_ref<const std::string&>().empty()) req.stop.push_back(e.get<std::string>());
  }
}

void parse_sampling(const json& body, completion_request& req) {
  if (const json* v = optional_field(body, "max_tokens")) req.max_tokens = get_token_limit(*v, "max_tokens");
  // The newer name wins: clients migrating to it may still send both.
  if (const json* v = optional_field(body, "max_completion_tokens")) {
    req.max_tokens = get_token_limit(*v, "max_completion_tokens");
  }
  if (const json* v = optional_field(body, "temperature")) {
    req.temperature = get_number(*v, "temperature");
    if (!(req.temperature >= 0.0 && req.temperature <= 2.0)) {
      fail("temperature", "'temperature' must be between 0 and 2, got " + number_text(*v));
    }
  }
  if (const json* v = optional_field(body, "top_p")) {
    req.top_p = get_number(*v, "top_p");
    if (!(req.top_p > 0.0 && req.top_p <= 1.0)) {
      fail("top_p", "'top_p' must be greater than 0 and at most 1, got " + number_text(*v));
    }
  }
  if (const json* v = optional_field(body, "top_k")) {
    const int64_t k = get_integer(*v, "top_k");
    if (k < -1) fail("top_k", "'top_k' must be -1 (off), 0 (off) or positive, got " + std::to_string(k));
    req.top_k = k < 0 ? 0 : static_cast<int>(std::min<int64_t>(k, 1 << 30));
  }
  if (const json* v = optional_field(body, "min_p")) {
    req.min_p = get_number(*v, "min_p");
    if (!(req.min_p >= 0.0 && req.min_p <= 1.0)) {
      fail("min_p", "'min_p' must be between 0 and 1, got " + number_text(*v));
    }
  }
  for (auto [name, out] : {std::pair<const char*, double*>{"presence_penalty", &req.presence_penalty},
                           std::pair<const char*, double*>{"frequency_penalty", &req.frequency_penalty}}) {
    if (const json* v = optional_field(body, name)) {
      *out = get_number(*v, name);
      if (!(*out >= -2.0 && *out <= 2.0)) {
        fail(name, std::string("'") + name + "' must be between -2 and 2, got " + number_text(*v));
      }
    }
  }
  if (const json* v = optional_field(body, "repetition_penalty")) {
    req.repetition_penalty = get_number(*v, "repetition_penalty");
    if (!(req.repetition_penalty > 0.0 && req.repetition_penalty <= 2.0)) {
      fail("repetition_penalty", "'repetition_penalty' must be greater than 0 and at most 2, got " + number_text(*v));
    }
  }
  if (const json* v = optional_field(body, "logit_bias")) {
    // OpenAI: a map from token id (as a string) to a bias in [-100, 100].
    if (!v->is_object()) fail_type("logit_bias", "an object mapping token ids to numbers", *v);
    if (v->size() > 300) fail("logit_bias", "'logit_bias' may hold at most 300 entries");
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string& key = it.key();
      char* end = nullptr;
      long id = std::strtol(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX) {
        fail("logit_bias", "'logit_bias' keys must be token ids, got '" + key + "'");
      }
      double b = get_number(it.value(), "logit_bias");
      if (!(b >= -100.0 && b <= 100.0)) {
        fail("logit_bias", "'logit_bias' values must be between -100 and 100, got " + number_text(it.value()));
      }
      req.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
    }
  }
  if (req.kind == api_kind::completions) {
    if (const json* v = optional_field(body, "logprobs")) {
      const int64_t k = get_integer(*v, "logprobs");
      if (k < 0 || k > 20) fail("logprobs", "'logprobs' must be between 0 and 20, got " + std::to_string(k));
      req.logprobs = static_cast<int>(k);
    }
  } else {
    bool want = false;
    if (const json* v = optional_field(body, "logprobs")) want = get_bool(*v, "logprobs");
    if (const json* v = optional_field(body, "top_logprobs")) {
      const int64_t k = get_integer(*v, "top_logprobs");
      if (k < 0 || k > 20) fail("top_logprobs", "'top_logprobs' must be between 0 and 20, got " + std::to_string(k));
      if (!want) fail("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
      req.logprobs = static_cast<int>(k);
    } else if (want) {
      req.logprobs = 0;
    }
  }
  if (const json* v = optional_field(body, "seed")) {
    if (v->is_number_unsigned()) {
      req.seed = v->get<uint64_t>();
    } else if (v->is_number_integer()) {
      // Negative seeds are legal in OpenAI's API; keep their bits.
      req.seed = static_cast<uint64_t>(v->get<int64_t>());
    } else if (integral_float(*v) && std::fabs(v->get<double>()) < 9.2e18) {
      req.seed = static_cast<uint64_t>(static_cast<int64_t>(v->get<double>()));
    } else if (integral_float(*v)) {
      fail("seed", "'seed' is out of range, got " + number_text(*v));
    } else {
      fail_type("seed", "an integer", *v);
    }
  }
  if (const json* v = optional_field(body, "n")) {
    const int64_t n = get_integer(*v, "n");
    if (n < 1) fail("n", "'n' must be at least 1, got " + std::to_string(n), "integer_below_min_value");
    if (n > max_choices)
      fail("n", "'n' must be at most " + std::to_string(max_choices) + ", got " + std::to_string(n),
           "integer_above_max_value");
    req.n = static_cast<int>(n);
  }
  parse_stop(body, req);
}

void parse_streaming(const json& body, completion_request& req) {
  if (const json* v = optional_field(body, "stream")) req.stream = get_bool(*v, "stream");
  if (const json* v = optional_field(body, "stream_options")) {
    if (!v->is_object()) fail_type("stream_options", "an object", *v);
    if (!req.stream) {
      fail("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    }
    if (const json* u = optional_field(*v, "include_usage")) {
      req.include_usage = get_bool(*u, "stream_options.include_usage");
    }
    if (const json* u = optional_field(*v, "continuous_usage_stats")) {
      req.continuous_usage_stats = get_bool(*u, "stream_options.continuous_usage_stats");
    }
  }
}

/// The fields refused unless null or one of their neutral values (a JSON
/// array of them; empty: only null), with why. What is implemented is parsed
/// elsewhere; this is only what is not.
struct refused_field {
  unsupported_field info;
  const char* neutral;
};

const std::vector<refused_field>& refused_fields() {
  static const std::vector<refused_field> fields = {
    // OpenAI's completions API.
    {{"best_of", false, true, "'best_of' above 'n' is not supported: llmux returns every choice it samples"}, "[1]"},
    {{"suffix", false, true, "'suffix' is not supported: llmux does not fill in the middle"}, "[\"\"]"},
    // OpenAI's chat API.
    {{"audio", true, false, "audio output is not supported"}, ""},
    {{"modalities", true, false, "only the 'text' modality is supported"}, "[[\"text\"]]"},
    {{"prediction", true, false, "predicted outputs are not supported"}, ""},
    {{"web_search_options", true, false, "web search is not supported"}, ""},
    {{"functions", true, false, "'functions' (deprecated) is not supported"}, "[[]]"},
    {{"function_call", true, false, "'function_call' (deprecated) is not supported"}, "[\"none\",\"auto\"]"},
    // vLLM's extensions.
    {{"use_beam_search", true, true, "beam search is not supported"}, "[false]"},
    {{"prompt_logprobs", true, true, "prompt log-probabilities are not computed"}, ""},
    {{"allowed_token_ids", true, true, "'allowed_token_ids' is not supported"}, "[[]]"},
    {{"bad_words", true, true, "'bad_words' is not supported"}, "[[]]"},
    {{"logits_processors", true, true, "custom logits processors are not supported"}, "[[]]"},
    {{"return_tokens_as_token_ids", true, true, "'return_tokens_as_token_ids' is not supported"}, "[false]"},
    {{"chat_template", true, false,
      "a per-request chat template is not accepted (as vLLM without --trust-request-chat-template): the model's "
      "is used; set it with the model's chat_template in the config, or llmux serve --chat-template"}, ""},
    {{"add_generation_prompt", true, false, "the assistant's turn is always opened"}, "[true]"},
    {{"continue_final_message", true, false, "continuing the final message is not supported"}, "[false]"},
    {{"echo", true, false, "'echo' is a completions field: chat does not echo"}, "[false]"},
  };
  return fields;
}

/// A 400 for each refused field set to something other than null or a
/// neutral value. `best_of` equal to `n` is neutral too (each choice is its
/// own sample either way); below `n` it is OpenAI's own 400.
void refuse_unsupported(const json& body, const completion_request& req) {
  for (const auto& f : refused_fields()) {
    if (!(req.kind == api_kind::chat ? f.info.chat : f.info.completions))
      continue;
    const json* v = optional_field(body, f.info.name);
    if (!v)
      continue;
    const std::string name = f.info.name;
    if (name == "best_of") {
      const int64_t b = get_integer(*v, "best_of");
      if (b < req.n)
        fail("best_of", "'best_of' must be at least 'n' (" + std::to_string(req.n) + "), got " + std::to_string(b));
      if (b == req.n)
        continue;
    }
    if (*f.neutral != '\0') {
      const json neutral = json::parse(f.neutral);
      if (std::find(neutral.begin(), neutral.end(), *v) != neutral.end())
        continue;
    }
    fail(name, f.info.why + std::string(" ('") + name + "' = " + v->dump(-1, ' ', false, json::error_handler_t::replace)
                 .substr(0, 80) + ")", "unsupported_parameter");
  }
}

/// vLLM's sampling extras (its SamplingParams fields its OpenAI server reads).
void parse_vllm_extras(const json& body, completion_request& req) {
  if (const json* v = optional_field(body, "ignore_eos")) req.ignore_eos = get_bool(*v, "ignore_eos");
  if (const json* v = optional_field(body, "min_tokens")) {
    const int64_t n = get_integer(*v, "min_tokens");
    if (n < 0 || n > INT_MAX) fail("min_tokens", "'min_tokens' must be at least 0, got " + number_text(*v));
    req.min_tokens = static_cast<int>(n);
  }
  if (const json* v = optional_field(body, "stop_token_ids")) {
    if (!v->is_array()) fail_type("stop_token_ids", "an array of token ids", *v);
    for (const auto& e : *v) {
      const int64_t id = get_integer(e, "stop_token_ids");
      if (id < 0 || id > INT32_MAX) fail("stop_token_ids", "'stop_token_ids' must hold token ids, got " + number_text(e));
      req.stop_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (const json* v = optional_field(body, "include_stop_str_in_output"))
    req.include_stop_str_in_output = get_bool(*v, "include_stop_str_in_output");
  if (const json* v = optional_field(body, "skip_special_tokens"))
    req.skip_special_tokens = get_bool(*v, "skip_special_tokens");
  if (const json* v = optional_field(body, "truncate_prompt_tokens")) {
    const int64_t k = get_integer(*v, "truncate_prompt_tokens");
    // vLLM's -1 means "truncate to the model's maximum": the edge's length check does that job.
    if (k != -1) {
      if (k < 1 || k > INT_MAX)
        fail("truncate_prompt_tokens", "'truncate_prompt_tokens' must be at least 1 (or -1), got " + number_text(*v));
      req.truncate_prompt_tokens = static_cast<int>(k);
    }
  }
  if (req.max_tokens && req.min_tokens > *req.max_tokens) {
    fail("min_tokens", "'min_tokens' (" + std::to_string(req.min_tokens) + ") must be at most 'max_tokens' (" +
                           std::to_string(*req.max_tokens) + ")");
  }
}

/// One structured-output source; a second one is a 400.
void set_constraint(completion_request& req, output_constraint c) {
  if (req.constraint.kind != constraint_kind::none) {
    fail(c.param, "'" + c.param + "' and '" + req.constraint.param +
                      "' both constrain the output: give one of them");
  }
  req.constraint = std::move(c);
}

output_constraint schema_constraint(const json& schema, const std::string& param) {
  output_constraint c;
  c.param = param;
  c.kind = constraint_kind::json_schema;
  if (schema.is_string()) {
    // vLLM takes guided_json as a JSON text too.
    try {
      c.text = json::parse(schema.get<std::string>()).dump();
    } catch (const json::exception&) {
      fail(param, "'" + param + "' is a string but not a JSON schema");
    }
  } else if (schema.is_object() || schema.is_boolean()) {
    c.text = schema.dump();
  } else {
    fail_type(param, "a JSON schema (an object)", schema);
  }
  return c;
}

output_constraint choice_constraint(const json& v, const std::string& param) {
  if (!v.is_array() || v.empty()) fail(param, "'" + param + "' must be a non-empty array of strings");
  output_constraint c;
  c.param = param;
  c.kind = constraint_kind::choice;
  for (const auto& e : v) c.choices.push_back(get_string(e, param));
  return c;
}

output_constraint grammar_constraint(const json& v, const std::string& param,
                                     constraint_kind kind = constraint_kind::grammar) {
  output_constraint c;
  c.param = param;
  c.kind = kind;
  c.text = get_string(v, param);
  if (c.text.empty()) fail(param, "'" + param + "' must not be empty");
  return c;
}

/// response_format, guided_json / guided_choice / guided_grammar /
/// guided_regex and structured_outputs {json, choice, grammar, regex, json_object}.
void parse_constraint(const json& body, completion_request& req) {
  if (const json* rf = optional_field(body, "response_format")) {
    if (!rf->is_object()) fail_type("response_format", "an object", *rf);
    const json* type = optional_field(*rf, "type");
    if (!type) fail_missing("response_format.type");
    const std::string& t = get_string(*type, "response_format.type");
    if (t == "json_object") {
      set_constraint(req, {constraint_kind::json_object, {}, {}, "response_format"});
    } else if (t == "json_schema") {
      const json* js = optional_field(*rf, "json_schema");
      if (!js || !js->is_object()) fail_missing("response_format.json_schema");
      const json* schema = optional_field(*js, "schema");
      if (!schema) fail_missing("response_format.json_schema.schema");
      set_constraint(req, schema_constraint(*schema, "response_format"));
    } else if (t != "text") {
      fail("response_format", "Invalid value: '" + t + "'. Supported values are: 'text', 'json_object' and 'json_schema'.",
           "invalid_value");
    }
  }
  if (const json* v = optional_field(body, "guided_json")) set_constraint(req, schema_constraint(*v, "guided_json"));
  if (const json* v = optional_field(body, "guided_choice")) set_constraint(req, choice_constraint(*v, "guided_choice"));
  if (const json* v = optional_field(body, "guided_grammar")) set_constraint(req, grammar_constraint(*v, "guided_grammar"));
  if (const json* v = optional_field(body, "guided_regex"))
    set_constraint(req, grammar_constraint(*v, "guided_regex", constraint_kind::regex));
  if (const json* so = optional_field(body, "structured_outputs")) {
    if (!so->is_object()) fail_type("structured_outputs", "an object", *so);
    for (auto it = so->begin(); it != so->end(); ++it) {
      const std::string& k = it.key();
      const json& v = it.value();
      if (v.is_null()) continue;
      if (k == "json") {
        set_constraint(req, schema_constraint(v, "structured_outputs"));
      } else if (k == "choice") {
        set_constraint(req, choice_constraint(v, "structured_outputs"));
      } else if (k == "grammar") {
        set_constraint(req, grammar_constraint(v, "structured_outputs"));
      } else if (k == "json_object") {
        if (get_bool(v, "structured_outputs.json_object"))
          set_constraint(req, {constraint_kind::json_object, {}, {}, "structured_outputs"});
      } else if (k == "regex") {
        set_constraint(req, grammar_constraint(v, "structured_outputs", constraint_kind::regex));
      }
    }
  }
}

bool function_name_ok(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

/// tools, tool_choice, parallel_tool_calls (chat).
void parse_tools(const json& body, completion_request& req) {
  if (const json* tools = optional_field(body, "tools")) {
    if (!tools->is_array()) fail_type("tools", "an array", *tools);
    if (tools->size() > 128) fail("tools", "'tools' may hold at most 128 functions");
    for (size_t i = 0; i < tools->size(); ++i) {
      const json& t = (*tools)[i];
      const std::string at = "tools[" + std::to_string(i) + "]";
      if (!t.is_object()) fail_type(at, "an object", t);
      const json* type = optional_field(t, "type");
      if (!type || !type->is_string() || type->get<std::string>() != "function")
        fail("tools", "'" + at + ".type' must be 'function'", "invalid_value");
      const json* fn = optional_field(t, "function");
      if (!fn || !fn->is_object()) fail_missing(at + ".function");
      tool_spec spec;
      spec.name = get_string(required_field(*fn, "name"), at + ".function.name");
      if (!function_name_ok(spec.name))
        fail("tools", "'" + at + ".function.name' must be 1 to 64 letters, digits, '_' or '-', got '" + spec.name + "'");
      for (const auto& other : req.tools)
        if (other.name == spec.name) fail("tools", "two tools are named '" + spec.name + "'");
      if (const json* d = optional_field(*fn, "description")) spec.description = get_string(*d, at + ".function.description");
      if (const json* p = optional_field(*fn, "parameters")) {
        if (!p->is_object()) fail_type(at + ".function.parameters", "a JSON schema (an object)", *p);
        spec.parameters = p->dump();
      }
      req.tools.push_back(std::move(spec));
    }
  }
  req.tool_choice = req.tools.empty() ? tool_choice_kind::none : tool_choice_kind::auto_;
  if (const json* tc = optional_field(body, "tool_choice")) {
    if (tc->is_string()) {
      const std::string& v = tc->get_ref<const std::string&>();
      if (v == "none") req.tool_choice = tool_choice_kind::none;
      else if (v == "auto") req.tool_choice = req.tools.empty() ? tool_choice_kind::none : tool_choice_kind::auto_;
      else if (v == "required") req.tool_choice = tool_choice_kind::required;
      else fail("tool_choice", "Invalid value: '" + v + "'. Supported values are: 'none', 'auto' and 'required'.", "invalid_value");
    } else if (tc->is_object()) {
      const json* fn = optional_field(*tc, "function");
      if (!fn || !fn->is_object()) fail_missing("tool_choice.function");
      req.tool_choice = tool_choice_kind::named;
      req.tool_choice_name = get_string(required_field(*fn, "name"), "tool_choice.function.name");
    } else {
      fail_type("tool_choice", "a string or an object", *tc);
    }
    if ((req.tool_choice == tool_choice_kind::required || req.tool_choice == tool_choice_kind::named) && req.tools.empty())
      fail("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty");
    if (req.tool_choice == tool_choice_kind::named) {
      bool found = false;
      for (const auto& t : req.tools) found = found || t.name == req.tool_choice_name;
      if (!found) fail("tool_choice", "'tool_choice' names '" + req.tool_choice_name + "', which 'tools' does not have");
    }
  }
  if (const json* v = optional_field(body, "parallel_tool_calls")) req.parallel_tool_calls = get_bool(*v, "parallel_tool_calls");
  if (const json* v = optional_field(body, "chat_template_kwargs")) {
    if (!v->is_object()) fail_type("chat_template_kwargs", "an object", *v);
    req.chat_template_kwargs = v->dump();
  }
  if (req.tool_choice != tool_choice_kind::none && req.tool_choice != tool_choice_kind::auto_ &&
      req.constraint.kind != constraint_kind::none)
    fail("tool_choice", "'tool_choice' and '" + req.constraint.param + "' both constrain the output: give one of them");
}

completion_request parse_body(const json& body, api_kind kind) {
  if (!body.is_object()) {
    fail("", std::string("Request body must be a JSON object, got ") + body.type_name());
  }
  completion_request req;
  req.kind = kind;
  req.model = get_string(required_field(body, "model"), "model");
  if (req.model.empty()) fail("model", "'model' must not be empty");
  if (kind == api_kind::completions) {
    parse_prompt(body, req);
  } else {
    parse_messages(body, req);
  }
  parse_streaming(body, req);
  parse_sampling(body, req);
  parse_vllm_extras(body, req);
  refuse_unsupported(body, req);
  parse_constraint(body, req);
  if (kind == api_kind::chat) parse_tools(body, req);
  if (const json* v = optional_field(body, "user")) req.user = get_string(*v, "user");
  if (kind == api_kind::completions)
    if (const json* v = optional_field(body, "echo")) req.echo = get_bool(*v, "echo");
  if (req.echo && req.logprobs >= 0)
    fail("echo", "'echo' with 'logprobs' is not supported: prompt log-probabilities are not computed");
  return req;
}

/// nlohmann's messages start with "[json.exception.parse_error.101] "; users
/// only need what follows.
std::string parser_detail(const char* what) {
  std::string s = what;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

/// Invalid UTF-8 from a model or a user becomes U+FFFD instead of an exception:
/// a response must always be valid JSON.
std::string dump(const ordered_json& j) { return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace); }

ordered_json or_null(const std::string& s) { return s.empty() ? ordered_json(nullptr) : ordered_json(s); }

ordered_json response_head(const response_meta& meta, const char* object) {
  ordered_json j;
  j["id"] = meta.id;
  j["object"] = object;
  j["created"] = meta.created;
  j["model"] = meta.model;
  if (!meta.system_fingerprint.empty()) j["system_fingerprint"] = meta.system_fingerprint;
  return j;
}

ordered_json usage_json(const usage_counts& u) {
  ordered_json j;
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  return j;
}

const char* chunk_object(api_kind kind) {
  return kind == api_kind::chat ? "chat.completion.chunk" : "text_completion";
}

}  // namespace

std::variant<completion_request, api_error> parse_completion_request(std::string_view body, api_kind kind) {
  json doc;
  try {
    doc = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    api_error err;
    err.message = "Malformed JSON in request body: " + parser_detail(e.what());
    return err;
  } catch (const json::exception& e) {
    // A number beyond a double's range (1e999) is out_of_range, not a
    // parse_error: the body is still the client's mistake (found by
    // tests/fuzz/openai_request_fuzz).
    api_error err;
    err.message = std::string("Malformed JSON in request body: ") + e.what();
    return err;
  }
  try {
    return parse_body(doc, kind);
  } catch (request_error& e) {
    return std::move(e.error);
  } catch (const json::exception& e) {
    // Unreachable if the checks above are complete; still a client error, not a crash.
    api_error err;
    err.message = "Invalid request body: " + parser_detail(e.what());
    return err;
  }
}

const std::vector<unsupported_field>& unsupported_fields() {
  static const std::vector<unsupported_field> fields = [] {
    std::vector<unsupported_field> out;
    for (const auto& f : refused_fields()) out.push_back(f.info);
    return out;
  }();
  return fields;
}

std::string error_body(const api_error& e) {
  ordered_json inner;
  inner["message"] = e.message;
  inner["type"] = e.type;
  inner["param"] = or_null(e.param);
  inner["code"] = or_null(e.code);
  ordered_json j;
  j["error"] = std::move(inner);
  return dump(j);
}

namespace {

/// OpenAI's tool_calls array; a stream's deltas carry each call's index.
ordered_json tool_calls_json(const std::vector<function_call>& calls, bool indexed, int first_index) {
  ordered_json arr = ordered_json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    ordered_json c;
    if (indexed) c["index"] = first_index + static_cast<int>(i);
    c["id"] = calls[i].id;
    c["type"] = "function";
    ordered_json fn;
    fn["name"] = calls[i].name;
    fn["arguments"] = calls[i].arguments;
    c["function"] = std::move(fn);
    arr.push_back(std::move(c));
  }
  return arr;
}

ordered_json token_bytes_json(const std::string& t) {
  ordered_json b = ordered_json::array();
  for (unsigned char c : t)
    b.push_back(static_cast<int>(c));
  return b;
}

/// choice.logprobs in OpenAI's shape for the kind.
ordered_json logprobs_json(api_kind kind, const std::vector<logprob_entry>* lps) {
  if (lps == nullptr)
    return nullptr;
  if (kind == api_kind::chat) {
    ordered_json content = ordered_json::array();
    for (const auto& e : *lps) {
      ordered_json item;
      item["token"] = e.token;
      item["logprob"] = e.logprob;
      item["bytes"] = token_bytes_json(e.token);
      ordered_json top = ordered_json::array();
      for (const auto& [tok, lp] : e.top) {
        ordered_json alt;
        alt["token"] = tok;
        alt["logprob"] = lp;
        alt["bytes"] = token_bytes_json(tok);
        top.push_back(std::move(alt));
      }
      item["top_logprobs"] = std::move(top);
      content.push_back(std::move(item));
    }
    ordered_json out;
    out["content"] = std::move(content);
    return out;
  }
  ordered_json tokens = ordered_json::array(), lp = ordered_json::array(),
               top = ordered_json::array(), offsets = ordered_json::array();
  for (const auto& e : *lps) {
    tokens.push_back(e.token);
    lp.push_back(e.logprob);
    ordered_json alts = ordered_json::object();
    for (const auto& [tok, v] : e.top)
      if (!alts.contains(tok))  // two tokens can share a text; keep the likelier
        alts[tok] = v;
    top.push_back(std::move(alts));
    offsets.push_back(e.text_offset);
  }
  ordered_json out;
  out["tokens"] = std::move(tokens);
  out["token_logprobs"] = std::move(lp);
  out["top_logprobs"] = std::move(top);
  out["text_offset"] = std::move(offsets);
  return out;
}

}  // namespace

std::string render_completion(const response_meta& meta, const std::vector<choice_result>& choices,
                              const usage_counts& usage) {
  const bool chat = meta.kind == api_kind::chat;
  ordered_json j = response_head(meta, chat ? "chat.completion" : "text_completion");
  ordered_json arr = ordered_json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    ordered_json choice;
    choice["index"] = static_cast<int64_t>(i);
    if (chat) {
      ordered_json message;
      message["role"] = "assistant";
      const bool calls = c.tool_calls != nullptr && !c.tool_calls->empty();
      // With calls, content that is only whitespace (around the blocks) is no content.
      const bool blank = c.text.find_first_not_of(" \t\r\n") == std::string::npos;
      message["content"] = calls && blank ? ordered_json(nullptr) : ordered_json(c.text);
      if (calls) message["tool_calls"] = tool_calls_json(*c.tool_calls, false, 0);
      choice["message"] = std::move(message);
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = logprobs_json(meta.kind, c.logprobs);
    choice["finish_reason"] = or_null(c.finish_reason);
    arr.push_back(std::move(choice));
  }
  j["choices"] = std::move(arr);
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string render_completion(const response_meta& meta, const std::string& text,
                              const std::string& finish_reason, const usage_counts& usage,
                              const std::vector<logprob_entry>* logprobs) {
  return render_completion(meta, {choice_result{text, finish_reason, logprobs}}, usage);
}

std::string render_chunk(const response_meta& meta, const std::string& delta_text, bool first,
                         const std::string& finish_reason,
                         const std::vector<logprob_entry>* logprobs, int index,
                         const usage_counts* usage, const std::vector<function_call>* tool_calls,
                         int first_call_index) {
  const bool chat = meta.kind == api_kind::chat;
  ordered_json j = response_head(meta, chunk_object(meta.kind));
  ordered_json choice;
  choice["index"] = index;
  if (chat) {
    // OpenAI's first chunk is {"role":"assistant","content":""}; the closing
    // chunk that only carries finish_reason has an empty delta.
    ordered_json delta = ordered_json::object();
    if (first) delta["role"] = "assistant";
    if (first || !delta_text.empty()) delta["content"] = delta_text;
    if (tool_calls != nullptr && !tool_calls->empty())
      delta["tool_calls"] = tool_calls_json(*tool_calls, true, first_call_index);
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = delta_text;
  }
  choice["logprobs"] = logprobs_json(meta.kind, logprobs);
  choice["finish_reason"] = or_null(finish_reason);
  j["choices"] = ordered_json::array({std::move(choice)});
  if (usage != nullptr) j["usage"] = usage_json(*usage);
  return dump(j);
}

std::string render_usage_chunk(const response_meta& meta, const usage_counts& usage) {
  ordered_json j = response_head(meta, chunk_object(meta.kind));
  j["choices"] = ordered_json::array();
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string sse_event(const std::string& json_text) { return "data: " + json_text + "\n\n"; }

std::string sse_done() { return "data: [DONE]\n\n"; }

std::string render_models(const std::vector<model_card>& models, int64_t created) {
  ordered_json data = ordered_json::array();
  for (const auto& m : models) {
    ordered_json card;
    card["id"] = m.id;
    card["object"] = "model";
    card["created"] = created;
    card["owned_by"] = "llmux";
    card["backend"] = m.backend;
    card["replicas"] = m.replicas;
    if (m.max_model_len > 0) card["max_model_len"] = m.max_model_len;
    if (!m.state.empty()) card["state"] = m.state;
    data.push_back(std::move(card));
  }
  ordered_json j;
  j["object"] = "list";
  j["data"] = std::move(data);
  return dump(j);
}

}  // namespace llmux::net
