#pragma once
/// SentencePiece-style tokenizer (GGUF tokenizer.ggml.model = "llama"), a
/// reimplementation of llama.cpp's llm_tokenizer_spm that gives the same ids:
///
/// - spaces become "▁" (U+2581); with add_space_prefix a space goes before
///   the text and after every special token;
/// - starting from single UTF-8 characters, the adjacent pair whose
///   concatenation is the best-scoring token merges first (ties: leftmost);
/// - a piece that is no token falls back to its byte tokens <0xXX>.
///
/// token_bytes: "▁" → " ", <0xXX> → that byte, control/unknown tokens → "".
/// Immutable after construction; safe to share across threads.

#include <array>
#include <string>
#include <vector>

#include "engine/tokenizer.hpp"
#include "engine/vocab.hpp"

namespace llmux::engine {

class spm_tokenizer final : public tokenizer {
public:
  /// Throws std::runtime_error for an inconsistent vocabulary (see token_table).
  explicit spm_tokenizer(const vocab_data& vocab);

  /// `add_bos` is llama.cpp's add_special: BOS (and EOS) go in only where the
  /// vocabulary asks for them (tokenizer.ggml.add_bos_token / add_eos_token).
  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool add_bos) const override;
  [[nodiscard]] std::vector<token_id> encode_with_specials(std::string_view text,
                                                           bool add_bos) const override;
  [[nodiscard]] std::string token_bytes(token_id id) const override;
  [[nodiscard]] token_id bos_id() const override { return bos_; }
  [[nodiscard]] token_id eos_id() const override { return eos_; }
  [[nodiscard]] int32_t vocab_size() const override { return tokens_.size(); }

private:
  [[nodiscard]] std::vector<token_id> tokenize(std::string_view text, bool add_special,
                                               bool parse_special) const;
  /// Appends the tokens of `text` (spaces already escaped as "▁").
  void tokenize_piece(const std::string& text, std::vector<token_id>& out) const;

  token_table tokens_;
  token_id bos_;
  token_id eos_;
  bool add_bos_;
  bool add_eos_;
  bool add_space_prefix_;
  std::array<token_id, 256> byte_token_{};  ///< <0xXX> (or the byte itself); -1 if neither
  std::vector<std::string> bytes_;          ///< token_bytes of every token
};

}  // namespace llmux::engine
