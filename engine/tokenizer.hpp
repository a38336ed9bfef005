#pragma once
/// Tokenizer interface and incremental detokenization.
///
/// Tokenization happens at the edge (gateway node); units only see token ids.
/// Implementations are immutable after construction and safe to share across
/// threads.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmux::engine {

using token_id = int32_t;

class tokenizer {
public:
  virtual ~tokenizer() = default;
  /// Text → ids; prepends BOS when `add_bos` and the vocabulary has one.
  [[nodiscard]] virtual std::vector<token_id> encode(std::string_view text, bool add_bos) const = 0;
  /// Like `encode`, but text that spells a special token of the vocabulary
  /// (e.g. "<|im_start|>" in a rendered chat template) becomes that token.
  /// Only for text the server produced (templates), never raw user text.
  [[nodiscard]] virtual std::vector<token_id> encode_with_specials(std::string_view text,
                                                                   bool add_bos) const {
    return encode(text, add_bos);
  }
  /// The raw bytes a token stands for (may be part of a UTF-8 character);
  /// empty for special tokens such as BOS/EOS.
  [[nodiscard]] virtual std::string token_bytes(token_id id) const = 0;
  /// As token_bytes, but a control token gives its spelling ("<|im_end|>"):
  /// llama_token_to_piece with special = true, for `skip_special_tokens: false`.
  [[nodiscard]] virtual std::string token_text(token_id id) const { return token_bytes(id); }
  [[nodiscard]] virtual token_id bos_id() const = 0;  ///< -1 if none
  [[nodiscard]] virtual token_id eos_id() const = 0;  ///< -1 if none
  [[nodiscard]] virtual int32_t vocab_size() const = 0;
  /// Whole-sequence decode (concatenated bytes; invalid UTF-8 is kept as is).
  [[nodiscard]] std::string decode(const std::vector<token_id>& ids) const;
};

/// Turns a stream of token ids into text without ever emitting half a UTF-8
/// character: bytes of an incomplete character wait for the next token.
/// One per streaming request; not thread-safe.
class incremental_decoder {
public:
  /// `specials`: control tokens give their spelling (tokenizer::token_text).
  explicit incremental_decoder(const tokenizer& tok, bool specials = false)
    : tok_(&tok), specials_(specials) {}
  /// Feeds one token; returns the text that became complete (may be empty).
  std::string push(token_id id);
  /// End of stream: returns what is left, with an incomplete tail replaced
  /// by U+FFFD.
  std::string flush();

private:
  const tokenizer* tok_;
  bool specials_ = false;
  std::string pending_;
};

/// Length of the longest prefix of `s` that is complete UTF-8 (an invalid
/// byte counts as complete, so it never blocks the stream).
[[nodiscard]] size_t complete_utf8_prefix(std::string_view s);

}  // namespace llmux::engine
