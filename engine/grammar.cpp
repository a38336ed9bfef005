#include "engine/grammar.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace llmux::engine {
namespace {

bool end_of_seq(const gelem* p) { return p->type == gtype::end || p->type == gtype::alt; }

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/// Decodes one UTF-8 character of `s` at `i`: 1 = a code point in `cp`
/// (advancing i), 0 = `s` ends inside the character, -1 = invalid.
int decode_utf8(std::string_view s, size_t& i, uint32_t& cp) {
  const auto b = static_cast<uint8_t>(s[i]);
  int n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  // C0 and C1 only start overlong forms of ASCII; F5.. are past U+10FFFF.
  if (n == 0 || b == 0xC0 || b == 0xC1 || b > 0xF4)
    return -1;
  cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k < n; ++k) {
    if (i + static_cast<size_t>(k) >= s.size())
      return 0;
    const auto c = static_cast<uint8_t>(s[i + static_cast<size_t>(k)]);
    if ((c & 0xC0) != 0x80)
      return -1;
    cp = (cp << 6) | (c & 0x3F);
  }
  // An overlong form ("\xE0\x80\xA2" for '"') would slip a character past
  // a class that refuses it.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return -1;
  i += static_cast<size_t>(n);
  return 1;
}

/// The code points an unfinished UTF-8 character `partial` can still become.
std::pair<uint32_t, uint32_t> partial_range(std::string_view partial) {
  const auto b = static_cast<uint8_t>(partial[0]);
  const int n = (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : 4;
  uint32_t lo = n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07), hi = lo;
  for (int k = 1; k < n; ++k) {
    const bool have = static_cast<size_t>(k) < partial.size();
    const uint32_t c = have ? static_cast<uint8_t>(partial[static_cast<size_t>(k)]) & 0x3Fu : 0u;
    lo = (lo << 6) | c;
    hi = (hi << 6) | (have ? c : 0x3Fu);
  }
  // Only the shortest form is valid: a 3-byte character is at least U+0800.
  const uint32_t least = n == 2 ? 0x80u : n == 3 ? 0x800u : 0x10000u;
  return {std::max(lo, least), std::min(hi, 0x10FFFFu)};
}

/// Whether the class at `pos` accepts `cp`; `after` is the element past it.
bool match_char(const gelem* pos, uint32_t cp, const gelem*& after) {
  bool found = false;
  const bool positive = pos->type == gtype::chr || pos->type == gtype::chr_any;
  do {
    if (pos->type == gtype::chr_any) {
      found = true;
      pos += 1;
    } else if (pos[1].type == gtype::chr_rng_upper) {
      found = found || (pos->value <= cp && cp <= pos[1].value);
      pos += 2;
    } else {
      found = found || pos->value == cp;
      pos += 1;
    }
  } while (pos->type == gtype::chr_alt);
  after = pos;
  return found == positive;
}

/// Whether the class at `pos` accepts some code point in [lo, hi].
bool match_range(const gelem* pos, uint32_t lo, uint32_t hi) {
  if (pos->type == gtype::chr_not || pos->type == gtype::chr_any)
    return true;  // a negated class excludes a few characters, never a whole UTF-8 lead's range
  do {
    const uint32_t a = pos->value;
    const uint32_t b = pos[1].type == gtype::chr_rng_upper ? pos[1].value : a;
    if (a <= hi && lo <= b)
      return true;
    pos += pos[1].type == gtype::chr_rng_upper ? 2 : 1;
  } while (pos->type == gtype::chr_alt);
  return false;
}

using stack = grammar_matcher::stack;

/// Most parse stacks a matcher holds at once. An ambiguous grammar, say
/// ("a"{0,1000}){0,1000}, has one stack per way to read the text so far and
/// would stall the engine's thread on every token; past this it is refused
/// (the sequence ends) instead. JSON-schema grammars hold a handful.
constexpr size_t max_stacks = 1024;

void add_unique(std::vector<stack>& stacks, stack s) {
  if (std::find(stacks.begin(), stacks.end(), s) != stacks.end())
    return;
  if (stacks.size() >= max_stacks)
    throw grammar_error("grammar: more than " + std::to_string(max_stacks) +
                        " ways to read the output so far (too ambiguous)");
  stacks.push_back(std::move(s));
}

/// Expands rule references on top of `s` until each stack has a terminal
/// on top (or is empty: the grammar is complete there).
void advance_stack(const std::vector<std::vector<gelem>>& rules, const stack& s, std::vector<stack>& out,
                   int depth = 0) {
  if (depth > 4096)
    throw grammar_error("grammar: rule expansion too deep");
  if (s.empty()) {
    add_unique(out, s);
    return;
  }
  const gelem* pos = s.back();
  if (pos->type != gtype::rule_ref) {
    add_unique(out, s);
    return;
  }
  const gelem* sub = rules[pos->value].data();
  while (true) {
    stack next(s.begin(), s.end() - 1);
    if (!end_of_seq(pos + 1))
      next.push_back(pos + 1);
    if (!end_of_seq(sub))
      next.push_back(sub);
    advance_stack(rules, next, out, depth + 1);
    while (!end_of_seq(sub))
      ++sub;
    if (sub->type != gtype::alt)
      break;
    ++sub;
  }
}

std::vector<stack> accept_cp(const std::vector<std::vector<gelem>>& rules, const std::vector<stack>& stacks,
                             uint32_t cp) {
  std::vector<stack> out;
  for (const auto& s : stacks) {
    if (s.empty())
      continue;
    const gelem* after = nullptr;
    if (!match_char(s.back(), cp, after))
      continue;
    stack next(s.begin(), s.end() - 1);
    if (!end_of_seq(after))
      next.push_back(after);
    advance_stack(rules, next, out);
  }
  return out;
}

bool partial_ok(const std::vector<stack>& stacks, std::string_view partial) {
  const auto [lo, hi] = partial_range(partial);
  if (lo > hi)
    return false;  // the bytes so far only start overlong forms
  for (const auto& s : stacks)
    if (!s.empty() && match_range(s.back(), lo, hi))
      return true;
  return false;
}

/// Runs `bytes` (after `pending`) through `stacks`; false when rejected.
bool run_bytes(const std::vector<std::vector<gelem>>& rules, std::vector<stack>& stacks, std::string& pending,
               std::string_view bytes) {
  std::string buf = pending + std::string(bytes);
  size_t i = 0;
  while (i < buf.size()) {
    uint32_t cp = 0;
    const int r = decode_utf8(buf, i, cp);
    if (r < 0)
      return false;
    if (r == 0) {
      pending = buf.substr(i);
      return partial_ok(stacks, pending);
    }
    stacks = accept_cp(rules, stacks, cp);
    if (stacks.empty())
      return false;
  }
  pending.clear();
  return true;
}

// --------------------------------------------------------------------------
// GBNF parser

class gbnf_parser {
public:
  explicit gbnf_parser(std::string_view src) : src_(src) {}

private:
  [[noreturn]] void fail(const std::string& why) const {
    throw grammar_error("grammar line " + std::to_string(line_) + ": " + why);
  }
  [[nodiscard]] bool eof() const { return pos_ >= src_.size(); }
  [[nodiscard]] char peek(size_t k = 0) const { return pos_ + k < src_.size() ? src_[pos_ + k] : '\0'; }

  void skip_space() {
    while (!eof()) {
      const char c = peek();
      if (c == '#') {
        while (!eof() && peek() != '\n')
          ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        if (c == '\n')
          ++line_;
        ++pos_;
      } else {
        break;
      }
    }
  }

  std::string name() {
    const size_t start = pos_;
    while (!eof() && name_char(peek()))
      ++pos_;
    if (pos_ == start)
      fail("expected a rule name");
    return std::string(src_.substr(start, pos_ - start));
  }

  /// The next thing is `name ::=`: a new rule starts.
  bool at_rule_start() {
    const size_t save = pos_;
    const int save_line = line_;
    bool yes = false;
    if (name_char(peek())) {
      while (!eof() && name_char(peek()))
        ++pos_;
      while (peek() == ' ' || peek() == '\t')
        ++pos_;
      yes = src_.substr(pos_, 3) == "::=";
    }
    pos_ = save;
    line_ = save_line;
    return yes;
  }

  uint32_t id_of(const std::string& n) {
    auto [it, fresh] = ids_.emplace(n, static_cast<uint32_t>(rules_.size()));
    if (fresh) {
      rules_.emplace_back();
      defined_.push_back(false);
      first_line_.push_back(line_);
    }
    return it->second;
  }

  uint32_t fresh_rule(const std::string& base) {
    const uint32_t id = id_of(base + "_" + std::to_string(++generated_));
    defined_[id] = true;
    return id;
  }

  uint32_t read_char() {
    if (eof())
      fail("unexpected end of grammar");
    if (peek() == '\\') {
      ++pos_;
      const char e = peek();
      ++pos_;
      auto hex = [&](int n) {
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          const char h = peek();
          ++pos_;
          int d = (h >= '0' && h <= '9') ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                                                   : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
          if (d < 0)
            fail("bad hex escape");
          v = v * 16 + static_cast<uint32_t>(d);
        }
        return v;
      };
      switch (e) {
        case 'x': return hex(2);
        case 'u': return hex(4);
        case 'U': return hex(8);
        case 'n': return '\n';
        case 't': return '\t';
        case 'r': return '\r';
        case '\\': case '"': case '[': case ']': case '-': case '/': case '^': case '\'': return static_cast<uint8_t>(e);
        default: fail(std::string("unknown escape \\") + e);
      }
    }
    size_t i = pos_;
    uint32_t cp = 0;
    if (decode_utf8(src_, i, cp) != 1)
      fail("invalid UTF-8");
    if (cp == '\n')
      ++line_;
    pos_ = i;
    return cp;
  }

  void parse_alternatives(const std::string& rule, std::vector<gelem>& out) {
    parse_sequence(rule, out);
    skip_space();
    while (peek() == '|') {
      ++pos_;
      out.push_back({gtype::alt, 0});
      parse_sequence(rule, out);
      skip_space();
    }
  }

  void parse_sequence(const std::string& rule, std::vector<gelem>& out) {
    size_t last = out.size();
    bool have_item = false;
    while (true) {
      skip_space();
      if (eof() || peek() == ')' || peek() == '|' || at_rule_start())
        return;
      const char c = peek();
      if (c == '"') {
        ++pos_;
        last = out.size();
        while (peek() != '"') {
          if (eof())
            fail("unterminated literal");
          out.push_back({gtype::chr, read_char()});
        }
        ++pos_;
        have_item = true;
      } else if (c == '[') {
        ++pos_;
        last = out.size();
        gtype first = gtype::chr;
        if (peek() == '^') {
          ++pos_;
          first = gtype::chr_not;
        }
        bool any = false;
        while (peek() != ']') {
          if (eof())
            fail("unterminated character class");
          const uint32_t lo = read_char();
          out.push_back({any ? gtype::chr_alt : first, lo});
          any = true;
          if (peek() == '-' && peek(1) != ']') {
            ++pos_;
            out.push_back({gtype::chr_rng_upper, read_char()});
          }
        }
        ++pos_;
        if (!any)
          fail("empty character class []");
        have_item = true;
      } else if (c == '.') {
        ++pos_;
        last = out.size();
        out.push_back({gtype::chr_any, 0});
        have_item = true;
      } else if (name_char(c)) {
        last = out.size();
        out.push_back({gtype::rule_ref, id_of(name())});
        have_item = true;
      } else if (c == '(') {
        ++pos_;
        // Nesting is recursion here: bound it, as the text comes from users.
        if (++depth_ > max_nesting)
          fail("groups nested deeper than " + std::to_string(max_nesting));
        const uint32_t sub = fresh_rule(rule);
        std::vector<gelem> body;
        parse_alternatives(rule, body);
        --depth_;
        if (peek() != ')')
          fail("expected ')'");
        ++pos_;
        body.push_back({gtype::end, 0});
        rules_[sub] = std::move(body);
        last = out.size();
        out.push_back({gtype::rule_ref, sub});
        have_item = true;
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_item || last >= out.size())
          fail(std::string("'") + c + "' with nothing to repeat");
        ++pos_;
        int lo = 0, hi = -1;  // -1: unbounded
        if (c == '+')
          lo = 1;
        else if (c == '?')
          hi = 1;
        else if (c == '{') {
          auto number = [&] {
            skip_space();
            if (!(peek() >= '0' && peek() <= '9'))
              fail("expected a number in {}");
            long v = 0;
            while (peek() >= '0' && peek() <= '9') {
              v = v * 10 + (peek() - '0');
              ++pos_;
              if (v > 10000)
                fail("repetition bound above 10000");
            }
            skip_space();
            return static_cast<int>(v);
          };
          lo = number();
          if (peek() == ',') {
            ++pos_;
            skip_space();
            hi = peek() == '}' ? -1 : number();
          } else {
            hi = lo;
          }
          if (peek() != '}')
            fail("expected '}'");
          ++pos_;
          if (hi >= 0 && hi < lo)
            fail("repetition {m,n} with n < m");
        }
        repeat(rule, out, last, lo, hi);
        last = out.size();
        have_item = false;
      } else {
        fail(std::string("unexpected '") + c + "'");
      }
    }
  }

  /// Replaces the item at out[last..] with `lo` to `hi` copies of it.
  void repeat(const std::string& rule, std::vector<gelem>& out, size_t last, int lo, int hi) {
    std::vector<gelem> item(out.begin() + static_cast<std::ptrdiff_t>(last), out.end());
    out.resize(last);
    uint32_t item_rule = 0;
    if (item.size() == 1 && item[0].type == gtype::rule_ref) {
      item_rule = item[0].value;
    } else {
      item_rule = fresh_rule(rule);
      item.push_back({gtype::end, 0});
      rules_[item_rule] = item;
    }
    for (int k = 0; k < lo; ++k)
      out.push_back({gtype::rule_ref, item_rule});
    if (hi < 0) {
      // star ::= item star | ε
      const uint32_t star = fresh_rule(rule);
      rules_[star] = {{gtype::rule_ref, item_rule}, {gtype::rule_ref, star}, {gtype::alt, 0}, {gtype::end, 0}};
      out.push_back({gtype::rule_ref, star});
      return;
    }
    // opt_k ::= item opt_{k-1} | ε, nested so each count parses one way.
    uint32_t inner = 0;
    bool have_inner = false;
    for (int k = 0; k < hi - lo; ++k) {
      const uint32_t opt = fresh_rule(rule);
      std::vector<gelem> body{{gtype::rule_ref, item_rule}};
      if (have_inner)
        body.push_back({gtype::rule_ref, inner});
      body.push_back({gtype::alt, 0});
      body.push_back({gtype::end, 0});
      rules_[opt] = std::move(body);
      inner = opt;
      have_inner = true;
    }
    if (have_inner)
      out.push_back({gtype::rule_ref, inner});
  }

  static constexpr int max_nesting = 128;
  static constexpr size_t max_elements = 1 << 20;

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
  int depth_ = 0;
  int generated_ = 0;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::vector<gelem>> rules_;
  std::vector<bool> defined_;
  std::vector<int> first_line_;

public:
  /// Parses the whole text; `root` gets the start rule's id.
  std::vector<std::vector<gelem>> take(uint32_t& root);
};

bool left_recursive(const std::vector<std::vector<gelem>>& rules, uint32_t i, std::vector<bool>& visited,
                    std::vector<bool>& in_progress, std::vector<bool>& may_be_empty) {
  if (in_progress[i])
    return true;
  if (visited[i])
    return false;
  in_progress[i] = true;
  const auto& rule = rules[i];
  bool at_start = true;
  for (const auto& e : rule) {
    if (end_of_seq(&e)) {
      if (at_start) {
        may_be_empty[i] = true;
        break;
      }
      at_start = true;
    } else {
      at_start = false;
    }
  }
  bool recurse = true;
  for (const auto& e : rule) {
    if (e.type == gtype::rule_ref && recurse) {
      if (left_recursive(rules, e.value, visited, in_progress, may_be_empty))
        return true;
      if (!may_be_empty[e.value])
        recurse = false;
    } else if (end_of_seq(&e)) {
      recurse = true;
    } else {
      recurse = false;
    }
  }
  in_progress[i] = false;
  visited[i] = true;
  return false;
}

}  // namespace

// --------------------------------------------------------------------------

std::shared_ptr<grammar> grammar::parse(std::string_view text) {
  gbnf_parser p{text};
  auto g = std::make_shared<grammar>();
  g->rules_ = p.take(g->root_);
  return g;
}

std::vector<std::vector<gelem>> gbnf_parser::take(uint32_t& root) {
  while (true) {
    skip_space();
    if (eof())
      break;
    const std::string n = name();
    skip_space();
    if (src_.substr(pos_, 3) != "::=")
      fail("expected '::=' after '" + n + "'");
    pos_ += 3;
    const uint32_t id = id_of(n);
    if (defined_[id])
      fail("rule '" + n + "' is defined twice");
    defined_[id] = true;
    std::vector<gelem> body;
    parse_alternatives(n, body);
    if (!eof() && peek() == ')')
      fail("unmatched ')'");
    body.push_back({gtype::end, 0});
    rules_[id] = std::move(body);
  }
  size_t elements = 0;
  for (const auto& r : rules_)
    elements += r.size();
  if (elements > max_elements)
    throw grammar_error("grammar: more than " + std::to_string(max_elements) + " elements after expanding repetitions");
  for (const auto& [n, id] : ids_)
    if (!defined_[id])
      throw grammar_error("grammar: rule '" + n + "' is used (line " + std::to_string(first_line_[id]) +
                          ") but never defined");
  auto it = ids_.find("root");
  if (it == ids_.end())
    throw grammar_error("grammar: no 'root' rule");
  root = it->second;
  std::vector<bool> visited(rules_.size()), in_progress(rules_.size()), may_be_empty(rules_.size());
  for (const auto& [n, id] : ids_)
    if (left_recursive(rules_, id, visited, in_progress, may_be_empty))
      throw grammar_error("grammar: rule '" + n + "' is left-recursive");
  return std::move(rules_);
}

std::shared_ptr<const token_mask> grammar::mask_for(const grammar_matcher& m, const vocab_trie& vocab) const {
  const std::string k = m.key();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = masks_.find(k);
    if (it != masks_.end()) {
      ++cached_;
      return it->second;
    }
  }
  auto mask = std::make_shared<const token_mask>(m.compute_mask(vocab));
  std::lock_guard<std::mutex> lock(mu_);
  ++computed_;
  if (masks_.size() >= mask_cache_limit)
    masks_.clear();
  masks_.emplace(k, mask);
  return mask;
}

uint64_t grammar::masks_computed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return computed_;
}

uint64_t grammar::masks_cached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

// --------------------------------------------------------------------------

grammar_matcher::grammar_matcher(std::shared_ptr<const grammar> g) : g_(std::move(g)) {
  const auto& rules = g_->rules();
  const gelem* pos = rules[g_->root()].data();
  while (true) {
    stack s;
    if (!end_of_seq(pos))
      s.push_back(pos);
    advance_stack(rules, s, stacks_);
    while (!end_of_seq(pos))
      ++pos;
    if (pos->type != gtype::alt)
      break;
    ++pos;
  }
}

bool grammar_matcher::accept(std::string_view bytes) {
  auto stacks = stacks_;
  auto pending = pending_;
  if (!run_bytes(g_->rules(), stacks, pending, bytes))
    return false;
  stacks_ = std::move(stacks);
  pending_ = std::move(pending);
  return true;
}

bool grammar_matcher::allows(std::string_view bytes) const {
  if (bytes.empty())
    return false;
  auto stacks = stacks_;
  auto pending = pending_;
  return run_bytes(g_->rules(), stacks, pending, bytes);
}

bool grammar_matcher::can_end() const {
  return pending_.empty() && std::any_of(stacks_.begin(), stacks_.end(), [](const stack& s) { return s.empty(); });
}

bool grammar_matcher::finished() const {
  return pending_.empty() && std::all_of(stacks_.begin(), stacks_.end(), [](const stack& s) { return s.empty(); });
}

std::string grammar_matcher::key() const {
  std::string k;
  for (const auto& s : stacks_) {
    for (const gelem* p : s) {
      char buf[sizeof(p)];
      std::memcpy(buf, &p, sizeof(p));
      k.append(buf, sizeof(buf));
    }
    k.push_back('|');
  }
  k.push_back('#');
  k += pending_;
  return k;
}

namespace {

/// The stack sets one mask computation meets, interned, with their
/// transitions memoised: a trie walk asks the same (state, code point)
/// question thousands of times (every token starting with "a" inside a
/// string), and the answer is computed once.
class state_table {
public:
  explicit state_table(const std::vector<std::vector<gelem>>& rules) : rules_(rules) {}

  int32_t intern(std::vector<stack> stacks) {
    std::string k = key_of(stacks);
    auto [it, fresh] = ids_.emplace(std::move(k), static_cast<int32_t>(states_.size()));
    if (fresh)
      states_.push_back(std::move(stacks));
    return it->second;
  }
  [[nodiscard]] size_t size() const { return states_.size(); }
  /// The state after `cp`, or -1 when no stack takes it.
  int32_t next(int32_t state, uint32_t cp) {
    if (cp < 128) {
      // ASCII, most of every vocabulary: a flat table per state.
      if (ascii_.size() <= static_cast<size_t>(state))
        ascii_.resize(states_.size(), unknown_row());
      auto& slot = ascii_[static_cast<size_t>(state)][cp];
      if (slot == unknown)
        slot = step(state, cp);
      return slot;
    }
    const uint64_t k = (static_cast<uint64_t>(state) << 32) | cp;
    auto it = next_.find(k);
    if (it != next_.end())
      return it->second;
    const int32_t to = step(state, cp);
    next_.emplace(k, to);
    return to;
  }
  /// Whether an unfinished character `partial` can still be taken (memoised
  /// by state and bytes; partial is at most 3 bytes).
  bool partial(int32_t state, const std::string& bytes) {
    uint64_t k = static_cast<uint64_t>(state) << 32;
    for (size_t i = 0; i < bytes.size(); ++i)
      k |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
    auto it = partial_.find(k);
    if (it != partial_.end())
      return it->second;
    const bool ok = partial_ok(states_[static_cast<size_t>(state)], bytes);
    partial_.emplace(k, ok);
    return ok;
  }

private:
  static constexpr int32_t unknown = -2;
  static std::array<int32_t, 128> unknown_row() {
    std::array<int32_t, 128> row;
    row.fill(unknown);
    return row;
  }
  int32_t step(int32_t state, uint32_t cp) {
    auto stacks = accept_cp(rules_, states_[static_cast<size_t>(state)], cp);
    return stacks.empty() ? -1 : intern(std::move(stacks));
  }

  static std::string key_of(const std::vector<stack>& stacks) {
    std::string k;
    for (const auto& s : stacks) {
      k.append(reinterpret_cast<const char*>(s.data()), s.size() * sizeof(const gelem*));
      k.push_back('|');
    }
    return k;
  }

  const std::vector<std::vector<gelem>>& rules_;
  std::vector<std::vector<stack>> states_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<std::array<int32_t, 128>> ascii_;
  std::unordered_map<uint64_t, int32_t> next_;
  std::unordered_map<uint64_t, bool> partial_;
};

}  // namespace

struct mask_walk {
  explicit mask_walk(const std::vector<std::vector<gelem>>& rules) : table(rules) {}
  state_table table;
};

grammar::grammar() = default;
grammar::~grammar() = default;

token_mask grammar_matcher::compute_mask(const vocab_trie& vocab) const { return g_->walk(stacks_, pending_, vocab); }

token_mask grammar::walk(const std::vector<std::vector<const gelem*>>& stacks, const std::string& pending,
                         const vocab_trie& vocab) const {
  token_mask mask((static_cast<size_t>(vocab.vocab_size()) + 63) / 64, 0);
  std::lock_guard<std::mutex> lock(walk_mu_);
  // What earlier walks learned stays, up to a bound (counted repetitions
  // make many states; a long-lived grammar should not hoard them).
  if (!walk_ || walk_->table.size() > 200000)
    walk_ = std::make_unique<mask_walk>(rules_);
  auto& table = walk_->table;
  // Depth-first over the trie: each node with the state after its bytes
  // (and an unfinished character's bytes, at most 3, packed); a subtree no
  // stack accepts is skipped.
  struct frame {
    int32_t node;
    int32_t state;
    uint32_t partial;  ///< bytes of an unfinished character, first in the low byte
    uint8_t partial_len;
  };
  auto unpack = [](uint32_t bits, uint8_t len) {
    std::string p(len, '\0');
    for (uint8_t i = 0; i < len; ++i)
      p[i] = static_cast<char>((bits >> (8 * i)) & 0xFF);
    return p;
  };
  std::vector<frame> frames;
  frames.reserve(256);
  if (pending.size() > 3)
    return mask;  // cannot happen: an unfinished character has at most 3 bytes
  uint32_t start_bits = 0;
  for (size_t i = 0; i < pending.size(); ++i)
    start_bits |= static_cast<uint32_t>(static_cast<uint8_t>(pending[i])) << (8 * i);
  frames.push_back({0, table.intern(stacks), start_bits, static_cast<uint8_t>(pending.size())});
  while (!frames.empty()) {
    const frame f = frames.back();
    frames.pop_back();
    const int32_t* t0 = vocab.tokens_begin(f.node);
    const int32_t* t1 = vocab.tokens_end(f.node);
    if (f.node != 0 && t0 != t1 && (f.partial_len == 0 || table.partial(f.state, unpack(f.partial, f.partial_len))))
      for (const int32_t* t = t0; t != t1; ++t)
        mask[static_cast<size_t>(*t) >> 6] |= uint64_t{1} << (*t & 63);
    for (const auto* e = vocab.edges_begin(f.node); e != vocab.edges_end(f.node); ++e) {
      const uint8_t byte = e->byte;
      const int32_t child = e->child;
      if (f.partial_len == 0 && byte < 0x80) {
        const int32_t to = table.next(f.state, byte);
        if (to >= 0)
          frames.push_back({child, to, 0, 0});
        continue;
      }
      std::string partial = unpack(f.partial, f.partial_len);
      partial.push_back(static_cast<char>(byte));
      size_t i = 0;
      uint32_t cp = 0;
      const int r = decode_utf8(partial, i, cp);
      if (r < 0)
        continue;
      if (r == 0) {
        if (partial.size() <= 3 && table.partial(f.state, partial))
          frames.push_back({child, f.state, f.partial | (static_cast<uint32_t>(byte) << (8 * f.partial_len)),
                          static_cast<uint8_t>(f.partial_len + 1)});
        continue;
      }
      const int32_t to = table.next(f.state, cp);
      if (to >= 0)
        frames.push_back({child, to, 0, 0});
    }
  }
  return mask;
}

// --------------------------------------------------------------------------

vocab_trie::vocab_trie(const std::vector<std::string>& bytes)
  : n_vocab_(static_cast<int32_t>(bytes.size())), bytes_(bytes) {
  // Built as linked nodes first, then laid out flat in depth-first order.
  struct build_node {
    std::vector<std::pair<uint8_t, int32_t>> next;
    std::vector<int32_t> tokens;
  };
  std::vector<build_node> nodes(1);
  for (size_t id = 0; id < bytes.size(); ++id) {
    if (bytes[id].empty())
      continue;
    int32_t at = 0;
    for (char ch : bytes[id]) {
      const auto b = static_cast<uint8_t>(ch);
      auto& next = nodes[static_cast<size_t>(at)].next;
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, int32_t{-1}));
      if (it != next.end() && it->first == b) {
        at = it->second;
      } else {
        const auto fresh = static_cast<int32_t>(nodes.size());
        next.insert(it, {b, fresh});
        nodes.emplace_back();
        at = fresh;
      }
    }
    nodes[static_cast<size_t>(at)].tokens.push_back(static_cast<int32_t>(id));
  }
  std::vector<int32_t> order, new_id(nodes.size(), -1);
  order.reserve(nodes.size());
  std::vector<int32_t> stack{0};
  while (!stack.empty()) {
    const int32_t n = stack.back();
    stack.pop_back();
    new_id[static_cast<size_t>(n)] = static_cast<int32_t>(order.size());
    order.push_back(n);
    const auto& next = nodes[static_cast<size_t>(n)].next;
    for (auto it = next.rbegin(); it != next.rend(); ++it)
      stack.push_back(it->second);
  }
  edge_begin_.reserve(order.size() + 1);
  token_begin_.reserve(order.size() + 1);
  for (const int32_t n : order) {
    edge_begin_.push_back(static_cast<int32_t>(edges_.size()));
    token_begin_.push_back(static_cast<int32_t>(tokens_.size()));
    const auto& bn = nodes[static_cast<size_t>(n)];
    for (const auto& [b, child] : bn.next)
      edges_.push_back({b, new_id[static_cast<size_t>(child)]});
    tokens_.insert(tokens_.end(), bn.tokens.begin(), bn.tokens.end());
  }
  edge_begin_.push_back(static_cast<int32_t>(edges_.size()));
  token_begin_.push_back(static_cast<int32_t>(tokens_.size()));
}

std::shared_ptr<const grammar> grammar_cache::get(const std::string& text) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_text_.find(text);
    if (it != by_text_.end())
      return it->second;
  }
  auto g = grammar::parse(text);
  std::lock_guard<std::mutex> lock(mu_);
  if (by_text_.size() >= limit)
    by_text_.clear();
  return by_text_.emplace(text, std::move(g)).first->second;
}

}  // namespace llmux::engine
