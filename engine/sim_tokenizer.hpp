#pragma once
/// The tokenizer of the simulated backend: ids 0..255 are bytes (so any prompt
/// encodes losslessly and counts one token per byte), 256 is BOS, 257 is EOS,
/// and 258.. are whole words that the sim engine emits as output. Output is
/// synthetic text, never a model's answer.

#include "engine/tokenizer.hpp"

namespace llmux::engine {

class sim_tokenizer final : public tokenizer {
public:
  static constexpr token_id bos = 256;
  static constexpr token_id eos = 257;
  static constexpr token_id first_word = 258;

  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool add_bos) const override;
  [[nodiscard]] std::string token_bytes(token_id id) const override;
  [[nodiscard]] token_id bos_id() const override { return bos; }
  [[nodiscard]] token_id eos_id() const override { return eos; }
  [[nodiscard]] int32_t vocab_size() const override;
  /// Number of word tokens (ids first_word .. first_word + word_count() - 1).
  [[nodiscard]] static int32_t word_count();
};

}  // namespace llmux::engine
