#pragma once
/// Tool calling, the pure core: the tools a request offers written into the
/// conversation the way the model family was trained to read them, a
/// grammar that holds the model to calling them (tool_choice "required" or
/// a named function), and the parser that finds the calls in what it wrote.
///
/// Format: Hermes-style, which ChatML models trained for tools use (Qwen2.5,
/// Hermes 2/3; SmolLM2 shares ChatML): the tools as JSON lines inside
/// <tools></tools> in the system turn, each call as
/// <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> in the
/// assistant's text, tool results as a user turn of <tool_response> blocks.
/// A model whose own template writes the tools (it reads `tools`) gets them
/// through it, and its calls are read in the form the template asks for:
/// Hermes blocks, Llama 3.1's JSON answer or Mistral's [TOOL_CALLS] array
/// (`tool_format`). A template that asks for another form: `tools_supported`
/// says so, and the edge answers 400.
///
/// Pure functions and one single-threaded parser per choice.

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "engine/chat_template.hpp"

namespace llmux::engine {

struct tool_function {
  std::string name;
  std::string description;
  std::string parameters;  ///< JSON Schema (JSON text); empty: any object
};

struct tool_call {
  std::string id;         ///< "call_..." (made by the edge for new calls)
  std::string name;
  std::string arguments;  ///< JSON text, as OpenAI sends it
};

/// A chat turn with what tool calling adds to it.
struct tool_turn {
  std::string role;     ///< system | user | assistant | tool (| developer)
  std::string content;
  std::vector<tool_call> calls;  ///< assistant: the calls it made
  std::string tool_call_id;      ///< tool: the call this answers
};

/// The form a model of `style` answers with calls in: its template's
/// (chat_style::template_calls); with no template that the engine reads,
/// Hermes for ChatML (tool_prompt writes the Hermes instructions in), none
/// for the other built-in formats.
[[nodiscard]] tool_format tool_format_of(const chat_style& style);

/// The id of a model's n-th call of sequence `seq`: "call_" and 16 hex
/// digits; for Mistral 9 letters and digits (its templates refuse others).
[[nodiscard]] std::string tool_call_id(tool_format format, uint64_t seq, uint64_t n);

/// Whether tools can be offered to (and calls read from) a model of `style`.
[[nodiscard]] bool tools_supported(const chat_style& style);

/// A conversation as the model's prompt.
struct chat_prompt {
  std::string text;
  bool starts_with_bos = false;  ///< the template wrote bos_token first: the tokenizer adds none
  std::string fallback;          ///< non-empty: the template failed (this says how); the built-in format rendered
};

/// Renders `turns` and `tools` (empty: none offered) as the model's prompt,
/// with the assistant's turn opened. With the model's own template, as vLLM
/// passes them to it: messages and tools in OpenAI's shape (a call's
/// arguments as an object, an assistant turn with calls and no text has
/// content null, a tool result carries the `name` of the call it answers),
/// `add_generation_prompt` true, `bos_token`/`eos_token`, and the keys of
/// `template_kwargs` (vLLM's chat_template_kwargs, a JSON object's text;
/// empty: none). Tools go to the template when it writes them
/// (`template_tools`); otherwise tool_prompt writes them into the turns in
/// Hermes form first. Without a template, or when it fails for a reason
/// other than its own refusal, the built-in format renders (`fallback`).
/// `now` is the clock of the template's strftime_now (Llama 3's date line).
/// Throws jinja::template_error when the template refuses the conversation
/// (its raise_exception; vLLM answers 400 with the message).
[[nodiscard]] chat_prompt render_chat(const chat_style& style, const std::vector<tool_turn>& turns,
                                      const std::vector<tool_function>& tools,
                                      const std::string& template_kwargs = "",
                                      std::time_t now = std::time(nullptr));

/// The turns to render: the tools in the system turn (the request's own
/// system turn first, else the style's default), assistant calls as
/// <tool_call> blocks, consecutive tool results as one user turn of
/// <tool_response> blocks. `tools` empty: the turns as they are.
[[nodiscard]] std::vector<chat_turn> tool_prompt(const chat_style& style, const std::vector<tool_turn>& turns,
                                                 const std::vector<tool_function>& tools);

/// GBNF for the answer when a call is required, in `format`: one call (more
/// with `parallel`) that names one of `tools` (only `only` when set) and
/// whose arguments follow that tool's schema — Hermes: <tool_call> blocks
/// one per line; Llama 3.1: {"name": ..., "parameters": {...}} objects
/// joined by "; "; Mistral: a JSON array of {"name": ..., "arguments": ...}
/// (the [TOOL_CALLS] control token before it is left out: the text after it
/// is what a parser reads). Throws schema_error for a parameters schema the
/// converter cannot express.
[[nodiscard]] std::string tool_call_grammar(const std::vector<tool_function>& tools, const std::string& only,
                                            bool parallel, tool_format format = tool_format::hermes);

/// Finds the calls in a model's text as it streams, in `format`.
/// Hermes: what lies outside <tool_call> blocks is content (a tail that
/// could open a block is held back), a complete block whose JSON has a name
/// (and arguments) is a call; a block that is not such JSON stays content,
/// as written. Llama 3.1 (as vLLM's llama3_json parser): an answer whose
/// first non-space text is "{" (or <|python_tag|>) is held to the end and
/// read as calls — JSON objects with a name and parameters (or arguments),
/// "; " between — or, if it is not that, given back as content; any other
/// answer is content as it streams. Mistral: the same, for an answer that
/// opens with "[" (or the [TOOL_CALLS] marker when the text spells it): a
/// JSON array of calls.
class tool_call_parser {
public:
  explicit tool_call_parser(tool_format format = tool_format::hermes) : format_(format) {}
  struct delta {
    std::string content;
    std::vector<tool_call> calls;  ///< completed in this push (id left empty)
  };
  delta push(const std::string& text);
  /// The end: what is held back (an unfinished block is content).
  delta finish();
  [[nodiscard]] int calls_seen() const { return calls_; }

  [[nodiscard]] tool_format format() const { return format_; }

private:
  delta drain(bool all);
  delta drain_whole(bool all);
  tool_format format_;
  enum class answer { undecided, content, calls } answer_ = answer::undecided;  ///< llama3_json, mistral
  std::string buf_;
  int calls_ = 0;
  bool after_call_ = false;  ///< the newline that separates blocks is not content
};

}  // namespace llmux::engine
