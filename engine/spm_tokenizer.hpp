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

#include "engine/vocab.hpp"

namespace llmux::engine {

class spm_tokenizer final : public vocab_tokenizer {
public:
  /// Throws std::runtime_error for an inconsistent vocabulary (see token_table).
  explicit spm_tokenizer(const vocab_data& vocab);

private:
  void encode_plain(std::string_view text, bool after_special,
                    std::vector<token_id>& out) const override;

  bool add_space_prefix_;
  std::array<token_id, 256> byte_token_{};  ///< <0xXX> (or the byte itself); else unknown, or -1
};

}  // namespace llmux::engine
