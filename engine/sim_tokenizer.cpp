#include "engine/sim_tokenizer.hpp"

#include <array>

namespace llmux::engine {

namespace {

// A small story vocabulary; the leading space makes the output read as words.
constexpr std::array<const char*, 64> words = {
  " once", " upon", " a", " time", " there", " was", " little", " girl",
  " named", " Lily", " she", " liked", " to", " play", " in", " the",
  " park", " with", " her", " dog", " one", " day", " they", " found",
  " big", " red", " ball", " and", " were", " very", " happy", " sun",
  " was", " warm", " bird", " sang", " song", " tree", " under", " blue",
  " sky", " friend", " Tom", " came", " too", " said", " hello", " smiled",
  " ran", " fast", " home", " mom", " made", " cake", " it", " good",
  " went", " sleep", " dream", " of", " stars", ",", ".", "!",
};

}  // namespace

std::vector<token_id> sim_tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<token_id> out;
  out.reserve(text.size() + 1);
  if (add_bos)
    out.push_back(bos);
  for (unsigned char c : text)
    out.push_back(static_cast<token_id>(c));
  return out;
}

std::string sim_tokenizer::token_bytes(token_id id) const {
  if (id >= 0 && id < 256)
    return std::string(1, static_cast<char>(id));
  if (id >= first_word && id < first_word + word_count())
    return words[static_cast<size_t>(id - first_word)];
  return {};  // BOS, EOS and out-of-range ids carry no text
}

int32_t sim_tokenizer::vocab_size() const {
  return first_word + word_count();
}

int32_t sim_tokenizer::word_count() {
  return static_cast<int32_t>(words.size());
}

}  // namespace llmux::engine
