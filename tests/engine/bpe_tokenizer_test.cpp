// The byte-level BPE tokenizer against llama.cpp, which nobody here wrote:
// SmolLM2-135M's vocabulary and the cases tests/data/make_tokenizer_cases.py
// drew from llama-cpp-python (skipped with a warning when the model is not
// in the cache), the pre-tokenizer splits regex by regex, the Unicode table,
// and a hand-built vocabulary for the merge rules.

#include "engine/bpe_tokenizer.hpp"

#include <catch2/catch.hpp>

#include "tests/skip.hpp"

#include "tests/engine/test_data.hpp"
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/bpe_pretokenizer.hpp"
#include "engine/gguf.hpp"
#include "engine/unicode_categories.hpp"
#include "engine/vocab.hpp"

using namespace llmux::engine;
using nlohmann::json;
using words = std::vector<std::string>;

using llmux::test::load_json;
using llmux::test::stream;
using llmux::test::unhex;

namespace {

const std::string smollm_path = LLMUX_MODEL_CACHE "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string cases_path = LLMUX_SOURCE_DIR "/tests/data/smollm2_tokenizer_cases.json";

/// SmolLM2's tokenizer; the test case is skipped when the model is absent.
const tokenizer* smollm() {
  if (!std::filesystem::exists(smollm_path))
    llmux::test::skip_test(smollm_path + " is missing (scripts/setup fetches it)");
  static const std::shared_ptr<tokenizer> tok = make_tokenizer(read_vocab(*gguf::gguf_file::open(smollm_path)));
  return tok.get();
}

}  // namespace

TEST_CASE("bpe: SmolLM2 vocabulary reads as llama.cpp reads it", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  vocab_data v = read_vocab(*gguf::gguf_file::open(smollm_path));
  CHECK(v.model == "gpt2");
  CHECK(v.pre == "smollm");
  CHECK(v.tokens.size() == 49152);
  CHECK(v.merges.size() == 48900);
  CHECK(v.merges[0] == "\xC4\xA0 t");  // "Ġ t"
  CHECK(v.bos_id == 1);
  CHECK(v.eos_id == 2);
  CHECK(v.pad_id == 2);
  CHECK_FALSE(v.add_bos);  // tokenizer.ggml.add_bos_token = false
  CHECK_FALSE(v.add_space_prefix);
  CHECK(v.types[0] == token_type::control);
  CHECK_THAT(v.chat_template, Catch::Contains("<|im_start|>"));

  const tokenizer& tok = *smollm();
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.token_bytes(2).empty());  // <|im_end|>
}

TEST_CASE("bpe: every generated case matches llama.cpp (llama-cpp-python)", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  const tokenizer& tok = *smollm();
  json doc = load_json(cases_path);
  REQUIRE(doc["cases"].size() >= 120);
  CHECK(doc["bos"] == tok.bos_id());
  CHECK(doc["eos"] == tok.eos_id());
  size_t mismatches = 0;
  for (const auto& c : doc["cases"]) {
    std::string text = unhex(c["text_hex"]);
    bool add_special = c["add_special"];
    bool parse_special = c["parse_special"];
    INFO("text: '" << text << "' add_special=" << add_special << " parse_special=" << parse_special);
    auto ids = parse_special ? tok.encode_with_specials(text, add_special) : tok.encode(text, add_special);
    auto want = c["tokens"].get<std::vector<token_id>>();
    CHECK(ids == want);
    mismatches += ids != want;
    std::string detok = unhex(c["detokenized_hex"]);
    CHECK(tok.decode(want) == detok);
    // Byte-level BPE loses nothing: valid text streams back unchanged
    // (special tokens in it, when parsed, add no bytes).
    if (!parse_special && text.find('\xFF') == std::string::npos && detok == text)
      CHECK(stream(tok, ids) == text);
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bpe: other pre-tokenizers match llama.cpp on SmolLM2's vocabulary", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  // The generator rewrote tokenizer.ggml.pre in a copy of the file; here the
  // same change is made to the vocabulary read from the original.
  vocab_data base = read_vocab(*gguf::gguf_file::open(smollm_path));
  json doc = load_json(LLMUX_SOURCE_DIR "/tests/data/smollm2_pre_variants_cases.json");
  REQUIRE(doc["variants"].size() == 4);
  for (const auto& variant : doc["variants"]) {
    vocab_data v = base;
    v.pre = variant["pre"];
    auto tok = make_tokenizer(v);
    size_t mismatches = 0;
    for (const auto& c : variant["cases"]) {
      std::string text = unhex(c["text_hex"]);
      bool add_special = c["add_special"];
      bool parse_special = c["parse_special"];
      INFO("pre: " << v.pre << " text: '" << text << "' add_special=" << add_special);
      auto ids = parse_special ? tok->encode_with_specials(text, add_special)
                               : tok->encode(text, add_special);
      auto want = c["tokens"].get<std::vector<token_id>>();
      CHECK(ids == want);
      mismatches += ids != want;
    }
    INFO("pre: " << v.pre);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("bpe: token_bytes is llama_token_to_piece", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  json doc = load_json(cases_path);
  REQUIRE(doc["pieces"].size() > 1000);
  for (const auto& p : doc["pieces"]) {
    token_id id = p[0];
    INFO("token " << id);
    CHECK(smollm()->token_bytes(id) == unhex(p[1]));
  }
}

TEST_CASE("bpe: ChatML with special tokens round-trips as text", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  const tokenizer& tok = *smollm();
  std::string chat = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
  auto ids = tok.encode_with_specials(chat, true);
  REQUIRE(ids.size() > 4);
  CHECK(ids.front() == 1);  // <|im_start|>, from the text: SmolLM2 adds no BOS
  CHECK(std::count(ids.begin(), ids.end(), 1) == 2);
  CHECK(std::count(ids.begin(), ids.end(), 2) == 1);
  CHECK(stream(tok, ids) == "user\nHi there\nassistant\n");
  // As plain text the markers are ordinary characters.
  auto plain = tok.encode(chat, true);
  CHECK(std::count(plain.begin(), plain.end(), 1) == 0);
  CHECK(stream(tok, plain) == chat);
}

TEST_CASE("bpe: valid UTF-8 comes back exactly, invalid bytes do not crash", "[tokenizer][bpe]") {
  (void)smollm();  // skips the case without the model
  const tokenizer& tok = *smollm();
  const std::vector<std::string> atoms = {"a", "Z", "7", " ", "  ", "\t", "\n", "\r\n", "'s", ".",
                                          "!?", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x99\x82",
                                          "\xE3\x80\x80", "\xCC\x81", "<|im_end|>"};
  std::mt19937 rng(11);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    for (int k = rng() % 30; k > 0; --k)
      text += atoms[rng() % atoms.size()];
    CHECK(tok.decode(tok.encode(text, true)) == text);
    std::string bytes(rng() % 20, '\0');
    for (auto& c : bytes)
      c = static_cast<char>(rng() % 256);
    (void)tok.encode_with_specials(bytes, true);
  }
}

// --- pre-tokenizers ----------------------------------------------------------

TEST_CASE("bpe pre-tokenizer: llama.cpp's names", "[tokenizer][bpe]") {
  CHECK(find_bpe_pre_tokenizer("smollm")->kind == bpe_pre_kind::starcoder);
  CHECK(find_bpe_pre_tokenizer("llama-bpe")->kind == bpe_pre_kind::llama3);
  CHECK(find_bpe_pre_tokenizer("llama-bpe")->ignore_merges);
  CHECK(find_bpe_pre_tokenizer("llama-bpe")->add_bos);
  CHECK(find_bpe_pre_tokenizer("qwen2")->kind == bpe_pre_kind::qwen2);
  CHECK(find_bpe_pre_tokenizer("gpt-2")->kind == bpe_pre_kind::gpt2);
  CHECK(find_bpe_pre_tokenizer("default")->kind == bpe_pre_kind::fallback);
  CHECK(find_bpe_pre_tokenizer("")->kind == bpe_pre_kind::fallback);
  CHECK_FALSE(find_bpe_pre_tokenizer("no-such-pre"));
}

TEST_CASE("bpe pre-tokenizer: gpt2", "[tokenizer][bpe]") {
  auto split = [](std::string_view s) { return split_bpe_words(bpe_pre_kind::gpt2, s); };
  CHECK(split("Hello world") == words{"Hello", " world"});
  // \s+(?!\S): the last space of a run goes with the next word.
  CHECK(split("a   b") == words{"a", "  ", " b"});
  CHECK(split("a   ") == words{"a", "   "});
  CHECK(split("don't I'M") == words{"don", "'t", " I", "'", "M"});  // case-sensitive
  CHECK(split("x 123 4.5") == words{"x", " 123", " 4", ".", "5"});
  CHECK(split("hi!!! ?") == words{"hi", "!!!", " ?"});
  CHECK(split("\t\nfoo") == words{"\t", "\n", "foo"});
  CHECK(split("").empty());
}

TEST_CASE("bpe pre-tokenizer: llama3 and qwen2", "[tokenizer][bpe]") {
  auto l3 = [](std::string_view s) { return split_bpe_words(bpe_pre_kind::llama3, s); };
  auto q2 = [](std::string_view s) { return split_bpe_words(bpe_pre_kind::qwen2, s); };
  CHECK(l3("I'M here") == words{"I", "'M", " here"});  // case-insensitive
  CHECK(l3("1234567") == words{"123", "456", "7"});
  CHECK(q2("1234") == words{"1", "2", "3", "4"});
  CHECK(l3("(hello) x") == words{"(hello", ")", " x"});
  CHECK(l3("a ...\n\nb") == words{"a", " ...\n\n", "b"});
  CHECK(l3("a  \n  b") == words{"a", "  \n", " ", " b"});
  CHECK(l3("end ") == words{"end", " "});
  CHECK(l3("x\r\n") == words{"x", "\r\n"});
}

TEST_CASE("bpe pre-tokenizer: starcoder/smollm and default", "[tokenizer][bpe]") {
  auto sc = [](std::string_view s) { return split_bpe_words(bpe_pre_kind::starcoder, s); };
  CHECK(sc("abc 123") == words{"abc", " ", "1", "2", "3"});
  CHECK(sc("v2.0") == words{"v", "2", ".", "0"});
  auto df = [](std::string_view s) { return split_bpe_words(bpe_pre_kind::fallback, s); };
  CHECK(df("hello, world 12345") == words{"hello", ",", " world", " ", "123", "45"});
  CHECK(df("a`b") == words{"a", "`", "b"});  // '`' is not in the first class
  CHECK(df("x+=y") == words{"x", "+=", "y"});
}

TEST_CASE("bpe pre-tokenizer: invalid UTF-8 bytes become U+FFFD", "[tokenizer][bpe]") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(split_bpe_words(bpe_pre_kind::gpt2, "a\xFF" "b") == words{"a", fffd, "b"});
  CHECK(split_bpe_words(bpe_pre_kind::gpt2, "caf\xC3") == words{"caf", fffd});
}

TEST_CASE("unicode: categories are Unicode 15.1 as in llama.cpp", "[tokenizer][bpe]") {
  using namespace llmux::engine::unicode;
  CHECK(category_of('A') == letter);
  CHECK(category_of('7') == number);
  CHECK(category_of(' ') == separator);
  CHECK(category_of('$') == symbol);
  CHECK(category_of('_') == punctuation);
  CHECK(category_of(0x00E9) == letter);     // é
  CHECK(category_of(0x0301) == mark);       // combining acute
  CHECK(category_of(0x00B2) == number);     // ²
  CHECK(category_of(0x65E5) == letter);     // 日
  CHECK(category_of(0x1F642) == symbol);    // 🙂
  CHECK(category_of(0x200B) == control);    // zero width space (Cf)
  CHECK(category_of(0x0CF3) == mark);       // new in 15.0
  CHECK(category_of(0x31EF) == symbol);     // new in 15.1
  CHECK(category_of(0x2EBF0) == letter);    // CJK extension I, 15.1
  CHECK(category_of(0x1C89) == undefined);  // assigned only in 16.0
  CHECK(category_of(0x110000) == undefined);
  CHECK(is_whitespace(0x3000));
  CHECK(is_whitespace(0x85));
  CHECK_FALSE(is_whitespace(0x200B));
  CHECK(decode_utf8("\xC0\x80x") == std::vector<uint32_t>{0, 'x'});  // overlong accepted, as llama.cpp
  CHECK(decode_utf8("\xE2\x82") == std::vector<uint32_t>{0xFFFD, 0xFFFD});
}

// --- merges on a hand-built vocabulary ----------------------------------------

namespace {

/// Byte-level vocabulary over the letters a-d and space ("Ġ"), with `merges`.
vocab_data tiny_bpe(const std::vector<std::string>& merged, const std::vector<std::string>& merges) {
  vocab_data v;
  v.model = "gpt2";
  v.pre = "gpt-2";
  v.tokens = {"<|endoftext|>", "a", "b", "c", "d", "\xC4\xA0"};
  v.types = {token_type::control, token_type::normal, token_type::normal, token_type::normal,
             token_type::normal, token_type::normal};
  for (const auto& m : merged) {
    v.tokens.push_back(m);
    v.types.push_back(token_type::normal);
  }
  v.merges = merges;
  v.bos_id = v.eos_id = 0;
  return v;
}

}  // namespace

TEST_CASE("bpe: lowest merge rank first, ties leftmost", "[tokenizer][bpe]") {
  // "ab" (rank 0) beats "bc" (rank 1) in "abc".
  auto v = tiny_bpe({"ab", "bc"}, {"a b", "b c"});
  bpe_tokenizer tok(v);
  CHECK(tok.encode("abc", false) == std::vector<token_id>{6, 3});
  // The same pair twice: the left one merges first, leaving "aa" "a".
  auto v2 = tiny_bpe({"aa"}, {"a a"});
  CHECK(bpe_tokenizer(v2).encode("aaa", false) == std::vector<token_id>{6, 1});
  // A leading space is "Ġ"; bytes with no token are dropped, as in llama.cpp.
  auto v3 = tiny_bpe({"\xC4\xA0" "a"}, {"\xC4\xA0 a"});
  bpe_tokenizer tok3(v3);
  CHECK(tok3.encode("b a", false) == std::vector<token_id>{2, 6});
  CHECK(tok3.encode("b\xC3\xA9", false) == std::vector<token_id>{2});
  CHECK(tok3.token_bytes(6) == " a");
  CHECK(tok3.token_bytes(0).empty());
}

TEST_CASE("bpe: unsupported pre-tokenizer is named", "[tokenizer][bpe]") {
  auto v = tiny_bpe({}, {});
  v.pre = "tekken";
  CHECK_THROWS_WITH(make_tokenizer(v), Catch::Contains("'tekken'"));
}
