// `llmux bench serve`'s pure core: plans, length distributions, statistics.

#include "tools/loadgen/load_plan.hpp"

#include <catch2/catch.hpp>

#include <cmath>

using namespace llmux::loadgen;

TEST_CASE("length specs parse, and bad ones say why", "[loadgen]") {
  CHECK(parse_length_spec("128").mean == 128);
  CHECK(parse_length_spec("fixed:7").dist == length_spec::kind::fixed);
  auto u = parse_length_spec("uniform:3:9");
  CHECK(u.dist == length_spec::kind::uniform);
  CHECK(u.min == 3);
  CHECK(u.max == 9);
  auto l = parse_length_spec("lognormal:200:0.5:10:900");
  CHECK(l.dist == length_spec::kind::lognormal);
  CHECK(l.sigma == 0.5);
  CHECK(l.max == 900);
  CHECK_THROWS_WITH(parse_length_spec("uniform:9:3"), Catch::Contains("min is above max"));
  CHECK_THROWS_WITH(parse_length_spec("fixed:-2"), Catch::Contains("not a positive integer"));
  CHECK_THROWS_WITH(parse_length_spec("zipf:3"), Catch::Contains("expected N"));
  CHECK_THROWS_WITH(parse_length_spec("lognormal:100:9"), Catch::Contains("sigma"));
}

TEST_CASE("Poisson arrivals have the asked rate and are reproducible", "[loadgen]") {
  const auto fixed = parse_length_spec("16");
  auto a = make_plan(20000, 50.0, fixed, fixed, 7);
  auto b = make_plan(20000, 50.0, fixed, fixed, 7);
  REQUIRE(a.size() == 20000);
  CHECK(a.back().at_s == b.back().at_s);
  for (size_t i = 1; i < a.size(); ++i)
    REQUIRE(a[i].at_s > a[i - 1].at_s);
  // 20000 exponential gaps of mean 1/50: total within 3% of 400 s.
  CHECK(a.back().at_s == Approx(400.0).epsilon(0.03));
  // Rate 0: everything at once.
  for (const auto& p : make_plan(10, 0, fixed, fixed, 1))
    CHECK(p.at_s == 0.0);
}

TEST_CASE("length distributions stay in bounds with the asked mean", "[loadgen]") {
  auto plan = make_plan(20000, 0, parse_length_spec("uniform:10:20"),
                        parse_length_spec("lognormal:100:1.0:1:100000"), 3);
  double sum_out = 0;
  for (const auto& p : plan) {
    REQUIRE(p.prompt_tokens >= 10);
    REQUIRE(p.prompt_tokens <= 20);
    REQUIRE(p.output_tokens >= 1);
    sum_out += p.output_tokens;
  }
  CHECK(sum_out / plan.size() == Approx(100.0).epsilon(0.05));
}

TEST_CASE("percentiles by nearest rank", "[loadgen]") {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i)
    v.push_back(i);  // unsorted on purpose
  auto s = stats_of(v);
  CHECK(s.n == 100);
  CHECK(s.p50 == 50);
  CHECK(s.p90 == 90);
  CHECK(s.p99 == 99);
  CHECK(s.mean == 50.5);
  CHECK(stats_of({}).n == 0);
  CHECK(stats_of({3.0}).p99 == 3.0);
}

TEST_CASE("summaries: throughput, TPOT, SLO attainment and failures", "[loadgen]") {
  std::vector<request_result> rs(4);
  rs[0] = {true, 200, "", 0.10, 1.10, {0.1, 0.1}, 11, 5};  // tpot 0.1
  rs[1] = {true, 200, "", 0.50, 0.90, {0.2}, 5, 5};        // tpot 0.1, ttft over the SLO
  rs[2] = {true, 200, "", 0.05, 0.05, {}, 1, 5};            // one token: no tpot
  rs[3] = {false, 503, "HTTP 503: gone", 0, 0.01, {}, 0, 0};
  auto s = summarize(rs, 2.0, slo_spec{0.2, 0.15});
  CHECK(s.requests == 4);
  CHECK(s.ok == 3);
  CHECK(s.failed == 1);
  CHECK(s.first_error == "HTTP 503: gone");
  CHECK(s.requests_per_s == 1.5);
  CHECK(s.output_tokens_per_s == 8.5);
  CHECK(s.tpot.n == 2);
  CHECK(s.tpot.p50 == Approx(0.1));
  CHECK(s.itl.n == 3);
  CHECK(s.slo_attainment == 0.5);  // rs[0] and rs[2] meet it; the failure counts against
  auto j = to_json(s);
  CHECK(j["ttft"]["p99_ms"].get<double>() == Approx(500.0));
  CHECK(j["failed"] == 1);
}
