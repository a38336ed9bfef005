// Head-wise KV accounting: model A (2 layers × 4 KV heads = 8 physical blocks
// per token-block) and model B (3 layers × 2 KV heads = 6) share one pool.

#include "actors/kv_manager/kv_block_pool.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>

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
  auto p = two_models(100);
  CHECK(p.total() == 100);
  CHECK(p.block_tokens() == 16);
  CHECK(p.blocks_per_token_block("a") == 8);
  CHECK(p.blocks_per_token_block("b") == 6);
  CHECK(p.blocks_per_token_block("nope") == 0);
  CHECK(p.models().at("a").quota == 100);  // defaults to the whole pool

  REQUIRE(p.try_allocate("a", 5));  // 40
  CHECK(p.used() == 40);
  CHECK(p.models().at("a").used == 40);
  REQUIRE(p.try_allocate("b", 10));  // 60
  CHECK(p.used() == 100);
  CHECK(p.free() == 0);
  CHECK(p.models().at("b").used == 60);
  CHECK_FALSE(p.try_allocate("a", 1));
  CHECK_FALSE(p.try_allocate("b", 1));

  p.release("a", 2);  // 16 back
  CHECK(p.used() == 84);
  CHECK(p.free() == 16);
  CHECK(p.models().at("a").used == 24);
  // 16 free: B can take 2 token-blocks (12), not 3 (18).
  CHECK_FALSE(p.try_allocate("b", 3));
  CHECK(p.try_allocate("b", 2));
  CHECK(p.free() == 4);
  CHECK(p.release_errors() == 0);
}

TEST_CASE("kv_block_pool: allocation is all or nothing", "[kv_pool]") {
  auto p = two_models(50);
  REQUIRE(p.try_allocate("a", 6));  // 48 of 50
  CHECK_FALSE(p.try_allocate("b", 1));  // needs 6, 2 free: nothing taken
  CHECK(p.used() == 48);
  CHECK(p.models().at("b").used == 0);
  CHECK_FALSE(p.try_allocate("a", 1));  // needs 8
  CHECK(p.used() == 48);
}

TEST_CASE("kv_block_pool: unknown model and negative counts are refused", "[kv_pool]") {
  auto p = two_models(100);
  CHECK_FALSE(p.try_allocate("c", 1));
  CHECK_FALSE(p.try_allocate("a", -1));
  CHECK(p.used() == 0);
  p.release("c", 3);  // nothing to give back, nothing breaks
  p.release("a", -2);
  CHECK(p.used() == 0);
  // A negative size makes an empty pool.
  kv_block_pool empty(-5, 16);
  CHECK(empty.total() == 0);
}

TEST_CASE("kv_block_pool: quotas cap one model, not the others", "[kv_pool]") {
  auto p = two_models(100);
  p.set_quota("a", 20);
  CHECK(p.models().at("a").quota == 20);
  CHECK(p.try_allocate("a", 2));        // 16 <= 20
  CHECK_FALSE(p.try_allocate("a", 1));  // 24 > 20, although the pool has 84 free
  CHECK(p.used() == 16);
  CHECK(p.try_allocate("b", 14));  // 84: B is not capped
  CHECK(p.free() == 0);
  p.set_quota("b", -3);  // clamps to 0
  CHECK(p.models().at("b").quota == 0);
  p.release("b", 1);
  CHECK_FALSE(p.try_allocate("b", 1));
  p.set_quota("ghost", 10);  // unknown: ignored
  CHECK(p.models().count("ghost") == 0);
}

TEST_CASE("kv_block_pool: releasing more than held is clamped and counted", "[kv_pool]") {
  auto p = two_models(100);
  REQUIRE(p.try_allocate("a", 2));  // 16
  REQUIRE(p.try_allocate("b", 1));  // 6
  p.release("a", 3);                // 24 > 16 held
  CHECK(p.release_errors() == 1);
  CHECK(p.models().at("a").used == 0);
  CHECK(p.used() == 6);  // B's blocks are untouched
  p.release("b", 1);     // exact: no error
  CHECK(p.release_errors() == 1);
  CHECK(p.used() == 0);
  p.release("b", 1);  // nothing held
  CHECK(p.release_errors() == 2);
  CHECK(p.used() == 0);
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
    std::map<std::string, int64_t> held;  // token-blocks the test thinks each holds
    uint64_t errors = 0;
    for (int op = 0; op < 300; ++op) {
      auto it = per.begin();
      std::advance(it, uniform(0, 2));
      const auto& name = it->first;
      const int64_t k = uniform(0, 12);
      switch (uniform(0, 3)) {
        case 0:
        case 1: {
          int64_t need = k * it->second;
          int64_t used_before = 0;
          for (const auto& [n, h] : held)
            used_before += h * per.at(n);
          bool fits = used_before + need <= total
                      && (held[name] * it->second + need) <= p.models().at(name).quota;
          REQUIRE(p.try_allocate(name, k) == fits);
          if (fits)
            held[name] += k;
          break;
        }
        case 2: {
          if (k > held[name])
            ++errors;
          p.release(name, k);
          held[name] = std::max<int64_t>(0, held[name] - k);
          break;
        }
        case 3:
          p.set_quota(name, uniform(0, 300));
          break;
      }
      int64_t sum = 0;
      for (const auto& [n, m] : p.models()) {
        REQUIRE(m.used == held[n] * per.at(n));
        sum += m.used;
      }
      REQUIRE(p.used() == sum);
      REQUIRE(p.used() >= 0);
      REQUIRE(p.used() <= p.total());
      REQUIRE(p.release_errors() == errors);
    }
  }
}
