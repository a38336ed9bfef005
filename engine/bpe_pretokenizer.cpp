#include "engine/bpe_pretokenizer.hpp"

#include <cstdint>

#include "engine/unicode_categories.hpp"

namespace llmux::engine {

std::optional<bpe_pre_tokenizer> find_bpe_pre_tokenizer(std::string_view pre) {
  auto any_of = [pre](std::initializer_list<std::string_view> names) {
    for (auto n : names)
      if (n == pre)
        return true;
    return false;
  };
  // Name lists as in llama.cpp's llama_vocab::impl::load.
  if (any_of({"", "default"}))
    return bpe_pre_tokenizer{bpe_pre_kind::fallback, false, false};
  if (any_of({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
              "lfm2", "jina-v5-nano"}))
    return bpe_pre_tokenizer{bpe_pre_kind::llama3, true, true};
  if (any_of({"dbrx", "smaug-bpe"}))
    return bpe_pre_tokenizer{bpe_pre_kind::llama3, false, false};
  if (any_of({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "a.x-4.0", "mellum", "exaone4",
              "mpt", "olmo", "jais", "trillion", "granite-docling"}))
    return bpe_pre_tokenizer{bpe_pre_kind::gpt2, false, false};
  if (any_of({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
              "mellum2"}))
    return bpe_pre_tokenizer{bpe_pre_kind::starcoder, false, false};
  if (any_of({"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
              "solar-open"}))
    return bpe_pre_tokenizer{bpe_pre_kind::qwen2, false, false};
  return std::nullopt;
}

namespace {

using unicode::category;
using unicode::category_of;

/// Code points of the whole text, and the current split as piece lengths (in
/// code points) — the representation llama.cpp's regex passes share.
struct split_state {
  std::vector<uint32_t> cpts;
  std::vector<size_t> pieces;
};

/// One piece [begin, end) of the text, with the look-ups the hand-written
/// regexes need. Positions past the piece read as "nothing": no code point,
/// no category, not whitespace (a regex sees only its own piece).
class piece_view {
public:
  piece_view(const std::vector<uint32_t>& cpts, size_t begin, size_t end)
      : cpts_(cpts), begin_(begin), end_(end) {}

  static constexpr uint32_t none = 0xFFFFFFFF;

  [[nodiscard]] size_t begin() const { return begin_; }
  [[nodiscard]] size_t end() const { return end_; }
  [[nodiscard]] uint32_t cpt(size_t i) const { return i < end_ ? cpts_[i] : none; }
  [[nodiscard]] bool letter(size_t i) const { return i < end_ && category_of(cpts_[i]) == unicode::letter; }
  [[nodiscard]] bool number(size_t i) const { return i < end_ && category_of(cpts_[i]) == unicode::number; }
  [[nodiscard]] bool space(size_t i) const { return i < end_ && unicode::is_whitespace(cpts_[i]); }
  /// [^\s\p{L}\p{N}]: inside the piece and neither whitespace, letter nor number.
  [[nodiscard]] bool other(size_t i) const { return i < end_ && !space(i) && !letter(i) && !number(i); }
  [[nodiscard]] bool cr_or_lf(size_t i) const { return cpt(i) == '\r' || cpt(i) == '\n'; }

private:
  const std::vector<uint32_t>& cpts_;
  size_t begin_;
  size_t end_;
};

/// Collects the pieces a regex pass cuts out of one input piece.
class piece_cutter {
public:
  piece_cutter(std::vector<size_t>& out, size_t begin) : out_(out), prev_end_(begin) {}
  /// Ends the current piece at `end` (nothing when empty); returns its length.
  size_t cut(size_t end) {
    size_t len = end - prev_end_;
    if (len > 0)
      out_.push_back(len);
    prev_end_ = end;
    return len;
  }

private:
  std::vector<size_t>& out_;
  size_t prev_end_;
};

/// Runs `split_piece(view, cutter)` over every piece of `state`.
template <class F>
void for_each_piece(split_state& state, F split_piece) {
  std::vector<size_t> out;
  out.reserve(state.pieces.size());
  size_t begin = 0;
  for (size_t len : state.pieces) {
    piece_view view(state.cpts, begin, begin + len);
    piece_cutter cutter(out, begin);
    split_piece(view, cutter);
    begin += len;
  }
  state.pieces = std::move(out);
}

/// Apostrophe contractions 's 't 're 've 'm 'll 'd at `pos`: their length, or 0.
/// `fold_case` makes them case-insensitive (only ASCII letters fold to these).
size_t contraction_at(const piece_view& v, size_t pos, bool fold_case) {
  if (v.cpt(pos) != '\'' || pos + 1 >= v.end())
    return 0;
  auto lower = [fold_case](uint32_t c) { return fold_case && c >= 'A' && c <= 'Z' ? c + 32 : c; };
  uint32_t c1 = lower(v.cpt(pos + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
    return 2;
  if (pos + 2 < v.end()) {
    uint32_t c2 = lower(v.cpt(pos + 2));
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
      return 3;
  }
  return 0;
}

/// Length of the whitespace run at `pos`.
size_t whitespace_run(const piece_view& v, size_t pos) {
  size_t n = 0;
  while (v.space(pos + n))
    ++n;
  return n;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(const piece_view& v, piece_cutter& cut) {
  for (size_t pos = v.begin(); pos < v.end();) {
    if (size_t n = contraction_at(v, pos, false)) {
      pos += cut.cut(pos + n);
      continue;
    }
    // An optional leading space, then a run of one class.
    size_t first = v.cpt(pos) == ' ' ? pos + 1 : pos;
    bool (piece_view::*cls)(size_t) const = nullptr;
    if (v.letter(first))
      cls = &piece_view::letter;
    else if (v.number(first))
      cls = &piece_view::number;
    else if (v.other(first))
      cls = &piece_view::other;
    if (cls) {
      pos = first;
      while ((v.*cls)(pos))
        ++pos;
      cut.cut(pos);
      continue;
    }
    size_t spaces = whitespace_run(v, pos);
    if (spaces > 1 && v.cpt(pos + spaces) != piece_view::none) {
      pos += spaces - 1;  // \s+(?!\S): leave the last space to the next word
      cut.cut(pos);
      continue;
    }
    if (spaces > 0) {
      pos += spaces;
      cut.cut(pos);
      continue;
    }
    cut.cut(++pos);  // not reached: every code point is in one of the classes
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
void split_llama3(const piece_view& v, piece_cutter& cut, size_t max_digits) {
  for (size_t pos = v.begin(); pos < v.end();) {
    const uint32_t c = v.cpt(pos);
    if (size_t n = contraction_at(v, pos, true)) {
      pos += cut.cut(pos + n);
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(c == '\r' || c == '\n' || v.number(pos)) && (v.letter(pos) || v.letter(pos + 1))) {
      ++pos;
      while (v.letter(pos))
        ++pos;
      cut.cut(pos);
      continue;
    }
    // \p{N}{1,max_digits}
    if (v.number(pos)) {
      size_t group_begin = pos;
      while (v.number(pos)) {
        if (++pos - group_begin >= max_digits) {
          cut.cut(pos);
          group_begin = pos;
        }
      }
      cut.cut(pos);
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*  (a space at the very end of the piece also
    // lands here and becomes a piece of its own, as in llama.cpp)
    bool starts = c == ' ' ? (pos + 1 >= v.end() || v.other(pos + 1)) : v.other(pos);
    if (starts) {
      pos += c == ' ' ? 1 : 0;
      while (v.other(pos))
        ++pos;
      while (v.cr_or_lf(pos))
        ++pos;
      cut.cut(pos);
      continue;
    }
    size_t spaces = whitespace_run(v, pos);
    size_t after_last_newline = 0;
    for (size_t k = 0; k < spaces; ++k)
      if (v.cr_or_lf(pos + k))
        after_last_newline = pos + k + 1;
    if (after_last_newline > 0) {  // \s*[\r\n]+
      pos = after_last_newline;
      cut.cut(pos);
      continue;
    }
    if (spaces > 1 && v.cpt(pos + spaces) != piece_view::none) {  // \s+(?!\S)
      pos += spaces - 1;
      cut.cut(pos);
      continue;
    }
    if (spaces > 0) {  // \s+
      pos += spaces;
      cut.cut(pos);
      continue;
    }
    cut.cut(++pos);
  }
}

/// A regex that is one character class, as std::regex runs it in llama.cpp:
/// every match is a piece, and so is every stretch between two matches. With
/// `repeat` the class matches runs ([...]+), otherwise single code points.
template <class Pred>
void split_class(const piece_view& v, piece_cutter& cut, Pred in_class, bool repeat) {
  for (size_t pos = v.begin(); pos < v.end();) {
    if (!in_class(v.cpt(pos))) {
      ++pos;
      continue;
    }
    cut.cut(pos);  // the text before the match
    ++pos;
    while (repeat && pos < v.end() && in_class(v.cpt(pos)))
      ++pos;
    cut.cut(pos);
  }
  cut.cut(v.end());
}

// [0-9][0-9][0-9], leftmost matches first.
void split_ascii_digit_triples(const piece_view& v, piece_cutter& cut) {
  auto digit = [&](size_t i) { return v.cpt(i) >= '0' && v.cpt(i) <= '9'; };
  for (size_t pos = v.begin(); pos < v.end();) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      cut.cut(pos);
      pos += 3;
      cut.cut(pos);
    } else {
      ++pos;
    }
  }
  cut.cut(v.end());
}

bool is_number_cpt(uint32_t c) { return category_of(c) == unicode::number; }

// [\p{P}\$\+<=>\^~\|]: llama.cpp matches it on text where every non-ASCII
// code point stands for its category, so ASCII counts by the listed
// characters (all ASCII punctuation and symbols but '`') and the rest by
// category.
bool is_fallback_punct(uint32_t c) {
  if (c < 128)
    return ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x5F)
            || (c >= 0x7B && c <= 0x7E));
  return category_of(c) == unicode::punctuation;
}

}  // namespace

std::vector<std::string> split_bpe_words(bpe_pre_kind kind, std::string_view text) {
  split_state state;
  state.cpts = unicode::decode_utf8(text);
  if (state.cpts.empty())
    return {};
  state.pieces = {state.cpts.size()};

  auto gpt2 = [](const piece_view& v, piece_cutter& c) { split_gpt2(v, c); };
  switch (kind) {
    case bpe_pre_kind::gpt2:
      for_each_piece(state, gpt2);
      break;
    case bpe_pre_kind::llama3:
      for_each_piece(state, [](const piece_view& v, piece_cutter& c) { split_llama3(v, c, 3); });
      break;
    case bpe_pre_kind::qwen2:
      for_each_piece(state, [](const piece_view& v, piece_cutter& c) { split_llama3(v, c, 1); });
      break;
    case bpe_pre_kind::starcoder:
      for_each_piece(state, [](const piece_view& v, piece_cutter& c) {
        split_class(v, c, is_number_cpt, false);
      });
      for_each_piece(state, gpt2);
      break;
    case bpe_pre_kind::fallback:
      for_each_piece(state, [](const piece_view& v, piece_cutter& c) {
        split_class(v, c, is_fallback_punct, true);
      });
      for_each_piece(state, gpt2);
      for_each_piece(state, [](const piece_view& v, piece_cutter& c) {
        split_class(v, c, is_number_cpt, true);
      });
      for_each_piece(state, split_ascii_digit_triples);
      break;
  }

  std::vector<std::string> words;
  words.reserve(state.pieces.size());
  size_t begin = 0;
  for (size_t len : state.pieces) {
    std::string w;
    for (size_t i = begin; i < begin + len; ++i)
      unicode::append_utf8(w, state.cpts[i]);
    words.push_back(std::move(w));
    begin += len;
  }
  return words;
}

}  // namespace llmux::engine
