#include "actors/gpu_unit/unit_core.hpp"
#include "engine/engine_factory.hpp"
#include "engine/sim_tokenizer.hpp"

#include <catch2/catch.hpp>

#include <functional>

#include "tests/gpu_specs.hpp"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

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
  void set_job_share(llmux::engine::job_kind job, double s) override {
    job_shares[job] = s;
    ++job_share_calls[job];
    if (job == llmux::engine::job_kind::mixed)
      share = s;
  }
  void set_job_partition(llmux::engine::job_kind job, double offset, double s) override {
    job_offsets[job] = offset;
    set_job_share(job, s);
  }
  std::string backend() const override { return "cuda"; }
  const llmux::engine::tokenizer& vocab() const override { return tok_; }
  double share = -1;
  std::map<llmux::engine::job_kind, double> job_shares;  ///< the last share each job was given
  std::map<llmux::engine::job_kind, int> job_share_calls;
  std::map<llmux::engine::job_kind, double> job_offsets;  ///< where each job's partition starts

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
  // 0 parks a mixed model (a replica of a unit laid out as several lends
  // its share), and the share it frees can be taken.
  CHECK_FALSE(u.set_share("a", 0.0).has_value());
  CHECK(u.models().at("a").share == 0.0);
  CHECK_FALSE(u.set_share("b", 1.0).has_value());
}

TEST_CASE("unit_core: only a mixed model off a shared lane can be parked", "[unit_core]") {
  unit_core u(1.0);
  u.add_model("split", sim("split", 0.3), 0.5, 0.2);
  CHECK(u.set_share("split", 0.0).has_value());
  CHECK(u.set_share("split/decode", 0.0).has_value());
  CHECK(u.models().at("split").total_share() == Approx(0.7));  // unchanged
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

// --- split jobs: a model's prefill and decode jobs, each on its own share ---

namespace {

using engine::job_kind;

/// A model with split jobs beside a mixed one, as add_model builds them.
struct split_unit {
  unit_core u{1.0};
  fixed_time_engine* m = nullptr;  ///< split: prefill 0.3, decode 0.2
  fixed_time_engine* x = nullptr;  ///< mixed: 0.4
  split_unit() {
    auto em = std::make_unique<fixed_time_engine>();
    auto ex = std::make_unique<fixed_time_engine>();
    m = em.get();
    x = ex.get();
    u.add_model("m", std::move(em), 0.3, 0.2);
    u.add_model("x", std::move(ex), 0.4);
  }
  [[nodiscard]] const unit_core::model_slot& slot(const std::string& name) const {
    return u.models().at(name);
  }
};

/// Lets a step return only once `n` steps are inside at once (or after a
/// timeout, so a broken unit fails the test rather than hanging it).
class meeting_engine final : public llmux::engine::engine {
public:
  explicit meeting_engine(int n) : n_(n) {}
  llmux::engine::step_output step(const step_input& in) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++inside_;
    met_.notify_all();
    met_.wait_for(lock, std::chrono::seconds(5), [&] { return inside_ >= n_; });
    llmux::engine::step_output out;
    out.tokens.assign(in.seqs.size(), 7);
    out.seconds = in.job == job_kind::decode ? 0.25 : 0.5;
    return out;
  }
  void set_share(double) override {}
  std::string backend() const override { return "cpu"; }
  const llmux::engine::tokenizer& vocab() const override { return tok_; }

private:
  int n_;
  int inside_ = 0;
  std::mutex mu_;
  std::condition_variable met_;
  llmux::engine::sim_tokenizer tok_;
};

/// A split model's two steps: a big prompt chunk (prefill job) and one
/// sequence's decode token (decode job).
std::pair<step_input, step_input> split_steps() {
  step_input prefill = big_prefill(), decode;
  prefill.job = job_kind::prefill;
  decode.job = job_kind::decode;
  seq_work w;
  w.seq_id = 2;
  w.tokens = {'b'};
  w.context_len = 9;
  w.sample = true;
  decode.seqs.push_back(w);
  return {prefill, decode};
}

/// Takes one step at a time, as the cuda engine does. The first step in
/// waits (at most 300 ms) to see whether the unit counts a second step as
/// running while that one is only queued at the engine's door.
class serial_engine final : public llmux::engine::engine {
public:
  std::function<int()> running_now;  ///< the unit's count of this model's running steps
  int seen_most = 0;
  llmux::engine::step_output step(const step_input& in) override {
    std::lock_guard<std::mutex> one(mu_);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < until && running_now() < 2)
      std::this_thread::yield();
    seen_most = std::max(seen_most, running_now());
    llmux::engine::step_output out;
    out.tokens.assign(in.seqs.size(), 7);
    out.seconds = 0.01;
    return out;
  }
  bool steps_at_once() const override { return false; }
  void set_share(double) override {}
  std::string backend() const override { return "cuda"; }
  const llmux::engine::tokenizer& vocab() const override { return tok_; }

private:
  std::mutex mu_;
  llmux::engine::sim_tokenizer tok_;
};

}  // namespace

TEST_CASE("unit_core: an engine that takes one step at a time is never counted as running two",
          "[unit_core][split]") {
  unit_core u(1.0);
  auto e = std::make_unique<serial_engine>();
  auto* engine = e.get();
  u.add_model("s", std::move(e), 0.5, 0.5);
  engine->running_now = [&u] { return u.models().at("s").running.load(); };
  const auto [prefill, decode] = split_steps();
  std::thread other([&] { (void)u.step("s", decode); });
  (void)u.step("s", prefill);
  other.join();
  CHECK(engine->seen_most == 1);
  CHECK(u.models().at("s").running_max == 1);
  CHECK(u.models().at("s").steps == 2);
}

TEST_CASE("unit_core: add_model with a decode share gives the engine its two jobs' shares",
          "[unit_core][split]") {
  split_unit s;
  CHECK(s.slot("m").split);
  CHECK(s.slot("m").share == 0.3);
  CHECK(s.slot("m").decode_share == 0.2);
  CHECK(s.slot("m").total_share() == Approx(0.5));
  CHECK(s.m->job_shares == std::map<job_kind, double>{{job_kind::prefill, 0.3}, {job_kind::decode, 0.2}});
  // A model without a decode share runs one mixed job.
  CHECK_FALSE(s.slot("x").split);
  CHECK(s.slot("x").decode_share == 0);
  CHECK(s.slot("x").total_share() == 0.4);
  CHECK(s.x->share == 0.4);
  CHECK(s.x->job_shares.count(job_kind::decode) == 0);
}

TEST_CASE("unit_core: MODEL/decode and MODEL/prefill move one job, MODEL moves both in proportion",
          "[unit_core][split]") {
  split_unit s;
  // One job: the other keeps its share, and only the moved job's engine
  // lane hears of it.
  REQUIRE_FALSE(s.u.set_share("m/decode", 0.3).has_value());  // 0.3 + 0.3 + 0.4 = 1
  CHECK(s.slot("m").decode_share == 0.3);
  CHECK(s.slot("m").share == 0.3);
  CHECK(s.m->job_shares.at(job_kind::decode) == 0.3);
  CHECK(s.m->job_share_calls.at(job_kind::decode) == 2);  // add_model, then this move
  CHECK(s.m->job_share_calls.at(job_kind::prefill) == 1);  // its place did not change
  CHECK(s.slot("m").share_moves == 1);

  REQUIRE_FALSE(s.u.set_share("m/prefill", 0.2).has_value());
  CHECK(s.slot("m").share == 0.2);
  CHECK(s.slot("m").decode_share == 0.3);
  CHECK(s.m->job_shares.at(job_kind::prefill) == 0.2);
  // The decode job keeps its share but now starts at 0.2: it is told so.
  CHECK(s.m->job_share_calls.at(job_kind::decode) == 3);
  CHECK(s.m->job_shares.at(job_kind::decode) == 0.3);

  // The model as a whole: 0.5 → 0.25 halves both jobs (2 : 3 kept).
  REQUIRE_FALSE(s.u.set_share("m", 0.25).has_value());
  CHECK(s.slot("m").share == Approx(0.1));
  CHECK(s.slot("m").decode_share == Approx(0.15));
  CHECK(s.slot("m").total_share() == Approx(0.25));
  CHECK(s.m->job_shares.at(job_kind::prefill) == Approx(0.1));
  CHECK(s.m->job_shares.at(job_kind::decode) == Approx(0.15));
  CHECK(s.m->job_shares.count(job_kind::mixed) == 0);
  CHECK(s.slot("m").share_moves == 3);
  // Upwards too: 0.25 → 0.5 doubles both.
  REQUIRE_FALSE(s.u.set_share("m", 0.5).has_value());
  CHECK(s.slot("m").share == Approx(0.2));
  CHECK(s.slot("m").decode_share == Approx(0.3));
  // The mixed model beside it still moves as one job.
  REQUIRE_FALSE(s.u.set_share("x", 0.3).has_value());
  CHECK(s.x->share == 0.3);
  CHECK(s.x->job_shares.at(job_kind::mixed) == 0.3);
}

TEST_CASE("unit_core: every job of every model counts toward the unit's total of 1",
          "[unit_core][split]") {
  split_unit s;  // 0.3 + 0.2 + 0.4 = 0.9
  // The other model sees both jobs of the split one.
  CHECK(s.u.set_share("x", 0.55).has_value());   // 0.5 + 0.55 > 1
  CHECK_FALSE(s.u.set_share("x", 0.5).has_value());  // 0.5 + 0.5 = 1
  // A job sees its sibling and the other model.
  auto err = s.u.set_share("m/decode", 0.21);  // 0.3 + 0.21 + 0.5 > 1
  REQUIRE(err.has_value());
  CHECK_THAT(*err, Catch::Contains("sum"));
  CHECK(s.u.set_share("m/prefill", 0.31).has_value());
  CHECK(s.u.set_share("m", 0.51).has_value());
  // Refused moves change neither the books nor the engine.
  CHECK(s.slot("m").share == 0.3);
  CHECK(s.slot("m").decode_share == 0.2);
  CHECK(s.slot("m").share_moves == 0);
  CHECK(s.m->job_share_calls.at(job_kind::decode) == 1);
  CHECK(s.m->job_share_calls.at(job_kind::prefill) == 1);
  // Shrinking one job makes room for the other model.
  REQUIRE_FALSE(s.u.set_share("m/decode", 0.1).has_value());
  CHECK_FALSE(s.u.set_share("x", 0.6).has_value());  // 0.3 + 0.1 + 0.6 = 1
  // A job's own share is checked like a model's.
  CHECK(s.u.set_share("m/decode", 0.0).has_value());
  CHECK(s.u.set_share("m/prefill", std::nan("")).has_value());
}

TEST_CASE("unit_core: take_share says which jobs change, and only the books move", "[unit_core][split]") {
  split_unit s;
  unit_core::share_change change;
  REQUIRE_FALSE(s.u.take_share("m/decode", 0.1, &change).has_value());
  CHECK(change.model == "m");
  REQUIRE(change.jobs.size() == 1);
  CHECK(change.jobs[0].first == job_kind::decode);
  CHECK(change.jobs[0].second == 0.1);
  CHECK(s.slot("m").decode_share == 0.1);
  CHECK(s.m->job_shares.at(job_kind::decode) == 0.2);  // the decode partition's part, between its steps

  REQUIRE_FALSE(s.u.take_share("m", 0.2, &change).has_value());  // 0.3 : 0.1
  CHECK(change.model == "m");
  REQUIRE(change.jobs.size() == 2);
  CHECK(change.jobs[0].first == job_kind::prefill);
  CHECK(change.jobs[0].second == Approx(0.15));
  CHECK(change.jobs[1].first == job_kind::decode);
  CHECK(change.jobs[1].second == Approx(0.05));

  REQUIRE_FALSE(s.u.take_share("x", 0.2, &change).has_value());
  CHECK(change.model == "x");
  REQUIRE(change.jobs.size() == 1);
  CHECK(change.jobs[0].first == job_kind::mixed);
  CHECK(change.jobs[0].second == 0.2);
  CHECK(s.x->share == 0.4);
}

TEST_CASE("unit_core: a mixed model has no prefill or decode job to move", "[unit_core][split]") {
  split_unit s;
  for (const std::string job : {"decode", "prefill"}) {
    auto err = s.u.set_share("x/" + job, 0.1);
    REQUIRE(err.has_value());
    CHECK_THAT(*err, Catch::Contains("mixed") && Catch::Contains(job));
  }
  CHECK(s.slot("x").share == 0.4);
  CHECK(s.slot("x").share_moves == 0);
  CHECK(s.x->job_share_calls.count(job_kind::decode) == 0);
  // Unknown models and jobs are not on the unit.
  for (const std::string target : {"ghost/decode", "m/mixed", "m/", "/decode"}) {
    auto err = s.u.set_share(target, 0.1);
    REQUIRE(err.has_value());
    CHECK_THAT(*err, Catch::Contains("not on this unit"));
  }
}

TEST_CASE("unit_core: models whose names hold a slash are found by their names", "[unit_core][split]") {
  unit_core u(1.0);
  auto org = std::make_unique<fixed_time_engine>();
  auto* org_engine = org.get();
  u.add_model("org/m", std::move(org), 0.2, 0.2);
  u.add_model("team/decode", std::make_unique<fixed_time_engine>(), 0.1);  // mixed, despite its name
  REQUIRE_FALSE(u.set_share("org/m", 0.2).has_value());  // the model: both jobs halve
  CHECK(u.models().at("org/m").share == Approx(0.1));
  CHECK(u.models().at("org/m").decode_share == Approx(0.1));
  REQUIRE_FALSE(u.set_share("org/m/decode", 0.3).has_value());
  CHECK(u.models().at("org/m").decode_share == 0.3);
  CHECK(org_engine->job_shares.at(job_kind::decode) == 0.3);
  REQUIRE_FALSE(u.set_share("org/m/prefill", 0.4).has_value());
  CHECK(u.models().at("org/m").share == 0.4);
  // A model's own name wins over a job suffix.
  REQUIRE_FALSE(u.set_share("team/decode", 0.2).has_value());
  CHECK(u.models().at("team/decode").share == 0.2);
  CHECK(u.models().at("team/decode").share_moves == 1);
}

TEST_CASE("unit_core: decode steps are counted apart, and a split model's jobs step at once",
          "[unit_core][split]") {
  unit_core u(1.0);
  u.add_model("m", std::make_unique<meeting_engine>(2), 0.5, 0.5);
  const auto [prefill, decode] = split_steps();
  // Each step returns only when the other is inside the engine too.
  std::thread decode_thread([&] { (void)u.step("m", decode); });
  (void)u.step("m", prefill);
  decode_thread.join();
  const auto& m = u.models().at("m");
  CHECK(m.running_max == 2);
  CHECK(m.running == 0);
  CHECK(m.steps == 2);
  CHECK(m.decode_steps == 1);
  CHECK(m.tokens_in == 4097);
  CHECK(m.decode_busy_ns == 250'000'000);
  CHECK(m.busy_ns == 750'000'000);

  // Steps one at a time: at most one computing, and only decode steps count as such.
  unit_core alone(1.0);
  alone.add_model("f", std::make_unique<fixed_time_engine>(), 1.0);
  (void)alone.step("f", prefill);
  (void)alone.step("f", big_prefill());  // mixed
  (void)alone.step("f", decode);
  const auto& f = alone.models().at("f");
  CHECK(f.running_max == 1);
  CHECK(f.steps == 3);
  CHECK(f.decode_steps == 1);
  CHECK(f.decode_busy_ns == 500'000'000);
}

TEST_CASE("unit_core: jobs are laid out back to back, and a move re-places the jobs after it",
          "[unit_core][split]") {
  // Where a partition starts matters to a GPU (an SM range), not to CPU
  // threads: engines hear of both.
  split_unit s;  // m: prefill 0.3, decode 0.2; x: mixed 0.4 (name order)
  CHECK(s.u.offset_of("m", job_kind::prefill) == 0);
  CHECK(s.u.offset_of("m", job_kind::decode) == Approx(0.3));
  CHECK(s.u.offset_of("x", job_kind::mixed) == Approx(0.5));
  CHECK(s.m->job_offsets.at(job_kind::decode) == Approx(0.3));
  CHECK(s.x->job_offsets.at(job_kind::mixed) == Approx(0.5));
  CHECK_THROWS_AS(s.u.offset_of("x", job_kind::decode), std::out_of_range);

  unit_core::share_change change;
  REQUIRE_FALSE(s.u.take_share("m/prefill", 0.1, &change).has_value());
  // The moved job, then the two whose start shifted by 0.2.
  REQUIRE(change.places.size() == 3);
  CHECK(change.places[0].model == "m");
  CHECK(change.places[0].job == job_kind::prefill);
  CHECK(change.places[0].offset == 0);
  CHECK(change.places[0].share == Approx(0.1));
  CHECK(change.places[1].model == "m");
  CHECK(change.places[1].job == job_kind::decode);
  CHECK(change.places[1].offset == Approx(0.1));
  CHECK(change.places[1].share == Approx(0.2));
  CHECK(change.places[2].model == "x");
  CHECK(change.places[2].offset == Approx(0.3));
  // take_share only books; set_share also tells the engines.
  CHECK(s.x->job_offsets.at(job_kind::mixed) == Approx(0.5));
  REQUIRE_FALSE(s.u.set_share("m/prefill", 0.3).has_value());
  CHECK(s.x->job_offsets.at(job_kind::mixed) == Approx(0.5));
  CHECK(s.m->job_offsets.at(job_kind::decode) == Approx(0.3));
  // A move that shifts nothing else touches only its own job.
  REQUIRE_FALSE(s.u.take_share("x", 0.2, &change).has_value());
  REQUIRE(change.places.size() == 1);
  CHECK(change.places[0].model == "x");
}

TEST_CASE("unit_core: a model sleeps and wakes: its engine is dropped, then built on its current partition",
          "[unit_core][residency]") {
  unit_core u(1.0);
  int built = 0;
  fixed_time_engine* last = nullptr;
  auto make = [&]() -> std::unique_ptr<engine::engine> {
    ++built;
    auto e = std::make_unique<fixed_time_engine>();
    last = e.get();
    return e;
  };
  u.add_model("a", sim("a", 0.5), 0.5);
  u.add_model("b", nullptr, 0.5, 0, make, "cuda");  // starts asleep
  CHECK_FALSE(u.loaded("b"));
  CHECK(built == 0);
  CHECK(u.models().at("b").backend == "cuda");
  // A step of a sleeping model is refused, not run on nothing.
  CHECK_THROWS_AS(u.step("b", big_prefill()), std::runtime_error);
  CHECK_THROWS_AS(u.engine_of("b"), std::runtime_error);
  // A share move while it sleeps is booked; the engine gets it at load.
  CHECK_FALSE(u.set_share("a", 0.25).has_value());
  CHECK_FALSE(u.set_share("b", 0.75).has_value());
  u.load("b");
  REQUIRE(u.loaded("b"));
  CHECK(built == 1);
  CHECK(last->job_shares.at(llmux::engine::job_kind::mixed) == 0.75);
  CHECK(last->job_offsets.at(llmux::engine::job_kind::mixed) == 0.25);  // after a's 0.25
  CHECK(u.step("b", big_prefill()).tokens.size() == 1);
  u.unload("b");
  CHECK_FALSE(u.loaded("b"));
  u.load("b");
  CHECK(built == 2);
  // A model without a maker cannot sleep.
  CHECK_THROWS_AS(u.unload("a"), std::logic_error);
  CHECK(u.loaded("a"));
  CHECK_THROWS_AS(u.add_model("c", nullptr, 0.1), std::logic_error);
}
