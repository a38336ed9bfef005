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
#include "engine/tokenizer.hpp"
#include "engine/vocab.hpp"

namespace llmux::engine {

class bpe_tokenizer final : public tokenizer {
public:
  /// Throws std::runtime_error for an unsupported pre-tokenizer name or an
  /// inconsistent vocabulary (see token_table).
  explicit bpe_tokenizer(const vocab_data& vocab);

  /// `add_bos` is llama.cpp's add_special: BOS (and EOS) go in only where the
  /// vocabulary asks for them (tokenizer.ggml.add_bos_token / add_eos_token,
  /// or the pre-tokenizer's default, e.g. Llama 3).
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
  /// Appends the tokens of one pre-tokenized word (already byte-encoded).
  void tokenize_word(const std::string& word, std::vector<token_id>& out) const;
  /// Rank of merging `left` and `right`, or -1.
  [[nodiscard]] int merge_rank(const std::string& left, const std::string& right) const;

  token_table tokens_;
  bpe_pre_tokenizer pre_;
  token_id bos_;
  token_id eos_;
  bool add_bos_;
  bool add_eos_;
  std::unordered_map<std::string, int> ranks_;  ///< "left\x01right" → rank
  std::vector<std::string> bytes_;              ///< token_bytes of every token
};

}  // namespace llmux::engine
