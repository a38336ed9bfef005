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
  auto plan = p.plan();
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
    auto plan = p.plan();
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
    return p.plan();
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
  auto grow = r.plan();
  REQUIRE(grow.size() == 1);
  CHECK(grow[0].replica == "u/c");
}
