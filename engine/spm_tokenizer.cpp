#include "engine/spm_tokenizer.hpp"

#include <cstdio>
#include <map>
#include <queue>

#include "engine/unicode_categories.hpp"

namespace llmux::engine {

namespace {

const std::string escaped_space = "\xE2\x96\x81";  // "▁", U+2581

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t at; (at = s.find(from, pos)) != std::string::npos; pos = at + from.size())
    out.append(s, pos, at - pos).append(to);
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

/// A stretch of the text in the merge loop; a linked list over the vector.
struct symbol {
  int prev;
  int next;
  size_t offset;  ///< into the text
  size_t n;       ///< bytes; 0 once merged into its left neighbour
};

struct bigram {
  int left;
  int right;
  float score;
  size_t size;  ///< bytes of the merged text, to spot stale entries
};

/// Highest score first; on a tie the leftmost pair (llama.cpp's order).
struct bigram_order {
  bool operator()(const bigram& a, const bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

/// One run of the merge loop over one piece of text.
class spm_session {
public:
  spm_session(const token_table& tokens, const std::array<token_id, 256>& byte_token,
              const std::string& text)
      : tokens_(tokens), byte_token_(byte_token), text_(text) {}

  void run(std::vector<token_id>& out) {
    // Split into UTF-8 characters (by lead byte only, as llama.cpp).
    for (size_t off = 0; off < text_.size();) {
      size_t len = std::min(unicode::utf8_sequence_length(static_cast<unsigned char>(text_[off])),
                            text_.size() - off);
      int index = static_cast<int>(symbols_.size());
      off += len;
      symbols_.push_back({index - 1, off == text_.size() ? -1 : index + 1, off - len, len});
    }
    for (int i = 1; i < static_cast<int>(symbols_.size()); ++i)
      try_add_bigram(i - 1, i);

    while (!queue_.empty()) {
      bigram b = queue_.top();
      queue_.pop();
      symbol& left = symbols_[b.left];
      symbol& right = symbols_[b.right];
      if (left.n == 0 || right.n == 0 || left.n + right.n != b.size)
        continue;  // one side was merged elsewhere since
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0)
        symbols_[right.next].prev = b.left;
      try_add_bigram(left.prev, b.left);
      try_add_bigram(b.left, left.next);
    }

    if (symbols_.empty())
      return;
    for (int i = 0; i != -1; i = symbols_[i].next)
      resegment(symbols_[i], out);
  }

private:
  [[nodiscard]] std::string text_of(const symbol& s) const { return text_.substr(s.offset, s.n); }

  void try_add_bigram(int left, int right) {
    if (left == -1 || right == -1)
      return;
    std::string merged = text_.substr(symbols_[left].offset, symbols_[left].n + symbols_[right].n);
    token_id id = tokens_.find(merged);
    if (id < 0)
      return;
    queue_.push({left, right, tokens_.score(id), merged.size()});
    rev_merge_[merged] = {left, right};
  }

  /// A final symbol that is no token: undo its merges down to pieces that
  /// are, or to bytes.
  void resegment(const symbol& s, std::vector<token_id>& out) {
    std::string text = text_of(s);
    token_id id = tokens_.find(text);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge_.find(text);
    if (it == rev_merge_.end()) {
      for (char c : text) {
        token_id b = byte_token_[static_cast<unsigned char>(c)];
        if (b >= 0)
          out.push_back(b);
      }
      return;
    }
    auto [l, r] = it->second;
    resegment(symbols_[l], out);
    resegment(symbols_[r], out);
  }

  const token_table& tokens_;
  const std::array<token_id, 256>& byte_token_;
  const std::string& text_;
  std::vector<symbol> symbols_;
  std::priority_queue<bigram, std::vector<bigram>, bigram_order> queue_;
  std::map<std::string, std::pair<int, int>> rev_merge_;
};

}  // namespace

spm_tokenizer::spm_tokenizer(const vocab_data& vocab)
    : tokens_(vocab),
      bos_(tokens_.contains(vocab.bos_id) ? vocab.bos_id : -1),
      eos_(tokens_.contains(vocab.eos_id) ? vocab.eos_id : -1),
      add_bos_(vocab.add_bos),
      add_eos_(vocab.add_eos),
      add_space_prefix_(vocab.add_space_prefix) {
  token_id unk = tokens_.contains(vocab.unk_id) ? vocab.unk_id : -1;
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    token_id id = tokens_.find(hex);
    if (id < 0)
      id = tokens_.find(std::string(1, static_cast<char>(b)));
    // llama.cpp throws for a byte with neither token; unknown is the kinder answer.
    byte_token_[b] = id >= 0 ? id : unk;
  }

  bytes_.resize(tokens_.size());
  for (token_id id = 0; id < tokens_.size(); ++id) {
    const std::string& text = tokens_.text(id);
    uint8_t a = tokens_.attrs(id);
    if (a & (attr_control | attr_unknown))
      continue;  // "" (llama.cpp's token_to_piece without special)
    if (a & attr_user_defined) {
      bytes_[id] = text;
    } else if (a & attr_normal) {
      bytes_[id] = text;
      replace_all(bytes_[id], escaped_space, " ");
    } else if (a & attr_byte) {
      unsigned v = 0;
      if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%2X>", &v) == 1)
        bytes_[id] = std::string(1, static_cast<char>(v));
    }
  }
}

std::vector<token_id> spm_tokenizer::encode(std::string_view text, bool add_bos) const {
  return tokenize(text, add_bos, false);
}

std::vector<token_id> spm_tokenizer::encode_with_specials(std::string_view text,
                                                          bool add_bos) const {
  return tokenize(text, add_bos, true);
}

std::string spm_tokenizer::token_bytes(token_id id) const {
  return tokens_.contains(id) ? bytes_[id] : std::string();
}

std::vector<token_id> spm_tokenizer::tokenize(std::string_view text, bool add_special,
                                              bool parse_special) const {
  std::vector<token_id> out;
  if (add_special && add_bos_ && bos_ >= 0)
    out.push_back(bos_);
  bool after_special = true;  // the text start counts as one: it gets the space prefix
  for (const auto& part : tokens_.split_specials(text, parse_special)) {
    if (part.special >= 0) {
      out.push_back(part.special);
      after_special = true;
      continue;
    }
    std::string piece;
    if (add_space_prefix_ && after_special)
      piece = " ";
    piece.append(part.text);
    replace_all(piece, " ", escaped_space);
    spm_session(tokens_, byte_token_, piece).run(out);
    after_special = false;
  }
  if (add_special && add_eos_ && eos_ >= 0)
    out.push_back(eos_);
  return out;
}

}  // namespace llmux::engine
