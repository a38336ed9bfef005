#pragma once
/// The word splitting that comes before byte-level BPE merges, chosen by the
/// GGUF key tokenizer.ggml.pre exactly as llama.cpp chooses it
/// (llm_tokenizer_bpe in src/llama-vocab.cpp, unicode_regex_split in
/// src/unicode.cpp).
///
/// llama.cpp runs a list of regexes, each splitting the pieces the previous
/// one left (matches and the text between them both become pieces). The
/// regexes are written out here by hand over Unicode categories; each
/// function's comment gives the regex it implements.
///
/// Pure functions; safe from any thread.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmux::engine {

enum class bpe_pre_kind {
  /// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  gpt2,
  /// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  ///          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  llama3,
  /// Qwen2: the Llama 3 regex with \p{N} (one digit a piece) for \p{N}{1,3}.
  qwen2,
  /// StarCoder / SmolLM: \p{N} (every digit its own piece), then GPT-2.
  starcoder,
  /// llama.cpp's fallback: [\p{P}\$\+<=>\^~\|]+, then GPT-2, then \p{N}+,
  /// then [0-9][0-9][0-9].
  fallback,
};

/// What a tokenizer.ggml.pre name selects in llama.cpp.
struct bpe_pre_tokenizer {
  bpe_pre_kind kind = bpe_pre_kind::fallback;
  bool ignore_merges = false;  ///< a word that is itself a token skips the merges (Llama 3)
  bool add_bos = false;        ///< llama.cpp's add-BOS default for this pre-tokenizer
};

/// The pre-tokenizer llama.cpp uses for `pre` ("" and "default" → fallback);
/// nullopt for a name llmux does not implement.
[[nodiscard]] std::optional<bpe_pre_tokenizer> find_bpe_pre_tokenizer(std::string_view pre);

/// Splits `text` into words (UTF-8). Invalid UTF-8 bytes come out as U+FFFD,
/// as in llama.cpp, so the words concatenate to `text` only for valid input.
[[nodiscard]] std::vector<std::string> split_bpe_words(bpe_pre_kind kind, std::string_view text);

}  // namespace llmux::engine
