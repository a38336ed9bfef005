// The controller's share moves: sustained pressure against sustained
// idleness, one step at a time, with a cooldown.

#include "actors/controller/share_policy.hpp"

#include <catch2/catch.hpp>

#include <random>

using llmux::controller::share_move;
using llmux::controller::share_policy;
using llmux::controller::share_policy_options;

namespace {

share_policy two_models(share_policy_options o = {}) {
  share_policy p(o);
  p.set_share("u", "a", 0.5);
  p.set_share("u", "b", 0.5);
  return p;
}

void report(share_policy& p, int32_t a_waiting, int32_t b_waiting, int times = 1) {
  for (int i = 0; i < times; ++i) {
    p.observe("u", "a", a_waiting);
    p.observe("u", "b", b_waiting);
  }
}

}  // namespace

TEST_CASE("share_policy: a sustained queue takes a step from an idle model", "[share_policy]") {
  auto p = two_models();
  report(p, 4, 0, 2);
  CHECK(p.decide(0).empty());  // two reports are not yet sustained (3)
  report(p, 4, 0);
  auto moves = p.decide(0);
  REQUIRE(moves.size() == 1);
  CHECK(moves[0].from == "b");
  CHECK(moves[0].to == "a");
  CHECK(moves[0].from_share == Approx(0.375));
  CHECK(moves[0].to_share == Approx(0.625));
  CHECK(p.units().at("u").moves == 1);
}

TEST_CASE("share_policy: a queue that drains, or a donor that is busy, moves nothing",
          "[share_policy]") {
  auto p = two_models();
  p.observe("u", "a", 4);
  p.observe("u", "a", 0);  // drained once: not sustained
  p.observe("u", "a", 4);
  report(p, 4, 0, 0);
  for (int i = 0; i < 3; ++i)
    p.observe("u", "b", 0);
  CHECK(p.decide(0).empty());
  auto q = two_models();
  report(q, 5, 1, 3);  // b has a queue too: it is not idle
  CHECK(q.decide(0).empty());
}

TEST_CASE("share_policy: cooldown and fresh evidence between moves, never below min_share",
          "[share_policy]") {
  share_policy_options o;
  o.cooldown_s = 5;
  auto p = two_models(o);
  report(p, 3, 0, 3);
  REQUIRE(p.decide(10).size() == 1);
  report(p, 3, 0, 3);
  CHECK(p.decide(12).empty());  // cooling down
  CHECK(p.decide(15).size() == 1);
  // Histories start over after a move: the next needs 3 new reports.
  CHECK(p.decide(30).empty());
  for (int k = 0; k < 10; ++k) {
    report(p, 3, 0, 3);
    (void)p.decide(100.0 + 10 * k);
  }
  const auto& m = p.units().at("u").models;
  CHECK(m.at("b").share == Approx(0.125));  // the floor
  CHECK(m.at("a").share == Approx(0.875));
}

TEST_CASE("share_policy: property: shares keep their sum and floor under random load",
          "[share_policy][property]") {
  std::mt19937_64 rng(42);
  share_policy p;
  p.set_share("u", "a", 0.25);
  p.set_share("u", "b", 0.25);
  p.set_share("u", "c", 0.5);
  p.set_share("v", "x", 1.0);  // a unit with one model never moves
  int moves = 0;
  for (int t = 0; t < 5000; ++t) {
    for (const char* m : {"a", "b", "c"})
      p.observe("u", m, std::uniform_int_distribution<int>(0, 3)(rng) == 0
                            ? 0 : std::uniform_int_distribution<int>(0, 4)(rng));
    p.observe("v", "x", 7);
    moves += static_cast<int>(p.decide(t * 0.5).size());
    double sum = 0;
    for (const auto& [name, m] : p.units().at("u").models) {
      REQUIRE(m.share >= 0.125 - 1e-9);
      sum += m.share;
    }
    REQUIRE(sum == Approx(1.0));
    REQUIRE(p.units().at("v").models.at("x").share == 1.0);
  }
  CHECK(moves > 0);
}

TEST_CASE("share_policy: a move carries the shares before it, to book again on a refusal", "[share_policy]") {
  auto p = two_models();
  report(p, 4, 0, 3);
  auto moves = p.decide(0);
  REQUIRE(moves.size() == 1);
  CHECK(moves[0].from_before == Approx(0.5));
  CHECK(moves[0].to_before == Approx(0.5));
  // The unit refused: the caller books the shares it kept, and the policy's
  // view is the unit's again.
  p.set_share("u", moves[0].from, moves[0].from_before);
  p.set_share("u", moves[0].to, moves[0].to_before);
  CHECK(p.units().at("u").models.at("a").share == Approx(0.5));
  CHECK(p.units().at("u").models.at("b").share == Approx(0.5));
}
