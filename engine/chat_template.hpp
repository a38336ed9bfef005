#pragma once
/// Chat templates: a list of turns → the prompt text a model was trained on.
/// A model's own Jinja template is parsed here (make_chat_style) and rendered
/// by render_chat (engine/tool_calls) with engine/jinja; the built-in formats
/// below (ChatML, Llama 3, Llama 2, recognised from the template's markers)
/// render when a model has no template the engine reads, and for the sim
/// backend (ChatML).

#include <memory>
#include <string>
#include <vector>

namespace llmux::engine {

namespace jinja {
class template_;
}

struct chat_turn {
  std::string role;
  std::string content;
};

enum class chat_format {
  chatml,  ///< <|im_start|>role\ncontent<|im_end|> (SmolLM2, Qwen2; the fallback)
  llama3,  ///< <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  llama2,  ///< [INST] ... [/INST], system in <<SYS>>
};

/// "ChatML", "Llama 3", "Llama 2": for messages.
[[nodiscard]] const char* chat_format_name(chat_format format);

/// Recognises the format a Jinja chat template (GGUF `tokenizer.chat_template`)
/// implements by its markers; ChatML when it names none (or is empty).
[[nodiscard]] chat_format detect_chat_format(const std::string& jinja_template);

/// How a model writes tool calls in its answer.
enum class tool_format {
  none,         ///< not one llmux reads (tools are refused)
  hermes,       ///< <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> blocks (Hermes, Qwen, ChatML)
  llama3_json,  ///< the whole answer is {"name": ..., "parameters": {...}} (Llama 3.1+; several: "; " between)
  mistral,      ///< [TOOL_CALLS] then a JSON array of {"name": ..., "arguments": {...}} (Mistral v0.3, Nemo)
};

/// How a model's conversations become its prompt: its own Jinja template
/// when the engine (engine/jinja) reads it, else a built-in format plus the
/// system prompt the template inserts when a conversation has none
/// (SmolLM2's "You are a helpful AI assistant named SmolLM, ...").
struct chat_style {
  chat_format format = chat_format::chatml;
  std::string default_system;  ///< empty: none
  /// The model's own template; null when it has none or it did not parse
  /// (`template_error` says why): the built-in `format` renders then.
  std::shared_ptr<const jinja::template_> jinja;
  std::string template_error;
  std::string bos_token;  ///< what the template's bos_token prints
  std::string eos_token;
  /// The template writes the request's tools itself (it reads `tools`), and
  /// the form the model answers with calls in: what the template asks for;
  /// for a template that writes no tools, Hermes if it is ChatML (tool_prompt
  /// writes them into the turns), else none.
  bool template_tools = false;
  tool_format template_calls = tool_format::none;
};

/// The style of a model from its Jinja template (GGUF
/// `tokenizer.chat_template`): parsed by the Jinja engine, with the
/// built-in format of detect_chat_style beside it as the fallback.
[[nodiscard]] chat_style make_chat_style(const std::string& jinja_template, std::string bos_token,
                                         std::string eos_token);

/// The style of a Jinja chat template: its format, and for ChatML templates
/// the literal default system prompt of an `messages[0]['role'] != 'system'`
/// branch, if it has one.
[[nodiscard]] chat_style detect_chat_style(const std::string& jinja_template);

/// Renders with `style`: its default system prompt first when the turns
/// open with no system turn.
[[nodiscard]] std::string apply_chat_template(const chat_style& style,
                                              const std::vector<chat_turn>& turns);

/// Renders the turns and opens the assistant turn (generation prompt).
/// The leading BOS is not part of the text: the tokenizer adds it when the
/// model's vocabulary asks for one.
[[nodiscard]] std::string apply_chat_template(chat_format format,
                                              const std::vector<chat_turn>& turns);

}  // namespace llmux::engine
