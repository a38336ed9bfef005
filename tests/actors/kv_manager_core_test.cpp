// kv_manager_core: the kv_manager actor's decisions without CAF. The pool
// itself (kv_block_pool_test.cpp) and the quota planner (unit_policy_test.cpp)
// have their own tests; these check what the core adds around them: grants
// in order, "never" against the quota or (ADBS) the pool less the other
// models' floors, load reports, timed rebalances and the admin state.
//
// Shapes used throughout, 16-token blocks:
//   a: 2 layers × 2 KV heads = 4 physical blocks per token-block, head_dim 64
//   b: 1 layer  × 2 KV heads = 2 physical blocks per token-block, head_dim 128

#include "actors/kv_manager/kv_manager_core.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using llmux::kv::kv_manager_core;
using llmux::kv::kv_manager_options;
using llmux::kv::kv_model_shape;
using llmux::protocol::kv_need;

namespace {

kv_manager_options two_models(int64_t total, const std::string& policy, bool tables_a = false) {
  kv_manager_options o;
  o.node = "n0";
  o.name = "u0/kv";
  o.total_blocks = total;
  o.block_tokens = 16;
  o.policy = policy;
  o.quota_period_ms = 1000;
  o.floor_tokens = 16;  // one token-block: a 4 blocks, b 2 blocks
  kv_model_shape a;
  a.model = "a";
  a.layers = 2;
  a.kv_heads = 2;
  a.head_dim = 64;
  a.tables = tables_a;
  kv_model_shape b;
  b.model = "b";
  b.layers = 1;
  b.kv_heads = 2;
  b.head_dim = 128;
  o.models = {a, b};
  return o;
}

kv_need need(uint64_t seq, int32_t tokens, std::vector<int32_t> lookup = {}) {
  kv_need n;
  n.seq = seq;
  n.tokens = tokens;
  n.lookup = std::move(lookup);
  return n;
}

std::vector<int32_t> prompt(int n, int32_t base) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i)
    p.push_back(base + i);
  return p;
}

}  // namespace

TEST_CASE("kv_manager_core: open grants in order and stops at the first that does not fit", "[kv_core]") {
  kv_manager_core kv(two_models(24, "fcfs"));
  CHECK(kv.planner() == nullptr);  // fcfs: no quotas
  // a: 1 tb (4) + 4 tb (16) = 20 of 24; the third (2 tb, 8) does not fit;
  // the fourth (1 tb, 4) would, but comes after a refusal.
  auto g = kv.open("a", {need(1, 16), need(2, 64), need(3, 32), need(4, 16)});
  CHECK(g.granted == 2);
  CHECK_FALSE(g.never);
  CHECK(g.cached == std::vector<int32_t>{0, 0});
  CHECK(g.blocks.empty());  // a's engine keeps no tables here
  CHECK(kv.pool().used() == 20);
  CHECK(kv.pool().models().at("a").sequences == 2);
  CHECK(kv.pool().table("a", 3) == nullptr);
  CHECK(kv.pool().table("a", 4) == nullptr);

  // It was order, not room: the fourth alone fits.
  auto g4 = kv.open("a", {need(4, 16)});
  CHECK(g4.granted == 1);
  CHECK(kv.pool().used() == 24);

  // Nothing fits now, but each would in an empty pool: not "never".
  auto none = kv.open("b", {need(1, 16)});
  CHECK(none.granted == 0);
  CHECK_FALSE(none.never);
  CHECK(kv.refusals() == 1);

  // An empty needs list is no refusal.
  auto empty = kv.open("b", {});
  CHECK(empty.granted == 0);
  CHECK_FALSE(empty.never);
  CHECK(kv.refusals() == 1);
}

TEST_CASE("kv_manager_core: without quotas, never means larger than the whole pool", "[kv_core]") {
  kv_manager_core kv(two_models(24, "round_robin"));
  // a: 6 tb = 24 blocks is the whole pool (fits when empty); 97 tokens = 7 tb
  // = 28 blocks never does.
  auto too_big = kv.open("a", {need(1, 97)});
  CHECK(too_big.granted == 0);
  CHECK(too_big.never);
  auto whole = kv.open("a", {need(2, 96)});
  CHECK(whole.granted == 1);
  CHECK_FALSE(whole.never);
  // Unknown models can never be served.
  auto unknown = kv.open("zz", {need(1, 16)});
  CHECK(unknown.granted == 0);
  CHECK(unknown.never);
  // Only the first need decides "never": a small first one that does not fit
  // now (the pool is full) is "not now", whatever follows.
  auto later = kv.open("b", {need(3, 16), need(4, 10000)});
  CHECK(later.granted == 0);
  CHECK_FALSE(later.never);
}

TEST_CASE("kv_manager_core: under ADBS never is measured against the pool less the other floors", "[kv_core]") {
  // 200 blocks; floors of 16 tokens: a 4, b 2. The most a can ever reach is
  // 200 - 2 = 198 blocks = 49 whole token-blocks (196) = 784 tokens.
  auto o = two_models(200, "adbs");
  kv_manager_core kv(o);
  REQUIRE(kv.planner() != nullptr);
  CHECK(kv.most_blocks("a") == 198);
  CHECK(kv.most_blocks("b") == 196);
  // Initial split by rate (1, 1) × blocks per token-block (4, 2):
  // a 133.33, b 66.67 → largest remainder: a 133, b 67.
  CHECK(kv.pool().models().at("a").quota == 133);
  CHECK(kv.pool().models().at("b").quota == 67);

  REQUIRE(kv.open("b", {need(1, 16)}).granted == 1);  // b holds 2: 198 free
  auto over = kv.open("a", {need(1, 785)});            // 50 tb = 200 > 198
  CHECK(over.granted == 0);
  CHECK(over.never);
  CHECK(kv.refusals() == 1);
  // 784 tokens: 196 blocks, above a's quota but within reach (a holding
  // nothing may start one sequence the pool has room for).
  auto at_most = kv.open("a", {need(2, 784)});
  CHECK(at_most.granted == 1);
  CHECK_FALSE(at_most.never);
  // The pool is full now: a small one is "not now".
  auto small = kv.open("a", {need(3, 16)});
  CHECK(small.granted == 0);
  CHECK_FALSE(small.never);

  // b: 200 - 4 = 196 → 98 tb = 1568 tokens at most.
  kv_manager_core kv2(o);
  REQUIRE(kv2.open("a", {need(1, 16)}).granted == 1);  // a holds 4: 196 free
  auto b_over = kv2.open("b", {need(1, 1569)});          // 99 tb = 198
  CHECK(b_over.granted == 0);
  CHECK(b_over.never);
  auto b_fits = kv2.open("b", {need(2, 1568)});
  CHECK(b_fits.granted == 1);
  CHECK_FALSE(b_fits.never);
}

// One answer whatever the pool holds now: a sequence over the pool less the
// other floors is never served, not served only while the others happen to
// be idle (where it would wait, and hold up every request behind it).
TEST_CASE("kv_manager_core: a sequence that can never fit is refused on an idle pool too", "[kv_core]") {
  kv_manager_core kv(two_models(200, "adbs"));
  auto g = kv.open("a", {need(1, 785)});  // 200 blocks > 198, though all 200 are free
  CHECK(g.granted == 0);
  CHECK(g.never);
  CHECK(kv.pool().used() == 0);
  // Behind a servable one it stops the batch without failing it.
  auto two = kv.open("a", {need(2, 16), need(3, 785), need(4, 16)});
  CHECK(two.granted == 1);
  CHECK_FALSE(two.never);
}

TEST_CASE("kv_manager_core: a repeated prompt is granted its cached prefix, with shared ids", "[kv_core]") {
  kv_manager_core kv(two_models(100, "fcfs", /*tables_a=*/true));
  const auto p = prompt(40, 100);  // 2 full token-blocks + 8 tokens
  auto first = kv.open("a", {need(1, 41, p)});
  REQUIRE(first.granted == 1);
  CHECK(first.cached == std::vector<int32_t>{0});
  REQUIRE(first.blocks.size() == 1);
  CHECK(first.blocks[0].size() == 3u * 4u);  // 41 tokens: 3 tb × 4
  CHECK(first.blocks[0] == *kv.pool().table("a", 1));
  kv.commit("a", 1, p);  // publishes the two full blocks

  auto second = kv.open("a", {need(2, 41, p)});
  REQUIRE(second.granted == 1);
  CHECK(second.cached == std::vector<int32_t>{32});
  REQUIRE(second.blocks.size() == 1);
  REQUIRE(second.blocks[0].size() == 12u);
  // The first two token-blocks (8 ids) are the first sequence's; the third is its own.
  CHECK(std::vector<int32_t>(second.blocks[0].begin(), second.blocks[0].begin() + 8)
        == std::vector<int32_t>(first.blocks[0].begin(), first.blocks[0].begin() + 8));
  for (size_t i = 8; i < 12; ++i)
    CHECK(std::find(first.blocks[0].begin(), first.blocks[0].end(), second.blocks[0][i]) == first.blocks[0].end());
  CHECK(kv.pool().used() == 12 + 4);

  // A different prompt shares nothing.
  auto other = kv.open("a", {need(3, 41, prompt(40, 500))});
  REQUIRE(other.granted == 1);
  CHECK(other.cached == std::vector<int32_t>{0});
  // b keeps no tables: its grants carry no ids.
  auto b = kv.open("b", {need(1, 16)});
  CHECK(b.granted == 1);
  CHECK(b.blocks.empty());
}

TEST_CASE("kv_manager_core: grow extends tables in order until one is refused", "[kv_core]") {
  kv_manager_core kv(two_models(36, "fcfs", /*tables_a=*/true));
  REQUIRE(kv.open("a", {need(1, 16), need(2, 16), need(3, 16)}).granted == 3);  // 12
  // 1: 16 → 48 tokens (+2 tb = 8); 2: 16 → 64 (+3 tb = 12): 32 used;
  // 3: 16 → 48 (+8) would need 40 of 36: refused with 4 free.
  auto g = kv.grow("a", {need(1, 48), need(2, 64), need(3, 48)});
  CHECK(g.granted == 2);
  REQUIRE(g.blocks.size() == 2);
  CHECK(g.blocks[0].size() == 8u);
  CHECK(g.blocks[1].size() == 12u);
  // The ids granted are exactly the tails of the tables.
  const auto& t1 = *kv.pool().table("a", 1);
  REQUIRE(t1.size() == 12u);
  CHECK(std::vector<int32_t>(t1.begin() + 4, t1.end()) == g.blocks[0]);
  CHECK(kv.pool().table("a", 3)->size() == 4u);
  CHECK(kv.pool().used() == 32);
  CHECK(kv.refusals() == 1);  // a partial grow counts as a refusal

  // Already long enough: granted, no new ids.
  auto same = kv.grow("a", {need(1, 40)});
  CHECK(same.granted == 1);
  REQUIRE(same.blocks.size() == 1);
  CHECK(same.blocks[0].empty());
  // An unknown sequence is refused.
  CHECK(kv.grow("a", {need(99, 16)}).granted == 0);
}

TEST_CASE("kv_manager_core: close gives the blocks back", "[kv_core]") {
  kv_manager_core kv(two_models(40, "fcfs"));
  REQUIRE(kv.open("a", {need(1, 32), need(2, 16)}).granted == 2);  // 8 + 4
  REQUIRE(kv.open("b", {need(1, 32)}).granted == 1);               // 4
  CHECK(kv.pool().used() == 16);
  kv.close("a", {1, 2, 7});  // 7 is unknown: ignored
  CHECK(kv.pool().used() == 4);
  CHECK(kv.pool().models().at("a").sequences == 0);
  CHECK(kv.pool().models().at("b").sequences == 1);
  kv.close("b", {1});
  CHECK(kv.pool().used() == 0);
  CHECK(kv.pool().check_invariants().empty());
}

TEST_CASE("kv_manager_core: load counts arrivals into the rate and backlog tokens into blocks", "[kv_core]") {
  kv_manager_core kv(two_models(200, "adbs"));
  // 5 arrivals at t = 0 on an estimate that starts at 1 req/s, tau 10 s:
  // 1 + 5/10 = 1.5 req/s.
  kv.load("a", 5, 0, 0.0);
  auto s = kv.state(0.0);
  CHECK(s["models"]["a"]["rate"].get<double>() == Approx(1.5));
  CHECK(s["models"]["b"]["rate"].get<double>() == Approx(1.0));
  CHECK(s["models"]["a"]["backlog"].get<int64_t>() == 0);
  // 33 tokens of b waiting: 3 token-blocks × 2 = 6 blocks.
  kv.load("b", 0, 33, 0.0);
  CHECK(kv.state(0.0)["models"]["b"]["backlog"].get<int64_t>() == 6);
  // 32 tokens of a: 2 tb × 4 = 8.
  kv.load("a", 0, 32, 0.0);
  CHECK(kv.state(0.0)["models"]["a"]["backlog"].get<int64_t>() == 8);
  // The latest report replaces the last.
  kv.load("b", 0, 0, 0.0);
  CHECK(kv.state(0.0)["models"]["b"]["backlog"].get<int64_t>() == 0);
  // The rate decays while nothing arrives: 1.5 · e^-1 after one tau.
  CHECK(kv.state(10.0)["models"]["a"]["rate"].get<double>() == Approx(1.5 * 0.36787944117144233));
}

TEST_CASE("kv_manager_core: a waiting model keeps its unused quota from borrowers", "[kv_core]") {
  // Quotas a 133, b 67 (see above). a holds one token-block, so it may only
  // borrow what no other model's quota still guarantees.
  auto o = two_models(200, "adbs");
  SECTION("b idle: its unused quota is lent") {
    kv_manager_core kv(o);
    REQUIRE(kv.open("a", {need(1, 16)}).granted == 1);  // 4
    // 4 + 180 = 184 > 133, within the 196 free if b lends its 67.
    CHECK(kv.open("a", {need(2, 16 * 45)}).granted == 1);
  }
  SECTION("b waiting: its 67 stay free") {
    kv_manager_core kv(o);
    kv.load("b", 0, 16, 0.0);
    REQUIRE(kv.open("a", {need(1, 16)}).granted == 1);
    auto g = kv.open("a", {need(2, 16 * 45)});  // 180 + 67 owed > 196 free
    CHECK(g.granted == 0);
    CHECK_FALSE(g.never);
    // Above its quota a may take at most 196 - 67 = 129: 33 tb (132) is
    // refused; 32 tb (128) fits its own quota (4 + 128 <= 133).
    CHECK(kv.open("a", {need(3, 16 * 33)}).granted == 0);
    CHECK(kv.open("a", {need(4, 16 * 32)}).granted == 1);
    CHECK(kv.pool().models().at("a").used == 4 + 128);
  }
}

TEST_CASE("kv_manager_core: a backlog borrows an idle lender's rate share, it does not take it", "[kv_core]") {
  // 100 blocks: rate (1, 1) × (4, 2) → a 67, b 33. b's waiting requests need
  // 30 token-blocks = 60 blocks; a is idle. Moving a's quota would keep it
  // from a once its own load comes back; the pool lends it instead.
  kv_manager_core kv(two_models(100, "adbs"));
  kv.load("b", 0, 16 * 30, 0.0);
  kv.rebalance(0.0);
  kv.rebalance(1.0);
  CHECK(kv.quota_moves() == 0);
  CHECK(kv.pool().models().at("a").quota == 67);
  CHECK(kv.pool().models().at("b").quota == 33);
  REQUIRE(kv.open("b", {need(1, 16)}).granted == 1);
  CHECK(kv.open("b", {need(2, 16 * 29)}).granted == 1);  // 60 blocks, 27 of them a's
  CHECK(kv.pool().models().at("b").used == 60);
}

TEST_CASE("kv_manager_core: rebalance waits for its period, then moves quota toward a backlog", "[kv_core]") {
  // 100 blocks: rate (1, 1) × (4, 2) → a 66.67, b 33.33 → a 67, b 33.
  kv_manager_core kv(two_models(100, "adbs"));
  REQUIRE(kv.pool().models().at("a").quota == 67);
  REQUIRE(kv.pool().models().at("b").quota == 33);
  // b's waiting requests need 30 token-blocks = 60 blocks, 27 more than its
  // free quota of 33. 30 arrivals at once: b's measured rate, 4 req/s now
  // and 3.6 at 1.0, is far from the expected 1, so b's share of the rate
  // split grows to 64 and a's shrinks to 36: a holds 31 above its share.
  kv.load("b", 30, 16 * 30, 0.0);

  kv.rebalance(0.0);  // starts the period
  kv.rebalance(0.5);  // within it: nothing moves
  CHECK(kv.quota_moves() == 0);
  CHECK(kv.pool().models().at("b").quota == 33);

  SECTION("an idle lender gives what it holds above its share, the borrower takes what it lacks") {
    kv.rebalance(1.0);
    // a (using 0) may lend 67 - its share 36 = 31; b wants 27.
    CHECK(kv.pool().models().at("a").quota == 40);
    CHECK(kv.pool().models().at("b").quota == 60);
    CHECK(kv.quota_moves() == 1);
    auto s = kv.state(1.0);
    REQUIRE(s["recent_moves"].size() == 1);
    CHECK(s["recent_moves"][0]["from"] == "a");
    CHECK(s["recent_moves"][0]["to"] == "b");
    CHECK(s["recent_moves"][0]["blocks"] == 27);
    CHECK(s["recent_moves"][0]["reason"] == "backlog");
    CHECK(s["models"]["a"]["quota_out"] == 27);
    CHECK(s["models"]["b"]["quota_in"] == 27);
    CHECK(s["quota_moves"] == 1);
    // The next period starts now: nothing before 2.0.
    kv.load("b", 0, 16 * 40, 1.5);
    kv.rebalance(1.5);
    CHECK(kv.quota_moves() == 1);
  }
  SECTION("the lender keeps what it held at its peak since the last rebalance") {
    // a held 13 tb = 52 blocks, then let them go before the rebalance.
    REQUIRE(kv.open("a", {need(1, 16 * 13)}).granted == 1);
    kv.close("a", {1});
    kv.rebalance(1.0);
    // a keeps ceil(52 / 0.9) = 58 (above its share) and lends 67 - 58 = 9.
    CHECK(kv.pool().models().at("a").quota == 58);
    CHECK(kv.pool().models().at("b").quota == 42);
  }
}

TEST_CASE("kv_manager_core: rebalance is a no-op without quotas", "[kv_core]") {
  kv_manager_core kv(two_models(100, "fcfs"));
  kv.load("b", 3, 16 * 30, 0.0);
  kv.rebalance(100.0);
  CHECK(kv.quota_moves() == 0);
  CHECK(kv.pool().models().at("a").quota == 100);
  CHECK(kv.pool().models().at("b").quota == 100);
  auto s = kv.state(100.0);
  CHECK(s["quotas"] == "none");
  CHECK_FALSE(s["models"]["b"].contains("backlog"));  // load is ignored without a planner
}

TEST_CASE("kv_manager_core: floors over the pool leave no quotas, and say why", "[kv_core]") {
  auto o = two_models(100, "adbs");
  o.floor_tokens = 16 * 20;  // a 80 + b 40 > 100
  kv_manager_core kv(o);
  CHECK(kv.planner() == nullptr);
  auto s = kv.state(0.0);
  CHECK(s["quotas"] == "none");
  CHECK(s["policy"] == "adbs");
  CHECK_FALSE(s["quota_error"].get<std::string>().empty());
  // Every model may use the whole pool.
  CHECK(kv.pool().models().at("a").quota == 100);
  CHECK(kv.open("a", {need(1, 16 * 25)}).granted == 1);  // 100 blocks
}

TEST_CASE("kv_manager_core: state reports the pool, each model and the padding of small heads", "[kv_core]") {
  kv_manager_core kv(two_models(100, "adbs"));
  REQUIRE(kv.open("a", {need(1, 32)}).granted == 1);  // 8 blocks, head 64 in 128-wide blocks
  auto s = kv.state(0.0);
  CHECK(s["blocks_total"] == 100);
  CHECK(s["blocks_used"] == 8);
  CHECK(s["blocks_free"] == 92);
  CHECK(s["blocks_evictable"] == 0);
  CHECK(s["block_tokens"] == 16);
  {
    // A finished sequence's committed prefix stays cached: free, evictable.
    kv_manager_core cached(two_models(100, "fcfs"));
    std::vector<int32_t> prompt(32, 7);
    REQUIRE(cached.open("a", {need(2, 32, prompt)}).granted == 1);
    cached.commit("a", 2, prompt);
    cached.close("a", {2});
    auto c = cached.state(0.0);
    CHECK(c["blocks_evictable"].get<int64_t>() > 0);
    CHECK(c["blocks_used"] == 0);
    CHECK(c["blocks_free"] == 100);
  }
  CHECK(s["allocations"] == 1);
  CHECK(s["refusals"] == 0);
  CHECK(s["policy"] == "adbs");
  CHECK(s["quotas"] == "adbs");
  CHECK(s["quota_error"] == "");
  CHECK(s["block_head_dim"] == 128);
  // Only a's blocks are in use, each half empty.
  CHECK(s["slot_padding"].get<double>() == Approx(0.5));
  const auto& a = s["models"]["a"];
  CHECK(a["used"] == 8);
  CHECK(a["quota"] == 67);
  CHECK(a["sequences"] == 1);
  CHECK(a["blocks_per_token_block"] == 4);
  CHECK(a["head_dim"] == 64);
  CHECK(s["models"]["b"]["head_dim"] == 128);
  CHECK(s["models"]["b"]["used"] == 0);

  // b's 8 blocks have no padding: (8 · 0.5 + 8 · 0) / 16.
  REQUIRE(kv.open("b", {need(1, 64)}).granted == 1);
  CHECK(kv.state(0.0)["slot_padding"].get<double>() == Approx(0.25));
  CHECK(kv.state(0.0)["allocations"] == 2);
}
