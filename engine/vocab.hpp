#pragma once
/// The tokenizer vocabulary of a GGUF model, and the tokenizer it calls for.
///
/// `read_vocab` copies the `tokenizer.ggml.*` metadata out of a GGUF file and
/// fills in what the file leaves out the way llama.cpp (src/llama-vocab.cpp)
/// does, so that `make_tokenizer` reproduces llama.cpp's token ids exactly:
/// SentencePiece ("llama") → `spm_tokenizer`, GPT-2 byte-level BPE ("gpt2")
/// → `bpe_tokenizer`.
///
/// `token_table` is the part both tokenizers share: token texts, scores and
/// attributes, lookup by text, and the split of text at special tokens.
/// Everything here is immutable after construction and safe to share across
/// threads.

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

}  // namespace llmux::engine
