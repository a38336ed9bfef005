// actors/unit_setup: a unit's layout → its instances, and the controller's
// layout options (the crossover from a measured CPU profile).
#include "actors/unit_setup.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

using namespace llmux;

namespace {

std::string unit_text(const std::string& layout_keys, const std::string& gpu_keys = "") {
  return R"([[nodes]]
name = "n"
port = 7301
[gateway]
node = "n"
)" + gpu_keys + R"(
[[models]]
name = "m"
architecture = "tiny"
backend = "cpu"
load_format = "dummy"
dtype = "f32"
profile_key = "SmolLM2-135M-Instruct"
[[units]]
name = "u"
node = "n"
backend = "cpu"
)" + layout_keys + R"(
models = [ { name = "m" } ]
)";
}

config::cluster_config parse(const std::string& text) {
  return config::parse_cluster_config(text, "test.toml", LLMUX_SOURCE_DIR);
}

}  // namespace

TEST_CASE("instances: one per thread for replicas, parked but for the first for dynamic", "[setup][layout]") {
  auto single = setup::instances(parse(unit_text("threads = 3")).units[0]);
  REQUIRE(single.size() == 1);
  CHECK(single[0].key == "m");
  CHECK(single[0].count == 1);
  CHECK(single[0].share == 1.0);

  auto reps = setup::instances(parse(unit_text("threads = 3\nlayout = \"replicas\"")).units[0]);
  REQUIRE(reps.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(reps[i].key == setup::instance_key("m", i));
    CHECK(reps[i].model == "m");
    CHECK(reps[i].index == i);
    CHECK(reps[i].count == 3);
    CHECK(reps[i].share == Approx(1.0 / 3));
    CHECK_FALSE(reps[i].parked());
  }
  CHECK(reps[1].key == "m#1");

  auto dyn = setup::instances(parse(unit_text("threads = 2\nlayout = \"dynamic\"\nlayout_switch_at = 6")).units[0]);
  REQUIRE(dyn.size() == 2);
  CHECK(dyn[0].share == 1.0);
  CHECK(dyn[1].parked());
  // The KV pool has a quota entry per instance.
  auto cfg = parse(unit_text("threads = 2\nlayout = \"replicas\""));
  auto kvo = setup::kv_options(cfg, cfg.units[0]);
  REQUIRE(kvo.models.size() == 2);
  CHECK(kvo.models[1].model == "m#1");
}

TEST_CASE("layout_options: the switch point from the config, or from a measured CPU profile", "[setup][layout]") {
  auto given = parse(unit_text("threads = 2\nlayout = \"dynamic\"\nlayout_switch_at = 6\nlayout_hysteresis = 0.1\n"
                               "layout_cooldown_ms = 2500"));
  auto o = setup::layout_options(given, given.units[0]);
  CHECK(o.k == 2);
  CHECK(o.switch_at == 6);
  CHECK(o.hysteresis == 0.1);
  CHECK(o.cooldown_s == 2.5);
  CHECK(o.automatic);
  // No switch point and no profile of this CPU: a dynamic unit cannot decide.
  auto blind = parse(unit_text("threads = 2\nlayout = \"dynamic\""));
  CHECK_THROWS_WITH(setup::layout_options(blind, blind.units[0]), Catch::Contains("layout_switch_at"));
  // A static "replicas" unit needs none (it is only switched by hand).
  auto manual = parse(unit_text("threads = 2\nlayout = \"replicas\""));
  CHECK_FALSE(setup::layout_options(manual, manual.units[0]).automatic);
  // The measured SmolLM2 profile of an AMD EPYC (bench/profiles): decode at
  // a 512-token context, 1 thread vs 2 (ms) — batch 1: 9.27 vs 5.86; 2:
  // 15.0 vs 8.34; 4: 26.7 vs 15.4. One replica on 2 threads for c = 2
  // steps in 8.34 ms, two on 1 thread each (batch 1) in 9.27: one is
  // faster. At c = 4: 15.42 vs 15.00 (2.8% faster: past the 2% margin).
  const auto profile = std::filesystem::path(LLMUX_SOURCE_DIR) / "bench" / "profiles" / "cpu_smollm2_epyc.json";
  auto measured = parse(unit_text("threads = 2\nlayout = \"dynamic\"\ngpu = \"epyc\"",
                                  "[gpus.epyc]\nprofile = \"" + profile.string() + "\"\n"));
  CHECK(setup::layout_options(measured, measured.units[0]).switch_at == 4);
}
