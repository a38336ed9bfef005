#include "engine/chat_template.hpp"

#include "engine/jinja.hpp"

namespace llmux::engine {

const char* chat_format_name(chat_format format) {
  switch (format) {
    case chat_format::chatml: return "ChatML";
    case chat_format::llama3: return "Llama 3";
    case chat_format::llama2: return "Llama 2";
  }
  return "?";
}

chat_format detect_chat_format(const std::string& t) {
  if (t.find("<|start_header_id|>") != std::string::npos)
    return chat_format::llama3;
  if (t.find("[INST]") != std::string::npos)
    return chat_format::llama2;
  return chat_format::chatml;
}

std::string apply_chat_template(chat_format format, const std::vector<chat_turn>& turns) {
  std::string out;
  switch (format) {
    case chat_format::chatml:
      for (const auto& t : turns)
        out += "<|im_start|>" + t.role + "\n" + t.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case chat_format::llama3:
      for (const auto& t : turns)
        out += "<|start_header_id|>" + t.role + "<|end_header_id|>\n\n" + t.content + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case chat_format::llama2: {
      // [INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
      std::string system;
      bool first_user = true;
      for (const auto& t : turns) {
        if (t.role == "system") {
          system = t.content;
        } else if (t.role == "user") {
          out += out.empty() ? "[INST] " : "<s>[INST] ";
          if (first_user && !system.empty())
            out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
          first_user = false;
          out += t.content + " [/INST]";
        } else if (t.role == "assistant") {
          out += " " + t.content + " </s>";
        }
      }
      break;
    }
  }
  return out;
}

chat_style detect_chat_style(const std::string& t) {
  chat_style style;
  style.format = detect_chat_format(t);
  if (style.format != chat_format::chatml)
    return style;
  // {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...<|im_end|>\n' }}
  auto cond = t.find("!= 'system'");
  if (cond == std::string::npos)
    return style;
  const std::string open = "<|im_start|>system";
  auto start = t.find(open, cond);
  auto end = start == std::string::npos ? start : t.find("<|im_end|>", start);
  if (start == std::string::npos || end == std::string::npos)
    return style;
  auto text = t.substr(start + open.size(), end - start - open.size());
  // The newline after the role is a real newline or a Jinja "\\n" escape.
  if (text.rfind("\\n", 0) == 0)
    text.erase(0, 2);
  else if (!text.empty() && text[0] == '\n')
    text.erase(0, 1);
  // Only a literal string: anything templated ({{ }}, quotes) is not ours to guess.
  if (text.find_first_of("{}'\"") == std::string::npos)
    style.default_system = text;
  return style;
}

chat_style make_chat_style(const std::string& t, std::string bos_token, std::string eos_token) {
  chat_style style = detect_chat_style(t);
  style.bos_token = std::move(bos_token);
  style.eos_token = std::move(eos_token);
  if (t.empty())
    return style;
  try {
    style.jinja = std::make_shared<const jinja::template_>(jinja::template_::parse(t));
  } catch (const jinja::error& e) {
    style.template_error = e.what();
    return style;
  }
  style.template_tools = t.find("tools") != std::string::npos;
  // The form of a call is what the template's instructions show the model;
  // a ChatML template that writes no tools gets the Hermes form written in.
  if (!style.template_tools)
    style.template_calls = t.find("<|im_start|>") != std::string::npos ? tool_format::hermes : tool_format::none;
  else if (t.find("<tool_call>") != std::string::npos)
    style.template_calls = tool_format::hermes;
  else if (t.find("\"parameters\": dictionary of argument name") != std::string::npos
           || t.find("<|python_tag|>") != std::string::npos)
    style.template_calls = tool_format::llama3_json;
  else if (t.find("[TOOL_CALLS]") != std::string::npos)
    style.template_calls = tool_format::mistral;
  return style;
}

std::string apply_chat_template(const chat_style& style, const std::vector<chat_turn>& turns) {
  if (style.default_system.empty() || (!turns.empty() && turns.front().role == "system"))
    return apply_chat_template(style.format, turns);
  std::vector<chat_turn> with_system;
  with_system.reserve(turns.size() + 1);
  with_system.push_back({"system", style.default_system});
  with_system.insert(with_system.end(), turns.begin(), turns.end());
  return apply_chat_template(style.format, with_system);
}

}  // namespace llmux::engine
