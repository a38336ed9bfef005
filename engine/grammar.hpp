#pragma once
/// Grammar-constrained decoding, the pure core: a GBNF grammar (llama.cpp's
/// notation, which vLLM's `guided_grammar` and llama.cpp's server take), a
/// matcher that follows one sequence's output through it, and the set of
/// vocabulary tokens that may come next.
///
/// The matcher is llama.cpp's pushdown recogniser (llama-grammar.cpp): its
/// state is a set of stacks of grammar positions, each with a terminal (a
/// character class) on top; a code point advances every stack whose top
/// accepts it and expands the rule references behind it. Tokens are bytes,
/// grammars are code points: a token that ends inside a UTF-8 character
/// leaves its bytes pending for the next token.
///
/// Next-token masks walk a byte trie of the vocabulary once, pruning a
/// subtree at the first byte no stack accepts, and are cached per grammar
/// by matcher state: sequences of one schema keep meeting the same states
/// (inside a string, after a comma), across requests too.
///
/// Threads: a `grammar` (and its mask cache, locked) is shared by every
/// sequence using it; a `grammar_matcher` belongs to one sequence.

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmux::engine {

/// A grammar that does not parse, or one the matcher cannot run (left
/// recursion); the message says where and why.
class grammar_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// One element of a rule, as llama.cpp's llama_grammar_element. A rule is
/// its alternatives' elements, each alternative ended by `alt`, the last by
/// `end`. A character class is `chr`/`chr_not` (a code point), each range's
/// upper bound in a following `chr_rng_upper`, more members as `chr_alt`.
enum class gtype : uint8_t { end, alt, rule_ref, chr, chr_not, chr_rng_upper, chr_alt, chr_any };
struct gelem {
  gtype type;
  uint32_t value;  ///< code point, or rule id
};

/// The tokens of a vocabulary as bytes, in a trie: built once per model.
class vocab_trie {
public:
  /// `bytes[i]`: token i's bytes (empty for special tokens: never matched).
  explicit vocab_trie(const std::vector<std::string>& bytes);
  [[nodiscard]] int32_t vocab_size() const { return n_vocab_; }
  [[nodiscard]] const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }

  /// A node's children (by byte, sorted) and the tokens that end there,
  /// stored flat in depth-first order: a mask walk reads them in sequence.
  struct edge {
    uint8_t byte;
    int32_t child;
  };
  [[nodiscard]] int32_t node_count() const { return static_cast<int32_t>(edge_begin_.size()) - 1; }
  [[nodiscard]] const edge* edges_begin(int32_t n) const { return edges_.data() + edge_begin_[static_cast<size_t>(n)]; }
  [[nodiscard]] const edge* edges_end(int32_t n) const { return edges_.data() + edge_begin_[static_cast<size_t>(n) + 1]; }
  [[nodiscard]] const int32_t* tokens_begin(int32_t n) const { return tokens_.data() + token_begin_[static_cast<size_t>(n)]; }
  [[nodiscard]] const int32_t* tokens_end(int32_t n) const { return tokens_.data() + token_begin_[static_cast<size_t>(n) + 1]; }

private:
  int32_t n_vocab_ = 0;
  std::vector<std::string> bytes_;
  std::vector<int32_t> edge_begin_;   ///< per node, into edges_ (node 0 is the root)
  std::vector<edge> edges_;
  std::vector<int32_t> token_begin_;  ///< per node, into tokens_
  std::vector<int32_t> tokens_;
};

/// Allowed next tokens: one bit per token id.
using token_mask = std::vector<uint64_t>;
[[nodiscard]] inline bool mask_has(const token_mask& m, int32_t id) {
  return (m[static_cast<size_t>(id) >> 6] >> (id & 63)) & 1u;
}

class grammar_matcher;
struct mask_walk;

class grammar {
public:
  grammar();
  ~grammar();

  /// Parses GBNF: `name ::= alternatives` rules (the start rule is `root`),
  /// "literals" and [classes] with \n \t \r \\ \" \xHH \uHHHH escapes, `.`,
  /// ( groups ), rule names, `*` `+` `?` `{m}` `{m,}` `{m,n}`, `#` comments.
  /// Throws grammar_error (undefined rule, no root, left recursion, syntax).
  static std::shared_ptr<grammar> parse(std::string_view text);

  [[nodiscard]] const std::vector<std::vector<gelem>>& rules() const { return rules_; }
  [[nodiscard]] uint32_t root() const { return root_; }

  /// The mask for a matcher state, from the cache or computed (and cached,
  /// up to `mask_cache_limit` states; then the cache starts over).
  [[nodiscard]] std::shared_ptr<const token_mask> mask_for(const grammar_matcher& m, const vocab_trie& vocab) const;
  static constexpr size_t mask_cache_limit = 4096;
  /// Masks computed (cache misses) and served from the cache, for tests and metrics.
  [[nodiscard]] uint64_t masks_computed() const;
  [[nodiscard]] uint64_t masks_cached() const;

private:
  friend class grammar_matcher;
  /// The trie walk behind a mask, with the stack sets and transitions it
  /// learned kept for the next one (under walk_mu_).
  [[nodiscard]] token_mask walk(const std::vector<std::vector<const gelem*>>& stacks, const std::string& pending,
                                const vocab_trie& vocab) const;

  std::vector<std::vector<gelem>> rules_;
  uint32_t root_ = 0;
  mutable std::mutex walk_mu_;
  mutable std::unique_ptr<mask_walk> walk_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::shared_ptr<const token_mask>> masks_;
  mutable uint64_t computed_ = 0, cached_ = 0;
};

/// One sequence's position in a grammar.
class grammar_matcher {
public:
  explicit grammar_matcher(std::shared_ptr<const grammar> g);

  /// Advances over `bytes` (a token's); false (and no change) when the
  /// grammar does not allow them here.
  bool accept(std::string_view bytes);
  /// Whether `bytes` would be accepted now, without advancing.
  [[nodiscard]] bool allows(std::string_view bytes) const;
  /// The output so far is a complete sentence of the grammar: EOS may come.
  [[nodiscard]] bool can_end() const;
  /// Nothing but EOS can come (every stack is empty).
  [[nodiscard]] bool finished() const;
  /// Every token of `vocab` that `allows`, computed now (no cache).
  [[nodiscard]] token_mask compute_mask(const vocab_trie& vocab) const;
  /// The state as a string key (stacks and pending bytes), for mask caches.
  [[nodiscard]] std::string key() const;
  [[nodiscard]] const grammar& rules() const { return *g_; }

  using stack = std::vector<const gelem*>;

private:
  std::shared_ptr<const grammar> g_;
  std::vector<stack> stacks_;
  std::string pending_;  ///< bytes of an unfinished UTF-8 character
};

/// A cache of compiled grammars by their text, shared by an engine's
/// sequences (the first request of a schema parses it; the rest reuse it
/// with its masks). Thread-safe.
class grammar_cache {
public:
  /// The grammar for `text`; throws grammar_error.
  std::shared_ptr<const grammar> get(const std::string& text);
  static constexpr size_t limit = 64;

private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<grammar>> by_text_;
};

}  // namespace llmux::engine
