#include "engine/spm_tokenizer.hpp"

#include <cstdio>
#include <map>
#include <queue>

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
      : tokens_(tokens), byte_token_(byte_token), chain_(text) {}

  void run(std::vector<token_id>& out) {
    for (int i = 1; i < chain_.size(); ++i)
      try_add_bigram(i - 1, i);
    while (!queue_.empty()) {
      bigram b = queue_.top();
      queue_.pop();
      size_t left_n = chain_[b.left].n, right_n = chain_[b.right].n;
      if (left_n == 0 || right_n == 0 || left_n + right_n != b.size)
        continue;  // one side was merged elsewhere since
      chain_.merge_next_into(b.left);
      try_add_bigram(chain_[b.left].prev, b.left);
      try_add_bigram(b.left, chain_[b.left].next);
    }
    chain_.for_each([&](int i) { resegment(i, out, 0); });
  }

private:
  void try_add_bigram(int left, int right) {
    if (left == -1 || right == -1)
      return;
    std::string merged;
    merged.append(chain_.text_of(left)).append(chain_.text_of(right));
    token_id id = tokens_.find(merged);
    if (id < 0)
      return;
    queue_.push({left, right, tokens_.score(id), merged.size()});
    rev_merge_[merged] = {left, right};
  }

  /// Emits symbol `i`: its token, or — for text that is no token — the
  /// pieces it was merged from, down to byte tokens (llama.cpp's resegment).
  /// Merges only ever form tokens, so the recursion is shallow; `depth`
  /// guards against a vocabulary that says otherwise.
  void resegment(int i, std::vector<token_id>& out, int depth) {
    std::string text(chain_.text_of(i));
    token_id id = tokens_.find(text);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge_.find(text);
    if (it == rev_merge_.end() || depth > 64) {
      for (char c : text) {
        token_id b = byte_token_[static_cast<unsigned char>(c)];
        if (b >= 0)
          out.push_back(b);
      }
      return;
    }
    auto [l, r] = it->second;
    resegment(l, out, depth + 1);
    resegment(r, out, depth + 1);
  }

  const token_table& tokens_;
  const std::array<token_id, 256>& byte_token_;
  symbol_chain chain_;
  std::priority_queue<bigram, std::vector<bigram>, bigram_order> queue_;
  std::map<std::string, std::pair<int, int>> rev_merge_;
};

std::string unescape_spaces(const std::string& text) {
  std::string out = text;
  replace_all(out, escaped_space, " ");
  return out;
}

}  // namespace

spm_tokenizer::spm_tokenizer(const vocab_data& vocab)
    : vocab_tokenizer(vocab, unescape_spaces), add_space_prefix_(vocab.add_space_prefix) {
  token_id unk = tokens().contains(vocab.unk_id) ? vocab.unk_id : -1;
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    token_id id = tokens().find(hex);
    if (id < 0)
      id = tokens().find(std::string(1, static_cast<char>(b)));
    // llama.cpp throws for a byte with neither token; unknown is the kinder answer.
    byte_token_[b] = id >= 0 ? id : unk;
  }
}

void spm_tokenizer::encode_plain(std::string_view text, bool after_special,
                                 std::vector<token_id>& out) const {
  std::string piece = add_space_prefix_ && after_special ? " " : "";
  piece.append(text);
  replace_all(piece, " ", escaped_space);
  spm_session(tokens(), byte_token_, piece).run(out);
}

}  // namespace llmux::engine
