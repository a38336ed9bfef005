// The grammar core: GBNF parsing, the matcher on hand-worked sentences, the
// JSON-schema grammars on hand-written valid and invalid documents, and the
// trie mask against the one-token-at-a-time reference.

#include "engine/grammar.hpp"
#include "engine/json_schema_grammar.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace llmux::engine;

namespace {

/// The whole of `text` is a sentence of the grammar.
bool matches(const std::string& gbnf, const std::string& text) {
  grammar_matcher m{grammar::parse(gbnf)};
  return m.accept(text) && m.can_end();
}

/// `text` can start a sentence (it is accepted; the end may be missing).
bool prefix_ok(const std::string& gbnf, const std::string& text) {
  grammar_matcher m{grammar::parse(gbnf)};
  return m.accept(text);
}

std::string schema(const std::string& s) { return json_schema_grammar(s); }

/// "FEATURE at PATH" of the schema_error `convert` throws, or "accepted".
template <class F>
std::string refusal(F convert) {
  try {
    (void)convert();
  } catch (const schema_error& e) {
    return e.feature() + " at " + e.path();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("gbnf: literals, classes, groups and repetition", "[grammar]") {
  const std::string g = R"(root ::= "a" [0-9]+ ("x" | "y")?  # a comment
)";
  CHECK(matches(g, "a1"));
  CHECK(matches(g, "a123y"));
  CHECK_FALSE(matches(g, "a"));      // [0-9]+ needs one
  CHECK_FALSE(prefix_ok(g, "b"));
  CHECK_FALSE(prefix_ok(g, "ax"));
  CHECK_FALSE(prefix_ok(g, "a1xy"));
  CHECK(prefix_ok(g, "a"));

  const std::string counted = "root ::= \"ab\"{2,3}\n";
  CHECK_FALSE(matches(counted, "ab"));
  CHECK(matches(counted, "abab"));
  CHECK(matches(counted, "ababab"));
  CHECK_FALSE(prefix_ok(counted, "abababab"));
  grammar_matcher full{grammar::parse(counted)};
  REQUIRE(full.accept("ababab"));
  CHECK(full.finished());  // nothing but EOS may follow

  const std::string rules = "root ::= item (\",\" item)*\nitem ::= [^,\\n]{1,3}\n";
  CHECK(matches(rules, "abc,de,f"));
  CHECK_FALSE(prefix_ok(rules, "abcd"));
  CHECK_FALSE(prefix_ok(rules, "a,,b"));
  CHECK(matches("root ::= . \"!\"\n", "\xc3\xa9!"));
  CHECK(matches("root ::= [a-cx] [^a-z]\n", "x9"));
  CHECK_FALSE(matches("root ::= [a-cx] [^a-z]\n", "dq"));
  CHECK(matches("root ::= \"\\x41\\u00e9\\n\"\n", "A\xc3\xa9\n"));
}

TEST_CASE("gbnf: errors say what and where", "[grammar]") {
  auto message = [](const std::string& g) {
    try {
      (void)grammar::parse(g);
    } catch (const grammar_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message("root ::= item\n"), Catch::Contains("'item' is used") && Catch::Contains("never defined"));
  CHECK_THAT(message("start ::= \"a\"\n"), Catch::Contains("no 'root'"));
  CHECK_THAT(message("root ::= root \"a\" | \"b\"\n"), Catch::Contains("left-recursive"));
  // Left recursion behind a rule that may be empty.
  CHECK_THAT(message("root ::= x\nx ::= y x \"a\"\ny ::= \"b\" |\n"), Catch::Contains("left-recursive"));
  CHECK_THAT(message("root ::= \"a\"\n\nroot ::= \"b\"\n"), Catch::Contains("defined twice"));
  CHECK_THAT(message("root ::= \"a\n"), Catch::Contains("unterminated"));
  CHECK_THAT(message("root ::= ( \"a\"\n"), Catch::Contains("expected ')'"));
  CHECK_THAT(message("root ::= \"a\"{3,1}\n"), Catch::Contains("n < m"));
  CHECK_THAT(message("root ::= * \"a\"\n"), Catch::Contains("nothing to repeat"));
  CHECK_THAT(message("x ::= \"a\"\nroot ::= x\ny ::= @\n"), Catch::Contains("line 3"));
}

TEST_CASE("matcher: a grammar too ambiguous to follow is refused, not followed slowly", "[grammar]") {
  // One parse stack per (outer, inner) count that reads the a's so far.
  grammar_matcher m{grammar::parse("root ::= (\"a\"{0,300}){0,300}\n")};
  bool refused = false;
  try {
    for (int i = 0; i < 5; ++i)
      (void)m.accept("a");
  } catch (const grammar_error& e) {
    refused = std::string(e.what()).find("too ambiguous") != std::string::npos;
  }
  CHECK(refused);
  // An unambiguous repetition of the same length is fine.
  grammar_matcher plain{grammar::parse("root ::= \"a\"{0,9000}\n")};
  CHECK(plain.accept(std::string(500, 'a')));
}

TEST_CASE("matcher: a character split across tokens waits for its end", "[grammar]") {
  grammar_matcher m{grammar::parse("root ::= [^\"]* \"\\\"\"\n")};
  REQUIRE(m.accept("caf\xc3"));  // half of é
  CHECK_FALSE(m.can_end());
  CHECK(m.allows("\xa9\""));
  CHECK_FALSE(m.allows("x"));    // not a continuation byte
  REQUIRE(m.accept("\xa9\""));
  CHECK(m.can_end());
  // A lead byte whose characters the class cannot hold is refused at once.
  grammar_matcher ascii{grammar::parse("root ::= [a-z]+\n")};
  CHECK_FALSE(ascii.allows("\xc3"));
  // Lead bytes of 3- and 4-byte characters cannot end in ASCII (overlong
  // forms are invalid), nor can C0/C1 start anything.
  grammar_matcher quote{grammar::parse("root ::= \"\\\"\" [ ]?\n")};
  CHECK(quote.allows("\""));
  CHECK_FALSE(quote.allows("\xe0"));
  CHECK_FALSE(quote.allows("\xf0"));
  CHECK_FALSE(quote.allows("\xe0\x80\xa2"));  // overlong '"'
  CHECK_FALSE(quote.allows("\xc0\xa2"));
  CHECK(matches("root ::= [^a]\n", "\xe0\xa4\x85"));  // U+0905, shortest form
}

TEST_CASE("json schema: objects with required and optional properties", "[grammar][schema]") {
  const auto g = schema(R"({"type":"object","properties":{"name":{"type":"string"},
      "age":{"type":"integer","minimum":0},"tags":{"type":"array","items":{"type":"string"},"maxItems":2}},
      "required":["name"]})");
  CHECK(matches(g, R"({"name": "Bo", "age": 3})"));
  CHECK(matches(g, R"({"name":"Bo"})"));
  CHECK(matches(g, "{\n  \"name\": \"Bo\",\n  \"tags\": [\"a\", \"b\"]\n}"));
  CHECK_FALSE(matches(g, R"({"age": 3})"));                 // name is required
  CHECK_FALSE(matches(g, R"({"name": "Bo", "age": -1})"));  // minimum 0
  CHECK_FALSE(matches(g, R"({"name": 1})"));
  CHECK_FALSE(matches(g, R"({"name": "Bo", "tags": ["a", "b", "c"]})"));  // maxItems
  CHECK_FALSE(matches(g, R"({"name": "Bo", "extra": 1})"));  // never an unnamed property
  CHECK_FALSE(matches(g, R"({"age": 3, "name": "Bo"})"));    // the schema's order

  const auto none_required = schema(R"({"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"}}})");
  CHECK(matches(none_required, "{}"));
  CHECK(matches(none_required, R"({"b": null})"));
  CHECK(matches(none_required, R"({"a": true, "b": null})"));
  CHECK_FALSE(matches(none_required, R"({, "b": null})"));
  CHECK_FALSE(matches(none_required, R"({"a": true,})"));
}

TEST_CASE("json schema: enum, const, anyOf, type lists, strings, arrays, $ref", "[grammar][schema]") {
  const auto e = schema(R"({"enum":["red","green",3,null]})");
  CHECK(matches(e, "\"green\""));
  CHECK(matches(e, "3"));
  CHECK(matches(e, "null"));
  CHECK_FALSE(matches(e, "\"blue\""));
  CHECK(matches(schema(R"({"const":{"k":[1,2]}})"), R"({"k":[1,2]})"));
  const auto any = schema(R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":3}]})");
  CHECK(matches(any, "-42"));
  CHECK(matches(any, "\"abc\""));
  CHECK_FALSE(matches(any, "\"abcd\""));
  CHECK_FALSE(matches(any, "4.5"));
  const auto types = schema(R"({"type":["number","null"]})");
  CHECK(matches(types, "4.5e-3"));
  CHECK(matches(types, "null"));
  CHECK_FALSE(matches(types, "01"));  // JSON has no leading zeros
  const auto arr = schema(R"({"type":"array","items":{"type":"boolean"},"minItems":2,"maxItems":3})");
  CHECK_FALSE(matches(arr, "[true]"));
  CHECK(matches(arr, "[true, false]"));
  CHECK(matches(arr, "[true,false,true]"));
  CHECK_FALSE(matches(arr, "[true,false,true,true]"));
  CHECK(matches(schema(R"({"type":"array","maxItems":0})"), "[]"));
  const auto strs = schema(R"({"type":"string","minLength":2})");
  CHECK_FALSE(matches(strs, "\"a\""));
  CHECK(matches(strs, "\"a\\\"\\u00e9\""));  // escapes count as one character each
  const auto tree = schema(R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
      "kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v","kids"]}},"$ref":"#/$defs/node"})");
  CHECK(matches(tree, R"({"v": 1, "kids": [{"v": 2, "kids": []}]})"));
  CHECK_FALSE(matches(tree, R"({"v": 1, "kids": [{"v": 2}]})"));
  const auto map = schema(R"({"type":"object","additionalProperties":{"type":"integer"}})");
  CHECK(matches(map, R"({"a": 1, "b": 2})"));
  CHECK_FALSE(matches(map, R"({"a": "x"})"));
  CHECK(matches(json_object_grammar(), R"({"a": [1, {"b": null}], "c": "d"})"));
  CHECK_FALSE(matches(json_object_grammar(), "[1]"));
  CHECK(matches(choice_grammar({"yes", "no \"way\""}), "no \"way\""));
  CHECK_FALSE(matches(choice_grammar({"yes", "no"}), "maybe"));
}

TEST_CASE("json schema: unsupported features are named", "[grammar][schema]") {
  auto feature = [](const std::string& s) { return refusal([&] { return json_schema_grammar(s); }); };
  CHECK(feature(R"({"type":"string","pattern":"^a+$","maxLength":3})") == "pattern at #");
  CHECK(feature(R"({"type":"string","pattern":"(?=a)b"})") == "regex at #");
  CHECK(feature(R"({"type":"object","properties":{"n":{"type":"integer","minimum":3}}})") == "minimum at #/properties/n");
  CHECK(feature(R"({"type":"string","format":"date"})") == "format at #");
  CHECK(feature(R"({"$ref":"#/$defs/missing"})") == "$ref at #");
  CHECK(feature(R"({"allOf":[{"type":"string"},{"maxLength":3}]})") == "allOf at #");
  CHECK(feature(R"({"type":"widget"})") == "type at #");
  CHECK(feature("not json") == "schema at #");
  CHECK(feature(R"({"type":"object","title":"t","description":"d"})") == "accepted");
}

TEST_CASE("masks: the trie walk agrees with asking each token", "[grammar]") {
  // An awkward vocabulary: JSON pieces, multi-byte characters split across
  // tokens, stray continuation bytes, and specials (empty: never allowed).
  std::vector<std::string> vocab = {"", "{", "}", "\"", "\":", " ", ",", "\"name", "na", "me", "\xc3", "\xa9",
                                    "\xc3\xa9", "1", "12", "-", "true", "tr", "ue", "null", "\n", "\n  ", "\\",
                                    "\\u", "00", "e9", "[", "]", "\"}", "a\"", "\x80", "}\n", "", ":", "\xe0", "\xf0", "\xe0\xa4", "\x85"};
  std::mt19937 rng{7};
  const std::string alphabet = "{}\":, a1e-[]\\n";
  for (int i = 0; i < 200; ++i) {
    std::string piece;
    const int len = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < len; ++k)
      piece += alphabet[rng() % alphabet.size()];
    vocab.push_back(piece);
  }
  vocab_trie trie{vocab};
  auto g = grammar::parse(schema(R"({"type":"object","properties":{"name":{"type":"string"},
      "n":{"type":"array","items":{"type":"integer"}}},"required":["name"]})"));
  grammar_matcher m{g};
  // Walk a valid document token by token; at each state compare masks.
  const std::vector<std::string> doc = {"{", "\"name", "\":", " ", "\"", "na", "\xc3", "\xa9", "me", "a\"", ",",
                                        " ", "\"n\"", ":", "[", "12", ",", "-", "1", "]", "}\n"};
  for (const auto& piece : doc) {
    const token_mask mask = m.compute_mask(trie);
    for (int32_t id = 0; id < trie.vocab_size(); ++id) {
      INFO("after state " << m.key().size() << " token '" << vocab[static_cast<size_t>(id)] << "'");
      CHECK(mask_has(mask, id) == m.allows(vocab[static_cast<size_t>(id)]));
    }
    REQUIRE(m.accept(piece));
  }
  CHECK(m.can_end());
  // The cache hands the same mask back for the same state.
  grammar_matcher a{g}, b{g};
  auto first = g->mask_for(a, trie);
  auto again = g->mask_for(b, trie);
  CHECK(first == again);
  CHECK(g->masks_cached() >= 1);
}

TEST_CASE("regex: the ECMAScript subset as a grammar", "[grammar][regex]") {
  auto re = [](const std::string& pattern) { return regex_grammar(pattern); };
  CHECK(matches(re("[0-9]{3}-[0-9]{4}"), "555-1234"));
  CHECK_FALSE(matches(re("[0-9]{3}-[0-9]{4}"), "55-1234"));
  CHECK(matches(re("^(cat|dog)s?$"), "dogs"));
  CHECK_FALSE(matches(re("^(cat|dog)s?$"), "cow"));
  CHECK(matches(re("\\d+(\\.\\d{1,2})?"), "12.5"));
  CHECK_FALSE(matches(re("\\d+(\\.\\d{1,2})?"), "12.555"));
  CHECK(matches(re("[A-Z][a-z]*\\s\\w+"), "Hello world_9"));
  CHECK(matches(re("a.c"), "a\xc3\xa9" "c"));
  CHECK_FALSE(matches(re("a.c"), "a\nc"));  // . is not a newline
  CHECK(matches(re("[^abc]+"), "xyz"));
  CHECK_FALSE(matches(re("[^abc]+"), "xaz"));
  CHECK(matches(re("\\D\\W\\S"), "x-y"));
  CHECK(matches(re("(?:ab)+?c"), "ababc"));
  CHECK(matches(re("(?<year>\\d{4})"), "2026"));
  CHECK(matches(re("a{2,}"), "aaaa"));
  CHECK(matches(re("x{"), "x{"));  // a brace that starts no quantifier is literal
  CHECK(matches(re("[\\]\\-]"), "-"));
  CHECK(matches(re("a|"), ""));
  auto refused = [](const std::string& pattern) { return refusal([&] { return regex_grammar(pattern); }); };
  CHECK(refused("(a)\\1") == "regex at regex");
  CHECK(refused("a(?!b)") == "regex at regex");
  CHECK(refused("\\bword") == "regex at regex");
  CHECK(refused("a^b") == "regex at regex");
  CHECK(refused("(ab") == "regex at regex");
  CHECK(refused("ab)") == "regex at regex");
  CHECK(refused("[z-a]") == "regex at regex");
  CHECK(refused("*a") == "regex at regex");
  CHECK(refused("a{5,2}") == "regex at regex");
}

TEST_CASE("json schema: a pattern inside a JSON string", "[grammar][regex][schema]") {
  const auto phone = schema(R"({"type":"string","pattern":"^[0-9]{3}-[0-9]{4}$"})");
  CHECK(matches(phone, "\"555-1234\""));
  CHECK_FALSE(matches(phone, "\"x555-1234\""));
  // Unanchored: a validator searches, so text may surround the match.
  const auto contains = schema(R"({"type":"string","pattern":"ab+"})");
  CHECK(matches(contains, "\"xxabbby\""));
  CHECK_FALSE(matches(contains, "\"xxay\""));
  // Characters JSON escapes come out escaped.
  const auto quoted = schema(R"({"type":"string","pattern":"^say \"[a-z]+\"\\\\$"})");
  CHECK(matches(quoted, "\"say \\\"hi\\\"\\\\\""));
  CHECK_FALSE(matches(quoted, "\"say \"hi\"\\\""));
  const auto cls = schema(R"({"type":"string","pattern":"^[\"a]$"})");
  CHECK(matches(cls, "\"a\""));
  CHECK(matches(cls, "\"\\\"\""));
  // `.` never writes a raw quote or control character.
  const auto dot = schema(R"({"type":"string","pattern":"^.{2}$"})");
  CHECK(matches(dot, "\"ab\""));
  CHECK_FALSE(matches(dot, "\"a\"\""));
}
