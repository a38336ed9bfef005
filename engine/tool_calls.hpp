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
/// Other formats (Llama 3.1's JSON, Mistral's [TOOL_CALLS]) are not written
/// yet: `tools_supported` says so, and the edge answers 400.
///
/// Pure functions and one single-threaded parser per choice.

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

[[nodiscard]] bool tools_supported(chat_format format);

/// The turns to render: the tools in the system turn (the request's own
/// system turn first, else the style's default), assistant calls as
/// <tool_call> blocks, consecutive tool results as one user turn of
/// <tool_response> blocks. `tools` empty: the turns as they are.
[[nodiscard]] std::vector<chat_turn> tool_prompt(const chat_style& style, const std::vector<tool_turn>& turns,
                                                 const std::vector<tool_function>& tools);

/// GBNF for the answer when a call is required: one <tool_call> block
/// (more with `parallel`) whose JSON names one of `tools` (only `only` when
/// set) and whose arguments follow that tool's schema. Throws schema_error
/// for a parameters schema the converter cannot express.
[[nodiscard]] std::string tool_call_grammar(const std::vector<tool_function>& tools, const std::string& only,
                                            bool parallel);

/// Finds <tool_call> blocks in text as it streams: what lies outside them is
/// content (a tail that could open a block is held back), a complete block
/// whose JSON has a name (and arguments) is a call; a block that is not such
/// JSON stays content, as written.
class tool_call_parser {
public:
  struct delta {
    std::string content;
    std::vector<tool_call> calls;  ///< completed in this push (id left empty)
  };
  delta push(const std::string& text);
  /// The end: what is held back (an unfinished block is content).
  delta finish();
  [[nodiscard]] int calls_seen() const { return calls_; }

private:
  delta drain(bool all);
  std::string buf_;
  int calls_ = 0;
  bool after_call_ = false;  ///< the newline that separates blocks is not content
};

}  // namespace llmux::engine
