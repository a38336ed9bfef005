#include "engine/tool_calls.hpp"

#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "engine/jinja.hpp"
#include "engine/json_schema_grammar.hpp"

namespace llmux::engine {
namespace {

using ojson = nlohmann::ordered_json;

const std::string open_tag = "<tool_call>";
const std::string close_tag = "</tool_call>";

/// One tool as the Hermes system prompt lists it.
std::string tool_line(const tool_function& t) {
  ojson fn;
  fn["name"] = t.name;
  if (!t.description.empty())
    fn["description"] = t.description;
  fn["parameters"] = t.parameters.empty() ? ojson::object() : ojson::parse(t.parameters);
  ojson line;
  line["type"] = "function";
  line["function"] = std::move(fn);
  return line.dump();
}

/// A call as the model writes it.
std::string call_block(const tool_call& c) {
  ojson body;
  body["name"] = c.name;
  try {
    body["arguments"] = ojson::parse(c.arguments.empty() ? "{}" : c.arguments);
  } catch (const std::exception&) {
    body["arguments"] = c.arguments;  // not JSON: passed on as the string it is
  }
  return open_tag + "\n" + body.dump() + "\n" + close_tag;
}

}  // namespace

tool_format tool_format_of(const chat_style& style) {
  if (style.jinja)
    return style.template_calls;
  return style.format == chat_format::chatml ? tool_format::hermes : tool_format::none;
}

bool tools_supported(const chat_style& style) { return tool_format_of(style) != tool_format::none; }

std::string tool_call_id(tool_format format, uint64_t seq, uint64_t n) {
  const uint64_t id = seq * 64 + n;
  if (format != tool_format::mistral) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "call_%016llx", static_cast<unsigned long long>(id));
    return buf;
  }
  static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string out(9, '0');
  uint64_t v = id;
  for (int i = 8; i >= 0; --i, v /= 62)
    out[static_cast<size_t>(i)] = digits[v % 62];
  return out;
}

namespace {

/// JSON text as an object when it is one; else the text itself.
ojson json_or_text(const std::string& text, ojson empty) {
  if (text.empty())
    return empty;
  try {
    return ojson::parse(text);
  } catch (const std::exception&) {
    return text;
  }
}

/// A call id from the history as the template gets it: Mistral's templates
/// take 9 characters, so a longer id gives its last 9 (as vLLM does).
std::string history_id(const chat_style& style, const std::string& id) {
  if (style.template_calls == tool_format::mistral && id.size() > 9)
    return id.substr(id.size() - 9);
  return id;
}

/// The template's variables, as vLLM passes them to a Hugging Face template.
ojson template_context(const chat_style& style, const std::vector<tool_turn>& turns,
                       const std::vector<tool_function>& tools, const std::string& kwargs) {
  ojson ctx = ojson::object();
  if (!kwargs.empty())
    ctx = ojson::parse(kwargs);
  ojson messages = ojson::array();
  for (const auto& t : turns) {
    ojson m;
    m["role"] = t.role;
    m["content"] = t.content.empty() && !t.calls.empty() ? ojson() : ojson(t.content);
    if (!t.calls.empty()) {
      ojson calls = ojson::array();
      for (const auto& c : t.calls)
        calls.push_back({{"id", history_id(style, c.id)},
                         {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", json_or_text(c.arguments, ojson::object())}}}});
      m["tool_calls"] = std::move(calls);
    }
    if (t.role == "tool") {
      m["tool_call_id"] = history_id(style, t.tool_call_id);
      for (const auto& earlier : turns)  // the name of the call this answers
        for (const auto& c : earlier.calls)
          if (c.id == t.tool_call_id)
            m["name"] = c.name;
    }
    messages.push_back(std::move(m));
  }
  ctx["messages"] = std::move(messages);
  if (tools.empty()) {
    ctx["tools"] = nullptr;
  } else {
    ojson list = ojson::array();
    for (const auto& t : tools) {
      ojson fn;
      fn["name"] = t.name;
      if (!t.description.empty())
        fn["description"] = t.description;
      fn["parameters"] = json_or_text(t.parameters, ojson::object());
      list.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    ctx["tools"] = std::move(list);
  }
  ctx["add_generation_prompt"] = true;
  ctx["bos_token"] = style.bos_token;
  ctx["eos_token"] = style.eos_token;
  return ctx;
}

}  // namespace

chat_prompt render_chat(const chat_style& style, const std::vector<tool_turn>& turns,
                        const std::vector<tool_function>& tools, const std::string& template_kwargs,
                        std::time_t now) {
  chat_prompt out;
  if (style.jinja) {
    try {
      jinja::value ctx;
      if (style.template_tools) {
        ctx = jinja::value::from_json(template_context(style, turns, tools, template_kwargs));
      } else {
        // The template knows nothing of tools: they (and the calls and
        // results in the history) are written into plain turns first.
        std::vector<tool_turn> plain;
        for (auto& t : tool_prompt(style, turns, tools))
          plain.push_back({t.role, t.content, {}, {}});
        ctx = jinja::value::from_json(template_context(style, plain, {}, template_kwargs));
      }
      out.text = style.jinja->render(ctx, now);
      out.starts_with_bos = !style.bos_token.empty() && out.text.rfind(style.bos_token, 0) == 0;
      return out;
    } catch (const jinja::template_error&) {
      throw;
    } catch (const jinja::error& e) {
      out.fallback = e.what();
    }
  }
  out.text = apply_chat_template(style, tool_prompt(style, turns, tools));
  return out;
}

std::vector<chat_turn> tool_prompt(const chat_style& style, const std::vector<tool_turn>& turns,
                                   const std::vector<tool_function>& tools) {
  std::vector<chat_turn> out;
  size_t i = 0;
  if (!tools.empty()) {
    // Qwen2.5's wording, which Hermes-style models were trained on.
    std::string system = !turns.empty() && turns[0].role == "system" ? turns[0].content : style.default_system;
    if (!turns.empty() && turns[0].role == "system")
      i = 1;
    std::string block = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const auto& t : tools)
      block += "\n" + tool_line(t);
    block += "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
             "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
             "<args-json-object>}\n</tool_call>";
    out.push_back({"system", system.empty() ? block : system + "\n\n" + block});
  }
  for (; i < turns.size(); ++i) {
    const auto& t = turns[i];
    if (t.role == "tool") {
      // Consecutive results are one user turn, as Qwen2.5's template writes them.
      std::string text;
      for (; i < turns.size() && turns[i].role == "tool"; ++i)
        text += (text.empty() ? "" : "\n") + std::string("<tool_response>\n") + turns[i].content + "\n</tool_response>";
      --i;
      out.push_back({"user", text});
      continue;
    }
    std::string content = t.content;
    for (const auto& c : t.calls)
      content += (content.empty() ? "" : "\n") + call_block(c);
    out.push_back({t.role, content});
  }
  return out;
}

std::string tool_call_grammar(const std::vector<tool_function>& tools, const std::string& only, bool parallel,
                              tool_format format) {
  // One schema for any allowed call: {"name": <const>, ARGS: <its parameters>}.
  const char* args = format == tool_format::llama3_json ? "parameters" : "arguments";
  ojson any_of = ojson::array();
  for (const auto& t : tools) {
    if (!only.empty() && t.name != only)
      continue;
    ojson props;
    props["name"] = ojson{{"const", t.name}};
    props[args] = t.parameters.empty() ? ojson{{"type", "object"}} : ojson::parse(t.parameters);
    ojson call;
    call["type"] = "object";
    call["properties"] = std::move(props);
    call["required"] = ojson::array({"name", args});
    any_of.push_back(std::move(call));
  }
  if (any_of.empty())
    throw schema_error("tool_choice", "#", "tool_choice names a function that 'tools' does not have");
  ojson schema;
  schema["anyOf"] = std::move(any_of);
  std::string g;
  if (format == tool_format::llama3_json)
    g = std::string("root ::= tool-call") + (parallel ? " (\"; \" tool-call)*" : "") + "\n";
  else if (format == tool_format::mistral)
    g = std::string("root ::= \"[\" tool-call") + (parallel ? " (\", \" tool-call)*" : "") + " \"]\"\n";
  else
    g = std::string("root ::= tool-block") + (parallel ? " (\"\\n\" tool-block)*" : "") + "\n" +
        "tool-block ::= \"<tool_call>\\n\" tool-call \"\\n</tool_call>\"\n";
  return g + json_schema_grammar(schema.dump(), "tool-call");
}

namespace {

/// A call from its JSON: an object with a string "name" and "arguments" (or
/// Llama's "parameters"); nullopt for anything else.
std::optional<tool_call> call_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string())
    return std::nullopt;
  tool_call c;
  c.name = j["name"].get<std::string>();
  const auto* args = j.contains("arguments") ? &j["arguments"] : j.contains("parameters") ? &j["parameters"] : nullptr;
  c.arguments = args == nullptr ? "{}" : args->is_string() ? args->get<std::string>() : args->dump();
  return c;
}

/// Llama 3.1's answer as calls: JSON objects, separated by ';' and spaces;
/// nullopt unless all of it is that.
std::optional<std::vector<tool_call>> llama3_calls(std::string text) {
  const std::string tag = "<|python_tag|>";
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && text.compare(i, tag.size(), tag) == 0)
    text.erase(0, i + tag.size());
  std::vector<tool_call> calls;
  i = 0;
  while (true) {
    i = text.find_first_not_of(" \t\r\n;", i);
    if (i == std::string::npos)
      break;
    if (text[i] != '{')
      return std::nullopt;
    // The object's end: braces balanced outside strings.
    size_t j = i;
    int depth = 0;
    bool in_string = false;
    for (; j < text.size(); ++j) {
      char c = text[j];
      if (in_string) {
        if (c == '\\')
          ++j;
        else if (c == '"')
          in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{') {
        ++depth;
      } else if (c == '}' && --depth == 0) {
        break;
      }
    }
    if (j >= text.size())
      return std::nullopt;
    auto j_obj = nlohmann::json::parse(text.substr(i, j + 1 - i), nullptr, false);
    auto call = call_from_json(j_obj);
    if (!call)
      return std::nullopt;
    calls.push_back(std::move(*call));
    i = j + 1;
  }
  if (calls.empty())
    return std::nullopt;
  return calls;
}

/// Mistral's answer as calls: a JSON array of call objects, after the
/// [TOOL_CALLS] marker when the text spells it; nullopt unless all of it is that.
std::optional<std::vector<tool_call>> mistral_calls(std::string text) {
  const std::string tag = "[TOOL_CALLS]";
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && text.compare(i, tag.size(), tag) == 0)
    text.erase(0, i + tag.size());
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_array() || j.empty())
    return std::nullopt;
  std::vector<tool_call> calls;
  for (const auto& e : j) {
    auto call = call_from_json(e);
    if (!call)
      return std::nullopt;
    calls.push_back(std::move(*call));
  }
  return calls;
}

}  // namespace

tool_call_parser::delta tool_call_parser::drain_whole(bool all) {
  // Llama 3.1 and Mistral: an answer that opens as calls is read whole.
  const bool llama = format_ == tool_format::llama3_json;
  const std::string tag = llama ? "<|python_tag|>" : "[TOOL_CALLS]";
  const char opener = llama ? '{' : '[';
  delta out;
  if (answer_ == answer::undecided) {
    size_t i = buf_.find_first_not_of(" \t\r\n");
    if (i == std::string::npos) {
      if (!all)
        return out;  // only spaces so far
      answer_ = answer::content;
    } else if (buf_[i] == opener || buf_.compare(i, tag.size(), tag) == 0) {
      answer_ = answer::calls;
    } else if (!all && buf_.size() - i < tag.size() && tag.compare(0, buf_.size() - i, buf_, i) == 0) {
      return out;  // could still become the marker
    } else {
      answer_ = answer::content;
    }
  }
  if (answer_ == answer::content) {
    out.content = std::move(buf_);
    buf_.clear();
    return out;
  }
  if (!all)
    return out;  // calls are read whole, at the end
  if (auto calls = llama ? llama3_calls(buf_) : mistral_calls(buf_)) {
    calls_ += static_cast<int>(calls->size());
    out.calls = std::move(*calls);
  } else {
    out.content = buf_;  // not calls after all: the text as written
  }
  buf_.clear();
  return out;
}

tool_call_parser::delta tool_call_parser::push(const std::string& text) {
  buf_ += text;
  return drain(false);
}

tool_call_parser::delta tool_call_parser::finish() { return drain(true); }

tool_call_parser::delta tool_call_parser::drain(bool all) {
  if (format_ == tool_format::llama3_json || format_ == tool_format::mistral)
    return drain_whole(all);
  delta out;
  while (true) {
    if (after_call_ && !buf_.empty()) {
      if (buf_[0] == '\n')
        buf_.erase(0, 1);
      after_call_ = false;
    }
    const auto open = buf_.find(open_tag);
    if (open == std::string::npos) {
      // Hold back a tail that could still become "<tool_call>".
      size_t keep = 0;
      if (!all)
        for (size_t len = std::min(buf_.size(), open_tag.size() - 1); len > 0; --len)
          if (buf_.compare(buf_.size() - len, len, open_tag, 0, len) == 0) {
            keep = len;
            break;
          }
      out.content += buf_.substr(0, buf_.size() - keep);
      buf_.erase(0, buf_.size() - keep);
      return out;
    }
    out.content += buf_.substr(0, open);
    buf_.erase(0, open);
    const auto close = buf_.find(close_tag);
    if (close == std::string::npos) {
      if (all) {
        out.content += buf_;  // never closed: it stays text
        buf_.clear();
      }
      return out;
    }
    const std::string inner = buf_.substr(open_tag.size(), close - open_tag.size());
    const std::string whole = buf_.substr(0, close + close_tag.size());
    buf_.erase(0, close + close_tag.size());
    auto call = call_from_json(nlohmann::json::parse(inner, nullptr, false));
    const bool parsed = call.has_value();
    if (parsed) {
      out.calls.push_back(std::move(*call));
      ++calls_;
    }
    if (!parsed)
      out.content += whole;
    after_call_ = parsed;
  }
}

}  // namespace llmux::engine
