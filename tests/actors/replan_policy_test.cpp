#include "actors/controller/replan_policy.hpp"

#include <catch2/catch.hpp>

using llmux::controller::replan_move;
using llmux::controller::replan_options;
using llmux::controller::replan_policy;

namespace {

constexpr int64_t GiB = int64_t{1} << 30;

/// Reports `rate` req/s for `replica` over [0, 60] s, every second.
void feed(replan_policy& p, const std::string& replica, double rate, const std::string& residency,
          int32_t running = 0) {
  for (int t = 0; t <= 60; ++t)
    p.observe(replica, static_cast<uint64_t>(rate * t), residency, 0, running, t);
}

/// One unit "u" with room for two 10 GiB models; a, b awake, c, d asleep.
replan_policy four(replan_options o = {}) {
  replan_policy p(o);
  p.add_unit("u", 20 * GiB);
  for (const char* m : {"a", "b", "c", "d"})
    p.add_replica("u", m, std::string{"u/"} + m, 10 * GiB);
  return p;
}

}  // namespace

TEST_CASE("replan: rates are smoothed arrivals; a restarted count starts over", "[replan]") {
  replan_options o;
  o.half_life_s = 5;
  replan_policy p(o);
  p.add_unit("u", 0);
  p.add_replica("u", "a", "u/a", 1);
  feed(p, "u/a", 2.0, "ready");
  CHECK(p.rate("a") == Approx(2.0).epsilon(0.01));  // 60 s at 2/s: converged
  // The count goes back (a restart): no negative rate, counted from there.
  p.observe("u/a", 5, "ready", 0, 0, 61);
  CHECK(p.rate("a") >= 0);
  p.observe("u/a", 7, "ready", 0, 0, 62);
  CHECK(p.rate("a") > 0);
  CHECK(p.rate("unknown") == 0);
}

TEST_CASE("replan: a popular sleeping model takes the place of the least popular idle one", "[replan]") {
  auto p = four();
  feed(p, "u/a", 0.1, "ready");
  feed(p, "u/b", 1.0, "ready");
  feed(p, "u/c", 3.0, "sleeping");
  feed(p, "u/d", 0.15, "sleeping");  // less than twice a's rate: it does not displace a
  auto plan = p.plan().moves;
  REQUIRE(plan.size() == 1);
  CHECK(plan[0].model == "c");
  CHECK(plan[0].replica == "u/c");
  CHECK(plan[0].sleep == std::vector<std::string>{"u/a"});
  // Smoothed from 0 with a 20 s half-life: 60 s at 3/s is 3 x (1 - 2^-3).
  CHECK(plan[0].rate == Approx(3.0 * 0.875).epsilon(1e-9));
}

TEST_CASE("replan: hysteresis, idleness, min_rate and free room", "[replan]") {
  SECTION("rates too close: no swap") {
    auto p = four();
    feed(p, "u/a", 1.0, "ready");
    feed(p, "u/b", 1.0, "ready");
    feed(p, "u/c", 1.9, "sleeping");
    CHECK(p.plan().empty());
  }
  SECTION("the unpopular awake model is busy: it is not put to sleep under its requests") {
    auto p = four();
    feed(p, "u/a", 0.1, "ready", 1);
    feed(p, "u/b", 1.0, "ready", 1);
    feed(p, "u/c", 3.0, "sleeping");
    CHECK(p.plan().empty());
  }
  SECTION("below min_rate a sleeping model waits for its request") {
    auto p = four();
    p.observe("u/b", 0, "sleeping", 0, 0, 0);  // room for one more
    feed(p, "u/a", 1.0, "ready");
    feed(p, "u/c", 0.01, "sleeping");
    CHECK(p.plan().empty());
    feed(p, "u/d", 0.5, "sleeping");
    auto plan = p.plan().moves;
    REQUIRE(plan.size() == 1);
    CHECK(plan[0].model == "d");
    CHECK(plan[0].sleep.empty());  // it fits beside a
  }
}

TEST_CASE("replan: the budget, most popular first, and a model awake elsewhere", "[replan]") {
  // Two idle awake models of no traffic, two sleeping ones with some.
  auto two_wanted = [](int budget) {
    replan_options o;
    o.budget = budget;
    auto p = four(o);
    feed(p, "u/a", 0.0, "ready");
    feed(p, "u/b", 0.0, "ready");
    feed(p, "u/c", 1.0, "sleeping");
    feed(p, "u/d", 2.0, "sleeping");
    return p.plan().moves;
  };
  auto plan = two_wanted(1);
  REQUIRE(plan.size() == 1);
  CHECK(plan[0].model == "d");
  REQUIRE(plan[0].sleep.size() == 1);
  // Two moves allowed: c takes the other idle one.
  auto both = two_wanted(2);
  REQUIRE(both.size() == 2);
  CHECK(both[0].model == "d");
  CHECK(both[1].model == "c");
  CHECK(both[0].sleep != both[1].sleep);  // each its own victim

  // c is awake on another unit and keeps up: no second replica woken for it.
  replan_policy r;
  r.add_unit("u", 20 * GiB);
  r.add_unit("v", 0);
  for (const char* m : {"a", "b", "c"})
    r.add_replica("u", m, std::string{"u/"} + m, 10 * GiB);
  r.add_replica("v", "c", "v/c", 10 * GiB);
  feed(r, "u/a", 0.0, "ready");
  feed(r, "u/b", 0.0, "ready");
  feed(r, "u/c", 0.0, "sleeping");
  feed(r, "v/c", 3.0, "ready");
  CHECK(r.plan().empty());
  // ... unless it has requests waiting there.
  r.observe("v/c", 180, "ready", 4, 8, 60);
  auto grow = r.plan().moves;
  REQUIRE(grow.size() == 1);
  CHECK(grow[0].replica == "u/c");
}

namespace {

using llmux::controller::unit_target;

/// A planner that answers `target` whatever the rates, and counts its calls.
llmux::controller::placement_fn fixed_target(std::map<std::string, unit_target> target, int* calls,
                                             std::map<std::string, double>* seen = nullptr) {
  return [target, calls, seen](const std::map<std::string, double>& rates,
                               const std::map<std::string, std::vector<std::string>>&) {
    ++*calls;
    if (seen)
      *seen = rates;
    return target;
  };
}

}  // namespace

TEST_CASE("replan: the planner's target — wakes, sleeps of what it drops, and only of idle models",
          "[replan]") {
  // u holds two of a, b, c, d; a, b awake. The planner wants a and c.
  int calls = 0;
  std::map<std::string, double> seen;
  auto p = four();
  p.use_planner(fixed_target({{"u", {{"a", "c"}, {}}}}, &calls, &seen));
  feed(p, "u/a", 0.2, "ready");
  feed(p, "u/b", 0.4, "ready");  // more popular than a, but the planner keeps a
  feed(p, "u/c", 1.0, "sleeping");
  feed(p, "u/d", 3.0, "sleeping");  // most popular, but the planner does not want it
  auto plan = p.plan();
  CHECK(calls == 1);
  CHECK(plan.planner);
  CHECK(seen.at("d") == Approx(3.0 * 0.875).epsilon(1e-9));  // the planner sees the measured rates
  REQUIRE(plan.moves.size() == 1);
  CHECK(plan.moves[0].model == "c");
  CHECK(plan.moves[0].sleep == std::vector<std::string>{"u/b"});  // not a: the planner keeps it
  CHECK(plan.moves[0].from.empty());
  CHECK(plan.shares.empty());
  // Hysteresis still holds: c at less than twice b's rate displaces nothing.
  auto q = four();
  q.use_planner(fixed_target({{"u", {{"a", "c"}, {}}}}, &calls));
  feed(q, "u/a", 0.2, "ready");
  feed(q, "u/b", 0.6, "ready");
  feed(q, "u/c", 1.0, "sleeping");
  CHECK(q.plan().empty());
  // ... and b busy is never put to sleep.
  feed(q, "u/b", 0.4, "ready", 2);
  CHECK(q.plan().empty());
}

TEST_CASE("replan: a model the planner puts on another unit is moved there", "[replan]") {
  // x is awake on u beside y; the planner wants it on v (room there).
  replan_policy p;
  p.add_unit("u", 20 * GiB);
  p.add_unit("v", 20 * GiB);
  p.add_replica("u", "x", "u/x", 10 * GiB);
  p.add_replica("u", "y", "u/y", 10 * GiB);
  p.add_replica("v", "x", "v/x", 10 * GiB);
  int calls = 0;
  p.use_planner(fixed_target({{"u", {{"y"}, {}}}, {"v", {{"x"}, {}}}}, &calls));
  feed(p, "u/x", 2.0, "ready", 3);  // busy: a move hands its sequences over, it does not wait
  feed(p, "u/y", 2.0, "ready", 3);
  feed(p, "v/x", 0.0, "sleeping");
  // u keeps up (nothing waiting): x stays where it is.
  CHECK(p.plan().empty());
  p.observe("u/y", 120, "ready", 2, 3, 60);  // requests wait on u
  auto plan = p.plan();
  REQUIRE(plan.moves.size() == 1);
  CHECK(plan.moves[0].replica == "v/x");
  CHECK(plan.moves[0].from == "u/x");
  CHECK(plan.moves[0].sleep.empty());
  // Where the planner wants it on both, the second is a plain wake.
  replan_policy both;
  both.add_unit("u", 20 * GiB);
  both.add_unit("v", 20 * GiB);
  both.add_replica("u", "x", "u/x", 10 * GiB);
  both.add_replica("v", "x", "v/x", 10 * GiB);
  both.use_planner(fixed_target({{"u", {{"x"}, {}}}, {"v", {{"x"}, {}}}}, &calls));
  feed(both, "u/x", 2.0, "ready");
  feed(both, "v/x", 0.0, "sleeping");
  auto wake = both.plan();
  REQUIRE(wake.moves.size() == 1);
  CHECK(wake.moves[0].replica == "v/x");
  CHECK(wake.moves[0].from.empty());
}

TEST_CASE("replan: decode shares in the planner's proportions, lower first, past share_delta only", "[replan]") {
  // a, b, c awake hold 0.3 + 0.3 + 0.2 = 0.8 of decode share; the planner
  // asks 0.5 : 0.1 : 0.2 (0.8 in all): a 0.5, b 0.1, c 0.2 as it is.
  replan_policy p;
  p.add_unit("u", 40 * GiB);
  p.add_replica("u", "a", "u/a", 10 * GiB, 0.3);
  p.add_replica("u", "b", "u/b", 10 * GiB, 0.3);
  p.add_replica("u", "c", "u/c", 10 * GiB, 0.2);
  p.add_replica("u", "s", "u/s", 10 * GiB, 0.1);  // asleep and not wanted: left alone
  int calls = 0;
  p.use_planner(
    fixed_target({{"u", {{"a", "b", "c"}, {{"a", 0.5}, {"b", 0.1}, {"c", 0.2}, {"s", 0.4}}, "decode"}}}, &calls));
  feed(p, "u/a", 2.0, "ready", 4);
  feed(p, "u/b", 0.5, "ready", 1);
  feed(p, "u/c", 0.5, "ready", 1);
  feed(p, "u/s", 0.0, "sleeping");
  auto plan = p.plan();
  CHECK(plan.moves.empty());
  REQUIRE(plan.shares.size() == 2);  // c stays
  CHECK(plan.shares[0].replica == "u/b");  // the shrinking one first
  CHECK(plan.shares[0].job == "decode");
  CHECK(plan.shares[0].from == Approx(0.3));
  CHECK(plan.shares[0].to == Approx(0.1));
  CHECK(plan.shares[1].replica == "u/a");
  CHECK(plan.shares[1].to == Approx(0.5));
  // Once the caller moved them, nothing is left to do.
  p.set_share("u/a", 0.5);
  p.set_share("u/b", 0.1);
  CHECK(p.plan().empty());
  // The planner's shares at a light load are small (its lane takes the
  // rest); only their proportions count: 0.1 : 0.1 : 0.1 splits the 0.8
  // evenly. c (0.2 → 0.267) moves by more than share_delta, so all three do.
  p.use_planner(fixed_target({{"u", {{"a", "b", "c"}, {{"a", 0.1}, {"b", 0.1}, {"c", 0.1}}}}}, &calls));
  auto even = p.plan();
  REQUIRE(even.shares.size() == 3);
  double sum = 0;
  for (const auto& sh : even.shares) {
    CHECK(sh.to == Approx(0.8 / 3));
    sum += sh.to;
  }
  CHECK(sum == Approx(0.8));
  CHECK(even.shares[0].replica == "u/a");  // 0.5 → 0.267 shrinks most: first
}

TEST_CASE("replan: shares that are caps are set as planned: a model alone takes the unit", "[replan]") {
  // An oversubscribed unit (MPS caps of 0.5 each): once b has moved away,
  // the planner gives a, alone, the whole unit.
  replan_policy p;
  p.add_unit("u", 20 * GiB);
  p.add_replica("u", "a", "u/a", 10 * GiB, 0.5);
  p.add_replica("u", "b", "u/b", 10 * GiB, 0.5);
  int calls = 0;
  unit_target alone{{"a"}, {{"a", 1.0}}, "", true};
  p.use_planner(fixed_target({{"u", alone}}, &calls));
  feed(p, "u/a", 3.0, "ready", 4);
  feed(p, "u/b", 0.0, "sleeping");
  auto plan = p.plan();
  REQUIRE(plan.shares.size() == 1);
  CHECK(plan.shares[0].replica == "u/a");
  CHECK(plan.shares[0].job.empty());  // the model's whole share
  CHECK(plan.shares[0].to == Approx(1.0));
  // As partitions, one model alone keeps what it holds (b's stays booked).
  alone.caps = false;
  p.use_planner(fixed_target({{"u", alone}}, &calls));
  CHECK(p.plan().shares.empty());
}
