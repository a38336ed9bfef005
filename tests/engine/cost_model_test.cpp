// Roofline cases worked out by hand for a llama-7b-shaped model on an
// H100-like device (3350 GB/s, 989 TFLOP/s, 40 µs per step).

#include "engine/cost_model.hpp"

#include <catch2/catch.hpp>

#include "tests/gpu_specs.hpp"

using namespace llmux;
using engine::cost_model;
using engine::step_shape;

namespace {

using test::h100_like;

config::model_arch llama_7b() {
  auto a = config::arch_preset("llama-7b");
  REQUIRE(a);
  return *a;
}

// llama-7b: vocab 32000, hidden 4096, 32 layers, 32 heads (= kv heads),
// intermediate 11008.
//   embeddings  2·32000·4096                           =   262,144,000
//   per layer   q,o 2·4096² + k,v 2·4096² + mlp 3·4096·11008 + norms 2·4096
//             = 33,554,432 + 33,554,432 + 135,266,304 + 8,192 = 202,383,360
//   32 layers                                          = 6,476,267,520
//   total                                              = 6,738,411,520
constexpr double params_7b = 6738411520.0;
constexpr double weight_bytes_7b = 2 * params_7b;        // bf16
constexpr double kv_bytes_per_token_7b = 2.0 * 32 * 32 * 128 * 2;  // K,V · layers · heads · dim · 2 B
constexpr double bandwidth = 3350e9;                      // bytes/s
constexpr double peak = 989e12;                           // FLOP/s
constexpr double overhead = 40e-6;                        // s

}  // namespace

TEST_CASE("cost_model: weights are params times dtype bytes", "[cost_model]") {
  cost_model m(llama_7b(), h100_like());
  CHECK(m.weight_bytes() == weight_bytes_7b);
  CHECK(m.arch().layers == 32);
}

TEST_CASE("cost_model: add_sequence counts tokens, KV reads and attended pairs",
          "[cost_model]") {
  step_shape s;
  // A chunk of 4 after 10 cached tokens: its tokens see 11, 12, 13, 14 keys.
  cost_model::add_sequence(s, 10, 4);
  CHECK(s.new_tokens == 4);
  CHECK(s.kv_read_tokens == 14);
  CHECK(s.attended_pairs == 11 + 12 + 13 + 14);
  // A decode after 99 cached tokens sees 100 keys; shapes accumulate.
  cost_model::add_sequence(s, 99, 1);
  CHECK(s.new_tokens == 5);
  CHECK(s.kv_read_tokens == 14 + 100);
  CHECK(s.attended_pairs == 50 + 100);
  // A whole prompt of 3 from scratch: 1 + 2 + 3 pairs.
  step_shape p;
  cost_model::add_sequence(p, 0, 3);
  CHECK(p.attended_pairs == 6);
  CHECK(p.kv_read_tokens == 3);
}

TEST_CASE("cost_model: an empty step costs nothing", "[cost_model]") {
  cost_model m(llama_7b(), h100_like());
  auto c = m.estimate(step_shape{});
  CHECK(c.seconds == 0);
  CHECK(c.bytes == 0);
  CHECK(c.flops == 0);
}

TEST_CASE("cost_model: a single decode is memory-bound at weights / bandwidth",
          "[cost_model]") {
  cost_model m(llama_7b(), h100_like());
  step_shape s;
  cost_model::add_sequence(s, 100, 1);  // one decode at context 100
  auto c = m.estimate(s);
  const double bytes = weight_bytes_7b + kv_bytes_per_token_7b * 101;
  CHECK(c.bytes == Approx(bytes).epsilon(1e-12));
  CHECK_FALSE(c.compute_bound);
  CHECK(c.seconds == Approx(bytes / bandwidth + overhead).epsilon(1e-9));
  // ≈ 4.08 ms: the weights dominate.
  CHECK(c.seconds == Approx(weight_bytes_7b / bandwidth + overhead).epsilon(0.02));
  CHECK(c.seconds == Approx(0.004079).epsilon(1e-3));
}

TEST_CASE("cost_model: a large prefill is compute-bound at 2·params·tokens / peak",
          "[cost_model]") {
  cost_model m(llama_7b(), h100_like());
  const int64_t n = 4096;
  step_shape s;
  cost_model::add_sequence(s, 0, n);
  auto c = m.estimate(s);
  CHECK(c.compute_bound);
  const double pairs = static_cast<double>(n) * (n + 1) / 2;
  const double flops = 2 * params_7b * n + 4.0 * 32 * 4096 * pairs;
  CHECK(c.flops == Approx(flops).epsilon(1e-12));
  CHECK(c.seconds == Approx(flops / peak + overhead).epsilon(1e-9));
  // Linear layers dominate; attention adds under 10% at 4k tokens.
  const double linear_only = 2 * params_7b * n / peak;
  CHECK(c.seconds > linear_only);
  CHECK(c.seconds < 1.1 * linear_only);
}

TEST_CASE("cost_model: compute time scales 1/share, bandwidth saturates at half the SMs",
          "[cost_model]") {
  cost_model m(llama_7b(), h100_like());

  step_shape prefill;
  cost_model::add_sequence(prefill, 0, 4096);
  auto full = m.estimate(prefill, 1.0);
  auto half = m.estimate(prefill, 0.5);
  auto quarter = m.estimate(prefill, 0.25);
  REQUIRE(full.compute_bound);
  CHECK(half.seconds - overhead == Approx(2 * (full.seconds - overhead)).epsilon(1e-9));
  CHECK(quarter.seconds - overhead == Approx(4 * (full.seconds - overhead)).epsilon(1e-9));

  step_shape decode;
  cost_model::add_sequence(decode, 100, 1);
  auto d_full = m.estimate(decode, 1.0);
  auto d_06 = m.estimate(decode, 0.6);
  auto d_half = m.estimate(decode, 0.5);
  auto d_quarter = m.estimate(decode, 0.25);
  // Memory-bound and share >= 0.5: the same time.
  CHECK(d_06.seconds == Approx(d_full.seconds).epsilon(1e-12));
  CHECK(d_half.seconds == Approx(d_full.seconds).epsilon(1e-12));
  // A quarter of the SMs pulls half the bandwidth: memory time doubles.
  CHECK_FALSE(d_quarter.compute_bound);
  CHECK(d_quarter.seconds - overhead == Approx(2 * (d_full.seconds - overhead)).epsilon(1e-9));
}

TEST_CASE("cost_model: a bigger batch of decodes costs more but far less than linearly",
          "[cost_model]") {
  cost_model m(llama_7b(), h100_like());
  step_shape one, many;
  cost_model::add_sequence(one, 100, 1);
  for (int i = 0; i < 64; ++i)
    cost_model::add_sequence(many, 100, 1);
  auto c1 = m.estimate(one);
  auto c64 = m.estimate(many);
  CHECK(c64.seconds > c1.seconds);
  // 64 decodes read the weights once: the extra is 63 sequences' KV.
  CHECK(c64.bytes - c1.bytes == Approx(63 * 101 * kv_bytes_per_token_7b).epsilon(1e-9));
  CHECK(c64.seconds < 2 * c1.seconds);
}

// ---------------------------------------------------------------------------
// Calibrated by a measured profile (engine/step_profile.hpp). The expected
// times are the profile's own measurements, read off
// ../shared/muxserve/a100_llama_profile.json, not computed by the code.

namespace {

config::model_config sim_model(const std::string& name, const std::string& preset) {
  config::model_config m;
  m.name = name;
  m.arch = *config::arch_preset(preset);
  return m;
}

config::gpu_spec a100_profiled() {
  config::gpu_spec g;
  g.name = "a100";
  g.profile = "builtin:a100";
  return g;
}

}  // namespace

TEST_CASE("cost_model: a profiled GPU answers with the measured step times", "[cost_model][profile]") {
  auto m = cost_model::for_model(sim_model("chat-7b", "llama-7b"), a100_profiled(), 1);
  CHECK(m.calibrated());
  CHECK_THAT(m.describe(), Catch::Contains("llama-7b"));
  // llama-7b, tp 1, 100% SMs: batch 1 decode over 32 tokens 11.264 ms;
  // 16 prompts of 128 tokens 153.293 ms.
  CHECK(m.decode_seconds(1, 32) == Approx(11.264e-3));
  CHECK(m.prefill_seconds(16, 128) == Approx(153.293e-3));
  // The same through a step's shape.
  step_shape d;
  cost_model::add_sequence(d, 31, 1, false);
  CHECK(m.estimate(d).seconds == Approx(11.264e-3));
  step_shape p;
  for (int i = 0; i < 16; ++i)
    cost_model::add_sequence(p, 0, 128, true);
  CHECK(m.estimate(p).seconds == Approx(153.293e-3));
  // tp 2: batch 1 decode over 32 tokens 12.59 ms.
  auto m2 = cost_model::for_model(sim_model("chat-7b", "llama-7b"), a100_profiled(), 2);
  CHECK(m2.decode_seconds(1, 32) == Approx(12.59e-3));
}

TEST_CASE("cost_model: a mixed step pays the weight read once", "[cost_model][profile]") {
  auto m = cost_model::for_model(sim_model("chat-7b", "llama-7b"), a100_profiled(), 1);
  step_shape mixed;
  cost_model::add_sequence(mixed, 0, 128, true);  // one prompt of 128
  for (int i = 0; i < 16; ++i)
    cost_model::add_sequence(mixed, 31, 1, false);  // 16 decodes at context 32
  const double prefill = 16.023e-3;  // batch 1, length 128
  const double decode = 11.883e-3;   // batch 16, length 32
  const double weights = 11.264e-3;  // batch 1 decode, length 32
  CHECK(m.estimate(mixed).seconds == Approx(prefill + decode - weights));
}

TEST_CASE("cost_model: a model is found by name first, then by its architecture", "[cost_model][profile]") {
  // Named like a profiled model of another shape: the name wins.
  auto by_name = cost_model::for_model(sim_model("llama-13b", "llama-7b"), a100_profiled(), 1);
  CHECK(by_name.decode_seconds(1, 32) == Approx(19.8e-3));  // llama-13b's point
  auto by_arch = cost_model::for_model(sim_model("other", "llama-13b"), a100_profiled(), 1);
  CHECK(by_arch.decode_seconds(1, 32) == Approx(19.8e-3));
}

TEST_CASE("cost_model: a profile without the model or its tp says what it has", "[cost_model][profile]") {
  try {
    (void)cost_model::for_model(sim_model("mystery", "llama-8b"), a100_profiled(), 1);
    FAIL("a model missing from the profile was accepted");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("'mystery'") && Catch::Contains("llama-65b")
                           && Catch::Contains("builtin:a100"));
  }
  try {
    (void)cost_model::for_model(sim_model("big", "llama-30b"), a100_profiled(), 1);
    FAIL("a tp the profile never measured was accepted");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("2, 4") && Catch::Contains("not 1"));
  }
}

TEST_CASE("cost_model: tensor parallelism divides the roofline's work", "[cost_model]") {
  config::model_config m = sim_model("m", "llama-7b");
  auto one = cost_model::for_model(m, h100_like(), 1);
  auto four = cost_model::for_model(m, h100_like(), 4);
  CHECK_FALSE(one.calibrated());
  CHECK(four.tp() == 4);
  CHECK(four.decode_seconds(1, 100) - overhead == Approx((one.decode_seconds(1, 100) - overhead) / 4));
}

TEST_CASE("cost_model: a model's profile_key picks its entry in the profile", "[cost_model][profile]") {
  auto m = sim_model("my-chat", "llama-7b");
  m.profile_key = "llama-13b";
  CHECK(cost_model::for_model(m, a100_profiled(), 1).decode_seconds(1, 32) == Approx(19.8e-3));
  m.profile_key = "no-such-key";
  CHECK_THROWS_WITH(cost_model::for_model(m, a100_profiled(), 1), Catch::Contains("no-such-key"));
}
