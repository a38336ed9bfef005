// choice_text: stop strings matched on text across token boundaries, never
// leaking, against a plain reference over the whole text.

#include "actors/gateway/choice_text.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace llmux;
using gateway::choice_text;
using gateway::sink_event;

namespace {

/// Token i is pieces[i] (bytes); no specials.
class piece_tokenizer final : public engine::tokenizer {
public:
  explicit piece_tokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::vector<engine::token_id> encode(std::string_view, bool) const override { return {}; }
  std::string token_bytes(engine::token_id id) const override { return pieces_.at(static_cast<size_t>(id)); }
  engine::token_id bos_id() const override { return -1; }
  engine::token_id eos_id() const override { return -1; }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }

private:
  std::vector<std::string> pieces_;
};

/// Token 0 is a control token "<|end|>": no bytes, spelled by token_text.
class control_tokenizer final : public engine::tokenizer {
public:
  std::vector<engine::token_id> encode(std::string_view, bool) const override { return {}; }
  std::string token_bytes(engine::token_id id) const override { return id == 0 ? "" : "w"; }
  std::string token_text(engine::token_id id) const override { return id == 0 ? "<|end|>" : "w"; }
  engine::token_id bos_id() const override { return -1; }
  engine::token_id eos_id() const override { return 0; }
  int32_t vocab_size() const override { return 2; }
};

sink_event tokens(std::vector<int32_t> ids) {
  sink_event ev;
  for (auto id : ids) {
    ev.tokens.push_back(id);
    engine::token_logprobs lp;
    lp.logprob = -0.25f * static_cast<float>(id);
    ev.logprobs.push_back(lp);
  }
  return ev;
}

/// Every token pushed on its own; returns what was emitted, in order.
std::vector<std::string> feed_one_by_one(choice_text& c, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (auto id : ids) {
    out.push_back(c.push(tokens({id})).text);
    if (c.stopped())
      return out;
  }
  out.push_back(c.finish());
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v)
    s += x;
  return s;
}

}  // namespace

TEST_CASE("a stop string spanning tokens ends the choice without leaking", "[choice_text]") {
  piece_tokenizer tok{{"Hel", "lo ", "Wor", "ld", "!"}};
  choice_text c{tok, {"o W"}, false};
  auto out = feed_one_by_one(c, {0, 1, 2, 3, 4});
  CHECK(c.stopped());
  CHECK(c.tokens() == 3);  // "Hel" "lo " "Wor": the third completes "o W"
  REQUIRE(out.size() == 3);
  CHECK(out[0] == "Hel");
  CHECK(out[1] == "l");  // "o " might start "o W": held
  CHECK(out[2] == "");   // it did: dropped
  CHECK(join(out) == "Hell");
}

TEST_CASE("held text is released when it turns out not to be a stop string", "[choice_text]") {
  piece_tokenizer tok{{"ax", "b", "xy"}};
  choice_text c{tok, {"xyz"}, false};
  CHECK(c.push(tokens({0})).text == "a");  // "x" held
  CHECK(c.push(tokens({1})).text == "xb");
  CHECK(c.push(tokens({2})).text == "");   // "xy" held
  CHECK(c.finish() == "xy");                // ended without the "z"
  CHECK_FALSE(c.stopped());
  CHECK(c.tokens() == 3);
}

TEST_CASE("the earliest of several stop strings wins, inside one token too", "[choice_text]") {
  piece_tokenizer tok{{"abcSTOPdefEND"}};
  choice_text c{tok, {"END", "STOP"}, false};
  CHECK(c.push(tokens({0})).text == "abc");
  CHECK(c.stopped());
  CHECK(c.finish() == "");
}

TEST_CASE("tokens after the stop string in the same event are not consumed", "[choice_text]") {
  piece_tokenizer tok{{"a", "\n", "b", "c"}};
  choice_text c{tok, {"\n"}, true};
  auto d = c.push(tokens({0, 1, 2, 3}));
  CHECK(d.text == "a");
  CHECK(c.tokens() == 2);
  REQUIRE(d.logprobs.size() == 2);
  CHECK(d.logprobs[0].token == "a");
  CHECK(d.logprobs[1].token == "\n");
  CHECK(d.logprobs[1].text_offset == 1);
  CHECK(d.logprobs[1].logprob == -0.25f);
  // Later events (tokens in flight before the cancel lands) change nothing.
  CHECK(c.push(tokens({2})).text.empty());
  CHECK(c.tokens() == 2);
}

TEST_CASE("without stop strings text flows at once, whole UTF-8 characters only", "[choice_text]") {
  piece_tokenizer tok{{"caf", "\xc3", "\xa9", " ok"}};
  choice_text c{tok, {"", ""}, false};  // empty stop strings are ignored
  CHECK(c.push(tokens({0})).text == "caf");
  CHECK(c.push(tokens({1})).text == "");  // half of "é"
  CHECK(c.push(tokens({2})).text == "\xc3\xa9");
  CHECK(c.push(tokens({3})).text == " ok");
  CHECK(c.finish() == "");
}

TEST_CASE("a stop string made of a character split across tokens", "[choice_text]") {
  piece_tokenizer tok{{"x", "\xc3", "\xa9", "y"}};
  choice_text c{tok, {"\xc3\xa9"}, false};
  auto out = feed_one_by_one(c, {0, 1, 2, 3});
  CHECK(c.stopped());
  CHECK(join(out) == "x");
}

TEST_CASE("random texts and stop strings agree with the whole-text reference", "[choice_text]") {
  std::mt19937 rng(5);
  const std::string alphabet = "ab \n";
  auto random_string = [&](size_t lo, size_t hi) {
    std::uniform_int_distribution<size_t> len(lo, hi), ch(0, alphabet.size() - 1);
    std::string s(len(rng), ' ');
    for (auto& x : s)
      x = alphabet[ch(rng)];
    return s;
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> pieces;
    for (int i = 0; i < 12; ++i)
      pieces.push_back(random_string(1, 3));
    std::vector<std::string> stops;
    const int n_stop = std::uniform_int_distribution<int>(1, 3)(rng);
    for (int i = 0; i < n_stop; ++i)
      stops.push_back(random_string(1, 4));
    piece_tokenizer tok{pieces};
    std::vector<int32_t> ids;
    for (int i = 0; i < 12; ++i)
      ids.push_back(i);

    // Reference: the earliest stop occurrence in the whole text, and the
    // fewest tokens whose text contains it.
    std::string text;
    size_t cut = std::string::npos;
    int64_t need = 0;
    for (auto id : ids) {
      text += pieces[static_cast<size_t>(id)];
      ++need;
      for (const auto& s : stops)
        cut = std::min(cut, text.find(s));
      if (cut != std::string::npos)
        break;
    }
    const std::string want = cut == std::string::npos ? text : text.substr(0, cut);

    choice_text c{tok, stops, false};
    auto out = feed_one_by_one(c, ids);
    INFO("trial " << trial);
    REQUIRE(join(out) == want);
    REQUIRE(c.stopped() == (cut != std::string::npos));
    REQUIRE(c.tokens() == need);
    // Never emitted: any prefix of the output containing a stop string.
    for (const auto& s : stops)
      REQUIRE(join(out).find(s) == std::string::npos);
  }
}

TEST_CASE("include_stop_str: the text ends after the stop string instead of before it", "[choice_text]") {
  piece_tokenizer tok{{"Hel", "lo ", "Wor", "ld", "!"}};
  choice_text c{tok, {"o W"}, false, {/*include_stop_str=*/true, false}};
  auto out = feed_one_by_one(c, {0, 1, 2, 3, 4});
  CHECK(c.stopped());
  CHECK(c.tokens() == 3);
  CHECK(join(out) == "Hello W");  // "or" of "Wor" comes after the match: dropped
}

TEST_CASE("skip_special_tokens off: control tokens show as their text", "[choice_text]") {
  control_tokenizer tok;
  choice_text plain{tok, {}, false};
  CHECK(plain.push(tokens({1, 0, 1})).text == "ww");
  choice_text shown{tok, {}, false, {false, /*specials=*/true}};
  CHECK(shown.push(tokens({1, 0, 1})).text == "w<|end|>w");
  // A stop string can match a special token's text when it shows.
  choice_text stop{tok, {"<|end|>"}, false, {false, true}};
  CHECK(stop.push(tokens({1, 0, 1})).text == "w");
  CHECK(stop.stopped());
}
