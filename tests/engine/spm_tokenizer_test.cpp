// The SentencePiece tokenizer against llama.cpp, which nobody here wrote:
// the golden stories260K file (llama-server), the cases that
// tests/data/make_tokenizer_cases.py drew from llama-cpp-python, and small
// hand-built vocabularies for each rule (merge order, byte fallback, space
// prefix, special tokens). Also read_vocab's errors for a bad file.

#include "engine/spm_tokenizer.hpp"

#include <catch2/catch.hpp>

#include "tests/engine/test_data.hpp"
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.hpp"
#include "engine/vocab.hpp"

using namespace llmux::engine;
using nlohmann::json;

using llmux::test::load_json;
using llmux::test::stream;
using llmux::test::unhex;

namespace {

const std::string stories_path = LLMUX_SHARED_DIR "/models/stories260K/stories260K.gguf";
const std::string golden_path = LLMUX_SHARED_DIR "/golden/stories260K_greedy.json";
const std::string cases_path = LLMUX_SOURCE_DIR "/tests/data/stories260K_tokenizer_cases.json";

const tokenizer& stories() {
  static const std::shared_ptr<tokenizer> tok =
      make_tokenizer(read_vocab(*gguf::gguf_file::open(stories_path)));
  return *tok;
}

/// A small SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens,
/// then `extra` as (text, score, type).
vocab_data tiny_spm(const std::vector<std::tuple<std::string, float, token_type>>& extra) {
  vocab_data v;
  v.model = "llama";
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  v.add_bos = true;
  v.add_space_prefix = false;
  auto add = [&](std::string t, float s, token_type ty) {
    v.tokens.push_back(std::move(t));
    v.scores.push_back(s);
    v.types.push_back(ty);
  };
  add("<unk>", 0, token_type::unknown);
  add("<s>", 0, token_type::control);
  add("</s>", 0, token_type::control);
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    add(hex, 0, token_type::byte);
  }
  for (const auto& [t, s, ty] : extra)
    add(t, s, ty);
  return v;
}

token_id id_of(const vocab_data& v, const std::string& text) {
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.tokens[i] == text)
      return static_cast<token_id>(i);
  FAIL("no token " << text);
  return -1;
}

const std::string sp = "\xE2\x96\x81";  // "▁"

}  // namespace

TEST_CASE("spm: stories260K vocabulary reads as llama.cpp reads it", "[tokenizer][spm]") {
  auto file = gguf::gguf_file::open(stories_path);
  vocab_data v = read_vocab(*file);
  CHECK(v.model == "llama");
  CHECK(v.tokens.size() == 512);
  CHECK(v.scores.size() == 512);
  CHECK(v.types.size() == 512);
  CHECK(v.types[0] == token_type::unknown);
  CHECK(v.types[1] == token_type::control);
  CHECK(v.types[3] == token_type::byte);
  CHECK(v.bos_id == 1);
  CHECK(v.eos_id == 2);
  CHECK(v.unk_id == 0);
  CHECK(v.pad_id == -1);  // the file says 4294967295: out of range, ignored
  CHECK(v.add_bos);        // SentencePiece defaults: the file has no such keys
  CHECK_FALSE(v.add_eos);
  CHECK(v.add_space_prefix);

  const tokenizer& tok = stories();
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.token_bytes(1).empty());  // <s>
  CHECK(tok.token_bytes(0).empty());  // <unk>
  CHECK(tok.token_bytes(3 + 0x0A) == "\n");
}

TEST_CASE("spm: golden tokenize cases (llama-server)", "[tokenizer][spm]") {
  json golden = load_json(golden_path);
  REQUIRE(golden["tokenize"].size() >= 6);
  for (const auto& c : golden["tokenize"]) {
    std::string text = c["text"];
    INFO("text: " << text);
    auto ids = stories().encode(text, false);
    CHECK(ids == c["tokens"].get<std::vector<token_id>>());
    std::string detok = c["detokenized"];
    CHECK(stories().decode(ids) == detok);
    CHECK(stream(stories(), ids) == detok);
  }
}

TEST_CASE("spm: golden prompts start with BOS (llama-server)", "[tokenizer][spm]") {
  json golden = load_json(golden_path);
  REQUIRE(golden["cases"].size() >= 4);
  for (const auto& c : golden["cases"]) {
    std::string prompt = c["prompt"];
    INFO("prompt: " << prompt);
    CHECK(stories().encode(prompt, true) == c["prompt_tokens"].get<std::vector<token_id>>());
    // The completion streams back to its text.
    auto completion = c["completion_tokens"].get<std::vector<token_id>>();
    CHECK(stream(stories(), completion) == c["completion_text"].get<std::string>());
  }
}

TEST_CASE("spm: every generated case matches llama.cpp (llama-cpp-python)", "[tokenizer][spm]") {
  json doc = load_json(cases_path);
  REQUIRE(doc["cases"].size() >= 120);
  CHECK(doc["bos"] == stories().bos_id());
  CHECK(doc["eos"] == stories().eos_id());
  size_t mismatches = 0;
  for (const auto& c : doc["cases"]) {
    std::string text = unhex(c["text_hex"]);
    bool add_special = c["add_special"];
    bool parse_special = c["parse_special"];
    INFO("text: '" << text << "' add_special=" << add_special << " parse_special=" << parse_special);
    auto ids = parse_special ? stories().encode_with_specials(text, add_special)
                             : stories().encode(text, add_special);
    auto want = c["tokens"].get<std::vector<token_id>>();
    CHECK(ids == want);
    CHECK(stories().decode(want) == unhex(c["detokenized_hex"]));
    mismatches += ids != want;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("spm: token_bytes is llama_token_to_piece for every token", "[tokenizer][spm]") {
  json doc = load_json(cases_path);
  REQUIRE(doc["pieces"].size() == 512);
  for (const auto& p : doc["pieces"]) {
    token_id id = p[0];
    INFO("token " << id);
    CHECK(stories().token_bytes(id) == unhex(p[1]));
  }
  CHECK(stories().token_bytes(-1).empty());
  CHECK(stories().token_bytes(512).empty());
}

TEST_CASE("spm: round trips through the incremental decoder", "[tokenizer][spm]") {
  // With the space prefix the text comes back with one leading space.
  for (std::string text : {"Hello world", "tabs\tand\nnewlines", "Grüße, 日本語 🙂!", "  two", ""}) {
    auto ids = stories().encode(text, true);
    CHECK(stream(stories(), ids) == (text.empty() ? "" : " " + text));
  }
}

TEST_CASE("spm: valid UTF-8 comes back exactly, invalid bytes do not crash", "[tokenizer][spm]") {
  const std::vector<std::string> atoms = {"a", "Z", "7", " ", "  ", "\t", "\n", "'s", ".", "!?",
                                          "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x99\x82",
                                          "<s>", "<unk>"};
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    for (int k = rng() % 30; k > 0; --k)
      text += atoms[rng() % atoms.size()];
    // The space prefix comes back too; "<s>" etc. are plain text here.
    CHECK(stories().decode(stories().encode(text, true)) == (text.empty() ? "" : " " + text));
    // A lead byte whose sequence is cut short swallows what follows — even
    // the "▁" a space became — so invalid input need not come back as it was
    // (llama.cpp gives the same ids); it must only not break.
    std::string bytes(rng() % 40, '\0');
    for (auto& c : bytes)
      c = static_cast<char>(rng() % 256);
    (void)stories().encode_with_specials(bytes, true);
  }
}

TEST_CASE("spm: the best-scoring pair merges first, ties leftmost", "[tokenizer][spm]") {
  auto v = tiny_spm({{"a", -1, token_type::normal},
                     {"b", -1, token_type::normal},
                     {"c", -1, token_type::normal},
                     {"aa", -2, token_type::normal},
                     {"ab", -3, token_type::normal},
                     {"bc", -1.5f, token_type::normal}});
  spm_tokenizer tok(v);
  // Two equal "aa" pairs: the left one merges.
  CHECK(tok.encode("aaa", false) == std::vector<token_id>{id_of(v, "aa"), id_of(v, "a")});
  // "bc" scores higher than "ab".
  CHECK(tok.encode("abc", false) == std::vector<token_id>{id_of(v, "a"), id_of(v, "bc")});
}

TEST_CASE("spm: characters without a token fall back to byte tokens", "[tokenizer][spm]") {
  auto v = tiny_spm({{"a", -1, token_type::normal}});
  spm_tokenizer tok(v);
  // "é" is C3 A9; <0xXX> is token 3 + XX.
  CHECK(tok.encode("a\xC3\xA9", false) == std::vector<token_id>{id_of(v, "a"), 3 + 0xC3, 3 + 0xA9});
  CHECK(tok.decode(tok.encode("a\xC3\xA9", false)) == "a\xC3\xA9");
  // BOS only where the vocabulary asks for it.
  CHECK(tok.encode("a", true) == std::vector<token_id>{1, id_of(v, "a")});
  v.add_bos = false;
  CHECK(spm_tokenizer(v).encode("a", true) == std::vector<token_id>{id_of(v, "a")});
}

TEST_CASE("spm: space prefix at the start and after each special token", "[tokenizer][spm]") {
  auto v = tiny_spm({{sp + "a", -1, token_type::normal},
                     {sp + "b", -1, token_type::normal},
                     {"a", -2, token_type::normal},
                     {"b", -2, token_type::normal},
                     {sp, -3, token_type::normal},
                     {"<ctl>", 0, token_type::control},
                     {"<usr>", 0, token_type::user_defined}});
  v.add_space_prefix = true;
  spm_tokenizer tok(v);
  token_id ctl = id_of(v, "<ctl>"), usr = id_of(v, "<usr>");
  CHECK(tok.encode_with_specials("a<ctl>b", false)
        == std::vector<token_id>{id_of(v, sp + "a"), ctl, id_of(v, sp + "b")});
  // Without parse_special a control token is plain text, a user-defined one still splits.
  auto plain = tok.encode("a<usr>b", false);
  CHECK(plain == std::vector<token_id>{id_of(v, sp + "a"), usr, id_of(v, sp + "b")});
  auto ctl_text = tok.encode("a<ctl>", false);
  CHECK(std::find(ctl_text.begin(), ctl_text.end(), ctl) == ctl_text.end());
  // Pieces: "▁" is a space, control tokens are empty, user-defined tokens are their text.
  CHECK(tok.token_bytes(id_of(v, sp + "a")) == " a");
  CHECK(tok.token_bytes(ctl).empty());
  CHECK(tok.token_bytes(usr) == "<usr>");
}

// --- read_vocab / make_tokenizer errors -------------------------------------

namespace {

/// GGUF v3 bytes with the given metadata and no tensors.
class gguf_bytes {
public:
  gguf_bytes& str_kv(const std::string& key, const std::string& v) {
    key_(key, 8);
    return str_(v);
  }
  gguf_bytes& strings_kv(const std::string& key, const std::vector<std::string>& v) {
    key_(key, 9).u32_(8).u64_(v.size());
    for (const auto& s : v)
      str_(s);
    return *this;
  }
  gguf_bytes& floats_kv(const std::string& key, size_t n) {
    key_(key, 9).u32_(6).u64_(n);
    for (size_t i = 0; i < n; ++i)
      u32_(0);
    return *this;
  }
  std::shared_ptr<gguf::gguf_file> parse() {
    std::vector<uint8_t> file;
    auto put = [&](uint64_t v, int n) {
      for (int i = 0; i < n; ++i)
        file.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    file.insert(file.end(), {'G', 'G', 'U', 'F'});
    put(3, 4);
    put(0, 8);
    put(n_kv_, 8);
    file.insert(file.end(), kv_.begin(), kv_.end());
    while (file.size() % 32 != 0)
      file.push_back(0);
    keep_ = file;
    return gguf::gguf_file::parse("vocab.gguf", keep_.data(), keep_.size());
  }

private:
  gguf_bytes& key_(const std::string& key, uint32_t type) {
    ++n_kv_;
    return str_(key).u32_(type);
  }
  gguf_bytes& str_(const std::string& s) {
    u64_(s.size());
    kv_.insert(kv_.end(), s.begin(), s.end());
    return *this;
  }
  gguf_bytes& u32_(uint32_t v) { return raw_(v, 4); }
  gguf_bytes& u64_(uint64_t v) { return raw_(v, 8); }
  gguf_bytes& raw_(uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      kv_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  std::vector<uint8_t> kv_;
  std::vector<uint8_t> keep_;
  uint64_t n_kv_ = 0;
};

std::optional<gguf::gguf_error> vocab_error(gguf_bytes b) {
  auto file = b.parse();
  try {
    (void)read_vocab(*file);
  } catch (const gguf::gguf_error& e) {
    return e;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("vocab: read_vocab names the missing or malformed key", "[tokenizer][vocab]") {
  const std::vector<std::string> toks = {"<unk>", "<s>", "</s>", "a"};
  {
    auto e = vocab_error(gguf_bytes().strings_kv("tokenizer.ggml.tokens", toks));
    REQUIRE(e);
    CHECK(e->where == "tokenizer.ggml.model");
    CHECK_THAT(e->what(), Catch::StartsWith("vocab.gguf: tokenizer.ggml.model: missing"));
  }
  {
    auto e = vocab_error(gguf_bytes().str_kv("tokenizer.ggml.model", "llama"));
    REQUIRE(e);
    CHECK(e->where == "tokenizer.ggml.tokens");
  }
  {
    auto e = vocab_error(gguf_bytes()
                             .str_kv("tokenizer.ggml.model", "llama")
                             .str_kv("tokenizer.ggml.tokens", "not an array"));
    REQUIRE(e);
    CHECK(e->where == "tokenizer.ggml.tokens");
    CHECK_THAT(e->reason, Catch::Contains("array of strings"));
  }
  {
    auto e = vocab_error(gguf_bytes()
                             .str_kv("tokenizer.ggml.model", "llama")
                             .strings_kv("tokenizer.ggml.tokens", toks)
                             .floats_kv("tokenizer.ggml.scores", 3));
    REQUIRE(e);
    CHECK(e->where == "tokenizer.ggml.scores");
    CHECK_THAT(e->reason, Catch::Contains("3 entries for 4 tokens"));
  }
  {
    auto e = vocab_error(gguf_bytes()
                             .str_kv("tokenizer.ggml.model", "gpt2")
                             .strings_kv("tokenizer.ggml.tokens", toks));
    REQUIRE(e);
    CHECK(e->where == "tokenizer.ggml.merges");
  }
  // A minimal valid one: defaults fill in the rest.
  auto file = gguf_bytes()
                  .str_kv("tokenizer.ggml.model", "llama")
                  .strings_kv("tokenizer.ggml.tokens", toks)
                  .parse();
  vocab_data v = read_vocab(*file);
  CHECK(v.bos_id == 1);
  CHECK(v.eos_id == 2);
  CHECK(v.scores.empty());
  CHECK(v.add_space_prefix);
  CHECK(make_tokenizer(v)->vocab_size() == 4);
}

TEST_CASE("vocab: make_tokenizer names what it does not support", "[tokenizer][vocab]") {
  vocab_data v;
  v.model = "bert";
  v.tokens = {"a", "b"};
  CHECK_THROWS_WITH(make_tokenizer(v), Catch::Contains("'bert'"));
  v.model = "llama";
  v.tokens = {"a", "a"};
  CHECK_THROWS_WITH(make_tokenizer(v), Catch::Contains("duplicate token"));
  v.tokens = {"a", "b"};
  v.scores = {0.0f};
  CHECK_THROWS_WITH(make_tokenizer(v), Catch::Contains("1 scores for 2 tokens"));
}
