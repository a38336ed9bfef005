#pragma once
/// `llmux bench chat-template --template F --context C`: what rendering a
/// chat template costs the edge per request (engine/jinja): the template
/// parsed once (as at model load), then rendered `reps` times with the
/// context (a JSON object: messages, tools, ... as render_chat gives them).
/// Prints one JSON line: parse and render times in microseconds (median and
/// minimum of the renders) and the output's size. bench/chat_templates.py
/// runs it beside Python's jinja2 (what vLLM renders with) on the same
/// templates and contexts.

#include <string>

namespace llmux::tools {

struct chat_template_bench_options {
  std::string template_file;  ///< Jinja chat template
  std::string context_file;   ///< JSON object: the template's variables
  int reps = 2000;
};

/// Prints to stdout; 2 with a message on stderr for bad options or a
/// template that fails.
int run_bench_chat_template(const chat_template_bench_options& opts);

}  // namespace llmux::tools
