// The measured step-latency profile (engine/step_profile.hpp): parsing,
// interpolation rules on small hand-made tables whose answers are worked out
// below, MuxServe's A100 profile built into the binary, the held-out
// accuracy of interpolation on it, and the CPU profiler's output.

#include "engine/step_profile.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine/cpu_step_profiler.hpp"

using namespace llmux;
using engine::profile_point;
using engine::step_profile;

namespace {

/// Every point of a profile, flattened: two profiles hold the same tables
/// when these are equal.
using flat_point = std::tuple<std::string, int, int, int, int, double, double>;
std::vector<flat_point> flatten(const step_profile& p) {
  std::vector<flat_point> out;
  for (const auto& [model, tps] : p.tables())
    for (const auto& [tp, shares] : tps)
      for (const auto& [s, batches] : shares)
        for (const auto& [b, lengths] : batches)
          for (const auto& [l, pt] : lengths)
            out.emplace_back(model, tp, s, b, l, pt.prefill_ms, pt.decode_ms);
  return out;
}

std::string parse_error(const std::string& text) {
  try {
    (void)step_profile::parse(text, "bad.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

/// One model "m", tp 1, share 100: decode times in ms per (batch, length).
step_profile decode_table(const std::vector<std::tuple<int, int, double>>& points, int share = 100) {
  step_profile p;
  for (auto [b, l, ms] : points)
    p.set("m", 1, share, b, l, {-1, ms});
  return p;
}

double decode_ms(const step_profile& p, double batch, double length, double share = 1.0) {
  auto s = p.decode_seconds("m", 1, share, batch, length);
  REQUIRE(s);
  return *s * 1e3;
}

}  // namespace

TEST_CASE("step_profile: parse errors name the source and the key path", "[step_profile]") {
  CHECK_THAT(parse_error("{\"m\": {"), Catch::StartsWith("bad.json: ") && Catch::Contains("not JSON"));
  CHECK_THAT(parse_error("[1, 2]"), Catch::StartsWith("bad.json: ") && Catch::Contains("expected an object"));
  CHECK_THAT(parse_error(R"({"m": {"1": {"100": {"x": {}}}}})"),
             Catch::Contains("bad.json: m/1/100/x: key 'x' is not a positive integer"));
  CHECK_THAT(parse_error(R"({"m": {"one": {}}})"), Catch::Contains("bad.json: m/one:"));
  CHECK_THAT(parse_error(R"({"m": {"1": {"100": {"2": {"-32": {"prefill": 1, "decoding": 1}}}}}})"),
             Catch::Contains("m/1/100/2/-32"));
  CHECK_THAT(parse_error(R"({"m": {"1": {"100": {"2": {"32": {"prefill": 1}}}}}})"),
             Catch::Contains("bad.json: m/1/100/2/32:") && Catch::Contains("\"decoding\""));
  CHECK_THAT(parse_error(R"({"m": {"1": {"100": {"2": {"32": {"prefill": "fast", "decoding": 1}}}}}})"),
             Catch::Contains("bad.json: m/1/100/2/32/prefill: expected a number"));
  CHECK_THAT(parse_error(R"({"m": {"1": {"150": {}}}})"), Catch::Contains("m/1/150: a share is a percentage"));
  CHECK_THAT(parse_error(R"({"m": {"1": {"100": {"2": [1]}}}})"),
             Catch::Contains("bad.json: m/1/100/2: expected an object, found array"));
  try {
    (void)step_profile::load("/nonexistent/profile.json");
    FAIL("a missing file loaded");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("/nonexistent/profile.json"));
  }
  CHECK_THROWS_WITH(step_profile::resolve("builtin:h100"), Catch::Contains("builtin:h100"));
}

TEST_CASE("step_profile: metadata is kept, other underscore keys are ignored", "[step_profile]") {
  auto p = step_profile::parse(
    R"({"_meta": {"backend": "cpu", "threads": 2}, "_note": "x",
        "m": {"1": {"100": {"1": {"32": {"prefill": 5, "decoding": 2}}}}}})",
    "meta.json");
  CHECK(p.models() == std::vector<std::string>{"m"});
  CHECK(p.meta().at("backend") == "cpu");
  CHECK(p.meta().at("threads") == "2");
  CHECK(p.meta().size() == 2);
}

TEST_CASE("step_profile: to_json_text parses back to the same tables", "[step_profile]") {
  step_profile p;
  p.set("a", 1, 50, 1, 32, {10.5, 2.25});
  p.set("a", 1, 100, 1, 32, {5.125, 1.0625});
  p.set("a", 1, 100, 16, 512, {-1, 7.0});
  p.set("b-7b", 4, 30, 2048, 64, {1234.567, 0.1 + 0.2});  // not a short decimal
  p.set_meta("device", "test");
  auto back = step_profile::parse(p.to_json_text(), "round-trip");
  CHECK(flatten(back) == flatten(p));
  CHECK(back.meta() == p.meta());
  // Replacing a point replaces it.
  p.set("a", 1, 50, 1, 32, {11, 3});
  CHECK(std::get<5>(flatten(p).front()) == 11);

  // The whole A100 profile survives the trip too.
  const auto& a100 = step_profile::builtin_a100();
  CHECK(flatten(step_profile::parse(a100.to_json_text(), "a100 again")) == flatten(a100));
}

TEST_CASE("step_profile: the built-in A100 profile is MuxServe's file", "[step_profile]") {
  const auto& p = step_profile::builtin_a100();
  CHECK(p.models() == std::vector<std::string>{"llama-13b", "llama-30b", "llama-65b", "llama-7b"});
  CHECK(p.tp_sizes("llama-7b") == std::vector<int>{1, 2, 4, 8});
  CHECK(p.tp_sizes("llama-13b") == std::vector<int>{1, 2, 4, 8});
  CHECK(p.tp_sizes("llama-30b") == std::vector<int>{2, 4});
  CHECK(p.tp_sizes("llama-65b") == std::vector<int>{4, 8});
  CHECK(p.share_percents("llama-7b", 1) == std::vector<int>{30, 40, 50, 60, 70, 80, 90, 100});
  // Decode was measured up to batch 256 on one GPU. llama-65b on eight
  // lists batch 2048, but every point of it is -1 (out of memory).
  CHECK(p.max_batch("llama-7b", 1) == 256);
  CHECK(p.max_batch("llama-65b", 8) == 1024);
  CHECK(p.tables().at("llama-65b").at(8).at(100).count(2048) == 1);
  CHECK(p.max_batch("llama-7b", 3) == 0);

  // Equal to the shared data file it was copied from, point for point.
  const auto shared = step_profile::load(LLMUX_SHARED_DIR "/muxserve/a100_llama_profile.json");
  CHECK(flatten(shared) == flatten(p));
  CHECK(step_profile::resolve("builtin:a100").tables().size() == 4);
  // shared(): one parse per spec, the same object every time.
  auto s1 = step_profile::shared("builtin:a100");
  auto s2 = step_profile::shared("builtin:a100");
  CHECK(s1.get() == s2.get());
  CHECK(s1.get() == &p);
  auto f1 = step_profile::shared(LLMUX_SOURCE_DIR "/engine/profiles/a100_llama.json");
  auto f2 = step_profile::shared(LLMUX_SOURCE_DIR "/engine/../engine/profiles/a100_llama.json");
  CHECK(f1.get() == f2.get());
  CHECK(flatten(*f1) == flatten(p));
}

TEST_CASE("step_profile: every measured A100 point is reproduced exactly", "[step_profile]") {
  const auto& p = step_profile::builtin_a100();
  size_t checked = 0;
  for (const auto& [model, tp, s, b, l, prefill, decode] : flatten(p)) {
    if (prefill > 0) {
      auto t = p.prefill_seconds(model, tp, s / 100.0, b, l);
      REQUIRE(t);
      CHECK(*t == prefill / 1e3);
      ++checked;
    }
    if (decode > 0) {
      auto t = p.decode_seconds(model, tp, s / 100.0, b, l);
      REQUIRE(t);
      CHECK(*t == decode / 1e3);
      ++checked;
    }
  }
  // 5120 points: 4290 with both kinds, 414 with decode only, 416 with neither.
  CHECK(checked == 2 * 4290 + 414);
  // llama-7b tp 8, share 100, batch 16, length 128: MuxServe's 18.951 ms
  // decode among ~14 ms neighbours is kept as measured.
  CHECK(*p.decode_seconds("llama-7b", 8, 1.0, 16, 128) == 18.951e-3);
}

TEST_CASE("step_profile: between points, linear in length then in batch", "[step_profile]") {
  // batch 1: 10 ms at 32, 14 at 64; batch 4: 20 at 32, 32 at 64.
  auto p = decode_table({{1, 32, 10}, {1, 64, 14}, {4, 32, 20}, {4, 64, 32}});
  CHECK(decode_ms(p, 1, 48) == Approx(12));
  CHECK(decode_ms(p, 4, 40) == Approx(23));
  // Batch 2 at length 48: batch 1 gives 12, batch 4 gives 26 → 12 + (26 − 12)/3.
  CHECK(decode_ms(p, 2, 48) == Approx(12 + 14.0 / 3));

  // On the A100 profile: halfway between two measured lengths is their mean,
  // and a batch between two measured ones lies between their values.
  const auto& a = step_profile::builtin_a100();
  const double d64 = *a.decode_seconds("llama-13b", 1, 1.0, 8, 64);
  const double d128 = *a.decode_seconds("llama-13b", 1, 1.0, 8, 128);
  CHECK(*a.decode_seconds("llama-13b", 1, 1.0, 8, 96) == Approx((d64 + d128) / 2));
  const double p8 = *a.prefill_seconds("llama-13b", 1, 1.0, 8, 128);
  const double p16 = *a.prefill_seconds("llama-13b", 1, 1.0, 16, 128);
  const double p12 = *a.prefill_seconds("llama-13b", 1, 1.0, 12, 128);
  CHECK(p12 > std::min(p8, p16));
  CHECK(p12 < std::max(p8, p16));
  CHECK(p12 == Approx((p8 + p16) / 2));
}

TEST_CASE("step_profile: outside the measured range, the two nearest points, never below the nearest",
          "[step_profile]") {
  // Rising: batch 1 → 10 ms, batch 2 → 14 ms; batch 4 continues the line.
  auto rising = decode_table({{1, 32, 10}, {2, 32, 14}});
  CHECK(decode_ms(rising, 4, 32) == Approx(22));
  // Length past the largest: 10 at 32, 12 at 64 → 16 at 128.
  auto by_length = decode_table({{1, 32, 10}, {1, 64, 12}});
  CHECK(decode_ms(by_length, 1, 128) == Approx(16));
  // Below the smallest length the line would fall to 8: held at 10.
  CHECK(decode_ms(by_length, 1, 16) == Approx(10));
  // Falling (noise): 10 then 8 — beyond batch 2 it stays at 8, not 4.
  auto falling = decode_table({{1, 32, 10}, {2, 32, 8}});
  CHECK(decode_ms(falling, 4, 32) == Approx(8));
  // Batch and length below 1 are clamped to 1.
  CHECK(decode_ms(falling, 0.25, 32) == Approx(10));

  // On the A100 profile: llama-7b tp 1 was measured up to batch 256.
  const auto& a = step_profile::builtin_a100();
  const double b128 = *a.decode_seconds("llama-7b", 1, 1.0, 128, 64);
  const double b256 = *a.decode_seconds("llama-7b", 1, 1.0, 256, 64);
  REQUIRE(b256 > b128);
  CHECK(*a.decode_seconds("llama-7b", 1, 1.0, 512, 64) == Approx(b256 + 2 * (b256 - b128)));
  CHECK(*a.decode_seconds("llama-7b", 1, 1.0, 384, 64) >= b256);
}

TEST_CASE("step_profile: unmeasured (-1) points are skipped", "[step_profile]") {
  // Length 64 ran out of memory: length 64 is read between 32 and 128.
  auto p = decode_table({{1, 32, 10}, {1, 64, -1}, {1, 128, 30}});
  CHECK(decode_ms(p, 1, 64) == Approx(10 + 20.0 / 3));
  // A batch with nothing measured is skipped as a whole.
  auto q = decode_table({{1, 32, 10}, {2, 32, -1}, {4, 32, 16}});
  CHECK(decode_ms(q, 2, 32) == Approx(12));
  // Prefill unmeasured everywhere: nullopt for prefill, decode still answers.
  CHECK_FALSE(q.prefill_seconds("m", 1, 1.0, 1, 32));
  CHECK(q.decode_seconds("m", 1, 1.0, 1, 32));
  // On the A100 profile: llama-7b tp 1 batch 256 length 512 is -1 (OOM) but
  // is still answered, from batch 256's shorter lengths.
  const auto& a = step_profile::builtin_a100();
  const double l256 = *a.prefill_seconds("llama-7b", 1, 1.0, 256, 256);
  const double l128 = *a.prefill_seconds("llama-7b", 1, 1.0, 256, 128);
  CHECK(*a.prefill_seconds("llama-7b", 1, 1.0, 256, 512) == Approx(l256 + 2 * (l256 - l128)));
}

TEST_CASE("step_profile: share between, below and above the measured ones", "[step_profile]") {
  step_profile p;
  p.set("m", 1, 40, 1, 32, {-1, 20});
  p.set("m", 1, 80, 1, 32, {-1, 10});
  // Between: linear in the share.
  CHECK(decode_ms(p, 1, 32, 0.6) == Approx(15));
  CHECK(decode_ms(p, 1, 32, 0.7) == Approx(12.5));
  // Below the smallest: its time × smallest / share.
  CHECK(decode_ms(p, 1, 32, 0.2) == Approx(40));
  CHECK(decode_ms(p, 1, 32, 0.1) == Approx(80));
  // Above the largest: the largest's time.
  CHECK(decode_ms(p, 1, 32, 0.9) == Approx(10));
  CHECK(decode_ms(p, 1, 32, 1.0) == Approx(10));
  // Out of range shares are clamped to [0.01, 1].
  CHECK(decode_ms(p, 1, 32, 2.0) == Approx(10));
  CHECK(decode_ms(p, 1, 32, 0.0) == Approx(20 * 40.0 / 1));
}

TEST_CASE("step_profile: unknown model or tp answers nullopt", "[step_profile]") {
  const auto& a = step_profile::builtin_a100();
  CHECK_FALSE(a.has("llama-8b"));
  CHECK_FALSE(a.has("llama-30b", 1));
  CHECK(a.has("llama-30b", 2));
  CHECK_FALSE(a.prefill_seconds("llama-8b", 1, 1.0, 1, 32));
  CHECK_FALSE(a.decode_seconds("llama-30b", 1, 1.0, 1, 32));
  CHECK_FALSE(a.decode_seconds("llama-30b", 8, 1.0, 1, 32));
  CHECK(a.tp_sizes("llama-8b").empty());
  CHECK(a.share_percents("llama-30b", 1).empty());
  CHECK(step_profile{}.models().empty());
}

TEST_CASE("step_profile: held-out points on a hand-made table", "[step_profile]") {
  // One batch, three lengths: 32 → 10, 64 → 30, 128 → 30. Length 64 is the
  // only interior point; from 32 and 128 it reads 10 + 20·(32/96) = 16.67,
  // off by 13.33 / 30. Batch and share have a single coordinate: no points.
  auto p = decode_table({{1, 32, 10}, {1, 64, 30}, {1, 128, 30}});
  auto rows = engine::holdout_errors(p);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].kind == "prefill");
  CHECK(rows[0].points == 0);
  const auto& d_len = rows[4];
  CHECK(d_len.kind == "decode");
  CHECK(d_len.axis == "length");
  CHECK(d_len.points == 1);
  CHECK(d_len.median == Approx((30 - 50.0 / 3) / 30));
  CHECK(d_len.max == d_len.median);
  CHECK_THAT(d_len.worst, Catch::Contains("m tp 1 share 100 batch 1 length 64"));
  CHECK(rows[3].points == 0);  // decode, batch
  CHECK(rows[5].points == 0);  // decode, share

  // A batch hold-out removes the whole batch: batch 2 is predicted from
  // batches 1 and 4 (12 at length 32), not from its own length 64.
  auto q = decode_table({{1, 32, 10}, {2, 32, 13}, {2, 64, 13}, {4, 32, 16}});
  auto qrows = engine::holdout_errors(q);
  CHECK(qrows[3].axis == "batch");
  CHECK(qrows[3].points == 1);
  CHECK(qrows[3].max == Approx(1.0 / 13));

  // Shares: 40 → 20, 60 → 18, 80 → 10. Holding out 60: 15, off by 3/18.
  step_profile s;
  s.set("m", 1, 40, 1, 32, {-1, 20});
  s.set("m", 1, 60, 1, 32, {-1, 18});
  s.set("m", 1, 80, 1, 32, {-1, 10});
  auto srows = engine::holdout_errors(s);
  CHECK(srows[5].axis == "share");
  CHECK(srows[5].points == 1);
  CHECK(srows[5].max == Approx(3.0 / 18));
}

TEST_CASE("step_profile: interpolation predicts held-out A100 points within a few percent",
          "[step_profile]") {
  // Measured with `llmux bench profile` (median, p90, max):
  //   prefill batch  2.3%  13.0%  63%    decode batch  2.4%  11.5%  415%
  //   prefill length 2.7%  13.9%  62%    decode length 1.7%   7.3%  495%
  //   prefill share  2.7%   7.6%  95%    decode share  2.5%   8.8%  377%
  // The maxima are single outliers of the measurement (e.g. llama-30b tp 4
  // share 100 batch 64 length 64: 230.9 ms decode among ~28 ms neighbours),
  // so only the median and p90 are bounded.
  auto rows = engine::holdout_errors(step_profile::builtin_a100());
  REQUIRE(rows.size() == 6);
  for (const auto& r : rows) {
    INFO(r.kind << " over " << r.axis << ": median " << r.median << ", p90 " << r.p90 << ", max "
                << r.max << " (" << r.worst << ")");
    CHECK(r.points > 2000);
    CHECK(r.median < 0.04);
    CHECK(r.p90 < 0.20);
    CHECK(r.median <= r.p90);
    CHECK(r.p90 <= r.max);
  }
}

TEST_CASE("step_profile: the CPU profiler's output parses back", "[step_profile][cpu_profile]") {
  auto model = engine::llama_model::load(LLMUX_SHARED_DIR "/models/stories260K/stories260K.gguf");
  engine::cpu_profile_options o;
  o.key = "stories260K";
  o.threads = {2, 1};            // sorted by the profiler: 1 → 50%, 2 → 100%
  o.batches = {1, 3};
  o.lengths = {8, 16, 200};      // 200 is past the model's context of 128
  o.prefill_token_budget = 40;   // batch 3 × length 16 = 48 is over: -1
  o.decode_steps = 2;
  o.point_seconds = 0.01;
  CHECK(engine::cpu_profile_lengths(*model, o) == std::vector<int>{8, 16});
  o.sweeps = 2;
  std::set<std::tuple<int, std::string, int, int, int>> reported;
  auto p = engine::measure_cpu_profile(model, o, [&](int sweep, const char* kind, int, int share, int b,
                                                     int l, double) {
    reported.insert({sweep, kind, share, b, l});
  });
  CHECK(reported.size() == 2 * 2 * 2 * 2 * 2);  // sweeps, kinds, shares, batches, lengths
  p.set_meta("backend", "cpu");
  auto back = step_profile::parse(p.to_json_text(), "cpu profile");
  CHECK(flatten(back) == flatten(p));
  CHECK(back.meta().at("backend") == "cpu");
  CHECK(back.models() == std::vector<std::string>{"stories260K"});
  CHECK(back.tp_sizes("stories260K") == std::vector<int>{1});
  CHECK(back.share_percents("stories260K", 1) == std::vector<int>{50, 100});
  CHECK(back.max_batch("stories260K", 1) == 3);
  for (const auto& [model_key, tp, s, b, l, prefill, decode] : flatten(back)) {
    INFO("share " << s << " batch " << b << " length " << l);
    CHECK(decode > 0);
    if (b * l > 40)
      CHECK(prefill == -1);
    else
      CHECK(prefill > 0);
  }
  // Queries answer from it like any profile.
  CHECK(back.decode_seconds("stories260K", 1, 1.0, 2, 12));
  CHECK(back.prefill_seconds("stories260K", 1, 0.5, 3, 16));
}
