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

bpe_tokenizer::bpe_tokenizer(const vocab_data& vocab) : vocab_tokenizer(vocab, byte_decode) {
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
}

int bpe_tokenizer::merge_rank(const std::string& left, const std::string& right) const {
  auto it = ranks_.find(rank_key(left, right));
  return it == ranks_.end() ? -1 : it->second;
}

void bpe_tokenizer::encode_plain(std::string_view text, bool /*after_special*/,
                                 std::vector<token_id>& out) const {
  for (const std::string& word : split_bpe_words(pre_.kind, text))
    encode_word(byte_encode(word), out);
}

void bpe_tokenizer::encode_word(const std::string& word, std::vector<token_id>& out) const {
  if (pre_.ignore_merges) {
    token_id whole = tokens().find(word);
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }

  symbol_chain chain(word);
  std::priority_queue<bigram, std::vector<bigram>, bigram_order> queue;
  auto add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1)
      return;
    std::string l(chain.text_of(left));
    std::string r(chain.text_of(right));
    int rank = merge_rank(l, r);
    if (rank >= 0)
      queue.push({left, right, rank, l + r});
  };
  for (int i = 1; i < chain.size(); ++i)
    add_bigram(i - 1, i);

  while (!queue.empty()) {
    bigram b = queue.top();
    queue.pop();
    if (chain[b.left].n == 0 || chain[b.right].n == 0)
      continue;
    std::string now;
    now.append(chain.text_of(b.left)).append(chain.text_of(b.right));
    if (now != b.text)
      continue;  // one side changed since this pair was queued
    chain.merge_next_into(b.left);
    add_bigram(chain[b.left].prev, b.left);
    add_bigram(b.left, chain[b.left].next);
  }

  chain.for_each([&](int i) {
    std::string piece(chain.text_of(i));
    token_id id = tokens().find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    for (char c : piece) {  // llama.cpp: keep only the bytes that are tokens themselves
      token_id b = tokens().find(std::string(1, c));
      if (b >= 0)
        out.push_back(b);
    }
  });
}

}  // namespace llmux::engine
