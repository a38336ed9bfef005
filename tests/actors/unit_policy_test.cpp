// The unit's multiplexing policy (MuxServe's ADBS): step arbitration, the
// online rate estimate, KV quotas, and a small discrete-event fairness check
// of two co-located models with 10:1 request rates.

#include "actors/gpu_unit/unit_policy.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <initializer_list>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace llmux::unit;

namespace {

/// Uniform in [0, 1) from the top 53 bits (the same on every standard library).
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

/// Exponential gap of a Poisson process at `rate` per second.
double poisson_gap(std::mt19937_64& rng, double rate) {
  return -std::log(1.0 - uniform01(rng)) / rate;
}

/// "model:p", "model:d" or "model:pd" for a grant; "-" for none.
std::string tag(const std::optional<step_grant>& g) {
  if (!g)
    return "-";
  return g->model + ":" + (g->prefill ? "p" : "") + (g->decode ? "d" : "");
}

struct job_spec {
  const char* model;
  bool prefill;
  double oldest_arrival_s;
};

void announce(unit_arbiter& a, std::initializer_list<job_spec> jobs) {
  for (const auto& j : jobs)
    a.ready(j.model, j.prefill, j.oldest_arrival_s);
}

/// The next `n` grants as tags.
std::vector<std::string> grants(unit_arbiter& a, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back(tag(a.next()));
  return out;
}

using tags = std::vector<std::string>;

/// Grants `n` times, re-announcing the granted jobs each time (as a busy
/// scheduler would), and returns the granted models in order.
std::vector<std::string> run_rounds(unit_arbiter& a, int n) {
  std::vector<std::string> order;
  for (int i = 0; i < n; ++i) {
    auto g = a.next();
    REQUIRE(g);
    order.push_back(g->model);
    if (g->prefill)
      a.ready(g->model, true, 0);
    if (g->decode)
      a.ready(g->model, false, 0);
  }
  return order;
}

/// True when `order` runs a, b, c, a, b, c, ...
bool cycles_abc(const std::vector<std::string>& order) {
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] != std::string(1, static_cast<char>('a' + i % 3)))
      return false;
  return !order.empty();
}

int64_t sum_of(const block_map& m) {
  return std::accumulate(m.begin(), m.end(), int64_t{0},
                         [](int64_t s, const auto& kv) { return s + kv.second; });
}

double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

}  // namespace

// ---------------------------------------------------------------------------
// Step arbitration

TEST_CASE("unit_policy: parse_policy knows adbs, fcfs and round_robin", "[unit_policy]") {
  CHECK(parse_policy("adbs") == policy_kind::adbs);
  CHECK(parse_policy("fcfs") == policy_kind::fcfs);
  CHECK(parse_policy("round_robin") == policy_kind::round_robin);
  for (auto kind : {policy_kind::adbs, policy_kind::fcfs, policy_kind::round_robin})
    CHECK(parse_policy(std::string(policy_name(kind))) == kind);
  CHECK_FALSE(parse_policy(""));
  CHECK_FALSE(parse_policy("ADBS"));
  CHECK_FALSE(parse_policy("round-robin"));
  const auto text = unknown_policy_text("lifo");
  CHECK(text.find("'lifo'") != std::string::npos);
  CHECK(text.find("adbs, fcfs, round_robin") != std::string::npos);
}

TEST_CASE("unit_policy: adbs runs prefill jobs before decode jobs", "[unit_policy]") {
  unit_arbiter a(policy_kind::adbs);
  for (auto m : {"a", "b", "c"})
    a.add_model(m);
  announce(a, {{"a", false, 1.0}, {"b", true, 3.0}, {"c", true, 2.0}});  // a: decode, oldest work
  CHECK(a.ready_count() == 3);
  CHECK(grants(a, 4) == tags{"b:p", "c:p", "a:d", "-"});
  CHECK(a.ready_count() == 0);

  // A model with both jobs ready gets them as two grants, prefill first; the
  // decode rotation resumes after a, the model it served last.
  announce(a, {{"a", true, 0}, {"a", false, 0}, {"b", false, 0}});
  CHECK(a.ready_count() == 3);
  CHECK(grants(a, 2) == tags{"a:p", "b:d"});
  a.ready("c", true, 0);  // a prefill announced while a decode waits still goes first
  CHECK(grants(a, 2) == tags{"c:p", "a:d"});
  CHECK(a.models()[0].prefill.granted == 1);
  CHECK(a.models()[0].decode.granted == 2);
  CHECK(a.models()[2].prefill.granted == 2);
}

TEST_CASE("unit_policy: adbs rotates fairly within prefill and within decode", "[unit_policy]") {
  SECTION("all prefill, or all decode: a cycle over the three models") {
    for (bool prefill : {true, false}) {
      unit_arbiter a(policy_kind::adbs);
      for (auto m : {"a", "b", "c"})
        a.ready(m, prefill, 0);
      CHECK(cycles_abc(run_rounds(a, 300)));
    }
  }
  SECTION("prefill keeps coming: the decode job waits (MuxServe has no bound)") {
    unit_arbiter a(policy_kind::adbs);
    announce(a, {{"a", true, 0}, {"b", false, 0}, {"c", true, 0}});
    auto order = run_rounds(a, 100);
    CHECK(std::count(order.begin(), order.end(), "b") == 0);
    for (size_t i = 1; i < order.size(); ++i)
      CHECK(order[i] != order[i - 1]);
  }
  SECTION("the decode rotation resumes where it stopped, past prefill grants") {
    unit_arbiter a(policy_kind::adbs);
    announce(a, {{"a", false, 0}, {"b", false, 0}, {"c", false, 0}});
    CHECK(tag(a.next()) == "a:d");
    announce(a, {{"a", true, 0}, {"a", false, 0}});  // a now has a prompt to compute
    CHECK(grants(a, 4) == tags{"a:p", "b:d", "c:d", "a:d"});
  }
}

TEST_CASE("unit_policy: adbs max_prefill_streak lets a waiting decode through", "[unit_policy]") {
  unit_arbiter a(policy_kind::adbs, 3);
  announce(a, {{"a", true, 0}, {"b", false, 0}, {"c", true, 0}});
  auto order = run_rounds(a, 400);
  // Three prefill grants, then the decode: b takes every fourth.
  for (size_t i = 0; i < order.size(); ++i)
    CHECK((order[i] == "b") == (i % 4 == 3));
  CHECK(std::count(order.begin(), order.end(), "a") == 150);
  CHECK(std::count(order.begin(), order.end(), "c") == 150);
}

TEST_CASE("unit_policy: fcfs serves the oldest waiting work first", "[unit_policy]") {
  unit_arbiter a(policy_kind::fcfs);
  announce(a, {{"hot", true, 5.0}, {"cold", false, 2.0}, {"mid", false, 4.0}});
  CHECK(grants(a, 3) == tags{"cold:d", "mid:d", "hot:p"});
  // A re-announcement replaces the arrival; ties go to the model added first.
  announce(a, {{"hot", false, 7.0}, {"cold", false, 7.0}, {"mid", true, 9.0}, {"mid", true, 1.0}});
  CHECK(grants(a, 3) == tags{"mid:p", "hot:d", "cold:d"});
  // The prefill/decode split plays no part: the model's oldest job counts,
  // and the grant takes all its ready jobs.
  announce(a, {{"hot", true, 10.0}, {"cold", true, 12.0}, {"cold", false, 9.5}});
  CHECK(grants(a, 2) == tags{"cold:pd", "hot:p"});
}

TEST_CASE("unit_policy: round_robin rotates over models with any ready job", "[unit_policy]") {
  unit_arbiter a(policy_kind::round_robin);
  for (auto m : {"a", "b", "c"})
    a.add_model(m);
  announce(a, {{"a", false, 0}, {"b", true, 0}, {"c", false, 0}, {"c", true, 0}});
  CHECK(grants(a, 3) == tags{"a:d", "b:p", "c:pd"});  // prefill gets no priority
  announce(a, {{"a", false, 0}, {"b", true, 0}, {"c", false, 0}});
  CHECK(cycles_abc(run_rounds(a, 90)));
  // Models not ready are skipped; the rotation goes on after the last served.
  unit_arbiter r(policy_kind::round_robin);
  for (auto m : {"a", "b", "c"})
    r.add_model(m);
  r.ready("c", false, 0);
  CHECK(tag(r.next()) == "c:d");
  announce(r, {{"a", false, 0}, {"c", false, 0}});
  CHECK(tag(r.next()) == "a:d");
}

TEST_CASE("unit_policy: withdraw, unknown models and an empty unit", "[unit_policy]") {
  for (auto kind : {policy_kind::adbs, policy_kind::fcfs, policy_kind::round_robin}) {
    unit_arbiter a(kind);
    CHECK(a.kind() == kind);
    CHECK_FALSE(a.next());
    announce(a, {{"x", true, 1}, {"y", false, 0}, {"y", true, 0}});  // x, y join the rotation
    a.withdraw("y");
    a.withdraw("never-seen");
    REQUIRE(a.models().size() == 2);
    CHECK(a.ready_count() == 1);
    CHECK(tag(a.next()) == "x:p");
    CHECK_FALSE(a.next());
  }
}

// ---------------------------------------------------------------------------
// Rate estimate

TEST_CASE("unit_policy: rate_estimator starts at the expected rate and decays when idle", "[unit_policy]") {
  rate_estimator r(4.0, 10.0);
  CHECK(r.rate(123.0) == 4.0);  // clock not started
  r.start(100.0);
  CHECK(r.rate(100.0) == Approx(4.0));
  CHECK(r.rate(110.0) == Approx(4.0 * std::exp(-1.0)));
  CHECK(r.rate(130.0) == Approx(4.0 * std::exp(-3.0)));
  r.on_arrival(110.0);
  CHECK(r.rate(110.0) == Approx(4.0 * std::exp(-1.0) + 0.1));
  r.on_arrival(105.0);  // late timestamps count at the last time seen
  CHECK(r.rate(110.0) == Approx(4.0 * std::exp(-1.0) + 0.2));
}

TEST_CASE("unit_policy: rate_estimator follows a step change of a Poisson rate", "[unit_policy]") {
  // The config says 5 req/s; the truth is 5 for 100 s, then 20. With tau =
  // 10 s the old rate weighs 15·e^-5 = 0.1 req/s 50 s after the step and the
  // noise is sqrt(20 / 20) = 1 req/s (5%). Stated tolerance: every reading
  // 50–150 s after the step within 20% of 20, their mean within 5%.
  rate_estimator r(5.0, 10.0);
  std::mt19937_64 rng(2024);
  r.start(0);
  double t = 0;
  std::vector<double> readings;
  double next_reading = 150.0;
  while (t < 250.0) {
    t += poisson_gap(rng, t < 100.0 ? 5.0 : 20.0);
    while (next_reading < t && next_reading <= 250.0) {
      readings.push_back(r.rate(next_reading));
      next_reading += 1.0;
    }
    if (t < 100.0 && t + 1 > 100.0)
      CHECK(r.rate(t) == Approx(5.0).epsilon(0.4));  // just before the step
    r.on_arrival(t);
  }
  REQUIRE(readings.size() == 101);
  for (double v : readings)
    CHECK(v == Approx(20.0).epsilon(0.20));
  const double mean = std::accumulate(readings.begin(), readings.end(), 0.0) / 101.0;
  CHECK(mean == Approx(20.0).epsilon(0.05));
}

// ---------------------------------------------------------------------------
// KV quotas

TEST_CASE("unit_policy: initial quotas are proportional to rate x per-token KV", "[unit_policy]") {
  quota_planner p;
  REQUIRE_FALSE(p.add_model("a", 8, 10.0, 16));   // weight 80
  REQUIRE_FALSE(p.add_model("b", 32, 1.0, 16));   // weight 32
  REQUIRE_FALSE(p.add_model("c", 16, 4.0, 16));   // weight 64
  for (int64_t total : {10000, 9999, 12345, 1000}) {
    auto s = p.initial_quotas(total);
    REQUIRE(s);
    CHECK(sum_of(s.quotas) == total);
    const double t = static_cast<double>(total);
    CHECK(std::abs(s.quotas.at("a") - t * 80 / 176) < 1.0);
    CHECK(std::abs(s.quotas.at("b") - t * 32 / 176) < 1.0);
    CHECK(std::abs(s.quotas.at("c") - t * 64 / 176) < 1.0);
  }
  // Before any arrival the measured rates are the expected ones.
  auto again = p.target_quotas(10000, 0);
  CHECK(again.quotas == p.initial_quotas(10000).quotas);
}

TEST_CASE("unit_policy: every model keeps a floor of one max-length sequence", "[unit_policy]") {
  quota_options o;
  o.block_tokens = 16;
  quota_planner p(o);
  REQUIRE_FALSE(p.add_model("hot", 8, 100.0, 4096));  // floor 256 token-blocks x 8 = 2048
  REQUIRE_FALSE(p.add_model("cold", 32, 0.01, 1000)); // floor ceil(1000/16) = 63 x 32 = 2016
  REQUIRE_FALSE(p.add_model("idle", 4, 0.0, 16));     // floor 1 x 4 = 4
  CHECK(p.models().at("hot").floor_blocks == 2048);
  CHECK(p.models().at("cold").floor_blocks == 2016);
  CHECK(p.models().at("idle").floor_blocks == 4);

  auto s = p.initial_quotas(20000);
  REQUIRE(s);
  CHECK(s.quotas.at("cold") == 2016);  // its rate share (~8 blocks) is under the floor
  CHECK(s.quotas.at("idle") == 4);
  CHECK(s.quotas.at("hot") == 20000 - 2016 - 4);

  auto tight = p.initial_quotas(2048 + 2016 + 4);
  REQUIRE(tight);
  CHECK(tight.quotas.at("hot") == 2048);
  auto short_pool = p.initial_quotas(4000);
  CHECK_FALSE(short_pool);
  CHECK(short_pool.error.find("4068") != std::string::npos);
  CHECK(short_pool.quotas.empty());

  CHECK_FALSE(quota_planner().initial_quotas(100));  // no models
}

TEST_CASE("unit_policy: all rates zero splits by per-token KV size", "[unit_policy]") {
  quota_planner p;
  REQUIRE_FALSE(p.add_model("a", 1, 0, 0));
  REQUIRE_FALSE(p.add_model("b", 3, 0, 0));
  auto s = p.initial_quotas(400);
  REQUIRE(s);
  CHECK(s.quotas.at("a") == 100);
  CHECK(s.quotas.at("b") == 300);
}

TEST_CASE("unit_policy: add_model refuses bad declarations", "[unit_policy]") {
  quota_planner p;
  CHECK_FALSE(p.add_model("a", 8, 1.0, 16));
  CHECK(p.add_model("a", 8, 1.0, 16));  // duplicate
  CHECK(p.add_model("b", 0, 1.0, 16));
  CHECK(p.add_model("c", 8, -1.0, 16));
  CHECK(p.add_model("d", 8, std::nan(""), 16));
  CHECK(p.add_model("e", 8, 1.0, -1));
  CHECK(p.models().size() == 1);
}

TEST_CASE("unit_policy: rebalance runs once per period", "[unit_policy]") {
  quota_options o;
  o.period_s = 5.0;
  quota_planner p(o);
  REQUIRE_FALSE(p.add_model("a", 1, 1.0, 16));
  const block_map q{{"a", 10}};
  CHECK_FALSE(p.rebalance(100.0, {}, {}, q));  // the clock starts here
  CHECK_FALSE(p.rebalance(104.9, {}, {}, q));
  auto r = p.rebalance(105.0, {}, {}, q);
  REQUIRE(r);
  CHECK(r->quotas == q);
  CHECK(r->moves.empty());
  CHECK_FALSE(p.rebalance(109.0, {}, {}, q));
  CHECK(p.rebalance(110.5, {}, {}, q));
  CHECK(p.rebalances() == 2);
  CHECK_THROWS_AS(p.rebalance(200, {}, {}, {}), std::invalid_argument);
  CHECK_THROWS_AS(p.rebalance(200, {}, {}, {{"a", 10}, {"zz", 1}}), std::invalid_argument);
}

namespace {

/// Two models of one physical block per token-block, floor one block, equal
/// expected rates; the clock started at 0.
quota_planner two_models(double rate_a = 1.0, double rate_b = 1.0) {
  quota_planner p;
  REQUIRE_FALSE(p.add_model("a", 1, rate_a, 16));
  REQUIRE_FALSE(p.add_model("b", 1, rate_b, 16));
  REQUIRE_FALSE(p.rebalance(0, {}, {}, {{"a", 1}, {"b", 1}}));
  return p;
}

}  // namespace

TEST_CASE("unit_policy: rebalance moves quota from an under-used model to a backlogged one", "[unit_policy]") {
  SECTION("enough spare: the whole shortfall moves") {
    auto p = two_models();
    auto r = p.rebalance(5, {{"a", 300}, {"b", 400}}, {{"b", 150}}, {{"a", 600}, {"b", 400}});
    REQUIRE(r);
    REQUIRE(r->moves.size() == 1);
    CHECK(r->moves[0].from == "a");
    CHECK(r->moves[0].to == "b");
    CHECK(r->moves[0].blocks == 150);
    CHECK(r->moves[0].reason == move_reason::backlog);
    CHECK(reason_name(r->moves[0].reason) == "backlog");
    CHECK(r->quotas == block_map{{"a", 450}, {"b", 550}});
    CHECK(p.models().at("a").blocks_out == 150);
    CHECK(p.models().at("b").blocks_in == 150);
  }
  SECTION("the lender keeps its usage plus threshold headroom") {
    auto p = two_models();
    // a uses 500 of 600 (83%): it keeps ceil(500 / 0.9) = 556 and lends 44.
    auto r = p.rebalance(5, {{"a", 500}, {"b", 400}}, {{"b", 200}}, {{"a", 600}, {"b", 400}});
    REQUIRE(r);
    CHECK(r->quotas == block_map{{"a", 556}, {"b", 444}});
  }
  SECTION("the borrower's own free quota counts against its backlog") {
    auto p = two_models();
    // b has 100 free of its quota, so a backlog of 150 lacks 50.
    auto r = p.rebalance(5, {{"a", 0}, {"b", 300}}, {{"b", 150}}, {{"a", 600}, {"b", 400}});
    REQUIRE(r);
    CHECK(r->quotas == block_map{{"a", 550}, {"b", 450}});
  }
  SECTION("a model at or above 90% or itself backlogged does not lend") {
    auto p = two_models();
    auto r = p.rebalance(5, {{"a", 540}, {"b", 400}}, {{"b", 100}}, {{"a", 600}, {"b", 400}});
    REQUIRE(r);
    CHECK(r->moves.empty());
    r = p.rebalance(10, {{"a", 0}, {"b", 400}}, {{"a", 1}, {"b", 100}}, {{"a", 600}, {"b", 400}});
    REQUIRE(r);
    CHECK(r->moves.empty());
  }
  SECTION("the lender keeps its floor") {
    quota_planner p;
    REQUIRE_FALSE(p.add_model("a", 2, 1.0, 1600));  // floor 100 x 2 = 200
    REQUIRE_FALSE(p.add_model("b", 1, 1.0, 16));
    REQUIRE_FALSE(p.rebalance(0, {}, {}, {{"a", 1}, {"b", 1}}));
    auto r = p.rebalance(5, {{"b", 400}}, {{"b", 1000}}, {{"a", 300}, {"b", 400}});
    REQUIRE(r);
    CHECK(r->quotas == block_map{{"a", 200}, {"b", 500}});
  }
}

TEST_CASE("unit_policy: the poorest borrower is served first from the richest lender", "[unit_policy]") {
  quota_planner p;
  for (auto m : {"a", "b", "c", "d"})
    REQUIRE_FALSE(p.add_model(m, 1, 1.0, 16));
  const block_map q{{"a", 400}, {"b", 200}, {"c", 100}, {"d", 300}};  // targets: 250 each
  REQUIRE_FALSE(p.rebalance(0, {}, {}, q));
  // c (fill 0.4) and b (0.8) are short; a (1.6) and d (1.2) have spare.
  auto r = p.rebalance(5, {{"a", 90}, {"b", 200}, {"c", 100}, {"d", 180}},
                       {{"b", 300}, {"c", 250}}, q);
  REQUIRE(r);
  // a lends 400 - 100 = 300, d lends 300 - 200 = 100: c takes 250 from a,
  // then b takes a's last 50 and d's 100.
  REQUIRE(r->moves.size() == 3);
  CHECK((r->moves[0].from == "a" && r->moves[0].to == "c" && r->moves[0].blocks == 250));
  CHECK((r->moves[1].from == "a" && r->moves[1].to == "b" && r->moves[1].blocks == 50));
  CHECK((r->moves[2].from == "d" && r->moves[2].to == "b" && r->moves[2].blocks == 100));
  CHECK(r->quotas == block_map{{"a", 100}, {"b", 350}, {"c", 350}, {"d", 200}});
}

TEST_CASE("unit_policy: without backlog quotas drift toward the measured rate split", "[unit_policy]") {
  auto p = two_models(1.0, 1.0);  // target 500 / 500 of 1000
  block_map q{{"a", 900}, {"b", 100}};
  auto r = p.rebalance(5, {{"a", 10}, {"b", 10}}, {}, q);
  REQUIRE(r);
  REQUIRE(r->moves.size() == 1);
  CHECK(r->moves[0].reason == move_reason::rate_target);
  CHECK(r->moves[0].blocks == 100);  // 25% of the gap of 400
  q = r->quotas;
  CHECK(q == block_map{{"a", 800}, {"b", 200}});
  // Period after period the gap shrinks by a quarter until within the 2%
  // deadband (20 blocks).
  for (double t = 10; t <= 100; t += 5)
    q = p.rebalance(t, {{"a", 10}, {"b", 10}}, {}, q)->quotas;
  CHECK(std::abs(q.at("a") - 500) <= 20);
  CHECK(sum_of(q) == 1000);
  auto still = p.rebalance(105, {{"a", 10}, {"b", 10}}, {}, q);
  REQUIRE(still);
  CHECK(still->moves.empty());

  SECTION("a busy model over its target does not give") {
    auto busy = two_models(1.0, 1.0);
    auto b = busy.rebalance(5, {{"a", 850}}, {}, {{"a", 900}, {"b", 100}});
    REQUIRE(b);
    CHECK(b->moves.empty());
  }
  SECTION("a rate change moves the target") {
    auto shifted = two_models(1.0, 1.0);
    // b's true rate is 9 req/s from t = 0: after 30 s its estimate is near 9
    // and a's has decayed to e^-3: nearly everything belongs to b.
    for (int i = 1; i <= 270; ++i)
      shifted.on_arrival("b", i / 9.0);
    auto t = shifted.target_quotas(1000, 30.0);
    REQUIRE(t);
    CHECK(t.quotas.at("b") > 950);
    auto m = shifted.rebalance(30.0, {}, {}, {{"a", 500}, {"b", 500}});
    REQUIRE(m);
    CHECK(m->quotas.at("b") > 500);
  }
}

TEST_CASE("unit_policy: where the pool lends idle quota, a backlog move leaves the lender its rate share",
          "[unit_policy]") {
  // Rate shares 500 / 500 of 1000. b's backlog lacks 300 blocks; a is idle.
  quota_options o;
  o.pool_lends_idle = true;
  quota_planner p(o);
  REQUIRE_FALSE(p.add_model("a", 1, 1.0, 16));
  REQUIRE_FALSE(p.add_model("b", 1, 1.0, 16));
  REQUIRE_FALSE(p.rebalance(0, {}, {}, {{"a", 1}, {"b", 1}}));
  // a at its share keeps it: b borrows a's idle blocks from the pool, and
  // they come back as b's sequences end. Moving the quota instead would
  // keep it from a for as long as b stays above 90% (the ratchet above).
  auto r = p.rebalance(5, {{"a", 0}, {"b", 400}}, {{"b", 300}}, {{"a", 500}, {"b", 500}});
  REQUIRE(r);
  CHECK(r->moves.empty());
  // Above its share (after earlier moves) only the excess goes.
  r = p.rebalance(10, {{"a", 0}, {"b", 400}}, {{"b", 300}}, {{"a", 600}, {"b", 400}});
  REQUIRE(r);
  REQUIRE(r->moves.size() == 1);
  CHECK(r->moves[0].blocks == 100);
  CHECK(r->quotas == block_map{{"a", 500}, {"b", 500}});

  // Quotas as caps (the default): the lender gives all the backlog lacks.
  auto caps = two_models();
  r = caps.rebalance(5, {{"a", 0}, {"b", 400}}, {{"b", 300}}, {{"a", 600}, {"b", 400}});
  REQUIRE(r);
  CHECK(r->quotas == block_map{{"a", 300}, {"b", 700}});
}

TEST_CASE("unit_policy: the rate split keeps the expected rates within the estimate's noise", "[unit_policy]") {
  // Hot 10 req/s × 8 blocks, cold 1 req/s × 16, as the config says, and
  // Poisson arrivals at exactly those rates. With tau 10 s the cold
  // estimate's noise is sqrt(1 / 20) = 22% of its rate: a split by the raw
  // estimates moves a fifth of cold's share back and forth on noise alone.
  // Readings every second from 20 s to 200 s: within 2 standard deviations
  // (the default rate_z) the split stays at the expected one (measured 92%
  // of readings); with rate_z 0 it almost never does (measured 0%).
  auto run = [](double z, double hot_rate) {
    quota_options o;
    o.rate_z = z;
    quota_planner p(o);
    REQUIRE_FALSE(p.add_model("hot", 8, 10.0, 16));
    REQUIRE_FALSE(p.add_model("cold", 16, 1.0, 16));
    const auto expected = p.initial_quotas(16000).quotas;
    std::mt19937_64 rng(7);
    std::vector<std::pair<double, std::string>> arrivals;
    for (auto [name, rate] : {std::pair<const char*, double>{"hot", hot_rate}, {"cold", 1.0}})
      for (double t = poisson_gap(rng, rate); t < 200; t += poisson_gap(rng, rate))
        arrivals.emplace_back(t, name);
    std::sort(arrivals.begin(), arrivals.end());
    p.on_arrival("hot", 0);  // starts the clock at 0 (one extra arrival)
    size_t next = 0;
    int same = 0, readings = 0;
    for (double t = 20; t <= 200; t += 1) {
      for (; next < arrivals.size() && arrivals[next].first <= t; ++next)
        p.on_arrival(arrivals[next].second, arrivals[next].first);
      same += p.target_quotas(16000, t).quotas == expected;
      ++readings;
    }
    return static_cast<double>(same) / readings;
  };
  CHECK(run(2.0, 10.0) >= 0.8);
  CHECK(run(0.0, 10.0) <= 0.05);
  // A real change is followed: hot at 15 req/s (50% more) is not noise.
  CHECK(run(2.0, 15.0) <= 0.05);
}

TEST_CASE("unit_policy: rebalance property: random usage and backlog", "[unit_policy]") {
  // Any sequence of usage/backlog readings: the sum never changes, no model
  // that gives ends below max(floor, usage), moves are positive, name two
  // different models, and account for every quota change.
  std::mt19937_64 rng(77);
  quota_options o;
  o.period_s = 1.0;
  quota_planner p(o);
  const std::vector<std::string> names{"m0", "m1", "m2", "m3"};
  const std::vector<int64_t> shape{4, 8, 12, 2};
  for (size_t i = 0; i < names.size(); ++i)
    REQUIRE_FALSE(p.add_model(names[i], shape[i], 0.5 + static_cast<double>(i), 64));
  const int64_t total = 5000;
  auto init = p.initial_quotas(total);
  REQUIRE(init);
  block_map q = init.quotas;
  int moved = 0;
  for (int round = 0; round < 2000; ++round) {
    const double now = round;
    for (const auto& n : names)
      if (rng() % 3 == 0)
        p.on_arrival(n, now - uniform01(rng));
    block_map usage;
    block_map backlog;
    for (const auto& n : names) {
      usage[n] = static_cast<int64_t>(rng() % static_cast<uint64_t>(q.at(n) + 1));
      if (rng() % 4 == 0)
        backlog[n] = static_cast<int64_t>(rng() % 800);
    }
    auto r = p.rebalance(now, usage, backlog, q);
    if (!r)
      continue;
    REQUIRE(sum_of(r->quotas) == total);
    block_map delta;
    for (const auto& m : r->moves) {
      REQUIRE(m.blocks > 0);
      REQUIRE(m.from != m.to);
      delta[m.from] -= m.blocks;
      delta[m.to] += m.blocks;
      ++moved;
    }
    for (const auto& n : names) {
      REQUIRE(r->quotas.at(n) - q.at(n) == delta[n]);
      if (r->quotas.at(n) < q.at(n)) {
        REQUIRE(r->quotas.at(n) >= usage.at(n));
        REQUIRE(r->quotas.at(n) >= p.models().at(n).floor_blocks);
      }
    }
    q = r->quotas;
  }
  CHECK(moved > 100);  // the property was exercised
}

// ---------------------------------------------------------------------------
// Fairness: a discrete-event model of two co-located models on one unit

namespace {

/// One unit, time-multiplexed: one step at a time. Each model announces a
/// prefill job and a decode job to the arbiter (`split_jobs`), or one step
/// announced as prefill whenever it has prompt tokens (what batch_scheduler
/// builds today). A decode job feeds every generating sequence one token; a
/// prefill job feeds prompt chunks up to a token budget. A step costs
/// `decode_step_s` if it has decodes (weight-read bound, independent of
/// batch size) plus `prefill_token_s` per prompt token. A request is
/// admitted when KV blocks for prompt + output are granted and holds them
/// until it finishes (as batch_scheduler does): with quotas, each model
/// admits in its own order within its quota; without, one pool admits in
/// arrival order across models. Every request generates exactly its output
/// length.
struct fairness_sim {
  struct model {
    std::string name;
    double rate = 0;                 ///< req/s, Poisson
    int64_t blocks_per_token_block = 1;
    double expected_rate = 0;        ///< what the config says; 0: `rate`
  };
  struct options {
    policy_kind policy = policy_kind::adbs;
    bool quotas = true;  ///< ADBS quotas + rebalance; false: one pool, admission by arrival
    bool split_jobs = true;  ///< prefill and decode as separate jobs; false: one step per model
    double rebalance_period_s = 5.0;
    int floor_sequences = 1;  ///< each model's floor, in max-length sequences
    int64_t total_blocks = 16000;
    double horizon_s = 120;  ///< arrivals stop here; the run drains after
    double decode_step_s = 0.010;
    double prefill_token_s = 0.0001;
    int step_tokens = 512;
    int block_tokens = 16;
    int prompt_min = 64, prompt_max = 512;
    int output_min = 16, output_max = 256;
    uint64_t seed = 11;
  };
  struct outcome {
    std::vector<double> latency_s;  ///< arrival to last token
    std::vector<double> slowdown;   ///< latency / the request's time alone on the unit
    double mean_blocks = 0;         ///< physical blocks held, time average
    size_t arrivals = 0;
  };

  struct request {
    double arrival = 0;
    int prompt = 0;
    int output = 0;
    int prefilled = 0;
    int generated = 0;
    int64_t blocks = 0;  ///< physical
  };

  struct model_state {
    model spec;
    std::vector<request> trace;
    size_t next_arrival = 0;
    std::deque<request> waiting;
    std::vector<request> running;
    int64_t used = 0;
    int64_t peak = 0;
    double block_seconds = 0;
    outcome out;
  };

  static std::map<std::string, outcome> run(const std::vector<model>& models, const options& o,
                                            uint64_t* quota_moves = nullptr) {
    std::vector<model_state> ms;
    for (size_t i = 0; i < models.size(); ++i) {
      model_state s;
      s.spec = models[i];
      std::mt19937_64 rng(o.seed * 1000 + i);  // the same trace under every policy
      for (double t = poisson_gap(rng, s.spec.rate); t < o.horizon_s; t += poisson_gap(rng, s.spec.rate)) {
        request r;
        r.arrival = t;
        auto between = [&](int lo, int hi) {
          return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
        };
        r.prompt = between(o.prompt_min, o.prompt_max);
        r.output = between(o.output_min, o.output_max);
        const int64_t token_blocks = (r.prompt + r.output + o.block_tokens - 1) / o.block_tokens;
        r.blocks = token_blocks * s.spec.blocks_per_token_block;
        s.trace.push_back(r);
      }
      s.out.arrivals = s.trace.size();
      ms.push_back(std::move(s));
    }

    quota_options qo;
    qo.block_tokens = o.block_tokens;
    qo.period_s = o.rebalance_period_s;
    quota_planner planner(qo);
    for (const auto& s : ms)
      REQUIRE_FALSE(planner.add_model(s.spec.name, s.spec.blocks_per_token_block,
                                      s.spec.expected_rate > 0 ? s.spec.expected_rate : s.spec.rate,
                                      o.floor_sequences * (o.prompt_max + o.output_max)));
    block_map quota;
    if (o.quotas) {
      auto split = planner.initial_quotas(o.total_blocks);
      REQUIRE(split);
      quota = split.quotas;
    }
    unit_arbiter arbiter(o.policy);
    for (const auto& s : ms)
      arbiter.add_model(s.spec.name);

    double t = 0;
    int64_t pool_used = 0;
    auto advance = [&](double to) {
      for (auto& s : ms)
        s.block_seconds += static_cast<double>(s.used) * (to - t);
      t = to;
    };
    auto admit = [&](model_state& s, request r) {
      s.used += r.blocks;
      pool_used += r.blocks;
      s.peak = std::max(s.peak, s.used);
      s.running.push_back(r);
    };

    for (;;) {
      for (auto& s : ms)
        for (; s.next_arrival < s.trace.size() && s.trace[s.next_arrival].arrival <= t; ++s.next_arrival) {
          s.waiting.push_back(s.trace[s.next_arrival]);
          planner.on_arrival(s.spec.name, s.trace[s.next_arrival].arrival);
        }

      if (o.quotas) {
        block_map peak;
        block_map backlog;
        for (auto& s : ms) {
          peak[s.spec.name] = s.peak;
          for (const auto& r : s.waiting)
            backlog[s.spec.name] += r.blocks;
        }
        if (auto r = planner.rebalance(t, peak, backlog, quota)) {
          quota = r->quotas;
          if (quota_moves)
            *quota_moves += r->moves.size();
          for (auto& s : ms)
            s.peak = s.used;
        }
        for (auto& s : ms)
          while (!s.waiting.empty() && s.used + s.waiting.front().blocks <= quota.at(s.spec.name) &&
                 pool_used + s.waiting.front().blocks <= o.total_blocks) {
            admit(s, s.waiting.front());
            s.waiting.pop_front();
          }
      } else {
        // One pool, first come first served across models: the oldest
        // waiting request goes first, and nothing overtakes it.
        for (;;) {
          model_state* first = nullptr;
          for (auto& s : ms)
            if (!s.waiting.empty() && (!first || s.waiting.front().arrival < first->waiting.front().arrival))
              first = &s;
          if (!first || pool_used + first->waiting.front().blocks > o.total_blocks)
            break;
          admit(*first, first->waiting.front());
          first->waiting.pop_front();
        }
      }

      for (auto& s : ms) {
        // Announce what the model has now; the oldest request behind each job.
        arbiter.withdraw(s.spec.name);
        std::optional<double> prefill_job;
        std::optional<double> decode_job;
        for (const auto& r : s.running) {
          auto& job = r.prefilled < r.prompt ? prefill_job : decode_job;
          job = std::min(job.value_or(r.arrival), r.arrival);
        }
        if (!o.split_jobs && prefill_job && decode_job)
          prefill_job = std::min(*prefill_job, *decode_job);  // one step, announced as prefill
        if (prefill_job)
          arbiter.ready(s.spec.name, true, *prefill_job);
        if (decode_job && (o.split_jobs || !prefill_job))
          arbiter.ready(s.spec.name, false, *decode_job);
      }

      auto grant = arbiter.next();
      if (!grant) {
        double next = std::numeric_limits<double>::infinity();
        for (const auto& s : ms)
          if (s.next_arrival < s.trace.size())
            next = std::min(next, s.trace[s.next_arrival].arrival);
        if (std::isinf(next)) {
          for (const auto& s : ms)
            REQUIRE(s.waiting.empty());  // nothing stuck without a step to free it
          break;
        }
        advance(next);
        continue;
      }
      auto& s = *std::find_if(ms.begin(), ms.end(),
                              [&](const model_state& m) { return m.spec.name == grant->model; });
      const bool run_prefill = grant->prefill || !o.split_jobs;
      const bool run_decode = grant->decode || !o.split_jobs;
      // Decodes first, then prompt chunks in admission order.
      int budget = o.step_tokens;
      int decodes = 0;
      int prompt_tokens = 0;
      std::vector<int> chunk(s.running.size(), 0);
      std::vector<bool> decoding(s.running.size(), false);
      for (size_t i = 0; i < s.running.size(); ++i)
        if (run_decode && s.running[i].prefilled == s.running[i].prompt) {
          decoding[i] = true;
          ++decodes;
          --budget;
        }
      for (size_t i = 0; run_prefill && i < s.running.size() && budget > 0; ++i) {
        auto& r = s.running[i];
        chunk[i] = std::min(budget, r.prompt - r.prefilled);
        budget -= chunk[i];
        prompt_tokens += chunk[i];
      }
      advance(t + (decodes > 0 ? o.decode_step_s : 0.0) + o.prefill_token_s * prompt_tokens);

      std::vector<request> still;
      for (size_t i = 0; i < s.running.size(); ++i) {
        auto r = s.running[i];
        if (decoding[i]) {
          ++r.generated;
        } else if (chunk[i] > 0) {
          r.prefilled += chunk[i];
          if (r.prefilled == r.prompt)
            r.generated = 1;  // the last prompt chunk samples the first token
        }
        if (r.generated < r.output) {
          still.push_back(r);
          continue;
        }
        const double alone = o.prefill_token_s * r.prompt + o.decode_step_s * (r.output - 1);
        s.out.latency_s.push_back(t - r.arrival);
        s.out.slowdown.push_back((t - r.arrival) / alone);
        s.used -= r.blocks;
        pool_used -= r.blocks;
      }
      s.running = std::move(still);
    }

    std::map<std::string, outcome> out;
    for (auto& s : ms) {
      s.out.mean_blocks = t > 0 ? s.block_seconds / t : 0;
      out[s.spec.name] = std::move(s.out);
    }
    return out;
  }
};

/// Physical blocks held per (req/s of arrivals × blocks per token-block):
/// token-blocks held per unit of rate, comparable across model shapes.
double normalised_kv(const fairness_sim::outcome& o, const fairness_sim::model& m, double horizon_s) {
  const double rate = static_cast<double>(o.arrivals) / horizon_s;
  return o.mean_blocks / (rate * static_cast<double>(m.blocks_per_token_block));
}

const std::vector<fairness_sim::model> skewed_pair{{"hot", 10.0, 8}, {"cold", 1.0, 16}};

/// Share of `o`'s requests that finished within `scale` times their time
/// alone on the unit (MuxServe's SLO attainment).
double attainment(const fairness_sim::outcome& o, double scale) {
  const auto met = std::count_if(o.slowdown.begin(), o.slowdown.end(), [&](double s) { return s <= scale; });
  return static_cast<double>(met) / static_cast<double>(o.slowdown.size());
}

}  // namespace

TEST_CASE("unit_policy: fairness, a 10:1 pair on one unit under adbs and fcfs", "[unit_policy]") {
  // Hot: 10 req/s, 8 physical blocks per token-block; cold: 1 req/s, 16.
  // Prompts 64–512 tokens, outputs 16–256, 120 s of Poisson arrivals, fixed
  // seed. A step costs 10 ms with decodes plus 0.1 ms per prompt token.
  // The cold model's longest request takes 0.05 + 255 × 0.01 = 2.6 s alone;
  // its SLO is 5 × that = 13 s (MuxServe's SLO scale 5); per request, 5 ×
  // its own time alone. Figures for every policy: "[.unit_policy_report]".
  constexpr double cold_slo_s = 13.0;

  SECTION("pool of 16000 blocks (~65% used), floors of one max-length sequence") {
    fairness_sim::options o;
    o.total_blocks = 16000;
    uint64_t moves = 0;
    const auto adbs = fairness_sim::run(skewed_pair, o, &moves);
    const auto& hot = adbs.at("hot");
    const auto& cold = adbs.at("cold");
    REQUIRE(hot.latency_s.size() == hot.arrivals);  // every request finished
    REQUIRE(cold.latency_s.size() == cold.arrivals);
    REQUIRE(cold.arrivals > 80);
    CHECK(percentile(cold.latency_s, 0.99) < cold_slo_s);  // measured 11.2 s
    CHECK(moves > 0);  // the rebalancer took part
    // KV use normalised by rate × per-token KV size: within a factor 1.5
    // between the models (measured 0.94).
    const double ratio = normalised_kv(hot, skewed_pair[0], o.horizon_s) /
                         normalised_kv(cold, skewed_pair[1], o.horizon_s);
    CHECK(ratio < 1.5);
    CHECK(ratio > 1 / 1.5);

    // fcfs over one shared pool meets the 13 s bound too (p99 7.3 s) but
    // makes short cold requests wait behind long hot ones: fewer cold
    // requests within 5× their time alone (measured 96% under adbs, 87%).
    o.policy = policy_kind::fcfs;
    o.quotas = false;
    const auto fcfs = fairness_sim::run(skewed_pair, o);
    CHECK(attainment(cold, 5.0) >= 0.95);
    CHECK(attainment(fcfs.at("cold"), 5.0) < attainment(cold, 5.0));
  }

  SECTION("the hot model surges to 25 req/s: floors of four sequences isolate the cold one") {
    // The unit is overloaded; the hot model's queue grows for the whole run.
    // Under fcfs the cold model's requests wait in the same queue (2% within
    // SLO). Under adbs its quota keeps it served — if its floor holds its
    // usual concurrency: with a floor of one sequence the rebalancer lends
    // its quiet-time spare to the always-full hot model and it never comes
    // back (2% too, see the report); with four, 92% meet the SLO.
    auto surge = skewed_pair;
    surge[0].expected_rate = 10.0;
    surge[0].rate = 25.0;
    fairness_sim::options o;
    o.total_blocks = 16000;
    o.floor_sequences = 4;
    const auto adbs = fairness_sim::run(surge, o);
    const auto& cold = adbs.at("cold");
    REQUIRE(cold.latency_s.size() == cold.arrivals);
    CHECK(percentile(cold.latency_s, 0.99) < cold_slo_s);  // measured 11.2 s
    CHECK(attainment(cold, 5.0) >= 0.90);
    const double ratio = normalised_kv(adbs.at("hot"), surge[0], o.horizon_s) /
                         normalised_kv(cold, surge[1], o.horizon_s);
    CHECK(ratio < 1.5);  // measured 0.82
    CHECK(ratio > 1 / 1.5);

    o.policy = policy_kind::fcfs;
    o.quotas = false;
    const auto fcfs = fairness_sim::run(surge, o);
    CHECK(percentile(fcfs.at("cold").latency_s, 0.99) > cold_slo_s);  // measured 80 s
    CHECK(attainment(fcfs.at("cold"), 5.0) < 0.10);
  }
}

TEST_CASE("unit_policy: fairness report, adbs vs fcfs vs round_robin", "[.unit_policy_report]") {
  // Not a check: prints the figures quoted in reviews. Run it by name:
  // actors_test "[.unit_policy_report]"
  struct variant {
    const char* label;
    policy_kind policy;
    bool quotas;
    bool split_jobs = true;
    double period_s = 5.0;
    int floor_sequences = 1;
  };
  const variant variants[] = {{"adbs", policy_kind::adbs, true},
                              {"adbs period 1s", policy_kind::adbs, true, true, 1.0},
                              {"adbs floor 4 seq", policy_kind::adbs, true, true, 5.0, 4},
                              {"adbs one step", policy_kind::adbs, true, false},
                              {"adbs no quotas", policy_kind::adbs, false},
                              {"adbs one step, no q", policy_kind::adbs, false, false},
                              {"fcfs", policy_kind::fcfs, false},
                              {"round_robin", policy_kind::round_robin, false},
                              {"fcfs + quotas", policy_kind::fcfs, true}};
  struct scenario {
    const char* label;
    int64_t pool;
    double hot_rate;
  };
  const scenario scenarios[] = {{"10:1, pool 16000", 16000, 10.0},
                                {"10:1, pool 12000", 12000, 10.0},
                                {"10:1, pool 10000 (KV overloaded)", 10000, 10.0},
                                {"hot surges to 15 req/s (config says 10), pool 16000", 16000, 15.0},
                                {"hot surges to 25 req/s (config says 10), pool 16000", 16000, 25.0}};
  for (const auto& sc : scenarios) {
    std::printf("%s\n", sc.label);
    std::printf("  %-19s %8s %8s %8s %8s %9s %8s %7s %7s %7s %6s\n", "variant", "hot p50", "hot p99",
                "cold p50", "cold p99", "cold sd99", "cold SLO", "kv hot", "kv cold", "kv h/c", "moves");
    std::vector<fairness_sim::model> pair = skewed_pair;
    pair[0].expected_rate = pair[0].rate;
    pair[0].rate = sc.hot_rate;
    for (const auto& v : variants) {
      fairness_sim::options o;
      o.policy = v.policy;
      o.quotas = v.quotas;
      o.split_jobs = v.split_jobs;
      o.rebalance_period_s = v.period_s;
      o.floor_sequences = v.floor_sequences;
      o.total_blocks = sc.pool;
      uint64_t moves = 0;
      auto r = fairness_sim::run(pair, o, &moves);
      const auto& hot = r.at("hot");
      const auto& cold = r.at("cold");
      const double met = attainment(cold, 5.0);
      std::printf("  %-19s %7.2fs %7.2fs %7.2fs %7.2fs %9.2f %7.1f%% %7.0f %7.0f %7.2f %6llu\n", v.label,
                  percentile(hot.latency_s, 0.5), percentile(hot.latency_s, 0.99),
                  percentile(cold.latency_s, 0.5), percentile(cold.latency_s, 0.99),
                  percentile(cold.slowdown, 0.99), 100 * met, hot.mean_blocks, cold.mean_blocks,
                  normalised_kv(hot, pair[0], o.horizon_s) / normalised_kv(cold, pair[1], o.horizon_s),
                  static_cast<unsigned long long>(moves));
    }
  }
}
