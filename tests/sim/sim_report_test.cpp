// sim/sim_report: what a run adds up to, on a hand-made sim_result.
//
//   model a: a1 arrives 0, first token 0.5, done 2 (5 tokens), reference 1
//            a2 arrives 1, first token 2,   done 4 (3 tokens), reference 1
//   model b: b1 arrives 0, first token 0.5, done 1 (2 tokens), reference 0.5
//            b2 arrives 2, unfinished,                         reference 0.5
//            b3 arrives 0.5, refused (429) at 0.5,             reference 0.5
//
// Throughput is completions over first arrival → last completion:
//   a: 2 / (4 - 0) = 0.5 req/s;  b: 1 / (1 - 0) = 1 req/s
//   system (request-weighted mean): (0.5·2 + 1·3) / 5 = 0.8 req/s
//   all: 3 / (4 - 0) = 0.75 req/s
// SLO attainment at scale s (latency <= s · reference, over all requests):
//   a1 latency 2 (meets from s = 2), a2 latency 3 (from s = 3), b1 latency 1
//   (from s = 2); b2 and b3 never.

#include "sim/sim_report.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace llmux::sim;
using Catch::Matchers::Contains;

namespace {

request_outcome outcome(const std::string& model, double arrival, double first, double finish, int generated,
                        double reference, int status = 0) {
  request_outcome r;
  r.model = model;
  r.replica = "u0/" + model;
  r.arrival_s = arrival;
  r.first_token_s = first;
  r.finish_s = finish;
  r.generated = generated;
  r.output_tokens = generated;
  r.prompt_tokens = 10;
  r.reference_s = reference;
  r.status = status;
  return r;
}

sim_result hand_made() {
  sim_result r;
  r.requests = {outcome("a", 0, 0.5, 2, 5, 1),   outcome("b", 0, 0.5, 1, 2, 0.5), outcome("a", 1, 2, 4, 3, 1),
                outcome("b", 2, -1, -1, 0, 0.5), outcome("b", 0.5, -1, 0.5, 0, 0.5, 429)};
  r.requests.back().error = "overloaded";
  r.end_s = 4.5;
  r.events = 123;
  r.preemptions = 2;
  r.wall_s = 0.01;
  return r;
}

}  // namespace

TEST_CASE("sim_report: per-model counts, throughput and the request-weighted system throughput", "[sim_report]") {
  auto rep = summarize(hand_made(), {"a", "b"}, {1, 2, 3});
  REQUIRE(rep.models.size() == 2);
  const auto& a = rep.models[0];
  const auto& b = rep.models[1];
  CHECK(a.name == "a");
  CHECK(a.requests == 2u);
  CHECK(a.ok == 2u);
  CHECK(a.failed == 0u);
  CHECK(a.unfinished == 0u);
  CHECK(a.throughput_rps == Approx(0.5));
  CHECK(a.output_tokens_per_s == Approx(8.0 / 4));
  CHECK(b.name == "b");
  CHECK(b.requests == 3u);
  CHECK(b.ok == 1u);
  CHECK(b.failed == 1u);
  CHECK(b.unfinished == 1u);
  CHECK(b.throughput_rps == Approx(1.0));
  CHECK(rep.system_throughput_rps == Approx(0.8));
  CHECK(rep.all.name == "all");
  CHECK(rep.all.requests == 5u);
  CHECK(rep.all.ok == 3u);
  CHECK(rep.all.throughput_rps == Approx(0.75));
  CHECK(rep.aggregate_rps == Approx(0.75));
  CHECK(rep.end_s == 4.5);
  CHECK(rep.events == 123u);
  CHECK(rep.preemptions == 2u);
}

TEST_CASE("sim_report: the model order is the caller's, unknown names are skipped", "[sim_report]") {
  auto rep = summarize(hand_made(), {"b", "ghost", "a"}, {1});
  REQUIRE(rep.models.size() == 2);
  CHECK(rep.models[0].name == "b");
  CHECK(rep.models[1].name == "a");
  CHECK(rep.system_throughput_rps == Approx(0.8));
  // A model left out of the order still counts in "all".
  auto only_a = summarize(hand_made(), {"a"}, {1});
  REQUIRE(only_a.models.size() == 1);
  CHECK(only_a.system_throughput_rps == Approx(0.5));
  CHECK(only_a.all.requests == 5u);
}

TEST_CASE("sim_report: SLO attainment is over all requests, and failed and unfinished ones miss", "[sim_report]") {
  auto rep = summarize(hand_made(), {"a", "b"}, {1, 2, 3});
  REQUIRE(rep.slo_scales == std::vector<double>{1, 2, 3});
  const auto& a = rep.models[0].attainment;
  const auto& b = rep.models[1].attainment;
  const auto& all = rep.all.attainment;
  REQUIRE(a.size() == 3);
  CHECK(a[0] == Approx(0));
  CHECK(a[1] == Approx(0.5));
  CHECK(a[2] == Approx(1.0));
  CHECK(b[0] == Approx(0));
  CHECK(b[1] == Approx(1.0 / 3));
  CHECK(b[2] == Approx(1.0 / 3));
  CHECK(all[0] == Approx(0));
  CHECK(all[1] == Approx(2.0 / 5));
  CHECK(all[2] == Approx(3.0 / 5));
}

TEST_CASE("sim_report: TTFT, TPOT and E2E over the completed requests", "[sim_report]") {
  auto rep = summarize(hand_made(), {"a", "b"}, {1});
  const auto& a = rep.models[0];
  // a1: TTFT 0.5, TPOT (2 - 0.5) / 4 = 0.375, E2E 2; a2: 1, (4 - 2) / 2 = 1, 3.
  CHECK(a.ttft.n == 2u);
  CHECK(a.ttft.mean == Approx(0.75));
  CHECK(a.tpot.n == 2u);
  CHECK(a.tpot.mean == Approx((0.375 + 1.0) / 2));
  CHECK(a.e2e.mean == Approx(2.5));
  CHECK(a.e2e.p99 == Approx(3));
  // b: only b1 completed.
  CHECK(rep.models[1].e2e.n == 1u);
  CHECK(rep.models[1].ttft.mean == Approx(0.5));
  CHECK(rep.all.e2e.n == 3u);
}

TEST_CASE("sim_report: default SLO scales are 1 to 10", "[sim_report]") {
  CHECK(default_slo_scales() == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  auto rep = summarize(hand_made(), {"a", "b"});
  CHECK(rep.all.attainment.size() == 10u);
  CHECK(rep.all.attainment.back() == Approx(3.0 / 5));  // every completed one by scale 10
}

TEST_CASE("sim_report: an empty run reports zeros", "[sim_report]") {
  auto rep = summarize(sim_result{}, {"a"}, {1, 2});
  CHECK(rep.models.empty());
  CHECK(rep.all.requests == 0u);
  CHECK(rep.system_throughput_rps == 0);
  CHECK(rep.aggregate_rps == 0);
  CHECK(rep.all.attainment == std::vector<double>{0, 0});
}

TEST_CASE("sim_report: table and JSON carry the same figures", "[sim_report]") {
  auto rep = summarize(hand_made(), {"a", "b"}, {1, 2, 3});
  auto j = to_json(rep);
  CHECK(j["simulated"] == true);
  CHECK(j["system_throughput_rps"].get<double>() == Approx(0.8));
  CHECK(j["aggregate_rps"].get<double>() == Approx(0.75));
  REQUIRE(j["models"].size() == 2);
  CHECK(j["models"][1]["name"] == "b");
  CHECK(j["models"][1]["failed"] == 1);
  CHECK(j["models"][1]["unfinished"] == 1);
  CHECK(j["all"]["slo_attainment"][1].get<double>() == Approx(0.4));
  CHECK(j["models"][0]["e2e"]["p99_ms"].get<double>() == Approx(3000));
  CHECK(j["preemptions"] == 2);

  const auto table = to_table(rep, 2);
  CHECK_THAT(table, Contains("SLO@2"));
  CHECK_THAT(table, Contains("system throughput 0.80 req/s"));
  CHECK_THAT(table, Contains("aggregate 0.75 req/s"));
  CHECK_THAT(table, Contains("40.0%"));  // all, at scale 2
}

TEST_CASE("sim_report: the timeline counts by window, attainment by arrival window", "[sim_report]") {
  auto t = timeline(hand_made(), 1.0, 2.0);
  // Last event at 4: windows 0..4.
  REQUIRE(t.size() == 5);
  for (size_t i = 0; i < t.size(); ++i)
    CHECK(t[i].t_s == Approx(static_cast<double>(i)));
  // Arrivals: [0,1): a1, b1, b3; [1,2): a2; [2,3): b2.
  CHECK(t[0].arrived == 3u);
  CHECK(t[1].arrived == 1u);
  CHECK(t[2].arrived == 1u);
  CHECK(t[3].arrived == 0u);
  CHECK(t[4].arrived == 0u);
  // Completions (ok only) by finish window: b1 at 1, a1 at 2, a2 at 4.
  CHECK(t[0].completed_rps == 0);
  CHECK(t[1].completed_rps == Approx(1));
  CHECK(t[2].completed_rps == Approx(1));
  CHECK(t[3].completed_rps == 0);
  CHECK(t[4].completed_rps == Approx(1));
  // At scale 2: a1 and b1 meet it, b3 (refused) does not → 2/3; a2 (3 > 2) misses.
  CHECK(t[0].attainment == Approx(2.0 / 3));
  CHECK(t[1].attainment == 0);
  CHECK(t[2].attainment == 0);  // b2 never finished
  CHECK(t[3].attainment == 0);  // nothing arrived

  // Windows of 2 s: rates are per second.
  auto wide = timeline(hand_made(), 2.0, 3.0);
  REQUIRE(wide.size() == 3);
  CHECK(wide[0].arrived == 4u);
  CHECK(wide[0].completed_rps == Approx(0.5));  // b1 at 1
  CHECK(wide[0].attainment == Approx(3.0 / 4)); // a1, b1, a2 at scale 3; b3 misses
  CHECK(wide[1].completed_rps == Approx(0.5));  // a1 at 2
  CHECK(wide[2].completed_rps == Approx(0.5));  // a2 at 4

  CHECK(timeline(hand_made(), 0, 2.0).empty());
}

TEST_CASE("sim_report: window throughput counts completions while arrivals lasted", "[sim_report]") {
  // Arrivals lasted 2.5 s: a1 (done at 2) and b1 (done at 1) finished by
  // then; a2 (4) finished later, b2 never, b3 was refused: 2 / 2.5 = 0.8.
  auto rep = summarize(hand_made(), {"a", "b"}, {1, 2, 3}, 2.5);
  CHECK(rep.window_rps == Approx(0.8));
  // A window past every completion counts the three that finished.
  CHECK(summarize(hand_made(), {"a", "b"}, {1, 2, 3}, 10).window_rps == Approx(0.3));
  // No window: not computed.
  CHECK(summarize(hand_made(), {"a", "b"}, {1, 2, 3}).window_rps == 0);
}

TEST_CASE("sim_report: the table shows the scale asked for", "[sim_report]") {
  auto rep = summarize(hand_made(), {"a", "b"}, {1, 2, 2.5, 3});
  CHECK_THAT(to_table(rep, 2.5), Contains("SLO@2.5"));
  // A scale not summarized: the nearest one's column, so labelled.
  CHECK_THAT(to_table(rep, 2.9), Contains("SLO@3"));
}
