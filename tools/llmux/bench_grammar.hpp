#pragma once
/// `llmux bench grammar --model F`: what a structured-output grammar costs per
/// token on a real vocabulary (the model file's tokenizer), without a model
/// run: the next-token mask computed at every character of a JSON document
/// that follows the schema (the first walk of a grammar, and again with its
/// learned states), the mask served from the cache, and the one-token check
/// the sampler makes before it needs a mask. Prints a table.

#include <string>

namespace llmux::tools {

struct grammar_bench_options {
  std::string model;   ///< GGUF file whose vocabulary is used
  std::string schema;  ///< JSON Schema text; empty: an array of 40-60 strings of at most 40 characters
  std::string document;  ///< a JSON text (or a prefix of one) the schema accepts; empty: one for the default schema
};

/// Prints to stdout; 2 with a message on stderr for bad options.
int run_bench_grammar(const grammar_bench_options& opts);

}  // namespace llmux::tools
