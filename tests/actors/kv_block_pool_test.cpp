// Head-wise KV pool: model A (2 layers × 4 KV heads = 8 physical blocks per
// token-block) and model B (3 layers × 2 KV heads = 6) share one pool; plain
// allocations first (sequences opened with no prompt, so no prefix cache),
// then block tables and the prefix cache, then quotas with borrowing.

#include "actors/kv_manager/kv_block_pool.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

using llmux::kv::kv_block_pool;

namespace {

kv_block_pool two_models(int64_t total) {
  kv_block_pool p(total, 16);
  p.add_model("a", 2, 4);
  p.add_model("b", 3, 2);
  return p;
}

}  // namespace

TEST_CASE("kv_block_pool: layers × kv_heads physical blocks per token-block", "[kv_pool]") {
  auto p = two_models(100);  // 16-token blocks
  CHECK(p.total() == 100);
  CHECK(p.block_tokens() == 16);
  CHECK(p.blocks_per_token_block("a") == 8);
  CHECK(p.blocks_per_token_block("b") == 6);
  CHECK(p.blocks_per_token_block("nope") == 0);
  CHECK(p.models().at("a").quota == 100);  // defaults to the whole pool

  // A's 5 token-blocks in two sequences, so that part of them can go back.
  REQUIRE(p.open("a", 1, {}, 16 * 3) == 0);  // 24
  REQUIRE(p.open("a", 2, {}, 16 * 2) == 0);  // 16: 40
  CHECK(p.used() == 40);
  CHECK(p.models().at("a").used == 40);
  REQUIRE(p.open("b", 1, {}, 16 * 10) == 0);  // 60
  CHECK(p.used() == 100);
  CHECK(p.free() == 0);
  CHECK(p.models().at("b").used == 60);
  CHECK_FALSE(p.open("a", 3, {}, 16).has_value());
  CHECK_FALSE(p.open("b", 2, {}, 16).has_value());
  CHECK(p.models().at("a").sequences == 2);  // a refused open holds nothing

  p.close("a", 2);  // 16 back
  CHECK(p.used() == 84);
  CHECK(p.free() == 16);
  CHECK(p.models().at("a").used == 24);
  // 16 free: B can take 2 token-blocks (12), not 3 (18).
  CHECK_FALSE(p.open("b", 3, {}, 16 * 3).has_value());
  CHECK(p.open("b", 4, {}, 16 * 2) == 0);
  CHECK(p.free() == 4);
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: allocation is all or nothing", "[kv_pool]") {
  auto p = two_models(50);
  REQUIRE(p.open("a", 1, {}, 16 * 6) == 0);         // 48 of 50
  CHECK_FALSE(p.open("b", 1, {}, 16).has_value());  // needs 6, 2 free: nothing taken
  CHECK(p.used() == 48);
  CHECK(p.models().at("b").used == 0);
  CHECK(p.models().at("b").sequences == 0);
  CHECK_FALSE(p.open("a", 2, {}, 16).has_value());  // needs 8
  CHECK(p.used() == 48);
  CHECK(p.table("a", 2) == nullptr);
}

TEST_CASE("kv_block_pool: unknown models are refused, negative sizes take nothing", "[kv_pool]") {
  auto p = two_models(100);
  CHECK_FALSE(p.open("c", 1, {}, 16).has_value());
  CHECK(p.table("c", 1) == nullptr);
  // A negative token count asks for no blocks: an empty table.
  REQUIRE(p.open("a", 1, {}, -16) == 0);
  CHECK(p.table("a", 1)->empty());
  CHECK(p.grow("a", 1, -5));  // covered already
  CHECK(p.table("a", 1)->empty());
  CHECK(p.used() == 0);
  p.close("c", 1);  // nothing to give back, nothing breaks
  p.close("a", 2);
  p.close("a", 1);
  CHECK(p.used() == 0);
  CHECK(p.models().at("a").sequences == 0);
  CHECK(p.check_invariants().empty());
  // A negative size makes an empty pool.
  kv_block_pool empty(-5, 16);
  CHECK(empty.total() == 0);
}

TEST_CASE("kv_block_pool: quotas cap one model, not the others", "[kv_pool]") {
  auto p = two_models(100);
  p.set_quota("a", 20);
  CHECK(p.models().at("a").quota == 20);
  CHECK(p.open("a", 1, {}, 16 * 2) == 0);            // 16 <= 20
  CHECK_FALSE(p.open("a", 2, {}, 16).has_value());   // 24 > 20, although the pool has 84 free
  CHECK_FALSE(p.grow("a", 1, 16 * 3));               // the same through a grow
  CHECK(p.used() == 16);
  // B is not capped: 84, in two sequences so that 6 can go back.
  CHECK(p.open("b", 1, {}, 16 * 13) == 0);
  CHECK(p.open("b", 2, {}, 16) == 0);
  CHECK(p.free() == 0);
  p.set_quota("b", -3);  // clamps to 0
  CHECK(p.models().at("b").quota == 0);
  p.close("b", 2);
  CHECK(p.free() == 6);
  CHECK_FALSE(p.open("b", 3, {}, 16).has_value());  // 6 free, but quota 0
  p.set_quota("ghost", 10);  // unknown: ignored
  CHECK(p.models().count("ghost") == 0);
}

TEST_CASE("kv_block_pool: closing an unknown or closed sequence changes nothing", "[kv_pool]") {
  auto p = two_models(100);
  REQUIRE(p.open("a", 1, {}, 16 * 2) == 0);  // 16
  REQUIRE(p.open("b", 1, {}, 16) == 0);      // 6; same seq number, other model
  p.close("a", 1);
  CHECK(p.models().at("a").used == 0);
  CHECK(p.used() == 6);  // B's blocks are untouched
  p.close("a", 1);       // again: nothing held
  p.close("a", 2);       // never opened
  CHECK(p.used() == 6);
  CHECK(p.models().at("b").sequences == 1);
  CHECK(p.check_invariants().empty());
  p.close("b", 1);
  CHECK(p.used() == 0);
  CHECK(p.free() == 100);
}

TEST_CASE("kv_block_pool property: used is the sum of per-model use, within the pool",
          "[kv_pool][property]") {
  std::mt19937 rng(777);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const std::map<std::string, int64_t> per = {{"a", 8}, {"b", 6}, {"c", 5}};  // 2·4, 3·2, 1·5
  for (int round = 0; round < 50; ++round) {
    const int64_t total = uniform(0, 300);
    kv_block_pool p(total, 16);
    p.add_model("a", 2, 4);
    p.add_model("b", 3, 2);
    p.add_model("c", 1, 5);
    // Token-blocks of each open sequence of each model, as the test thinks.
    std::map<std::string, std::map<uint64_t, int64_t>> held;
    auto holds = [&](const std::string& n) {  // physical blocks
      int64_t token_blocks = 0;
      for (const auto& [s, k] : held[n])
        token_blocks += k;
      return token_blocks * per.at(n);
    };
    uint64_t next_seq = 1;
    for (int op = 0; op < 300; ++op) {
      auto it = per.begin();
      std::advance(it, uniform(0, 2));
      const auto& name = it->first;
      const int64_t k = uniform(0, 12);
      switch (uniform(0, 3)) {
        case 0:
        case 1: {  // a sequence of k token-blocks
          const int64_t need = k * it->second;
          int64_t used_before = 0;
          for (const auto& [n, m] : p.models())
            used_before += holds(n);
          const bool fits = used_before + need <= total && holds(name) + need <= p.models().at(name).quota;
          const uint64_t s = next_seq++;
          REQUIRE(p.open(name, s, {}, static_cast<int32_t>(16 * k)).has_value() == fits);
          if (fits)
            held[name][s] = k;
          break;
        }
        case 2: {  // close one of its sequences, or (k = 0) one never opened
          auto& mine = held[name];
          uint64_t s = next_seq;
          if (k > 0 && !mine.empty()) {
            auto sit = mine.begin();
            std::advance(sit, uniform(0, static_cast<int>(mine.size()) - 1));
            s = sit->first;
          }
          p.close(name, s);
          mine.erase(s);
          break;
        }
        case 3:
          p.set_quota(name, uniform(0, 300));
          break;
      }
      int64_t sum = 0;
      for (const auto& [n, m] : p.models()) {
        REQUIRE(m.used == holds(n));
        REQUIRE(m.sequences == static_cast<int64_t>(held[n].size()));
        sum += m.used;
      }
      REQUIRE(p.used() == sum);
      REQUIRE(p.used() >= 0);
      REQUIRE(p.used() <= p.total());
      REQUIRE(p.check_invariants().empty());
    }
  }
}

// ---- sequences: block tables and the prefix cache ----

namespace {

using tokens_t = std::vector<int32_t>;

/// `count` tokens counting up from `first`.
tokens_t run(int32_t first, int count) {
  tokens_t t(static_cast<size_t>(count));
  std::iota(t.begin(), t.end(), first);
  return t;
}

tokens_t concat(tokens_t a, const tokens_t& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

/// The ids of token-block `i` of a table with `per` ids per token-block.
std::vector<int32_t> token_block(const std::vector<int32_t>& table, size_t i, size_t per) {
  return {table.begin() + static_cast<std::ptrdiff_t>(i * per),
          table.begin() + static_cast<std::ptrdiff_t>((i + 1) * per)};
}

/// Models "a" (8 ids per token-block) and "b" (6) with 4-token blocks.
kv_block_pool small_pool(int64_t total) {
  kv_block_pool p(total, 4);
  p.add_model("a", 2, 4);
  p.add_model("b", 3, 2);
  return p;
}

/// Every block of every chain in one bucket: only the token and parent
/// comparisons stand between a lookup and a false hit.
uint64_t constant_hash(uint64_t, const int32_t*, size_t) {
  return 42;
}

/// Three buckets: chains collide often, for the property test.
uint64_t weak_hash(uint64_t parent, const int32_t* tokens, size_t) {
  return (parent + static_cast<uint64_t>(tokens[0])) % 3;
}

}  // namespace

TEST_CASE("kv_block_pool: SmolLM2 and stories260K shapes share one free list of ids", "[kv_pool][seq]") {
  // SmolLM2-135M: 30 layers × 3 KV heads = 90 ids per token-block;
  // stories260K: 5 layers × 4 KV heads = 20.
  kv_block_pool p(400, 4);
  p.add_model("smol", 30, 3);
  p.add_model("stories", 5, 4);
  REQUIRE(p.open("smol", 1, run(0, 10), 10) == 0);   // 3 token-blocks: 270
  REQUIRE(p.open("stories", 1, run(0, 5), 8) == 0);  // 2 token-blocks: 40; same seq number, other model
  const auto smol = *p.table("smol", 1);
  const auto stories = *p.table("stories", 1);
  CHECK(smol.size() == 270);
  CHECK(stories.size() == 40);
  for (size_t i = 0; i < 3; ++i) {
    auto ids = token_block(smol, i, 90);
    CHECK(std::set<int32_t>(ids.begin(), ids.end()).size() == 90);
  }
  std::set<int32_t> all(smol.begin(), smol.end());
  all.insert(stories.begin(), stories.end());
  CHECK(all.size() == 310);  // no id twice in a table, none in both
  CHECK(*all.begin() >= 0);
  CHECK(*all.rbegin() < 400);
  CHECK(p.free() == 90);
  CHECK(p.used() == 310);
  CHECK(p.models().at("smol").used == 270);
  CHECK(p.models().at("stories").used == 40);
  CHECK(p.models().at("smol").sequences == 1);
  CHECK(p.table("smol", 2) == nullptr);
  CHECK(p.table("ghost", 1) == nullptr);

  // A second stories260K sequence takes 80 of the 90 left; neither shape fits in 10.
  REQUIRE(p.open("stories", 2, {}, 16) == 0);                   // 4 token-blocks
  CHECK_FALSE(p.open("smol", 2, run(0, 1), 1).has_value());     // 90 > 10
  CHECK_FALSE(p.open("stories", 3, run(0, 1), 1).has_value());  // 20 > 10
  p.close("stories", 2);
  REQUIRE(p.open("smol", 2, run(0, 1), 1) == 0);
  CHECK(p.free() == 0);
  CHECK(p.check_invariants().empty());

  // What SmolLM2 gives back, stories260K can take: 270 ids are 13 token-blocks of 20.
  p.close("smol", 1);
  CHECK(p.free() == 270);
  CHECK(p.models().at("smol").used == 90);
  REQUIRE(p.open("stories", 3, run(0, 1), 52) == 0);
  const auto& reused = *p.table("stories", 3);
  CHECK(reused.size() == 260);
  CHECK(std::all_of(reused.begin(), reused.end(),
                    [&](int32_t b) { return std::find(smol.begin(), smol.end(), b) != smol.end(); }));
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: open and grow are all or nothing on the pool", "[kv_pool][seq]") {
  auto p = two_models(100);  // 16-token blocks; a: 8 ids per token-block, b: 6
  REQUIRE(p.open("a", 1, run(0, 100), 160) == 0);  // 10 token-blocks: 80
  CHECK(p.free() == 20);
  CHECK_FALSE(p.open("b", 1, run(0, 10), 64).has_value());  // 4 token-blocks: 24 > 20
  CHECK(p.free() == 20);
  CHECK(p.models().at("b").used == 0);
  CHECK(p.models().at("b").sequences == 0);
  CHECK(p.models().at("b").prefix_queries == 0);  // a refused open counts nothing
  CHECK(p.table("b", 1) == nullptr);

  const auto before = *p.table("a", 1);
  CHECK_FALSE(p.grow("a", 1, 160 + 48));  // 3 more: 24 > 20
  CHECK(*p.table("a", 1) == before);
  CHECK(p.free() == 20);
  CHECK(p.grow("a", 1, 160 + 32));  // 2 more: 16
  CHECK(p.table("a", 1)->size() == 96);
  CHECK(std::equal(before.begin(), before.end(), p.table("a", 1)->begin()));  // appended
  CHECK(p.grow("a", 1, 5));  // covered already: no change
  CHECK(p.table("a", 1)->size() == 96);
  CHECK(p.free() == 4);

  CHECK_FALSE(p.grow("a", 2, 16));  // unknown sequence
  CHECK_FALSE(p.grow("c", 1, 16));  // unknown model
  CHECK_FALSE(p.open("a", 1, run(0, 1), 1).has_value());  // duplicate sequence
  CHECK_FALSE(p.open("c", 1, run(0, 1), 1).has_value());  // unknown model
  CHECK(p.table("a", 1)->size() == 96);
  CHECK(p.free() == 4);
  CHECK(p.check_invariants().empty());

  // A first prefill chunk: the table covers `tokens`, the rest comes by grow.
  p.close("a", 1);
  REQUIRE(p.open("b", 2, run(0, 100), 16) == 0);
  CHECK(p.table("b", 2)->size() == 6);
  CHECK(p.grow("b", 2, 100));  // 7 token-blocks
  CHECK(p.table("b", 2)->size() == 42);
  CHECK(p.free() == 58);
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: quotas cap the sum of a model's sequences", "[kv_pool][seq]") {
  auto p = two_models(200);  // 16-token blocks
  p.set_quota("a", 40);
  REQUIRE(p.open("a", 1, run(0, 40), 48) == 0);  // 3 token-blocks: 24
  REQUIRE(p.open("a", 2, {}, 32) == 0);          // 16: 40
  CHECK(p.models().at("a").used == 40);
  CHECK_FALSE(p.grow("a", 1, 64));                         // 48 > 40, with 160 free
  CHECK_FALSE(p.grow("a", 2, 48));
  CHECK_FALSE(p.open("a", 3, run(0, 1), 1).has_value());
  CHECK(p.models().at("a").used == 40);
  REQUIRE(p.open("b", 1, run(0, 1), 160) == 0);  // b is not capped: 60
  CHECK(p.free() == 100);

  p.set_quota("a", 48);  // raised: takes effect at once
  CHECK(p.grow("a", 1, 64));
  CHECK(p.models().at("a").used == 48);

  p.set_quota("a", 10);  // lowered below use: nothing is taken away, nothing more given
  CHECK(p.models().at("a").used == 48);
  CHECK(p.table("a", 1)->size() == 32);
  CHECK_FALSE(p.open("a", 3, run(0, 1), 1).has_value());
  p.close("a", 1);
  CHECK(p.models().at("a").used == 16);
  CHECK_FALSE(p.open("a", 3, run(0, 1), 1).has_value());  // 24 > 10
  p.close("a", 2);
  CHECK(p.open("a", 3, run(0, 1), 1) == 0);  // 8 <= 10
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: a repeated prompt shares the full blocks of the first", "[kv_pool][seq][prefix]") {
  auto p = small_pool(200);          // 4-token blocks; a: 8 ids per token-block
  const auto prompt = run(100, 10);  // two full token-blocks and two tokens
  REQUIRE(p.open("a", 1, prompt, 12) == 0);
  p.commit("a", 1, run(100, 6));  // only block 0 is full
  CHECK(p.open("a", 2, prompt, 12) == 4);
  p.close("a", 2);
  p.commit("a", 1, prompt);  // block 1 too
  p.commit("a", 1, prompt);  // again: nothing new

  REQUIRE(p.open("a", 3, prompt, 12) == 8);  // a multiple of 4, below 10
  const auto t1 = *p.table("a", 1);
  const auto t3 = *p.table("a", 3);
  CHECK(token_block(t3, 0, 8) == token_block(t1, 0, 8));
  CHECK(token_block(t3, 1, 8) == token_block(t1, 1, 8));
  const auto own1 = token_block(t1, 2, 8);
  const auto own3 = token_block(t3, 2, 8);
  CHECK(std::none_of(own3.begin(), own3.end(),
                     [&](int32_t b) { return std::find(own1.begin(), own1.end(), b) != own1.end(); }));
  CHECK(p.models().at("a").used == 32);  // shared blocks counted once
  CHECK(p.used() == 32);
  CHECK(p.models().at("a").prefix_queries == 6);  // two full blocks looked up per open
  CHECK(p.models().at("a").prefix_hits == 3);     // 0 + 1 + 2

  // A prompt of exactly two full blocks leaves its last token to compute.
  CHECK(p.open("a", 4, run(100, 8), 8) == 4);
  // A different token in block 1 stops the hit after block 0; in block 0, at once.
  auto changed = prompt;
  changed[5] = 7;
  CHECK(p.open("a", 5, changed, 12) == 4);
  changed[0] = 7;
  CHECK(p.open("a", 6, changed, 12) == 0);
  // Another model with the same tokens: its own cache, empty.
  CHECK(p.open("b", 1, prompt, 12) == 0);
  CHECK(p.models().at("a").used == 80);
  CHECK(p.check_invariants().empty());

  // Closing the publisher frees only its own block; the shared ones stay referenced.
  p.close("a", 1);
  CHECK(p.models().at("a").used == 72);
  CHECK(p.evictable() == 0);
  CHECK(*p.table("a", 3) == t3);
  p.close("a", 3);  // block 1 now unreferenced: cached, evictable, nobody's quota
  CHECK(p.evictable() == 8);
  CHECK(p.models().at("a").cached == 8);
  CHECK(p.models().at("a").used == 56);
  for (uint64_t s : {4, 5, 6})
    p.close("a", s);
  CHECK(p.models().at("a").used == 0);
  CHECK(p.models().at("a").sequences == 0);
  CHECK(p.evictable() == 16);  // blocks 0 and 1 of the prompt, once each
  CHECK(p.free() + p.evictable() + p.models().at("b").used == p.total());
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: hash collisions never make a false hit", "[kv_pool][seq][prefix]") {
  const auto t = run(0, 4);
  CHECK(kv_block_pool::chain_hash(1, t.data(), 4) != kv_block_pool::chain_hash(2, t.data(), 4));
  CHECK(kv_block_pool::chain_hash(0, t.data(), 4) != kv_block_pool::chain_hash(0, t.data(), 3));

  auto p = small_pool(400);
  p.set_prefix_hash(&constant_hash);
  const auto a0 = run(0, 4), a1 = run(10, 4), b0 = run(20, 4), b1 = run(30, 4), tail = run(90, 1);
  auto prompt = [&](const tokens_t& x, const tokens_t& y) { return concat(concat(x, y), tail); };
  REQUIRE(p.open("a", 1, prompt(a0, a1), 9) == 0);
  p.commit("a", 1, concat(a0, a1));
  REQUIRE(p.open("a", 2, prompt(b0, b1), 9) == 0);  // same hashes, other tokens
  p.commit("a", 2, concat(b0, b1));
  CHECK(p.open("a", 3, prompt(a0, a1), 9) == 8);
  CHECK(p.open("a", 4, prompt(b0, b1), 9) == 8);
  CHECK(token_block(*p.table("a", 4), 1, 8) == token_block(*p.table("a", 2), 1, 8));
  // b1's tokens are cached, but after b0: behind a0 they are not a hit.
  CHECK(p.open("a", 5, prompt(a0, b1), 9) == 4);
  CHECK(p.open("a", 6, prompt(b0, a1), 9) == 4);
  CHECK(token_block(*p.table("a", 6), 0, 8) == token_block(*p.table("a", 2), 0, 8));
  CHECK(p.open("a", 7, prompt(run(50, 4), a1), 9) == 0);
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: blocks two sequences computed alike are all cached, the longest chain wins",
          "[kv_pool][seq][prefix]") {
  // Whichever publishes first, a lookup must not settle for the shorter chain.
  for (bool longer_first : {false, true}) {
    INFO("longer chain published first: " << longer_first);
    auto p = small_pool(400);
    const auto prompt = run(0, 13);  // three full token-blocks and one token
    REQUIRE(p.open("a", 1, prompt, 13) == 0);
    REQUIRE(p.open("a", 2, prompt, 13) == 0);  // before 1 publishes: a miss
    if (longer_first)
      p.commit("a", 2, run(0, 12));  // blocks 0, 1, 2
    p.commit("a", 1, run(0, 8));     // blocks 0, 1: alike to 2's
    if (!longer_first)
      p.commit("a", 2, run(0, 12));
    CHECK(p.open("a", 3, prompt, 13) == 12);  // along 2's chain
    CHECK(token_block(*p.table("a", 3), 2, 8) == token_block(*p.table("a", 2), 2, 8));
    for (uint64_t s : {3, 1, 2})
      p.close("a", s);
    CHECK(p.evictable() == 40);  // 1's two blocks and 2's three
    CHECK(p.check_invariants().empty());
  }
}

TEST_CASE("kv_block_pool: unreferenced cached blocks are evicted least recently released first",
          "[kv_pool][seq][lru]") {
  auto p = small_pool(48);  // a: 8 ids per token-block
  const auto p1 = run(0, 9), p2 = run(100, 9);  // two full token-blocks and a token each
  auto cache = [&](uint64_t seq, const tokens_t& prompt) {
    REQUIRE(p.open("a", seq, prompt, static_cast<int32_t>(prompt.size())).has_value());
    p.commit("a", seq, prompt);
    p.close("a", seq);
  };
  cache(1, p1);
  cache(2, p2);
  CHECK(p.evictable() == 32);
  CHECK(p.models().at("a").cached == 32);
  CHECK(p.models().at("a").used == 0);
  CHECK(p.free() == 16);
  cache(3, p1);  // a hit: p1 is now the most recently released
  CHECK(p.models().at("a").prefix_hits == 2);
  CHECK(p.evictable() == 32);

  REQUIRE(p.open("a", 4, run(200, 16), 16) == 0);  // 32: the 16 free and p2's 16
  CHECK(p.evicted_blocks() == 16);
  CHECK(p.evictable() == 16);
  CHECK(p.free() == 0);
  p.close("a", 4);  // never committed: straight back to the free list
  CHECK(p.free() == 32);
  CHECK(p.open("a", 5, p2, 9) == 0);  // p2 is gone
  p.close("a", 5);
  REQUIRE(p.open("a", 6, p1, 9) == 8);  // p1 stayed
  CHECK(p.free() == 24);

  // Seq 6 references p1's blocks; one more cached prompt is evictable.
  cache(7, run(300, 5));  // one full token-block
  CHECK(p.evictable() == 8);
  CHECK(p.free() == 16);
  const auto held = *p.table("a", 6);
  // 32 > 16 free + 8 evictable: refused rather than taking p1's blocks.
  CHECK_FALSE(p.open("a", 8, run(400, 1), 16).has_value());
  CHECK_FALSE(p.grow("a", 6, 12 + 16));  // nor may the sequence holding them grow by 32
  CHECK(p.evicted_blocks() == 16);
  REQUIRE(p.open("a", 8, run(400, 1), 12) == 0);  // 24: evicts the other prompt only
  CHECK(p.evicted_blocks() == 24);
  CHECK(p.evictable() == 0);
  CHECK(*p.table("a", 6) == held);
  CHECK(p.check_invariants().empty());
  p.close("a", 8);
  p.close("a", 6);
  CHECK(p.open("a", 9, p1, 9) == 8);  // still cached
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: eviction takes the end of a cached chain before its start", "[kv_pool][seq][lru]") {
  auto p = small_pool(32);
  const auto prompt = run(0, 13);  // three full token-blocks and one token
  REQUIRE(p.open("a", 1, prompt, 13) == 0);  // 4 token-blocks: 32
  p.commit("a", 1, run(0, 12));
  p.close("a", 1);  // 24 cached, released together
  REQUIRE(p.open("a", 2, run(50, 1), 8) == 0);  // 16: the 8 free and one cached block
  CHECK(p.evicted_blocks() == 8);
  p.close("a", 2);
  // Block 2 went; blocks 0 and 1 still make a hit.
  CHECK(p.open("a", 3, prompt, 13) == 8);
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: an open never evicts the cached blocks it is about to share", "[kv_pool][seq][lru]") {
  auto p = small_pool(32);
  const auto prompt = run(0, 9);
  REQUIRE(p.open("a", 1, prompt, 9) == 0);
  p.commit("a", 1, prompt);
  p.close("a", 1);  // 16 cached, 16 free
  REQUIRE(p.open("a", 2, run(50, 8), 8) == 0);  // the 16 free
  CHECK(p.free() == 0);
  CHECK(p.evictable() == 16);
  // 16 shared + 8 fresh, and the only evictable blocks are the shared ones.
  CHECK_FALSE(p.open("a", 3, prompt, 9).has_value());
  CHECK(p.evictable() == 16);
  CHECK(p.evicted_blocks() == 0);
  p.close("a", 2);

  // Cached blocks count toward nobody's quota until a sequence shares them.
  CHECK(p.models().at("a").used == 0);
  p.set_quota("a", 16);
  CHECK_FALSE(p.open("a", 3, prompt, 9).has_value());  // 16 shared + 8 > 16
  p.set_quota("a", 24);
  CHECK(p.open("a", 3, prompt, 9) == 8);
  CHECK(p.models().at("a").used == 24);
  CHECK(p.models().at("a").cached == 0);
  CHECK(p.check_invariants().empty());
}

TEST_CASE("kv_block_pool: head_size_waste measures one pool sized for the largest head", "[kv_pool]") {
  using llmux::kv::head_size_waste;
  // stories260K (head_dim 8) in blocks sized for SmolLM2 (64): 7/8 of each block unused.
  CHECK(head_size_waste({{8, 100}}, 64) == Approx(0.875));
  CHECK(head_size_waste({{64, 100}}, 64) == Approx(0.0));
  // 100 stories blocks beside 300 SmolLM2 ones: 100·56 / (400·64).
  CHECK(head_size_waste({{8, 100}, {64, 300}}, 64) == Approx(0.21875));
  // The free blocks, listed at full size, dilute it to a share of the pool.
  CHECK(head_size_waste({{8, 100}, {64, 300}, {64, 400}}, 64) == Approx(0.109375));
  CHECK(head_size_waste({}, 64) == 0.0);
  CHECK(head_size_waste({{8, 0}}, 64) == 0.0);
  CHECK(head_size_waste({{128, 10}}, 64) == 0.0);
  CHECK(head_size_waste({{8, 10}}, 0) == 0.0);
}

TEST_CASE("kv_block_pool property: random opens, grows, commits and closes never leak or share wrongly",
          "[kv_pool][property]") {
  for (auto hash : {&kv_block_pool::chain_hash, &weak_hash}) {
    std::mt19937 rng(4242);
    auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const int bt = 4;
    const int64_t total = 160;
    kv_block_pool p(total, bt);
    p.set_prefix_hash(hash);
    p.add_model("a", 2, 4);
    p.add_model("b", 3, 2);
    p.add_model("c", 1, 5);
    const std::map<std::string, size_t> per = {{"a", 8}, {"b", 6}, {"c", 5}};
    // Prompts start with one of three system prompts (cut anywhere) so
    // prefixes repeat, then a tail over {0, 1, 2}.
    const std::vector<tokens_t> systems = {run(0, 12), run(1, 12), concat(run(0, 4), run(7, 8))};

    struct live {
      std::string model;
      tokens_t stream;  ///< prompt, then generated tokens
      size_t computed = 0;
    };
    std::map<uint64_t, live> seqs;  // seq ids are unique across models here
    // What each id holds once committed: (model, the whole prefix up to it).
    std::map<int32_t, std::pair<std::string, tokens_t>> content;
    uint64_t next_seq = 1;
    int refused_opens = 0;

    auto pick_model = [&] {
      auto it = per.begin();
      std::advance(it, uniform(0, 2));
      return it->first;
    };
    auto pick_seq = [&] {
      auto it = seqs.begin();
      std::advance(it, uniform(0, static_cast<int>(seqs.size()) - 1));
      return it->first;
    };
    auto forget_from = [&](const std::vector<int32_t>& table, size_t from) {
      for (size_t i = from; i < table.size(); ++i)
        content.erase(table[i]);
    };
    auto snapshot = [&] {
      std::vector<int64_t> v{p.free(), p.evictable(), static_cast<int64_t>(p.evicted_blocks())};
      for (const auto& [n, m] : p.models())
        for (int64_t x : {m.used, m.cached, m.sequences, static_cast<int64_t>(m.prefix_queries),
                          static_cast<int64_t>(m.prefix_hits)})
          v.push_back(x);
      return v;
    };

    for (int op = 0; op < 3000; ++op) {
      const auto before = snapshot();
      switch (uniform(0, 10)) {
        case 0:
        case 1:
        case 2: {  // open
          const auto model = pick_model();
          const auto& system = systems[static_cast<size_t>(uniform(0, 2))];
          tokens_t prompt(system.begin(), system.begin() + uniform(0, 12));
          for (int i = uniform(prompt.empty() ? 1 : 0, 6); i > 0; --i)
            prompt.push_back(uniform(0, 2));
          const auto tokens = static_cast<int32_t>(prompt.size()) + uniform(-2, 6);
          const uint64_t s = next_seq++;
          const auto got = p.open(model, s, prompt, tokens);
          if (!got) {
            ++refused_opens;
            REQUIRE(p.table(model, s) == nullptr);
            REQUIRE(snapshot() == before);
            break;
          }
          const auto cached = static_cast<size_t>(*got);
          REQUIRE(cached % bt == 0);
          REQUIRE(cached < prompt.size());
          const auto& table = *p.table(model, s);
          const size_t m_per = per.at(model);
          const size_t wanted = (static_cast<size_t>(std::max(tokens, 0)) + bt - 1) / bt;
          REQUIRE(table.size() == m_per * std::max(wanted, cached / bt));
          // Every shared block holds the KV of exactly this prefix of this model.
          for (size_t i = 0; i < cached / bt * m_per; ++i) {
            auto c = content.find(table[i]);
            REQUIRE(c != content.end());
            REQUIRE(c->second.first == model);
            REQUIRE(c->second.second == tokens_t(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>((i / m_per + 1) * bt)));
          }
          forget_from(table, cached / bt * m_per);
          seqs[s] = live{model, prompt, cached};
          break;
        }
        case 3: {  // grow
          if (seqs.empty())
            break;
          const uint64_t s = pick_seq();
          const auto& l = seqs[s];
          const size_t m_per = per.at(l.model);
          const size_t have = p.table(l.model, s)->size();
          const auto tokens = static_cast<int32_t>(have / m_per * bt) + uniform(-4, 8);
          const auto fresh = std::max<int64_t>(
            0, static_cast<int64_t>((std::max(tokens, 0) + bt - 1) / bt * m_per) - static_cast<int64_t>(have));
          const auto& m = p.models().at(l.model);
          const bool fits = fresh == 0 || (m.used + fresh <= m.quota && fresh <= p.free() + p.evictable());
          REQUIRE(p.grow(l.model, s, tokens) == fits);
          const auto& after = *p.table(l.model, s);
          REQUIRE(after.size() == have + static_cast<size_t>(fits ? fresh : 0));
          forget_from(after, have);
          break;
        }
        case 4:
        case 5: {  // compute some tokens, generating past the prompt, and commit
          if (seqs.empty())
            break;
          const uint64_t s = pick_seq();
          auto& l = seqs[s];
          const auto& table = *p.table(l.model, s);
          const size_t m_per = per.at(l.model);
          l.computed = std::min(table.size() / m_per * bt, l.computed + static_cast<size_t>(uniform(0, 8)));
          while (l.stream.size() < l.computed)
            l.stream.push_back(uniform(0, 2));
          const tokens_t done(l.stream.begin(), l.stream.begin() + static_cast<std::ptrdiff_t>(l.computed));
          p.commit(l.model, s, done);
          for (size_t i = 0; i < l.computed / bt * m_per; ++i)
            content[table[i]] = {l.model, tokens_t(done.begin(), done.begin() + static_cast<std::ptrdiff_t>((i / m_per + 1) * bt))};
          break;
        }
        case 6:
        case 7: {  // finish, cancel or preempt
          if (seqs.empty())
            break;
          const uint64_t s = pick_seq();
          p.close(seqs[s].model, s);
          REQUIRE(p.table(seqs[s].model, s) == nullptr);
          seqs.erase(s);
          break;
        }
        case 8:
          p.set_quota(pick_model(), uniform(static_cast<int>(total) / 4, static_cast<int>(total)));
          break;
        case 9: {  // open with no prompt: no lookup, k token-blocks
          const auto model = pick_model();
          const int k = uniform(0, 3);
          const auto need = static_cast<int64_t>(k) * static_cast<int64_t>(per.at(model));
          const auto& m = p.models().at(model);
          const bool fits = m.used + need <= m.quota && need <= p.free() + p.evictable();
          const uint64_t s = next_seq++;
          const auto got = p.open(model, s, {}, k * bt);
          REQUIRE(got.has_value() == fits);
          if (!got) {
            REQUIRE(snapshot() == before);
            break;
          }
          REQUIRE(*got == 0);
          const auto& table = *p.table(model, s);
          REQUIRE(table.size() == static_cast<size_t>(need));
          forget_from(table, 0);
          seqs[s] = live{model, {}, 0};
          break;
        }
        case 10: {  // close a sequence the model does not have: nothing changes
          auto model = pick_model();
          uint64_t s = next_seq;  // never opened
          if (!seqs.empty() && uniform(0, 1) == 0) {
            s = pick_seq();  // another model's: seq ids are unique across models here
            while (model == seqs[s].model)
              model = pick_model();
          }
          p.close(model, s);
          REQUIRE(snapshot() == before);
          break;
        }
      }
      const auto problem = p.check_invariants();
      INFO("op " << op);
      REQUIRE(problem.empty());
      // An id in two tables: the same model, the same token-block, committed.
      std::map<int32_t, std::pair<std::string, size_t>> where;
      for (const auto& [s, l] : seqs) {
        const auto& table = *p.table(l.model, s);
        for (size_t i = 0; i < table.size(); ++i) {
          auto [it, first] = where.emplace(table[i], std::make_pair(l.model, i));
          if (!first) {
            REQUIRE(it->second == std::make_pair(l.model, i));
            REQUIRE(content.count(table[i]) == 1);
          }
        }
      }
    }

    // The run reached the interesting cases.
    uint64_t hits = 0;
    for (const auto& [n, m] : p.models())
      hits += m.prefix_hits;
    CHECK(hits > 0);
    CHECK(p.evicted_blocks() > 0);
    CHECK(refused_opens > 0);

    for (const auto& [s, l] : seqs)
      p.close(l.model, s);
    REQUIRE(p.check_invariants().empty());
    CHECK(p.free() + p.evictable() == total);
    int64_t cached = 0;
    for (const auto& [n, m] : p.models()) {
      CHECK(m.used == 0);
      CHECK(m.sequences == 0);
      cached += m.cached;
    }
    CHECK(cached == p.evictable());
  }
}

namespace {

/// A 100-block pool shared by "hot" and "cold" (1 physical block per
/// token-block each) with these quotas and borrowing on.
kv_block_pool hot_cold_pool(int64_t hot_quota, int64_t cold_quota, bool lend_idle) {
  kv_block_pool pool(100, 16);
  pool.add_model("hot", 1, 1);
  pool.add_model("cold", 1, 1);
  pool.set_quota("hot", hot_quota);
  pool.set_quota("cold", cold_quota);
  pool.set_borrow_spare(true);
  pool.set_lend_idle(lend_idle);
  return pool;
}

}  // namespace

TEST_CASE("kv_block_pool: with borrowing, quotas guarantee rather than cap", "[kv_pool]") {
  auto pool = hot_cold_pool(70, 30, false);
  // Hot may exceed its 70 while cold's 30 stay free for cold.
  REQUIRE(pool.open("hot", 1, {}, 16 * 70) == 0);
  CHECK_FALSE(pool.open("hot", 2, {}, 16).has_value());  // anything more would eat cold's guarantee
  // Cold's 10 in two sequences of 5, so that it can later give back all but 5.
  REQUIRE(pool.open("cold", 1, {}, 16 * 5) == 0);
  REQUIRE(pool.open("cold", 2, {}, 16 * 5) == 0);
  CHECK(pool.open("cold", 3, {}, 16 * 20) == 0);          // its guarantee is there
  CHECK_FALSE(pool.open("cold", 4, {}, 16).has_value());  // the pool is full
  pool.close("cold", 2);
  pool.close("cold", 3);
  // Cold now uses 5 of its 30: 25 owed to it, nothing spare for hot.
  CHECK_FALSE(pool.open("hot", 3, {}, 16).has_value());
  pool.set_quota("cold", 10);                             // its guarantee shrinks to 10: 5 owed
  CHECK(pool.open("hot", 4, {}, 16 * 20) == 0);           // 25 free, 5 owed: 20 may be lent
  CHECK_FALSE(pool.open("hot", 5, {}, 16).has_value());
  CHECK(pool.open("cold", 5, {}, 16 * 5) == 0);           // the 5 still owed to cold
  CHECK(pool.check_invariants().empty());
  // Without borrowing the same quota caps.
  kv_block_pool capped(100, 16);
  capped.add_model("hot", 1, 1);
  capped.add_model("cold", 1, 1);
  capped.set_quota("hot", 70);
  capped.set_quota("cold", 30);
  REQUIRE(capped.open("hot", 1, {}, 16 * 70) == 0);
  CHECK_FALSE(capped.open("hot", 2, {}, 16).has_value());
  capped.set_quota("cold", 10);
  CHECK_FALSE(capped.open("hot", 3, {}, 16).has_value());  // 20 spare, but hot is at its cap
}

TEST_CASE("kv_block_pool: idle guarantees are lent, a waiting model's are kept", "[kv_pool]") {
  auto pool = hot_cold_pool(70, 30, true);
  // Hot's 90 in two sequences: one of 90 would start anyway, since hot holds
  // nothing, so only the second tests lending. Cold waits for nothing and runs
  // no sequence: it keeps none of its 30, and 20 of them are lent.
  REQUIRE(pool.open("hot", 1, {}, 16 * 70) == 0);
  REQUIRE(pool.open("hot", 2, {}, 16 * 20) == 0);
  pool.set_waiting("cold", true);
  CHECK_FALSE(pool.open("hot", 3, {}, 16 * 5).has_value());  // cold now waits: what is left is its
  CHECK(pool.open("cold", 1, {}, 16 * 10) == 0);
  pool.close("hot", 2);  // 20 back
  CHECK_FALSE(pool.open("hot", 4, {}, 16).has_value());  // cold still owed 20 of its 30
  CHECK(pool.open("cold", 2, {}, 16 * 20) == 0);
  pool.set_waiting("cold", false);
  CHECK_FALSE(pool.open("hot", 5, {}, 16).has_value());  // the pool is simply full
  CHECK(pool.check_invariants().empty());
}

TEST_CASE("kv_block_pool: a running model keeps the next block of each sequence", "[kv_pool]") {
  auto pool = hot_cold_pool(70, 30, true);
  // Cold runs two sequences of 5 token-blocks and waits for nothing: of its
  // 20 unused, it keeps one token-block per sequence and lends the rest.
  REQUIRE(pool.open("cold", 1, {}, 16 * 5));
  REQUIRE(pool.open("cold", 2, {}, 16 * 5));
  REQUIRE(pool.open("hot", 1, {}, 16 * 70) == 0);
  CHECK(pool.open("hot", 2, {}, 16 * 18) == 0);
  CHECK_FALSE(pool.open("hot", 3, {}, 16).has_value());  // the last 2 are cold's next blocks
  // Both sequences get them, never preempted by hot's borrowing.
  CHECK(pool.grow("cold", 1, 16 * 6));
  CHECK(pool.grow("cold", 2, 16 * 6));
  CHECK_FALSE(pool.grow("cold", 1, 16 * 7));  // the pool is full
  // Once cold ends, its whole quota is lendable again.
  pool.close("cold", 1);
  pool.close("cold", 2);
  CHECK(pool.open("hot", 3, {}, 16 * 12) == 0);
  CHECK(pool.check_invariants().empty());
}

TEST_CASE("kv_block_pool: a waiting model's guarantee holds borrowers' new sequences, not their growth",
          "[kv_pool]") {
  auto pool = hot_cold_pool(70, 30, true);
  REQUIRE(pool.open("cold", 1, {}, 16 * 5) == 0);
  REQUIRE(pool.open("hot", 1, {}, 16 * 70) == 0);
  REQUIRE(pool.open("hot", 2, {}, 16 * 10) == 0);  // borrows 10 of cold's idle 25
  pool.set_waiting("cold", true);                  // 15 free, cold owed 25
  CHECK_FALSE(pool.open("hot", 3, {}, 16).has_value());  // no new borrower
  // Hot's running sequence still grows: refusing it would preempt it by
  // recompute. It leaves cold's sequence its next block.
  CHECK(pool.grow("hot", 2, 16 * 11));
  CHECK(pool.grow("hot", 2, 16 * 24));
  CHECK_FALSE(pool.grow("hot", 2, 16 * 25));
  CHECK(pool.grow("cold", 1, 16 * 6));
  // The borrowed blocks come back as hot's sequence ends, and stay cold's.
  pool.close("hot", 2);
  CHECK(pool.open("cold", 2, {}, 16 * 20) == 0);
  CHECK_FALSE(pool.open("hot", 4, {}, 16).has_value());  // 4 free, all still owed to cold
  CHECK(pool.check_invariants().empty());
}

TEST_CASE("kv_block_pool: with borrowing, a model holding nothing may always start", "[kv_pool]") {
  auto pool = hot_cold_pool(90, 10, true);
  pool.set_waiting("hot", true);
  // Cold's request needs 15, more than its quota, and hot keeps its 90: it
  // still starts, since cold holds nothing, rather than wait forever.
  CHECK(pool.open("cold", 1, {}, 16 * 15) == 0);
  CHECK_FALSE(pool.open("cold", 2, {}, 16).has_value());  // but only that one
  CHECK(pool.open("hot", 1, {}, 16 * 85) == 0);           // hot's guarantee is what is left
  CHECK_FALSE(pool.open("hot", 2, {}, 16).has_value());
  CHECK(pool.check_invariants().empty());
}

TEST_CASE("kv_block_pool: forget_cache frees one model's cached blocks, not the other's, nor referenced ones",
          "[kv_pool][prefix][residency]") {
  auto p = two_models(200);  // a: 8 ids per token-block, b: 6
  const auto pa = run(0, 33), pb = run(100, 33);
  REQUIRE(p.open("a", 1, pa, 33) == 0);
  p.commit("a", 1, pa);  // 2 full token-blocks cached
  REQUIRE(p.open("b", 1, pb, 33) == 0);
  p.commit("b", 1, pb);
  p.close("a", 1);
  p.close("b", 1);
  REQUIRE(p.models().at("a").cached == 16);
  REQUIRE(p.models().at("b").cached == 12);
  const auto free_before = p.free();
  // A running sequence of a that shares the cached prefix keeps it.
  REQUIRE(p.open("a", 2, pa, 33) == 32);
  CHECK(p.forget_cache("a") == 0);
  p.close("a", 2);
  CHECK(p.forget_cache("a") == 16);
  CHECK(p.models().at("a").cached == 0);
  CHECK(p.models().at("b").cached == 12);
  CHECK(p.free() == free_before + 16);
  // Nothing of a's prefix is found any more; b's still is.
  CHECK(p.open("a", 3, pa, 33) == 0);
  CHECK(p.open("b", 3, pb, 33) == 32);
  CHECK(p.check_invariants().empty());
}
