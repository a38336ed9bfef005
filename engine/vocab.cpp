#include "engine/vocab.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "engine/bpe_pretokenizer.hpp"
#include "engine/bpe_tokenizer.hpp"
#include "engine/gguf.hpp"
#include "engine/spm_tokenizer.hpp"
#include "engine/unicode_categories.hpp"

namespace llmux::engine {

namespace {

const std::string key_model = "tokenizer.ggml.model";
const std::string key_pre = "tokenizer.ggml.pre";
const std::string key_tokens = "tokenizer.ggml.tokens";
const std::string key_scores = "tokenizer.ggml.scores";
const std::string key_types = "tokenizer.ggml.token_type";
const std::string key_merges = "tokenizer.ggml.merges";

/// Per-token numeric array `key`, checked to cover every token.
const std::vector<double>* per_token_numbers(const gguf::gguf_file& file, const std::string& key,
                                             size_t n_tokens) {
  const auto* values = file.get_numbers(key);
  if (values && values->size() < n_tokens)
    file.fail(key, "has " + std::to_string(values->size()) + " entries for " +
                       std::to_string(n_tokens) + " tokens");
  return values;
}

/// `id` from `key` when the file has it and it names a token; else `fallback`
/// (llama.cpp warns about an out-of-range id and keeps its default).
token_id special_id(const gguf::gguf_file& file, const std::string& key, token_id fallback,
                    size_t n_tokens) {
  if (fallback >= static_cast<int64_t>(n_tokens))
    fallback = -1;
  auto id = file.get_int(key);
  if (!id || *id < 0 || *id >= static_cast<int64_t>(n_tokens))
    return fallback;
  return static_cast<token_id>(*id);
}

token_type to_token_type(double v) {
  if (v >= 0 && v <= 6 && v == static_cast<int>(v))
    return static_cast<token_type>(static_cast<int>(v));
  return token_type::undefined;  // llama.cpp: an unknown type is "undefined"
}

uint8_t attr_of(token_type t) {
  switch (t) {
    case token_type::normal: return attr_normal;
    case token_type::unknown: return attr_unknown;
    case token_type::control: return attr_control;
    case token_type::user_defined: return attr_user_defined;
    case token_type::unused: return attr_unused;
    case token_type::byte: return attr_byte;
    case token_type::undefined: break;
  }
  return attr_undefined;
}

/// Texts llama.cpp always treats as control tokens whatever their type (end
/// of turn/generation and fill-in-the-middle markers), from
/// llama_vocab::impl::load.
bool looks_like_control(const std::string& t) {
  static const char* const texts[] = {
      // end of turn / generation
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
      "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
      "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
      "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>", "[e~[",
      // fill-in-the-middle
      "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xE2\x96\x81<PRE>",
      "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",
      "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>",
      "<fim_middle>", "<MID>", "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", "<|fim_pad|>",
      "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
      "<REPO>", "<reponame>", "<|file_sep|>",
      "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
      "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
      "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>",
  };
  for (const char* c : texts)
    if (t == c)
      return true;
  return false;
}

}  // namespace

vocab_data read_vocab(const gguf::gguf_file& file) {
  vocab_data v;
  auto model = file.get_string(key_model);
  if (!model)
    file.fail(key_model, "missing: the file has no tokenizer");
  v.model = *model;
  v.pre = file.get_string(key_pre).value_or("");

  const auto* tokens = file.get_strings(key_tokens);
  if (!tokens)
    file.fail(key_tokens, "missing: the file has no tokenizer vocabulary");
  if (tokens->empty())
    file.fail(key_tokens, "empty vocabulary");
  if (tokens->size() > static_cast<size_t>(INT32_MAX))
    file.fail(key_tokens, "more tokens than token ids");
  v.tokens = *tokens;
  const size_t n = v.tokens.size();

  if (const auto* scores = per_token_numbers(file, key_scores, n))
    v.scores.assign(scores->begin(), scores->begin() + static_cast<ptrdiff_t>(n));
  if (const auto* types = per_token_numbers(file, key_types, n)) {
    v.types.reserve(n);
    for (size_t i = 0; i < n; ++i)
      v.types.push_back(to_token_type((*types)[i]));
  }

  // Defaults by model type, as llama.cpp; the file's keys override them.
  token_id bos = -1, eos = -1, unk = -1;
  if (v.model == "llama") {
    bos = 1;
    eos = 2;
    unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
  } else if (v.model == "gpt2") {
    bos = 11;
    eos = 11;
    if (auto pre = find_bpe_pre_tokenizer(v.pre))
      v.add_bos = pre->add_bos;
    const auto* merges = file.get_strings(key_merges);
    if (!merges)
      file.fail(key_merges, "missing: a gpt2 (byte-level BPE) vocabulary needs merges");
    v.merges = *merges;
  }
  v.bos_id = special_id(file, "tokenizer.ggml.bos_token_id", bos, n);
  v.eos_id = special_id(file, "tokenizer.ggml.eos_token_id", eos, n);
  v.unk_id = special_id(file, "tokenizer.ggml.unknown_token_id", unk, n);
  v.pad_id = special_id(file, "tokenizer.ggml.padding_token_id", -1, n);
  v.add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(v.add_bos);
  v.add_eos = file.get_bool("tokenizer.ggml.add_eos_token").value_or(v.add_eos);
  v.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(v.add_space_prefix);
  v.chat_template = file.get_string("tokenizer.chat_template").value_or("");
  return v;
}

std::shared_ptr<tokenizer> make_tokenizer(const vocab_data& vocab) {
  if (vocab.model == "llama")
    return std::make_shared<spm_tokenizer>(vocab);
  if (vocab.model == "gpt2")
    return std::make_shared<bpe_tokenizer>(vocab);
  throw std::runtime_error("unsupported tokenizer model '" + vocab.model +
                           "' (llmux supports 'llama' (SentencePiece) and 'gpt2' (byte-level BPE))");
}

token_table::token_table(const vocab_data& vocab) {
  const size_t n = vocab.tokens.size();
  if (!vocab.scores.empty() && vocab.scores.size() != n)
    throw std::runtime_error("vocabulary has " + std::to_string(vocab.scores.size()) +
                             " scores for " + std::to_string(n) + " tokens");
  if (!vocab.types.empty() && vocab.types.size() != n)
    throw std::runtime_error("vocabulary has " + std::to_string(vocab.types.size()) +
                             " token types for " + std::to_string(n) + " tokens");
  text_.reserve(n);
  attr_.reserve(n);
  score_ = vocab.scores;
  id_by_text_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string t = vocab.tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : vocab.tokens[i];
    auto [it, fresh] = id_by_text_.emplace(t, static_cast<token_id>(i));
    if (!fresh)
      throw std::runtime_error("duplicate token in vocabulary: '" + t + "' has ids " +
                               std::to_string(it->second) + " and " + std::to_string(i));
    uint8_t a = vocab.types.empty() ? uint8_t{attr_normal} : attr_of(vocab.types[i]);
    if (looks_like_control(t))
      a |= attr_control;
    if ((a & attr_control) && t.find("unused") != std::string::npos)
      a |= attr_unused;
    // llama.cpp's gpt-oss fix-up: these always render.
    if (t == "<|channel|>" || t == "<|message|>" || t == "<|start|>" || t == "<|constrain|>")
      a = attr_user_defined;
    text_.push_back(std::move(t));
    attr_.push_back(a);
  }

  for (token_id id = 0; id < size(); ++id)
    if (attr_[id] & (attr_control | attr_user_defined | attr_unknown))
      specials_.push_back(id);
  // Longest first (llama.cpp leaves ties in unspecified order; lower id first here).
  std::stable_sort(specials_.begin(), specials_.end(), [this](token_id a, token_id b) {
    return text_[a].size() > text_[b].size();
  });
}

token_id token_table::find(const std::string& text) const {
  auto it = id_by_text_.find(text);
  return it == id_by_text_.end() ? -1 : it->second;
}

std::vector<token_table::fragment> token_table::split_specials(std::string_view text,
                                                               bool parse_special) const {
  std::vector<fragment> parts;
  if (text.empty())
    return parts;
  parts.push_back({-1, text});
  std::vector<fragment> next;
  for (token_id special : specials_) {
    if (!parse_special && (attr_[special] & (attr_control | attr_unknown)))
      continue;  // user-defined tokens split even without parse_special, as in llama.cpp
    const std::string& needle = text_[special];
    next.clear();
    for (const fragment& f : parts) {
      if (f.special >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view rest = f.text;
      for (size_t at; (at = rest.find(needle)) != std::string_view::npos;) {
        if (at > 0)
          next.push_back({-1, rest.substr(0, at)});
        next.push_back({special, {}});
        rest.remove_prefix(at + needle.size());
      }
      if (!rest.empty())
        next.push_back({-1, rest});
    }
    parts.swap(next);
  }
  return parts;
}

symbol_chain::symbol_chain(std::string_view text) : text_(text) {
  for (size_t off = 0; off < text.size();) {
    size_t len = std::min(unicode::utf8_sequence_length(static_cast<unsigned char>(text[off])),
                          text.size() - off);
    int index = static_cast<int>(symbols_.size());
    off += len;
    symbols_.push_back({index - 1, off == text.size() ? -1 : index + 1, off - len, len});
  }
}

void symbol_chain::merge_next_into(int left) {
  symbol& l = symbols_[left];
  symbol& r = symbols_[l.next];
  l.n += r.n;
  r.n = 0;
  l.next = r.next;
  if (r.next >= 0)
    symbols_[r.next].prev = left;
}

vocab_tokenizer::vocab_tokenizer(const vocab_data& vocab,
                                 std::string (*normal_bytes)(const std::string& text))
    : tokens_(vocab),
      bos_(tokens_.contains(vocab.bos_id) ? vocab.bos_id : -1),
      eos_(tokens_.contains(vocab.eos_id) ? vocab.eos_id : -1),
      add_bos_(vocab.add_bos),
      add_eos_(vocab.add_eos) {
  // Computed once, as llama.cpp's token-to-piece cache.
  bytes_.resize(tokens_.size());
  for (token_id id = 0; id < tokens_.size(); ++id) {
    const std::string& text = tokens_.text(id);
    uint8_t a = tokens_.attrs(id);
    if (a & (attr_control | attr_unknown))
      continue;
    if (a & attr_user_defined) {
      bytes_[id] = text;
    } else if (a & attr_normal) {
      bytes_[id] = normal_bytes(text);
    } else if (a & attr_byte) {
      unsigned v = 0;
      if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%2X>", &v) == 1)
        bytes_[id] = std::string(1, static_cast<char>(v));
    }
  }
}

std::vector<token_id> vocab_tokenizer::encode(std::string_view text, bool add_bos) const {
  return tokenize(text, add_bos, false);
}

std::vector<token_id> vocab_tokenizer::encode_with_specials(std::string_view text,
                                                            bool add_bos) const {
  return tokenize(text, add_bos, true);
}

std::string vocab_tokenizer::token_bytes(token_id id) const {
  return tokens_.contains(id) ? bytes_[id] : std::string();
}

std::string vocab_tokenizer::token_text(token_id id) const {
  if (tokens_.contains(id) && (tokens_.attrs(id) & attr_control) != 0)
    return tokens_.text(id);
  return token_bytes(id);
}

std::vector<token_id> vocab_tokenizer::tokenize(std::string_view text, bool add_special,
                                                bool parse_special) const {
  std::vector<token_id> out;
  if (add_special && add_bos_ && bos_ >= 0)
    out.push_back(bos_);
  bool after_special = true;  // the start of the text counts as one
  for (const auto& part : tokens_.split_specials(text, parse_special)) {
    if (part.special >= 0) {
      out.push_back(part.special);
      after_special = true;
    } else {
      encode_plain(part.text, after_special, out);
      after_special = false;
    }
  }
  if (add_special && add_eos_ && eos_ >= 0)
    out.push_back(eos_);
  return out;
}

}  // namespace llmux::engine
