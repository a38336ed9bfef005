#include "engine/bpe_tokenizer.hpp"

#include <array>
#include <cstdio>
#include <queue>
#include <stdexcept>

#include "engine/unicode_categories.hpp"

namespace llmux::engine {

namespace {

/// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other
/// 68 bytes for U+0100.. in byte order, so every byte is a visible character.
struct byte_alphabet {
  std::array<std::string, 256> utf8_of_byte;  ///< byte → its character, UTF-8
  std::array<int, 324> byte_of_cpt;           ///< character → byte, -1 if none

  byte_alphabet() {
    byte_of_cpt.fill(-1);
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      uint32_t cpt = printable ? static_cast<uint32_t>(b) : extra++;
      unicode::append_utf8(utf8_of_byte[b], cpt);
      byte_of_cpt[cpt] = b;
    }
  }
};

const byte_alphabet& alphabet() {
  static const byte_alphabet a;
  return a;
}

std::string byte_encode(const std::string& word) {
  std::string out;
  out.reserve(word.size() * 2);
  for (char c : word)
    out += alphabet().utf8_of_byte[static_cast<unsigned char>(c)];
  return out;
}

/// A token's text back to bytes (llama.cpp's llama_decode_text, including
/// its "[UNK_BYTE_…]" spelling for a character outside the byte alphabet).
std::string byte_decode(const std::string& text) {
  std::string out;
  for (uint32_t cpt : unicode::decode_utf8(text)) {
    if (cpt < 324 && alphabet().byte_of_cpt[cpt] >= 0) {
      out.push_back(static_cast<char>(alphabet().byte_of_cpt[cpt]));
      continue;
    }
    std::string utf8;
    unicode::append_utf8(utf8, cpt);
    out += "[UNK_BYTE_0x";
    for (char c : utf8) {
      char hex[3];
      std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(c));
      out += hex;
    }
    out += text + "]";
  }
  return out;
}

std::string rank_key(const std::string& left, const std::string& right) {
  // Byte-encoded text never holds a raw 0x01, so the key is unambiguous.
  std::string key;
  key.reserve(left.size() + 1 + right.size());
  key.append(left).push_back('\x01');
  key.append(right);
  return key;
}

struct symbol {
  int prev;
  int next;
  size_t offset;  ///< into the word
  size_t n;       ///< bytes; 0 once merged into its left neighbour
};

struct bigram {
  int left;
  int right;
  int rank;
  std::string text;  ///< the merged text, to spot stale entries
};

/// Lowest rank first; on a tie the leftmost pair (llama.cpp's order).
struct bigram_order {
  bool operator()(const bigram& a, const bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

bpe_tokenizer::bpe_tokenizer(const vocab_data& vocab)
    : tokens_(vocab),
      bos_(tokens_.contains(vocab.bos_id) ? vocab.bos_id : -1),
      eos_(tokens_.contains(vocab.eos_id) ? vocab.eos_id : -1),
      add_bos_(vocab.add_bos),
      add_eos_(vocab.add_eos) {
  auto pre = find_bpe_pre_tokenizer(vocab.pre);
  if (!pre)
    throw std::runtime_error("unsupported BPE pre-tokenizer '" + vocab.pre +
                             "' (tokenizer.ggml.pre); llmux implements the gpt2, llama3, qwen2, "
                             "starcoder/smollm and default splits");
  pre_ = *pre;

  ranks_.reserve(vocab.merges.size());
  for (size_t i = 0; i < vocab.merges.size(); ++i) {
    const std::string& m = vocab.merges[i];
    size_t space = m.find(' ', 1);  // from 1, as llama.cpp: a merge may start with a space
    if (space == std::string::npos)
      continue;  // llama.cpp keeps it as ("", ""), which never matches
    ranks_.emplace(rank_key(m.substr(0, space), m.substr(space + 1)), static_cast<int>(i));
  }

  bytes_.resize(tokens_.size());
  for (token_id id = 0; id < tokens_.size(); ++id) {
    const std::string& text = tokens_.text(id);
    uint8_t a = tokens_.attrs(id);
    if (a & (attr_control | attr_unknown))
      continue;
    if (a & attr_user_defined) {
      bytes_[id] = text;
    } else if (a & attr_normal) {
      bytes_[id] = byte_decode(text);
    } else if (a & attr_byte) {
      unsigned v = 0;
      if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%2X>", &v) == 1)
        bytes_[id] = std::string(1, static_cast<char>(v));
    }
  }
}

std::vector<token_id> bpe_tokenizer::encode(std::string_view text, bool add_bos) const {
  return tokenize(text, add_bos, false);
}

std::vector<token_id> bpe_tokenizer::encode_with_specials(std::string_view text,
                                                          bool add_bos) const {
  return tokenize(text, add_bos, true);
}

std::string bpe_tokenizer::token_bytes(token_id id) const {
  return tokens_.contains(id) ? bytes_[id] : std::string();
}

int bpe_tokenizer::merge_rank(const std::string& left, const std::string& right) const {
  auto it = ranks_.find(rank_key(left, right));
  return it == ranks_.end() ? -1 : it->second;
}

std::vector<token_id> bpe_tokenizer::tokenize(std::string_view text, bool add_special,
                                              bool parse_special) const {
  std::vector<token_id> out;
  if (add_special && add_bos_ && bos_ >= 0)
    out.push_back(bos_);
  for (const auto& part : tokens_.split_specials(text, parse_special)) {
    if (part.special >= 0) {
      out.push_back(part.special);
      continue;
    }
    for (const std::string& word : split_bpe_words(pre_.kind, part.text))
      tokenize_word(byte_encode(word), out);
  }
  if (add_special && add_eos_ && eos_ >= 0)
    out.push_back(eos_);
  return out;
}

void bpe_tokenizer::tokenize_word(const std::string& word, std::vector<token_id>& out) const {
  if (pre_.ignore_merges) {
    token_id whole = tokens_.find(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }

  std::vector<symbol> symbols;
  for (size_t off = 0; off < word.size();) {
    size_t len = std::min(unicode::utf8_sequence_length(static_cast<unsigned char>(word[off])),
                          word.size() - off);
    int index = static_cast<int>(symbols.size());
    off += len;
    symbols.push_back({index - 1, off == word.size() ? -1 : index + 1, off - len, len});
  }
  auto text_of = [&](const symbol& s) { return word.substr(s.offset, s.n); };

  std::priority_queue<bigram, std::vector<bigram>, bigram_order> queue;
  auto add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1)
      return;
    std::string l = text_of(symbols[left]);
    std::string r = text_of(symbols[right]);
    int rank = merge_rank(l, r);
    if (rank < 0)
      return;
    queue.push({left, right, rank, l + r});
  };
  for (int i = 1; i < static_cast<int>(symbols.size()); ++i)
    add_bigram(i - 1, i);

  while (!queue.empty()) {
    bigram b = queue.top();
    queue.pop();
    symbol& left = symbols[b.left];
    symbol& right = symbols[b.right];
    if (left.n == 0 || right.n == 0 || text_of(left) + text_of(right) != b.text)
      continue;  // one side changed since this pair was queued
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0)
      symbols[right.next].prev = b.left;
    add_bigram(left.prev, b.left);
    add_bigram(b.left, left.next);
  }

  if (symbols.empty())
    return;
  for (int i = 0; i != -1; i = symbols[i].next) {
    std::string piece = text_of(symbols[i]);
    token_id id = tokens_.find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {  // llama.cpp: keep only the bytes that are tokens themselves
      token_id b = tokens_.find(std::string(1, c));
      if (b >= 0)
        out.push_back(b);
    }
  }
}

}  // namespace llmux::engine
