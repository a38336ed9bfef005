// complete_utf8_prefix and incremental_decoder, driven by a test vocabulary
// whose tokens are single bytes (plus a few multi-byte pieces), so a UTF-8
// character can be split across tokens at every possible point.

#include "engine/tokenizer.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

using namespace llmux::engine;

namespace {

/// Ids 0..255 are the bytes themselves; 256 is a special token (no bytes);
/// 257.. are the extra pieces given to the constructor.
class byte_tokenizer final : public tokenizer {
public:
  static constexpr token_id special = 256;

  explicit byte_tokenizer(std::vector<std::string> pieces = {}) : pieces_(std::move(pieces)) {}

  std::vector<token_id> encode(std::string_view text, bool add_bos) const override {
    std::vector<token_id> out;
    if (add_bos)
      out.push_back(special);
    for (unsigned char c : text)
      out.push_back(c);
    return out;
  }
  std::string token_bytes(token_id id) const override {
    if (id >= 0 && id < 256)
      return std::string(1, static_cast<char>(id));
    if (id > special && id - special - 1 < static_cast<token_id>(pieces_.size()))
      return pieces_[static_cast<size_t>(id - special - 1)];
    return {};
  }
  token_id bos_id() const override { return special; }
  token_id eos_id() const override { return special; }
  int32_t vocab_size() const override { return 257 + static_cast<int32_t>(pieces_.size()); }

  token_id piece(size_t i) const { return special + 1 + static_cast<token_id>(i); }

private:
  std::vector<std::string> pieces_;
};

token_id byte(unsigned char c) {
  return static_cast<token_id>(c);
}

/// Independent check: `s` is well-formed UTF-8 made of whole characters
/// (shortest forms and surrogates are not the point here; lengths are).
bool whole_characters(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size())
      return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
        return false;
    i += len;
  }
  return true;
}

const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

TEST_CASE("complete_utf8_prefix keeps whole characters and holds an unfinished one",
          "[tokenizer]") {
  CHECK(complete_utf8_prefix("") == 0);
  CHECK(complete_utf8_prefix("abc") == 3);
  // é = C3 A9
  CHECK(complete_utf8_prefix("\xC3") == 0);
  CHECK(complete_utf8_prefix("a\xC3") == 1);
  CHECK(complete_utf8_prefix("a\xC3\xA9") == 3);
  // € = E2 82 AC
  CHECK(complete_utf8_prefix("\xE2") == 0);
  CHECK(complete_utf8_prefix("\xE2\x82") == 0);
  CHECK(complete_utf8_prefix("xy\xE2\x82") == 2);
  CHECK(complete_utf8_prefix("\xE2\x82\xAC") == 3);
  // 😀 = F0 9F 98 80
  CHECK(complete_utf8_prefix("\xF0") == 0);
  CHECK(complete_utf8_prefix("\xF0\x9F") == 0);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98") == 0);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98\x80") == 4);
  CHECK(complete_utf8_prefix("\xC3\xA9\xF0\x9F\x98") == 2);
}

TEST_CASE("complete_utf8_prefix never holds back invalid bytes", "[tokenizer]") {
  // Stray continuation bytes with nothing before them.
  CHECK(complete_utf8_prefix("\x80") == 1);
  CHECK(complete_utf8_prefix("\x80\x80\x80\x80\x80") == 5);
  // Stray continuation bytes after ASCII or after a complete character.
  CHECK(complete_utf8_prefix("a\x80") == 2);
  CHECK(complete_utf8_prefix("a\x80\x80\x80") == 4);
  CHECK(complete_utf8_prefix("\xC3\xA9\x80") == 3);
  CHECK(complete_utf8_prefix("\xE2\x82\xAC\x80\x80") == 5);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98\x80\x80") == 5);
  // Bytes that can never start a character.
  CHECK(complete_utf8_prefix("\xFF") == 1);
  CHECK(complete_utf8_prefix("a\xFE") == 2);
  CHECK(complete_utf8_prefix("\xF8\x80\x80") == 3);
  // C0 and C1 (overlong 2-byte leads) and F5..F7 (beyond U+10FFFF) look like
  // leads but never occur in UTF-8, so nothing is waited for after them.
  CHECK(complete_utf8_prefix("\xC0") == 1);
  CHECK(complete_utf8_prefix("a\xC1") == 2);
  CHECK(complete_utf8_prefix("\xF5") == 1);
  CHECK(complete_utf8_prefix("\xF7\x80\x80") == 3);
  // The valid extremes are still waited for.
  CHECK(complete_utf8_prefix("\xC2") == 0);
  CHECK(complete_utf8_prefix("\xF4\x8F\xBF") == 0);
  // A character cut short by the next one is invalid: it is not waited for.
  CHECK(complete_utf8_prefix("\xE2\x82" "A") == 3);
}

TEST_CASE("decode concatenates token bytes and keeps invalid UTF-8", "[tokenizer]") {
  byte_tokenizer tok({"he", "llo"});
  CHECK(tok.decode({}).empty());
  CHECK(tok.decode({tok.piece(0), tok.piece(1), byte(' '), byte(0xC3), byte(0xA9)}) ==
        "hello \xC3\xA9");
  CHECK(tok.decode({byte(0xE2), byte_tokenizer::special, byte(0x82)}) == "\xE2\x82");
}

TEST_CASE("incremental_decoder waits for the rest of a character split across tokens",
          "[tokenizer]") {
  byte_tokenizer tok;
  incremental_decoder dec(tok);
  CHECK(dec.push(byte('a')) == "a");
  CHECK(dec.push(byte(0xC3)).empty());
  CHECK(dec.push(byte(0xA9)) == "\xC3\xA9");
  CHECK(dec.push(byte(0xE2)).empty());
  CHECK(dec.push(byte(0x82)).empty());
  CHECK(dec.push(byte(0xAC)) == "\xE2\x82\xAC");
  CHECK(dec.push(byte(0xF0)).empty());
  CHECK(dec.push(byte(0x9F)).empty());
  CHECK(dec.push(byte(0x98)).empty());
  CHECK(dec.push(byte(0x80)) == "\xF0\x9F\x98\x80");
  CHECK(dec.flush().empty());
}

TEST_CASE("incremental_decoder streams mixed text byte by byte without half characters",
          "[tokenizer]") {
  byte_tokenizer tok;
  const std::string text = "h\xC3\xA9llo \xE2\x82\xAC 5, \xF0\x9F\x98\x80!\xE4\xB8\xAD";
  incremental_decoder dec(tok);
  std::string joined;
  int empty_pushes = 0;
  for (auto id : tok.encode(text, false)) {
    auto piece = dec.push(id);
    INFO("piece: " << piece);
    CHECK(whole_characters(piece));
    empty_pushes += piece.empty() ? 1 : 0;
    joined += piece;
  }
  joined += dec.flush();
  CHECK(joined == text);
  // Every byte of a character but its last gives nothing:
  // 1 (é) + 2 (€) + 3 (😀) + 2 (中).
  CHECK(empty_pushes == 8);
}

TEST_CASE("incremental_decoder joins multi-byte tokens that split a character",
          "[tokenizer]") {
  byte_tokenizer tok({"a\xE2", "\x82\xAC b", "\xF0\x9F", "\x98\x80\xC3", "\xA9"});
  incremental_decoder dec(tok);
  CHECK(dec.push(tok.piece(0)) == "a");
  CHECK(dec.push(tok.piece(1)) == "\xE2\x82\xAC b");
  CHECK(dec.push(tok.piece(2)).empty());
  CHECK(dec.push(tok.piece(3)) == "\xF0\x9F\x98\x80");
  CHECK(dec.push(tok.piece(4)) == "\xC3\xA9");
}

TEST_CASE("special tokens add nothing and do not disturb a pending character",
          "[tokenizer]") {
  byte_tokenizer tok;
  incremental_decoder dec(tok);
  CHECK(dec.push(byte(0xE2)).empty());
  CHECK(dec.push(byte_tokenizer::special).empty());
  CHECK(dec.push(byte(0x82)).empty());
  CHECK(dec.push(byte_tokenizer::special).empty());
  CHECK(dec.push(byte(0xAC)) == "\xE2\x82\xAC");
}

TEST_CASE("flush replaces an unfinished tail with U+FFFD", "[tokenizer]") {
  byte_tokenizer tok;
  SECTION("nothing pending") {
    incremental_decoder dec(tok);
    CHECK(dec.flush().empty());
    CHECK(dec.push(byte('x')) == "x");
    CHECK(dec.flush().empty());
  }
  SECTION("two of three bytes") {
    incremental_decoder dec(tok);
    CHECK(dec.push(byte('x')) == "x");
    CHECK(dec.push(byte(0xE2)).empty());
    CHECK(dec.push(byte(0x82)).empty());
    CHECK(dec.flush() == replacement);
    // The tail is gone: a second flush and the next text see nothing of it.
    CHECK(dec.flush().empty());
    CHECK(dec.push(byte('y')) == "y");
  }
  SECTION("three of four bytes") {
    incremental_decoder dec(tok);
    (void)dec.push(byte(0xF0));
    (void)dec.push(byte(0x9F));
    (void)dec.push(byte(0x98));
    CHECK(dec.flush() == replacement);
  }
}

TEST_CASE("stray continuation bytes and invalid lead bytes do not block the stream",
          "[tokenizer]") {
  byte_tokenizer tok;
  incremental_decoder dec(tok);
  CHECK(dec.push(byte(0x80)) == "\x80");
  CHECK(dec.push(byte('a')) == "a");
  CHECK(dec.push(byte(0xBF)) == "\xBF");
  CHECK(dec.push(byte(0xFF)) == "\xFF");
  CHECK(dec.push(byte(0xF8)) == "\xF8");
  CHECK(dec.push(byte(0xC0)) == "\xC0");
  CHECK(dec.push(byte(0xF5)) == "\xF5");
  CHECK(dec.push(byte(0xC3)).empty());
  CHECK(dec.push(byte(0xA9)) == "\xC3\xA9");
  CHECK(dec.push(byte(0x80)) == "\x80");
  // A character interrupted by ASCII comes out as it is, with the ASCII.
  CHECK(dec.push(byte(0xE2)).empty());
  CHECK(dec.push(byte('b')) == "\xE2" "b");
  CHECK(dec.flush().empty());
}

TEST_CASE("incremental_decoder loses no bytes on random input", "[tokenizer]") {
  byte_tokenizer tok;
  std::mt19937 rng(20240611);
  // Weighted towards UTF-8 structure bytes so that splits happen often.
  const unsigned char alphabet[] = {'a', ' ', 0x80, 0x9F, 0xBF, 0xC0, 0xC3, 0xE2,
                                    0xF0, 0xF4, 0xF5, 0xF8, 0xFF};
  for (int round = 0; round < 500; ++round) {
    std::string input;
    std::string output;
    incremental_decoder dec(tok);
    auto len = std::uniform_int_distribution<int>(0, 24)(rng);
    for (int i = 0; i < len; ++i) {
      auto c = alphabet[std::uniform_int_distribution<size_t>(0, sizeof(alphabet) - 1)(rng)];
      input.push_back(static_cast<char>(c));
      output += dec.push(byte(c));
      // What has come out is always a prefix of what went in, at most one
      // character (3 bytes of a 4-byte one) behind.
      REQUIRE(input.compare(0, output.size(), output) == 0);
      REQUIRE(input.size() - output.size() <= 3);
    }
    auto held = input.substr(output.size());
    auto tail = dec.flush();
    INFO("round " << round);
    if (held.empty()) {
      CHECK(tail.empty());
    } else {
      // What was held is a lead byte and fewer continuation bytes than it needs.
      auto lead = static_cast<unsigned char>(held[0]);
      CHECK(lead >= 0xC2);
      CHECK(lead <= 0xF4);
      CHECK(tail == replacement);
    }
  }
}
