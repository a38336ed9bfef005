// unit_core with a shared prefill lane (`prefill = "shared"`, MuxServe's
// layout): every model's prefill job sits on one lane at the start of the
// unit; each decode job has its own partition after it, in model-name order.
// The lane counts once in the unit's books and only decode shares move.
// Engines are sim_engines; whether each job got its share is read from its
// step time against a sim_engine built at that share.

#include "actors/gpu_unit/unit_core.hpp"
#include "engine/sim_engine.hpp"

#include <catch2/catch.hpp>

#include "tests/gpu_specs.hpp"

#include <algorithm>
#include <memory>
#include <string>

using namespace llmux;
using engine::job_kind;
using engine::seq_work;
using engine::sim_engine;
using engine::step_input;
using unit::unit_core;

namespace {

config::model_arch llama7b() {
  auto a = config::arch_preset("llama-7b");
  REQUIRE(a);
  return *a;
}

std::unique_ptr<sim_engine> sim(double share) {
  return std::make_unique<sim_engine>(llama7b(), test::h100_like(), share);
}

/// A 2048-token prompt chunk (compute-bound: its time scales with the share).
step_input prefill_step() {
  step_input in;
  in.job = job_kind::prefill;
  seq_work w;
  w.seq_id = 1;
  w.tokens.assign(2048, 5);
  w.prompt_len = 2048;
  w.sample = true;
  in.seqs.push_back(w);
  return in;
}

/// 64 sequences decoding over 2000 tokens each: memory-bound, and below half
/// the unit its bandwidth (so its time) depends on the share.
step_input decode_step() {
  step_input in;
  in.job = job_kind::decode;
  for (uint64_t i = 0; i < 64; ++i) {
    seq_work w;
    w.seq_id = i + 1;
    w.tokens = {7};
    w.prompt_len = 100;
    w.context_len = 2000;
    w.sample = true;
    in.seqs.push_back(w);
  }
  return in;
}

double alone(double share, const step_input& in) {
  return sim(share)->step(in).seconds;
}

/// lane 0.4; b (decode 0.2) added before a (decode 0.3).
struct lane_unit {
  unit_core u{1.0};
  lane_unit() {
    u.set_prefill_lane(0.4);
    // Engines built at share 1: the unit gives them their jobs' shares. The
    // 0.9 and 0.5 are ignored: prefill runs on the lane.
    u.add_model("b", sim(1.0), 0.9, 0.2);
    u.add_model("a", sim(1.0), 0.5, 0.3);
  }
};

}  // namespace

TEST_CASE("unit_core lane: prefill jobs share the lane at 0, decode jobs follow in name order",
          "[unit_core][lane]") {
  unit_core u(1.0);
  u.set_prefill_lane(0.4);
  CHECK(u.prefill_lane() == 0.4);
  u.add_model("b", sim(0.4), 0.9, 0.2);
  CHECK(u.offset_of("b", job_kind::prefill) == 0);
  CHECK(u.offset_of("b", job_kind::decode) == Approx(0.4));
  // a sorts before b: its decode job takes the place after the lane, b's moves on.
  u.add_model("a", sim(0.4), 0.5, 0.3);
  CHECK(u.offset_of("a", job_kind::prefill) == 0);
  CHECK(u.offset_of("b", job_kind::prefill) == 0);
  CHECK(u.offset_of("a", job_kind::decode) == Approx(0.4));
  CHECK(u.offset_of("b", job_kind::decode) == Approx(0.7));
  CHECK_THROWS_AS(u.offset_of("a", job_kind::mixed), std::out_of_range);
  // Each model's prefill share is the lane's, whatever it was given.
  CHECK(u.models().at("a").share == Approx(0.4));
  CHECK(u.models().at("b").share == Approx(0.4));
  CHECK(u.models().at("a").decode_share == Approx(0.3));
  CHECK(u.models().at("b").decode_share == Approx(0.2));
  CHECK(u.models().at("a").split);
}

TEST_CASE("unit_core lane: engines run prefill on the lane's share, decode on their own", "[unit_core][lane]") {
  lane_unit s;
  // Sanity: the shapes do depend on the share.
  REQUIRE(alone(0.4, prefill_step()) > alone(0.9, prefill_step()) * 1.5);
  REQUIRE(alone(0.2, decode_step()) > alone(0.3, decode_step()) * 1.2);

  CHECK(s.u.step("a", prefill_step()).seconds == Approx(alone(0.4, prefill_step())));
  CHECK(s.u.step("b", prefill_step()).seconds == Approx(alone(0.4, prefill_step())));
  CHECK(s.u.step("a", decode_step()).seconds == Approx(alone(0.3, decode_step())));
  CHECK(s.u.step("b", decode_step()).seconds == Approx(alone(0.2, decode_step())));
}

TEST_CASE("unit_core lane: MODEL/prefill is refused, and a MODEL share the lane fills is too", "[unit_core][lane]") {
  lane_unit s;
  // 0.2 is less than the lane (0.4): nothing would be left for the decode job.
  for (const std::string target : {"a", "a/prefill", "b", "b/prefill"}) {
    INFO(target);
    auto err = s.u.take_share(target, 0.2);
    REQUIRE(err.has_value());
    CHECK(err->find("lane") != std::string::npos);
    CHECK(err->find("/decode") != std::string::npos);
  }
  CHECK(s.u.set_share("a", 0.2).has_value());
  // Nothing moved.
  CHECK(s.u.models().at("a").share == Approx(0.4));
  CHECK(s.u.models().at("a").decode_share == Approx(0.3));
  CHECK(s.u.models().at("a").share_moves == 0);
  CHECK(s.u.models().at("b").share_moves == 0);
  // The usual checks still hold for decode targets.
  CHECK(s.u.take_share("ghost/decode", 0.1).has_value());
  CHECK(s.u.take_share("a/decode", 0).has_value());
  CHECK(s.u.take_share("a/decode", 1.5).has_value());
}

TEST_CASE("unit_core lane: the lane counts once: lane + every decode share <= 1", "[unit_core][lane]") {
  lane_unit s;  // 0.4 + a 0.3 + b 0.2 = 0.9
  // b up to 0.3: 0.4 + 0.3 + 0.3 = 1.0 exactly (counting the lane per model would refuse).
  CHECK_FALSE(s.u.take_share("b/decode", 0.3).has_value());
  CHECK(s.u.models().at("b").decode_share == Approx(0.3));
  CHECK(s.u.models().at("b").share == Approx(0.4));  // the lane is untouched
  CHECK(s.u.models().at("b").share_moves == 1);
  // a up to 0.31 would be 1.01.
  auto err = s.u.take_share("a/decode", 0.31);
  REQUIRE(err.has_value());
  CHECK(err->find("> 1") != std::string::npos);
  CHECK(s.u.models().at("a").decode_share == Approx(0.3));
  // a down to 0.25: its decode job keeps its place, b's moves up by 0.05.
  unit_core::share_change change;
  REQUIRE_FALSE(s.u.take_share("a/decode", 0.25, &change).has_value());
  CHECK(change.model == "a");
  REQUIRE(change.jobs.size() == 1);
  CHECK(change.jobs[0].first == job_kind::decode);
  CHECK(change.jobs[0].second == Approx(0.25));
  REQUIRE(change.places.size() == 2);
  CHECK(change.places[0].model == "a");
  CHECK(change.places[0].job == job_kind::decode);
  CHECK(change.places[0].offset == Approx(0.4));
  CHECK(change.places[0].share == Approx(0.25));
  CHECK(change.places[1].model == "b");
  CHECK(change.places[1].job == job_kind::decode);
  CHECK(change.places[1].offset == Approx(0.65));
  CHECK(change.places[1].share == Approx(0.3));
  for (const auto& p : change.places)
    CHECK(p.job != job_kind::prefill);  // no prefill job ever moves
  CHECK(s.u.offset_of("b", job_kind::decode) == Approx(0.65));
  CHECK(s.u.offset_of("a", job_kind::prefill) == 0);
  // Now 0.4 + 0.25 + 0.3 = 0.95: b may grow to 0.35, not 0.36.
  CHECK_FALSE(s.u.take_share("b/decode", 0.35).has_value());
  CHECK(s.u.take_share("b/decode", 0.36).has_value());
}

TEST_CASE("unit_core lane: set_share on a decode job reaches its engine", "[unit_core][lane]") {
  lane_unit s;
  REQUIRE_FALSE(s.u.set_share("a/decode", 0.15).has_value());
  CHECK(s.u.step("a", decode_step()).seconds == Approx(alone(0.15, decode_step())));
  // The prefill job stays on the lane.
  CHECK(s.u.step("a", prefill_step()).seconds == Approx(alone(0.4, prefill_step())));
  // b's decode partition moved (0.7 → 0.55) but kept its share.
  CHECK(s.u.offset_of("b", job_kind::decode) == Approx(0.55));
  CHECK(s.u.step("b", decode_step()).seconds == Approx(alone(0.2, decode_step())));
}

TEST_CASE("unit_core lane: a MODEL share is the lane plus its decode job's", "[unit_core][lane]") {
  lane_unit s;
  // a: lane 0.4 + decode 0.3 = 0.7; moving a to 0.6 gives its decode job 0.2.
  REQUIRE_FALSE(s.u.set_share("a", 0.6).has_value());
  CHECK(s.u.models().at("a").decode_share == Approx(0.2));
  CHECK(s.u.models().at("a").share == Approx(0.4));  // the lane stays
  CHECK(s.u.models().at("a").share_moves == 1);
  // The books still count the lane once: 0.4 + 0.2 (b) + 0.45 > 1.
  CHECK(s.u.set_share("a", 0.85).has_value());
  CHECK_FALSE(s.u.set_share("a", 0.8).has_value());
  CHECK(s.u.models().at("a").decode_share == Approx(0.4));
}
