#pragma once
/// GPT-2 byte-level BPE tokenizer (GGUF tokenizer.ggml.model = "gpt2"), a
/// reimplementation of llama.cpp's llm_tokenizer_bpe that gives the same ids:
///
/// - the pre-tokenizer named by tokenizer.ggml.pre splits the text into words
///   (engine/bpe_pretokenizer.hpp);
/// - each word's bytes are spelled with GPT-2's byte → character table
///   (space → "Ġ", newline → "Ċ", ...);
/// - starting from single characters, the adjacent pair with the lowest merge
///   rank merges first (ties: leftmost);
/// - a final piece that is no token is dropped byte by byte unless a byte is
///   itself a token (llama.cpp's behaviour).
///
/// token_bytes maps a token's characters back through the byte table;
/// control/unknown tokens → "", user-defined tokens → their text.
/// Immutable after construction; safe to share across threads.

#include <string>
#include <unordered_map>
#include <vector>

#include "engine/bpe_pretokenizer.hpp"
#include "engine/vocab.hpp"

namespace llmux::engine {

class bpe_tokenizer final : public vocab_tokenizer {
public:
  /// Throws std::runtime_error for an unsupported pre-tokenizer name or an
  /// inconsistent vocabulary (see token_table).
  explicit bpe_tokenizer(const vocab_data& vocab);

private:
  void encode_plain(std::string_view text, bool after_special,
                    std::vector<token_id>& out) const override;
  /// Appends the tokens of one pre-tokenized word (already byte-encoded).
  void encode_word(const std::string& word, std::vector<token_id>& out) const;
  /// Rank of merging `left` and `right`, or -1.
  [[nodiscard]] int merge_rank(const std::string& left, const std::string& right) const;

  bpe_pre_tokenizer pre_;
  std::unordered_map<std::string, int> ranks_;  ///< "left\x01right" → rank
};

}  // namespace llmux::engine
