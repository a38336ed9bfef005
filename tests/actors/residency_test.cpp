#include "actors/gpu_unit/residency.hpp"

#include <catch2/catch.hpp>

using llmux::unit::residency;
using llmux::unit::residency_state;
using plan = residency::wake_plan;

namespace {
constexpr int64_t MiB = int64_t{1} << 20;
}

TEST_CASE("residency: models start awake while they fit the cap, in the order added", "[residency]") {
  residency r(100 * MiB);
  CHECK(r.add("a", 40 * MiB, true) == residency_state::ready);
  CHECK(r.add("b", 40 * MiB, true) == residency_state::ready);
  CHECK(r.add("c", 40 * MiB, true) == residency_state::sleeping);  // 120 > 100
  CHECK(r.add("d", 10 * MiB, false) == residency_state::sleeping);  // configured asleep
  CHECK(r.add("e", 20 * MiB, true) == residency_state::ready);      // 100 fits exactly
  CHECK(r.bytes_awake() == 100 * MiB);
  CHECK_THROWS(r.add("a", 1, true));
}

TEST_CASE("residency: no cap wakes anything at once", "[residency]") {
  residency r(0);
  r.add("a", 1 << 30, false);
  CHECK(r.plan_wake("a").kind == plan::fits);
}

TEST_CASE("residency: a wake that does not fit evicts the least recently used ready models", "[residency]") {
  residency r(100 * MiB);
  r.add("a", 40 * MiB, true);
  r.add("b", 30 * MiB, true);
  r.add("c", 30 * MiB, true);
  r.add("x", 50 * MiB, false);
  r.touch("a", 3.0);
  r.touch("b", 1.0);
  r.touch("c", 2.0);
  // 100 awake + 50 needs 50 freed: b (30, oldest) then c (30).
  auto p = r.plan_wake("x");
  REQUIRE(p.kind == plan::evict);
  CHECK(p.victims == std::vector<std::string>{"b", "c"});
  // b refused (busy): c then a.
  p = r.plan_wake("x", {"b"});
  REQUIRE(p.kind == plan::evict);
  CHECK(p.victims == std::vector<std::string>{"c", "a"});
  // b and a refuse: c alone frees 30 < 50.
  p = r.plan_wake("x", {"b", "a"});
  CHECK(p.kind == plan::no_room);
  CHECK(p.victims.empty());
  CHECK(p.why.find("cannot sleep now") != std::string::npos);
  CHECK(p.why.find("a (ready, busy, 40 MiB)") != std::string::npos);
}

TEST_CASE("residency: models never used go before used ones, the last added first", "[residency]") {
  residency r(60 * MiB);
  r.add("a", 20 * MiB, true);
  r.add("b", 20 * MiB, true);
  r.add("c", 20 * MiB, true);
  r.add("x", 20 * MiB, false);
  r.touch("c", 5.0);
  auto p = r.plan_wake("x");
  REQUIRE(p.kind == plan::evict);
  CHECK(p.victims == std::vector<std::string>{"b"});
}

TEST_CASE("residency: states in between count as taken memory and as busy", "[residency]") {
  residency r(100 * MiB);
  r.add("a", 60 * MiB, true);
  r.add("b", 60 * MiB, true);  // asleep: does not fit
  r.set_state("a", residency_state::unloading);
  CHECK(r.bytes_awake() == 60 * MiB);
  // a is going to sleep but still holds its memory, and is no victim.
  CHECK(r.plan_wake("b").kind == plan::no_room);
  r.slept("a");
  CHECK(r.bytes_awake() == 0);
  CHECK(r.models().at("a").sleeps == 1);
  CHECK(r.plan_wake("b").kind == plan::fits);
  r.set_state("b", residency_state::loading);
  CHECK(r.plan_wake("b").kind == plan::busy);
  CHECK(r.plan_wake("a").kind == plan::no_room);  // b's 60 is taken while it loads
  r.woke("b", 0.25);
  CHECK(r.plan_wake("b").kind == plan::ready);
  CHECK(r.models().at("b").wakes == 1);
  CHECK(r.models().at("b").last_wake_seconds == 0.25);
}

TEST_CASE("residency: a model larger than the whole cap is too big", "[residency]") {
  residency r(100 * MiB);
  r.add("a", 10 * MiB, true);
  r.add("huge", 101 * MiB, true);
  auto p = r.plan_wake("huge");
  CHECK(p.kind == plan::too_big);
  CHECK(p.why.find("101 MiB") != std::string::npos);
}

TEST_CASE("residency: only what must sleep sleeps: a small LRU model beside a large one that makes room stays",
          "[residency]") {
  residency r(150 * MiB);
  r.add("smol-a", 94 * MiB, true);
  r.add("stories", 1 * MiB, true);
  r.add("smol-b", 94 * MiB, true);  // asleep: 189 > 150
  r.touch("stories", 1.0);
  r.touch("smol-a", 2.0);
  // LRU order is stories, smol-a; smol-a alone frees enough.
  auto p = r.plan_wake("smol-b");
  REQUIRE(p.kind == plan::evict);
  CHECK(p.victims == std::vector<std::string>{"smol-a"});
}
