#include "engine/sim_tokenizer.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace llmux::engine;

TEST_CASE("sim_tokenizer: one token per byte, round trip of UTF-8 text", "[sim_tokenizer]") {
  sim_tokenizer tok;
  // h é(2) l l o ' ' €(3) ' ' 😀(4) = 1+2+3+1+3+1+4 = 15 bytes
  const std::string text = "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80";
  auto ids = tok.encode(text, false);
  REQUIRE(ids.size() == 15);
  CHECK(ids[0] == 'h');
  CHECK(ids[1] == 0xC3);
  CHECK(ids[2] == 0xA9);
  CHECK(ids[11] == 0xF0);
  CHECK(ids[14] == 0x80);
  CHECK(tok.decode(ids) == text);
}

TEST_CASE("sim_tokenizer: every byte value round trips", "[sim_tokenizer]") {
  sim_tokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b)
    all.push_back(static_cast<char>(b));
  auto ids = tok.encode(all, false);
  REQUIRE(ids.size() == 256);
  for (int b = 0; b < 256; ++b) {
    CHECK(ids[static_cast<size_t>(b)] == b);
    CHECK(tok.token_bytes(b) == std::string(1, static_cast<char>(b)));
  }
  CHECK(tok.decode(ids) == all);
  CHECK(tok.encode("", false).empty());
}

TEST_CASE("sim_tokenizer: BOS is prepended on request and decodes to nothing",
          "[sim_tokenizer]") {
  sim_tokenizer tok;
  CHECK(tok.bos_id() == 256);
  CHECK(tok.eos_id() == 257);
  auto ids = tok.encode("hi", true);
  REQUIRE(ids.size() == 3);
  CHECK(ids[0] == 256);
  CHECK(ids[1] == 'h');
  CHECK(ids[2] == 'i');
  CHECK(tok.decode(ids) == "hi");
  CHECK(tok.encode("", true) == std::vector<token_id>{256});
}

TEST_CASE("sim_tokenizer: special and out-of-range ids decode to empty", "[sim_tokenizer]") {
  sim_tokenizer tok;
  CHECK(tok.token_bytes(sim_tokenizer::bos).empty());
  CHECK(tok.token_bytes(sim_tokenizer::eos).empty());
  CHECK(tok.token_bytes(-1).empty());
  CHECK(tok.token_bytes(tok.vocab_size()).empty());
  CHECK(tok.token_bytes(1 << 30).empty());
  CHECK(tok.decode({'a', sim_tokenizer::eos, 'b', sim_tokenizer::bos}) == "ab");
}

TEST_CASE("sim_tokenizer: word tokens follow the specials and carry text", "[sim_tokenizer]") {
  sim_tokenizer tok;
  REQUIRE(sim_tokenizer::word_count() > 0);
  CHECK(sim_tokenizer::first_word == 258);
  CHECK(tok.vocab_size() == 258 + sim_tokenizer::word_count());
  // The first word of the story vocabulary.
  CHECK(tok.token_bytes(sim_tokenizer::first_word) == " once");
  for (token_id id = sim_tokenizer::first_word; id < tok.vocab_size(); ++id) {
    INFO("id " << id);
    CHECK_FALSE(tok.token_bytes(id).empty());
  }
  // Words decode in order, concatenated.
  CHECK(tok.decode({sim_tokenizer::first_word, sim_tokenizer::first_word + 1}) == " once upon");
}
