#include "tools/llmux/bench_grammar.hpp"

#include <chrono>
#include <cstdio>
#include <iostream>

#include "engine/gguf.hpp"
#include "engine/hf_model.hpp"
#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"
#include "engine/vocab.hpp"

namespace llmux::tools {
namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

const char* const default_schema =
  R"({"type":"array","items":{"type":"string","maxLength":40},"minItems":40,"maxItems":60})";
// A prefix is enough: the walk needs every character accepted, not an end.
const char* const default_document =
  R"(["Paris", "London is a city", "Rome", "K\u00f8benhavn", "S\u00e3o Paulo", )";

}  // namespace

int run_bench_grammar(const grammar_bench_options& opts) {
  if (opts.model.empty()) {
    std::cerr << "llmux bench grammar: --model FILE (a GGUF file: its vocabulary) is required\n";
    return 2;
  }
  const std::string schema = opts.schema.empty() ? default_schema : opts.schema;
  const std::string doc = opts.document.empty() ? default_document : opts.document;
  std::shared_ptr<const engine::tokenizer> tok;
  try {
    tok = engine::make_tokenizer(engine::read_vocab(*engine::open_model_file(opts.model, false)));
  } catch (const std::exception& e) {
    std::cerr << "llmux bench grammar: " << e.what() << "\n";
    return 2;
  }
  auto t0 = clock_type::now();
  std::vector<std::string> bytes(static_cast<size_t>(tok->vocab_size()));
  for (int32_t i = 0; i < tok->vocab_size(); ++i)
    bytes[static_cast<size_t>(i)] = tok->token_bytes(i);
  const engine::vocab_trie trie{bytes};
  const double trie_ms = ms_since(t0);
  std::shared_ptr<engine::grammar> g;
  t0 = clock_type::now();
  try {
    g = engine::grammar::parse(engine::json_schema_grammar(schema));
  } catch (const std::exception& e) {
    std::cerr << "llmux bench grammar: " << e.what() << "\n";
    return 2;
  }
  const double compile_ms = ms_since(t0);

  // Walk the document a character at a time: a mask at each, twice (the
  // first walk teaches the grammar its states), then from the cache, then
  // the sampler's one-token check.
  double walks[2] = {0, 0}, cached = 0, check = 0;
  int steps = 0;
  size_t allowed = 0;
  for (int pass = 0; pass < 3; ++pass) {
    engine::grammar_matcher m{g};
    for (char c : doc) {
      auto s0 = clock_type::now();
      if (pass < 2) {
        const auto mask = m.compute_mask(trie);
        walks[pass] += ms_since(s0);
        if (pass == 0) {
          for (auto w : mask)
            allowed += static_cast<size_t>(__builtin_popcountll(w));
          ++steps;
        }
      } else {
        (void)g->mask_for(m, trie);  // first call fills the cache
        s0 = clock_type::now();
        (void)g->mask_for(m, trie);
        cached += ms_since(s0);
        s0 = clock_type::now();
        (void)m.allows(std::string(1, c));
        check += ms_since(s0);
      }
      if (!m.accept(std::string(1, c))) {
        std::cerr << "llmux bench grammar: the document does not follow the schema at '" << c << "'\n";
        return 2;
      }
    }
  }
  std::printf("vocabulary %d tokens (%s); trie %.1f ms; schema compiled in %.2f ms\n", tok->vocab_size(),
              opts.model.c_str(), trie_ms, compile_ms);
  std::printf("%d masks along a %zu-character document, %.0f tokens allowed on average\n", steps, doc.size(),
              static_cast<double>(allowed) / steps);
  std::printf("| per token | ms |\n|---|---|\n");
  std::printf("| mask, first walk of the grammar | %.3f |\n", walks[0] / steps);
  std::printf("| mask, states learned | %.3f |\n", walks[1] / steps);
  std::printf("| mask from the cache | %.4f |\n", cached / steps);
  std::printf("| one-token check (the sampler's first try) | %.4f |\n", check / steps);
  return 0;
}

}  // namespace llmux::tools
