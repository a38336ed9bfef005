#include "actors/controller/layout_policy.hpp"

#include <catch2/catch.hpp>

#include <cmath>

using namespace llmux::controller;

namespace {

/// A CPU-like step: one sequence costs `fixed` ms to read the weights plus
/// `per_seq` per sequence, on a whole unit; on share s, (fixed / s^a) and
/// per_seq / s: parallelism that scales worse than linearly for the fixed
/// part (a = 0.6) and linearly for the batched part.
step_time_fn cpu_like(double fixed, double per_seq, double a) {
  return [=](double batch, double share) { return fixed / std::pow(share, a) + per_seq * batch / share; };
}

}  // namespace

TEST_CASE("crossover: where k replicas start to step faster than one replica", "[layout]") {
  // k = 2, fixed 4 ms, per sequence 1 ms, a = 0.6:
  //   one replica at c:  4 + c;   two at c/2 on half: 4·2^0.6 + c = 6.063 + c.
  // Never faster: the batched part costs the same, the fixed part more.
  CHECK(crossover(cpu_like(4, 1, 0.6), 2) == 0);
  // With a = 1.0 the fixed part scales too: 8 + c vs 4 + c: still never.
  CHECK(crossover(cpu_like(4, 1, 1.0), 2) == 0);
  // A unit whose whole-unit step has a synchronisation cost growing with
  // the batch (0.1 ms per sequence for the barrier between its threads):
  //   one: 4 + 1.1 c;  two: 6.063 + c  →  equal at c = 20.63; with the 2%
  //   margin, 1.02 (6.063 + c) < 4 + 1.1 c ⇔ c > 27.3: first integer 28.
  auto sync = [](double batch, double share) {
    return 4 / std::pow(share, 0.6) + batch / share + (share == 1.0 ? 0.1 * batch : 0.0);
  };
  CHECK(crossover(sync, 2) == 28);
  CHECK(crossover(sync, 2, 4096, 0) == 21);  // without the margin: just above 20.63
  CHECK(crossover(sync, 2, 27) == 0);        // not within max_c
  CHECK(crossover(sync, 1) == 0);            // one device: nothing to split
  // A profile with one noisy point: replicas look faster at c = 5 alone,
  // then lose until 20, then win for good. The switch goes to 20, not 5.
  auto noisy = [](double batch, double share) {
    const double c = share < 1 ? batch * 2 : batch;
    const bool wins = c == 5 || c >= 20;
    return share < 1 ? 10.0 : (wins ? 11.0 : 9.0);
  };
  CHECK(crossover(noisy, 2) == 20);
}

TEST_CASE("layout_policy switches past the crossover with hysteresis and a cooldown", "[layout]") {
  layout_policy p;
  layout_unit_options o;
  o.k = 2;
  o.switch_at = 8;
  o.hysteresis = 0.25;  // replicas above 10, single below 6
  o.cooldown_s = 5;
  o.smoothing = 1.0;    // no smoothing: the arithmetic below is exact
  p.add_unit("u", o, layout_kind::single);
  p.observe("u", "u/m", 6);
  p.observe("u", "u/m#1", 0);
  CHECK(p.decide(0).empty());
  p.observe("u", "u/m", 10);  // exactly the threshold: not above it
  CHECK(p.decide(1).empty());
  p.observe("u", "u/m", 9);
  p.observe("u", "u/m#1", 2);  // 11 over the unit's replicas
  auto mv = p.decide(2);
  REQUIRE(mv.size() == 1);
  CHECK(mv[0].unit == "u");
  CHECK(mv[0].to == layout_kind::replicas);
  CHECK(mv[0].concurrency == 11);
  REQUIRE(p.begin("u", 2));
  CHECK_FALSE(p.begin("u", 2));  // one switch at a time
  CHECK(p.decide(2.5).empty());  // nor decided while one runs
  p.end("u", layout_kind::replicas, true, 3);
  CHECK(p.find("u")->layout == layout_kind::replicas);
  CHECK(p.find("u")->switches == 1);
  CHECK(p.find("u")->switching_s == Approx(1.0));
  // Load falls to 7: inside the band, stays.
  p.observe("u", "u/m", 4);
  p.observe("u", "u/m#1", 3);
  CHECK(p.decide(4).empty());
  // Falls to 2: below 6, but within the cooldown (last switch at 3 s).
  p.observe("u", "u/m", 1);
  p.observe("u", "u/m#1", 1);
  CHECK(p.decide(7).empty());
  mv = p.decide(8.5);
  REQUIRE(mv.size() == 1);
  CHECK(mv[0].to == layout_kind::single);
  // A failed switch leaves the layout and counts.
  REQUIRE(p.begin("u", 9));
  p.end("u", layout_kind::single, false, 9.5);
  CHECK(p.find("u")->layout == layout_kind::replicas);
  CHECK(p.find("u")->failed == 1);
}

TEST_CASE("layout_policy: smoothing, forced-only units, and no crossover", "[layout]") {
  layout_policy p;
  layout_unit_options o;
  o.switch_at = 4;
  o.smoothing = 0.5;
  o.cooldown_s = 0;
  p.add_unit("smooth", o, layout_kind::single);
  o.automatic = false;
  p.add_unit("forced", o, layout_kind::single);
  o.automatic = true;
  o.switch_at = 0;
  p.add_unit("never", o, layout_kind::single);
  for (const char* u : {"smooth", "forced", "never"})
    p.observe(u, "r", 100);
  // smooth: 0 → 50 (above 5: switch); the others never decide.
  auto mv = p.decide(0);
  REQUIRE(mv.size() == 1);
  CHECK(mv[0].unit == "smooth");
  CHECK(mv[0].concurrency == 50);
  CHECK(p.find("forced")->concurrency == 50);  // still measured, for admin state
  CHECK_FALSE(p.find("nowhere"));
  p.observe("nowhere", "r", 3);  // unknown unit: ignored
  CHECK(parse_layout("single") == layout_kind::single);
  CHECK(parse_layout("replicas") == layout_kind::replicas);
  CHECK_FALSE(parse_layout("tp"));
  CHECK(std::string(to_string(layout_kind::replicas)) == "replicas");
}
