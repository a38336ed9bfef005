// libFuzzer target for the structured-output grammars (engine/grammar,
// engine/json_schema_grammar): users send both (guided_grammar's GBNF,
// response_format's JSON Schema), and the engine runs them per token.
//
// Input: a mode byte, then text. Mode even: the text up to the first NUL
// is GBNF, the rest is output to match. It must parse or throw
// grammar_error; a grammar that parses must run the output (in pieces of 1
// to 3 bytes) without crashing, and at every step the trie mask over a
// small vocabulary must agree with asking each token. Mode 1 (mod 4): the
// text is a JSON Schema, mode 3 a regular expression (guided_regex); each
// must convert or throw schema_error, and whatever it converts to must be a
// grammar that parses.
// Seeds: tests/fuzz/grammar_corpus/.

#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"

#include "tests/fuzz/fuzz_require.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

using llmux::fuzz::require;
using namespace llmux::engine;

namespace {

const vocab_trie& small_vocab() {
  static const vocab_trie trie{std::vector<std::string>{
    "", "{", "}", "\"", "\":", " ", ",", "a", "ab", "b", "\xc3", "\xa9", "\xc3\xa9", "1", "12", "-", "true",
    "null", "\n", "[", "]", "\\", "\\u", "0", "x", "(", ")", "+", "=", "\xe0", "\xe0\xa4\x85", ":", "yes", "no"}};
  return trie;
}

void run_gbnf(const std::string& gbnf, const std::string& text) {
  std::shared_ptr<grammar> g;
  try {
    g = grammar::parse(gbnf);
  } catch (const grammar_error& e) {
    require(std::string(e.what()).find("grammar") == 0);
    return;
  }
  try {
    grammar_matcher m{g};
    const auto& vocab = small_vocab();
    size_t at = 0, step = 0;
    while (at < text.size() && step < 64) {
      const token_mask mask = m.compute_mask(vocab);
      for (int32_t id = 0; id < vocab.vocab_size(); ++id)
        require(mask_has(mask, id) == m.allows(vocab.bytes(id)));
      const size_t n = 1 + (static_cast<uint8_t>(text[at]) % 3);
      const std::string piece = text.substr(at, n);
      const bool would = m.allows(piece);
      require(m.accept(piece) == would);
      if (!would)
        break;
      at += n;
      ++step;
    }
    (void)m.can_end();
    (void)m.finished();
  } catch (const grammar_error&) {
    // Rule expansion deeper than the matcher allows: a clean refusal.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096)
    return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    const auto nul = text.find('\0');
    run_gbnf(text.substr(0, nul), nul == std::string::npos ? std::string() : text.substr(nul + 1));
    return 0;
  }
  std::string gbnf;
  try {
    gbnf = data[0] % 4 == 3 ? regex_grammar(text) : json_schema_grammar(text);
  } catch (const schema_error& e) {
    require(!e.feature().empty());
    require(!e.path().empty() && (e.path()[0] == '#' || (data[0] % 4 == 3 && e.path() == "regex")));
    return 0;
  }
  try {
    (void)grammar::parse(gbnf);
  } catch (const grammar_error&) {
    require(false);  // the converter wrote a grammar that does not parse
  }
  return 0;
}
