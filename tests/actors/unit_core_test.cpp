#include "actors/gpu_unit/unit_core.hpp"
#include "engine/engine_factory.hpp"
#include "engine/sim_tokenizer.hpp"

#include <catch2/catch.hpp>

#include "tests/gpu_specs.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

using namespace llmux;
using engine::seq_work;
using engine::step_input;
using unit::unit_core;

namespace {

using test::h100_like;

config::model_config sim_model(const std::string& name) {
  config::model_config m;
  m.name = name;
  m.backend = "sim";
  auto a = config::arch_preset("llama-7b");
  REQUIRE(a);
  m.arch = *a;
  return m;
}

std::unique_ptr<engine::engine> sim(const std::string& name, double share) {
  engine::engine_context ctx;
  ctx.gpu = h100_like();
  ctx.share = share;
  return engine::make_engine(sim_model(name), ctx);
}

/// A stand-in for a real backend: fixed step time, not "sim". (Inside the
/// class, `engine` names the base, hence the full names.)
class fixed_time_engine final : public llmux::engine::engine {
public:
  llmux::engine::step_output step(const step_input& in) override {
    llmux::engine::step_output out;
    out.tokens.assign(in.seqs.size(), 7);
    out.seconds = 0.5;
    return out;
  }
  void set_share(double s) override { share = s; }
  std::string backend() const override { return "cuda"; }
  const llmux::engine::tokenizer& vocab() const override { return tok_; }
  double share = -1;

private:
  llmux::engine::sim_tokenizer tok_;
};

/// A compute-bound step: a 4096-token prefill.
step_input big_prefill() {
  step_input in;
  seq_work w;
  w.seq_id = 1;
  w.tokens.assign(4096, 'a');
  w.prompt_len = 4096;
  w.sample = true;
  in.seqs.push_back(w);
  return in;
}

}  // namespace

TEST_CASE("unit_core: a step for a model not on the unit throws out_of_range", "[unit_core]") {
  unit_core u(1.0);
  CHECK_THROWS_AS(u.step("m", step_input{}), std::out_of_range);
  u.add_model("m", sim("m", 1.0), 1.0);
  CHECK_NOTHROW(u.step("m", step_input{}));
  CHECK_THROWS_AS(u.step("other", step_input{}), std::out_of_range);
}

TEST_CASE("unit_core: set_share validates model, range and the unit's total", "[unit_core]") {
  unit_core u(1.0);
  u.add_model("a", sim("a", 0.5), 0.5);
  u.add_model("b", sim("b", 0.5), 0.5);
  CHECK(u.set_share("ghost", 0.1).has_value());
  CHECK(u.set_share("a", 0.0).has_value());
  CHECK(u.set_share("a", -0.2).has_value());
  CHECK(u.set_share("a", 1.01).has_value());
  CHECK(u.set_share("a", std::nan("")).has_value());
  CHECK(u.set_share("a", std::numeric_limits<double>::infinity()).has_value());
  CHECK(u.set_share("a", 0.6).has_value());  // 0.6 + 0.5 > 1
  CHECK(u.models().at("a").share == 0.5);    // refused changes change nothing
  CHECK(u.models().at("a").share_moves == 0);

  CHECK_FALSE(u.set_share("a", 0.4).has_value());
  CHECK(u.models().at("a").share == 0.4);
  CHECK_FALSE(u.set_share("b", 0.6).has_value());  // 0.4 + 0.6 = 1
  CHECK(u.models().at("a").share_moves == 1);
  CHECK(u.models().at("b").share_moves == 1);
  // 0.1 + 0.2 + ... style rounding does not push an exact 1.0 over.
  CHECK_FALSE(u.set_share("a", 0.1 + 0.2 + 0.1).has_value());
  CHECK(u.set_share("a", 0.41).has_value());
}

TEST_CASE("unit_core: take_share keeps the books, the partition tells the engine", "[unit_core]") {
  unit_core u(1.0);
  auto a = std::make_unique<fixed_time_engine>();
  auto* engine_a = a.get();
  u.add_model("a", std::move(a), 0.5);
  u.add_model("b", std::make_unique<fixed_time_engine>(), 0.5);
  REQUIRE(engine_a->share == 0.5);
  CHECK(u.take_share("a", 0.7).has_value());  // the same checks as set_share
  CHECK_FALSE(u.take_share("a", 0.25).has_value());
  CHECK(u.models().at("a").share == 0.25);
  CHECK(u.models().at("a").share_moves == 1);
  CHECK(engine_a->share == 0.5);  // not yet: that is the partition's part, between its steps
  u.engine_of("a").set_share(0.25);
  CHECK(engine_a->share == 0.25);
  CHECK_FALSE(u.take_share("b", 0.75).has_value());  // the books already count a's 0.25
  CHECK_THROWS_AS(u.engine_of("ghost"), std::out_of_range);
}

TEST_CASE("unit_core: set_share reaches the engine and changes its step time", "[unit_core]") {
  unit_core u(1.0);
  u.add_model("m", sim("m", 1.0), 1.0);
  auto t_full = u.step("m", big_prefill()).seconds;
  REQUIRE_FALSE(u.set_share("m", 0.25).has_value());
  auto t_quarter = u.step("m", big_prefill()).seconds;
  // Compute-bound: four times the compute time, same 40 µs overhead.
  CHECK(t_quarter - 40e-6 == Approx(4 * (t_full - 40e-6)).epsilon(1e-9));

  // add_model applies the given share to the engine, too.
  auto fixed = std::make_unique<fixed_time_engine>();
  auto* raw = fixed.get();
  u.add_model("f", std::move(fixed), 0.3);
  CHECK(raw->share == 0.3);
  REQUIRE_FALSE(u.set_share("m", 0.5).has_value());
  REQUIRE_FALSE(u.set_share("f", 0.5).has_value());
  CHECK(raw->share == 0.5);
}

TEST_CASE("unit_core: hold time is step time × time_scale for sim, 0 otherwise",
          "[unit_core]") {
  unit_core scaled(2.5);
  scaled.add_model("m", sim("m", 1.0), 0.5);
  scaled.add_model("f", std::make_unique<fixed_time_engine>(), 0.5);
  auto out = scaled.step("m", big_prefill());
  REQUIRE(out.seconds > 0);
  CHECK(scaled.hold_seconds("m", out) == Approx(2.5 * out.seconds).epsilon(1e-12));
  // A real engine already spent its time.
  auto fout = scaled.step("f", big_prefill());
  CHECK(fout.seconds == 0.5);
  CHECK(scaled.hold_seconds("f", fout) == 0);
  CHECK(scaled.hold_seconds("ghost", out) == 0);

  unit_core instant(0.0);
  instant.add_model("m", sim("m", 1.0), 1.0);
  auto o2 = instant.step("m", big_prefill());
  REQUIRE(o2.seconds > 0);
  CHECK(instant.hold_seconds("m", o2) == 0);
  CHECK(instant.time_scale() == 0);
}

TEST_CASE("unit_core: counts steps, tokens fed and busy time per model", "[unit_core]") {
  unit_core u(1.0);
  u.add_model("a", sim("a", 0.5), 0.5);
  u.add_model("b", sim("b", 0.5), 0.5);
  step_input in;
  for (int i = 0; i < 3; ++i) {
    seq_work w;
    w.seq_id = static_cast<uint64_t>(i);
    w.tokens.assign(static_cast<size_t>(i + 1), 'z');  // 1 + 2 + 3 tokens
    w.prompt_len = i + 1;
    w.sample = true;
    in.seqs.push_back(w);
  }
  auto t1 = u.step("a", in).seconds;
  auto t2 = u.step("a", in).seconds;
  (void)u.step("b", big_prefill());
  const auto& a = u.models().at("a");
  CHECK(a.steps == 2);
  CHECK(a.tokens_in == 12);
  CHECK(a.busy_seconds() == Approx(t1 + t2));
  CHECK(u.models().at("b").steps == 1);
  CHECK(u.models().at("b").tokens_in == 4096);
  CHECK(u.total_steps() == 3);
  CHECK(a.share_moves == 0);
}
