#pragma once
/// The tokenizer vocabulary of a GGUF model, and the tokenizer it calls for.
///
/// `read_vocab` copies the `tokenizer.ggml.*` metadata out of a GGUF file and
/// fills in what the file leaves out the way llama.cpp (src/llama-vocab.cpp)
/// does, so that `make_tokenizer` reproduces llama.cpp's token ids exactly:
/// SentencePiece ("llama") → `spm_tokenizer`, GPT-2 byte-level BPE ("gpt2")
/// → `bpe_tokenizer`.
///
/// `token_table` and `vocab_tokenizer` are the parts both tokenizers share:
/// token texts, scores and attributes, lookup by text, the split of text at
/// special tokens, BOS/EOS and token_bytes. Everything here is immutable
/// after construction and safe to share across threads.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer.hpp"

namespace llmux::engine {

namespace gguf {
class gguf_file;
}

/// GGUF `tokenizer.ggml.token_type` values.
enum class token_type : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

/// A tokenizer vocabulary as stored in GGUF metadata.
struct vocab_data {
  std::string model;  ///< tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
  std::string pre;    ///< tokenizer.ggml.pre (BPE pre-tokenizer name); empty when absent
  std::vector<std::string> tokens;     ///< text of each token, indexed by id
  std::vector<float> scores;           ///< per token (SentencePiece merge priority); empty: all 0
  std::vector<token_type> types;       ///< per token; empty: all normal
  std::vector<std::string> merges;     ///< BPE merges "left right"; the index is the rank
  token_id bos_id = -1;                ///< -1: none
  token_id eos_id = -1;
  token_id unk_id = -1;
  token_id pad_id = -1;
  bool add_bos = false;           ///< encode(…, add_bos=true) prepends BOS
  bool add_eos = false;           ///< encode(…, add_bos=true) appends EOS
  bool add_space_prefix = false;  ///< SentencePiece: a space before the text (and after each special token)
  std::string chat_template;      ///< tokenizer.chat_template; empty when absent
};

/// Reads the vocabulary of `file`. Keys the file leaves out get llama.cpp's
/// defaults for the model type (SentencePiece: BOS 1, EOS 2, UNK 0, add BOS,
/// add a space prefix; BPE: BOS = EOS = 11, add BOS only for the Llama 3
/// pre-tokenizers); an id outside the vocabulary is ignored, as there.
/// Throws gguf::gguf_error naming the key for a missing or malformed key.
[[nodiscard]] vocab_data read_vocab(const gguf::gguf_file& file);

/// The tokenizer for `vocab`: spm_tokenizer for "llama", bpe_tokenizer for
/// "gpt2". Throws std::runtime_error naming an unsupported model type or
/// pre-tokenizer, or a vocabulary that is inconsistent (duplicate tokens,
/// scores or types of the wrong length).
[[nodiscard]] std::shared_ptr<tokenizer> make_tokenizer(const vocab_data& vocab);

/// Token attributes (bit set), derived from the token types as llama.cpp does,
/// including its fix-ups by text (e.g. "<|im_end|>" is always a control token).
enum token_attr : uint8_t {
  attr_undefined = 0,
  attr_unknown = 1 << 0,
  attr_unused = 1 << 1,
  attr_normal = 1 << 2,
  attr_control = 1 << 3,
  attr_user_defined = 1 << 4,
  attr_byte = 1 << 5,
};

/// The tokens of a vocabulary, shared by both tokenizers.
class token_table {
public:
  /// Throws std::runtime_error for duplicate token texts or per-token arrays
  /// of the wrong length. Empty token texts become "[EMPTY_<id>]" as in llama.cpp.
  explicit token_table(const vocab_data& vocab);

  [[nodiscard]] int32_t size() const { return static_cast<int32_t>(text_.size()); }
  [[nodiscard]] bool contains(token_id id) const { return id >= 0 && id < size(); }
  [[nodiscard]] const std::string& text(token_id id) const { return text_[id]; }
  [[nodiscard]] float score(token_id id) const { return score_.empty() ? 0.0f : score_[id]; }
  [[nodiscard]] uint8_t attrs(token_id id) const { return attr_[id]; }
  /// Id of the token spelled `text`, or -1.
  [[nodiscard]] token_id find(const std::string& text) const;

  /// A run of plain text or one special token (`special` >= 0).
  struct fragment {
    token_id special = -1;
    std::string_view text;  ///< plain text; empty for a special token
  };

  /// Splits `text` at occurrences of special tokens, as llama.cpp's
  /// tokenizer_st_partition: longer special tokens first, each splitting
  /// every plain run that is left. User-defined tokens always split; control
  /// and unknown tokens only with `parse_special`. The views point into `text`.
  [[nodiscard]] std::vector<fragment> split_specials(std::string_view text, bool parse_special) const;

private:
  std::vector<std::string> text_;
  std::vector<float> score_;
  std::vector<uint8_t> attr_;
  std::unordered_map<std::string, token_id> id_by_text_;
  std::vector<token_id> specials_;  ///< control, user-defined and unknown tokens, longest first
};

/// Text being merged, as llama.cpp's llm_symbol list: one symbol per UTF-8
/// character at first (length from the lead byte alone), then adjacent
/// symbols merge leftwards. Views into the text it was made from.
class symbol_chain {
public:
  explicit symbol_chain(std::string_view text);

  struct symbol {
    int prev;       ///< -1 at the start
    int next;       ///< -1 at the end
    size_t offset;  ///< into the text
    size_t n;       ///< bytes; 0 once merged into its left neighbour
  };

  [[nodiscard]] int size() const { return static_cast<int>(symbols_.size()); }
  [[nodiscard]] const symbol& operator[](int i) const { return symbols_[i]; }
  [[nodiscard]] std::string_view text_of(int i) const {
    return text_.substr(symbols_[i].offset, symbols_[i].n);
  }
  /// Appends the symbol after `left` to it.
  void merge_next_into(int left);
  /// Calls `f(i)` for the symbols left, in order.
  template <class F>
  void for_each(F f) const {
    for (int i = symbols_.empty() ? -1 : 0; i != -1; i = symbols_[i].next)
      f(i);
  }

private:
  std::string_view text_;
  std::vector<symbol> symbols_;
};

/// Base of spm_tokenizer and bpe_tokenizer: what llama.cpp's
/// llama_vocab::impl::tokenize and token_to_piece do for every model type.
/// A derived class only turns runs of plain text into ids.
class vocab_tokenizer : public tokenizer {
public:
  /// `add_bos` is llama.cpp's add_special: BOS (and EOS) go in only where the
  /// vocabulary asks for them (vocab_data::add_bos / add_eos), so a model
  /// whose template spells its own start token does not get it twice.
  [[nodiscard]] std::vector<token_id> encode(std::string_view text, bool add_bos) const override;
  /// As llama.cpp's tokenize with parse_special = true.
  [[nodiscard]] std::vector<token_id> encode_with_specials(std::string_view text,
                                                           bool add_bos) const override;
  /// llama_token_to_piece without special: control and unknown tokens give
  /// "", user-defined tokens their text, byte tokens <0xXX> their byte,
  /// normal tokens what the derived class's decoding gives.
  [[nodiscard]] std::string token_bytes(token_id id) const override;
  /// Control tokens give their text; the rest as token_bytes.
  [[nodiscard]] std::string token_text(token_id id) const override;
  [[nodiscard]] token_id bos_id() const override { return bos_; }
  [[nodiscard]] token_id eos_id() const override { return eos_; }
  [[nodiscard]] int32_t vocab_size() const override { return tokens_.size(); }

protected:
  /// `normal_bytes` turns the text of a normal token into its bytes.
  vocab_tokenizer(const vocab_data& vocab, std::string (*normal_bytes)(const std::string& text));

  /// Appends the ids of a run of plain text. `after_special` is true at the
  /// start of the text and right after a special token.
  virtual void encode_plain(std::string_view text, bool after_special,
                            std::vector<token_id>& out) const = 0;

  [[nodiscard]] const token_table& tokens() const { return tokens_; }

private:
  [[nodiscard]] std::vector<token_id> tokenize(std::string_view text, bool add_special,
                                               bool parse_special) const;

  token_table tokens_;
  token_id bos_;
  token_id eos_;
  bool add_bos_;
  bool add_eos_;
  std::vector<std::string> bytes_;  ///< token_bytes of every token
};

}  // namespace llmux::engine
