// sim/workload: spec parsing (every error names file, line and key), rates,
// generated arrivals (determinism, counts and burstiness within stated
// statistical bounds, phases), traces, and empirical lengths.
//
// Statistical bounds: a generated workload is a fixed function of its seed,
// so each check below is deterministic; the bounds say why the seed chosen
// is not special. A Poisson count over a window of expected size μ has
// standard deviation √μ; we allow 5σ.

#include "sim/workload.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

using namespace llmux::sim;
using Catch::Matchers::Contains;
using llmux::loadgen::draw_length;
using llmux::loadgen::length_spec;
using llmux::loadgen::parse_length_spec;

namespace {

/// The what() of the workload_error `f` throws; fails the test if none.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const workload_error& e) {
    return e.what();
  }
  FAIL("no workload_error");
  return "";
}

std::string spec_error(const std::string& text) {
  return error_of([&] { (void)parse_workload_spec(text, "w.toml"); });
}

/// Requires the spec error to read "w.toml:LINE: key 'KEY': ..." with `reason` in it.
void require_spec_error(const std::string& text, const std::string& key, int line, const std::string& reason = "") {
  const auto what = spec_error(text);
  INFO(what);
  CHECK_THAT(what, Catch::StartsWith("w.toml:" + std::to_string(line) + ": key '" + key + "': "));
  if (!reason.empty())
    CHECK_THAT(what, Contains(reason));
}

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    // mkdtemp: unique across the test processes ctest runs at once.
    std::string pattern = (std::filesystem::temp_directory_path() / "llmux_workload_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed for " + pattern);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

size_t count_model(const workload& w, const std::string& model, double from, double to) {
  size_t n = 0;
  for (const auto& r : w.requests)
    n += r.model == model && r.at_s >= from && r.at_s < to ? 1 : 0;
  return n;
}

/// Coefficient of variation of the gaps between `model`'s arrivals.
double gap_cv(const workload& w, const std::string& model) {
  std::vector<double> t;
  for (const auto& r : w.requests)
    if (r.model == model)
      t.push_back(r.at_s);
  std::vector<double> gaps;
  for (size_t i = 1; i < t.size(); ++i)
    gaps.push_back(t[i] - t[i - 1]);
  double mean = 0;
  for (double g : gaps)
    mean += g;
  mean /= static_cast<double>(gaps.size());
  double var = 0;
  for (double g : gaps)
    var += (g - mean) * (g - mean);
  var /= static_cast<double>(gaps.size() - 1);
  return std::sqrt(var) / mean;
}

/// Within 5σ of a Poisson count of mean `mu`.
void check_poisson_count(size_t n, double mu) {
  INFO("count " << n << ", expected " << mu << " ± " << 5 * std::sqrt(mu));
  CHECK(std::fabs(static_cast<double>(n) - mu) <= 5 * std::sqrt(mu));
}

}  // namespace

// --- rates ------------------------------------------------------------------

TEST_CASE("power_law_rates: rate_i ∝ (i+1)^-alpha, summing to the total", "[workload]") {
  // alpha 1: weights 1, 1/2, 1/3 (sum 11/6) of 11 → 6, 3, 2.
  auto r = power_law_rates(3, 11, 1.0);
  REQUIRE(r.size() == 3);
  CHECK(r[0] == Approx(6));
  CHECK(r[1] == Approx(3));
  CHECK(r[2] == Approx(2));
  // alpha 2: 1, 1/4 of 10 → 8, 2.
  auto sq = power_law_rates(2, 10, 2.0);
  CHECK(sq[0] == Approx(8));
  CHECK(sq[1] == Approx(2));
  // alpha 0: equal.
  for (double x : power_law_rates(4, 10, 0.0))
    CHECK(x == Approx(2.5));
  CHECK(power_law_rates(0, 10, 1.0).empty());
  for (double x : power_law_rates(3, 0, 1.0))
    CHECK(x == 0);
}

// --- spec parsing -----------------------------------------------------------

TEST_CASE("workload spec: a popularity law over models, and per-model entries", "[workload]") {
  const std::string text = R"(duration_s = 30
seed = 7
arrival = "gamma"
cv = 2.5
prompt = "fixed:100"
output = "uniform:10:20"
models = ["m0", "m1", "m2"]
total_rate = 11
alpha = 1

[[model]]
name = "m2"
rate = 4
output = "fixed:5"

[[model]]
name = "m3"
rate = 1
)";
  auto s = parse_workload_spec(text, "w.toml");
  CHECK(s.duration_s == 30);
  CHECK(s.seed == 7u);
  CHECK(s.arrival == arrival_kind::gamma);
  CHECK(s.cv == 2.5);
  REQUIRE(s.phases.size() == 1);
  const auto& ms = s.phases[0].models;
  REQUIRE(ms.size() == 4);  // rank order: `models`, then [[model]] names not in it
  CHECK(ms[0].model == "m0");
  CHECK(ms[0].rate == Approx(6));
  CHECK(ms[1].rate == Approx(3));
  CHECK(ms[2].model == "m2");
  CHECK(ms[2].rate == Approx(4));  // [[model]] overrides the law
  CHECK(ms[3].model == "m3");
  CHECK(ms[3].rate == Approx(1));
  CHECK(ms[0].prompt.dist == length_spec::kind::fixed);
  CHECK(ms[0].prompt.mean == 100);
  CHECK(ms[0].output.dist == length_spec::kind::uniform);
  CHECK(ms[0].output.min == 10);
  CHECK(ms[0].output.max == 20);
  CHECK(ms[2].output.dist == length_spec::kind::fixed);
  CHECK(ms[2].output.mean == 5);
  CHECK(ms[2].prompt.mean == 100);  // the default where not overridden
}

TEST_CASE("workload spec: defaults", "[workload]") {
  auto s = parse_workload_spec("[[model]]\nname = \"m\"\nrate = 2\n", "w.toml");
  CHECK(s.duration_s == 60);
  CHECK(s.seed == 1u);
  CHECK(s.arrival == arrival_kind::poisson);
  CHECK(s.cv == 1.0);
  REQUIRE(s.phases.size() == 1);
  CHECK(s.phases[0].at_s == 0);
  CHECK(s.phases[0].models[0].prompt.dist == length_spec::kind::lognormal);
  CHECK(s.phases[0].models[0].prompt.mean == 161);
  CHECK(s.phases[0].models[0].output.mean == 337);
}

TEST_CASE("workload spec: phases change total, law, rank and explicit rates, cumulatively", "[workload]") {
  const std::string text = R"(duration_s = 100
models = ["a", "b"]
total_rate = 30
alpha = 1

[[phase]]
at_s = 10
rotate = 1

[[phase]]
at_s = 20
rates = { b = 5 }

[[phase]]
at_s = 30
total_rate = 50

[[phase]]
at_s = 40
alpha = 0

[[phase]]
at_s = 50
rotate = -1
)";
  auto s = parse_workload_spec(text, "w.toml");
  REQUIRE(s.phases.size() == 6);
  auto rates = [&](size_t p) { return std::vector<double>{s.phases[p].models[0].rate, s.phases[p].models[1].rate}; };
  // 30 by 1, 1/2 → 20, 10.
  CHECK(rates(0)[0] == Approx(20));
  CHECK(rates(0)[1] == Approx(10));
  // Rotate 1: rank 0 takes rank 1's rate.
  CHECK(s.phases[1].at_s == 10);
  CHECK(rates(1)[0] == Approx(10));
  CHECK(rates(1)[1] == Approx(20));
  // Explicit: b 5, a unchanged.
  CHECK(rates(2)[0] == Approx(10));
  CHECK(rates(2)[1] == Approx(5));
  // A new total keeps the proportions 2:1 → 33.3, 16.7.
  CHECK(rates(3)[0] == Approx(100.0 / 3));
  CHECK(rates(3)[1] == Approx(50.0 / 3));
  // alpha alone: the current total (50) split by the new law.
  CHECK(rates(4)[0] == Approx(25));
  CHECK(rates(4)[1] == Approx(25));
  // Rotating back works with negative steps too.
  CHECK(rates(5)[0] == Approx(25));
  CHECK(s.phases[5].at_s == 50);
}

TEST_CASE("workload spec: every error names the file, the line and the key", "[workload][error]") {
  const std::string ok_model = "[[model]]\nname = \"m\"\nrate = 1\n";
  SECTION("top-level keys") {
    std::string t = "duration_s = 10\ndurration = 5\n" + ok_model;
    require_spec_error(t, "durration", 2, "unknown key");
    t = "seed = 1\nduration_s = -3\n" + ok_model;
    require_spec_error(t, "duration_s", 2, "positive");
    t = "duration_s = \"long\"\n" + ok_model;
    require_spec_error(t, "duration_s", 1, "number");
    t = "\nseed = -1\n" + ok_model;
    require_spec_error(t, "seed", 2, ">= 0");
    t = "seed = 1.5\n" + ok_model;
    require_spec_error(t, "seed", 1, "integer");
    t = "arrival = \"uniform\"\n" + ok_model;
    require_spec_error(t, "arrival", 1, "gamma");
    t = "duration_s = 5\ncv = 2\n" + ok_model;  // cv without gamma
    require_spec_error(t, "cv", 2, "gamma");
    t = "arrival = \"gamma\"\ncv = 0\n" + ok_model;
    require_spec_error(t, "cv", 2, "positive");
    t = "\n\nprompt = \"bogus:3\"\n" + ok_model;
    require_spec_error(t, "prompt", 3, "bogus");
    t = "output = [1]\n" + ok_model;
    require_spec_error(t, "output", 1, "length");
  }
  SECTION("models and the law") {
    std::string t = "models = []\ntotal_rate = 1\n";
    require_spec_error(t, "models", 1, "non-empty");
    t = "models = [\"a\",\n  \"a\"]\ntotal_rate = 1\n";
    require_spec_error(t, "models[1]", 2, "twice");
    t = "models = [\"a\", 3]\ntotal_rate = 1\n";
    require_spec_error(t, "models[1]", 1, "model name");
    t = "models = [\"a\"]\nalpha = 1\n" + ok_model;
    require_spec_error(t, "alpha", 2, "total_rate");
    t = "duration_s = 5\ntotal_rate = 3\n";
    require_spec_error(t, "total_rate", 2, "models");
    t = "models = [\"a\"]\ntotal_rate = -1\n";
    require_spec_error(t, "total_rate", 2, ">= 0");
  }
  SECTION("[[model]] entries") {
    std::string t = "[[model]]\nname = \"m\"\nrate = 1\nspeed = 2\n";
    require_spec_error(t, "model[0].speed", 4, "unknown key");
    t = "[[model]]\nname = \"m\"\nrate = -2\n";
    require_spec_error(t, "model[0].rate", 3, ">= 0");
    t = ok_model + "[[model]]\nname = \"m\"\nrate = 2\n";
    require_spec_error(t, "model[1].name", 5, "two [[model]]");
    t = ok_model + "[[model]]\nname = \"n\"\nrate = 2\nprompt = \"uniform:9:3\"\n";
    require_spec_error(t, "model[1].prompt", 7, "min is above max");
    t = ok_model + "[[model]]\nname = \"\"\nrate = 2\n";
    require_spec_error(t, "model[1].name", 5, "empty");
    // No rate without a law: the entry's rate is missing.
    t = "[[model]]\nname = \"m\"\n";
    CHECK_THAT(spec_error(t), Contains("key 'model[0].rate'"));
    CHECK_THAT(spec_error(t), Contains("required"));
    // A name is required.
    t = "[[model]]\nrate = 1\n";
    CHECK_THAT(spec_error(t), Contains("key 'model[0].name'"));
  }
  SECTION("[[phase]] entries") {
    const std::string head = "duration_s = 100\nmodels = [\"a\", \"b\"]\ntotal_rate = 10\n";
    std::string t = head + "[[phase]]\nrotate = 1\n";
    CHECK_THAT(spec_error(t), Contains("key 'phase[0].at_s'"));
    t = head + "[[phase]]\nat_s = 100\n";
    require_spec_error(t, "phase[0].at_s", 5, "before duration_s");
    t = head + "[[phase]]\nat_s = 0\n";
    require_spec_error(t, "phase[0].at_s", 5, "after the previous phase");
    t = head + "[[phase]]\nat_s = 50\n[[phase]]\nat_s = 40\n";
    require_spec_error(t, "phase[1].at_s", 7, "after the previous phase");
    t = head + "[[phase]]\nat_s = 50\nrotate = 0.5\n";
    require_spec_error(t, "phase[0].rotate", 6, "integer");
    t = head + "[[phase]]\nat_s = 50\nrates = { c = 1 }\n";
    require_spec_error(t, "phase[0].rates.c", 6, "unknown model 'c'");
    t = head + "[[phase]]\nat_s = 50\nrates = { a = -1 }\n";
    require_spec_error(t, "phase[0].rates.a", 6, ">= 0");
    t = head + "[[phase]]\nat_s = 50\nwhen = 3\n";
    require_spec_error(t, "phase[0].when", 6, "unknown key");
  }
  SECTION("no models, or a model with no rate") {
    CHECK_THAT(spec_error("duration_s = 5\n"), Catch::StartsWith("w.toml:0: key 'models': "));
    // Listed in `models` without a law and without a [[model]] rate.
    auto what = spec_error("models = [\"a\", \"b\"]\n[[model]]\nname = \"a\"\nrate = 1\n");
    CHECK_THAT(what, Catch::StartsWith("w.toml:0: key 'models': "));
    CHECK_THAT(what, Contains("'b'"));
  }
  SECTION("TOML syntax") {
    auto what = spec_error("duration_s = 5\nseed = = 3\n");
    CHECK_THAT(what, Catch::StartsWith("w.toml:2:"));
  }
}

TEST_CASE("workload spec: a boolean is not a length", "[workload][error]") {
  require_spec_error("output = true\n[[model]]\nname = \"m\"\nrate = 1\n", "output", 1, "length");
}

TEST_CASE("workload spec: a phase's rates must be finite and not negative", "[workload][error]") {
  const std::string head = "duration_s = 10\nmodels = [\"a\", \"b\"]\ntotal_rate = 4\n[[phase]]\nat_s = 5\n";
  // An infinite rate would draw arrivals without end.
  require_spec_error(head + "total_rate = inf\n", "phase[0].total_rate", 6, "finite");
  require_spec_error(head + "total_rate = -3\n", "phase[0].total_rate", 6, ">= 0");
  require_spec_error(head + "rates = { a = inf }\n", "phase[0].rates.a", 6, ">= 0");
  require_spec_error(head + "alpha = nan\n", "phase[0].alpha", 6, "finite");
}

// --- generation -------------------------------------------------------------

TEST_CASE("generate: the same seed gives the same workload, another seed another", "[workload]") {
  const std::string text = "duration_s = 20\nseed = 3\nmodels = [\"a\", \"b\"]\ntotal_rate = 20\nalpha = 1\n";
  auto s = parse_workload_spec(text, "w.toml");
  auto w1 = generate(s);
  auto w2 = generate(s);
  REQUIRE(w1.requests.size() == w2.requests.size());
  REQUIRE(w1.requests.size() > 100u);
  for (size_t i = 0; i < w1.requests.size(); ++i) {
    CHECK(w1.requests[i].at_s == w2.requests[i].at_s);
    CHECK(w1.requests[i].model == w2.requests[i].model);
    CHECK(w1.requests[i].prompt_tokens == w2.requests[i].prompt_tokens);
    CHECK(w1.requests[i].output_tokens == w2.requests[i].output_tokens);
  }
  s.seed = 4;
  auto w3 = generate(s);
  size_t same = 0;
  for (size_t i = 0; i < std::min(w1.requests.size(), w3.requests.size()); ++i)
    same += w1.requests[i].at_s == w3.requests[i].at_s ? 1 : 0;
  CHECK(same == 0u);
  CHECK(w1.models == std::vector<std::string>{"a", "b"});
  CHECK(w1.duration_s == 20);
}

TEST_CASE("generate: arrivals are sorted and before duration_s, lengths from each model's spec", "[workload]") {
  auto s = parse_workload_spec(R"(duration_s = 50
prompt = "uniform:10:20"
output = "fixed:7"
[[model]]
name = "a"
rate = 10
[[model]]
name = "b"
rate = 10
prompt = "fixed:128"
)",
                               "w.toml");
  auto w = generate(s);
  REQUIRE_FALSE(w.requests.empty());
  double last = 0;
  for (const auto& r : w.requests) {
    CHECK(r.at_s >= last);
    last = r.at_s;
    CHECK(r.at_s < 50);
    CHECK(r.output_tokens == 7);
    if (r.model == "a") {
      CHECK(r.prompt_tokens >= 10);
      CHECK(r.prompt_tokens <= 20);
    } else {
      CHECK(r.prompt_tokens == 128);
    }
  }
}

TEST_CASE("generate: Poisson counts are near rate × duration", "[workload][stats]") {
  // 50 and 5 req/s for 100 s: 5000 ± 354 and 500 ± 112 (5σ).
  auto s = parse_workload_spec("duration_s = 100\nseed = 11\n[[model]]\nname = \"hot\"\nrate = 50\n"
                               "[[model]]\nname = \"cold\"\nrate = 5\n[[model]]\nname = \"off\"\nrate = 0\n",
                               "w.toml");
  auto w = generate(s);
  check_poisson_count(count_model(w, "hot", 0, 100), 5000);
  check_poisson_count(count_model(w, "cold", 0, 100), 500);
  CHECK(count_model(w, "off", 0, 100) == 0u);
  // Each half of the run holds half: 2500 ± 250.
  check_poisson_count(count_model(w, "hot", 0, 50), 2500);
}

TEST_CASE("generate: gamma gaps with cv 2 are burstier than Poisson gaps", "[workload][stats]") {
  // ~5000 gaps per run. The sample CV's spread is dominated by the sample
  // variance: Var(s²)/σ⁴ ≈ (2 + κ)/n with excess kurtosis κ = 6/shape. Poisson
  // (shape 1, κ 6): sd of CV ≈ ½·√(8/5000) ≈ 2%, plus the mean's 1.4%: 5σ
  // ≈ 12%. Gamma cv 2 (shape 1/4, κ 24): ½·√(26/5000) ≈ 3.6% plus 2.8%:
  // 5σ ≈ 25% of 2.
  auto poisson = generate(parse_workload_spec("duration_s = 100\nseed = 5\n[[model]]\nname = \"m\"\nrate = 50\n",
                                              "w.toml"));
  auto bursty = generate(parse_workload_spec(
    "duration_s = 100\nseed = 5\narrival = \"gamma\"\ncv = 2\n[[model]]\nname = \"m\"\nrate = 50\n", "w.toml"));
  const double cv_p = gap_cv(poisson, "m");
  const double cv_g = gap_cv(bursty, "m");
  INFO("poisson cv " << cv_p << ", gamma cv " << cv_g);
  CHECK(cv_p == Approx(1.0).epsilon(0.12));
  CHECK(cv_g == Approx(2.0).epsilon(0.25));
  CHECK(cv_g > 1.5 * cv_p);
  // The mean rate is the same: counts within 5σ of the gamma renewal
  // process's count spread (√(μ)·cv = √5000·2 ≈ 141; 5σ ≈ 707).
  CHECK(std::fabs(static_cast<double>(bursty.requests.size()) - 5000) <= 707);
}

TEST_CASE("generate: a phase changes each model's rate at its at_s", "[workload][stats]") {
  auto s = parse_workload_spec(R"(duration_s = 100
seed = 21
models = ["a", "b"]
total_rate = 50
alpha = 0
[[phase]]
at_s = 60
rates = { a = 40, b = 0 }
)",
                               "w.toml");
  auto w = generate(s);
  // a: 25/s for 60 s (1500 ± 194), then 40/s for 40 s (1600 ± 200).
  check_poisson_count(count_model(w, "a", 0, 60), 1500);
  check_poisson_count(count_model(w, "a", 60, 100), 1600);
  // b: 25/s until 60, then nothing.
  check_poisson_count(count_model(w, "b", 0, 60), 1500);
  CHECK(count_model(w, "b", 60, 100) == 0u);
}

TEST_CASE("generate: rotate moves the popular rate to the next model", "[workload][stats]") {
  auto s = parse_workload_spec(R"(duration_s = 100
seed = 8
models = ["a", "b"]
total_rate = 44
alpha = 2
[[phase]]
at_s = 50
rotate = 1
)",
                               "w.toml");
  // alpha 2: weights 1, 1/4 → 35.2 and 8.8 req/s; after 50 s they swap.
  auto w = generate(s);
  check_poisson_count(count_model(w, "a", 0, 50), 35.2 * 50);
  check_poisson_count(count_model(w, "b", 0, 50), 8.8 * 50);
  check_poisson_count(count_model(w, "a", 50, 100), 8.8 * 50);
  check_poisson_count(count_model(w, "b", 50, 100), 35.2 * 50);
}

// --- traces -----------------------------------------------------------------

TEST_CASE("trace: written and parsed back unchanged", "[workload][trace]") {
  workload w;
  w.models = {"x", "y"};
  w.requests = {{0.0, "x", 10, 20}, {1.0 / 3, "y", 1, 1}, {0.1 + 0.2, "y", 300, 4000}, {17.25, "x", 2048, 2}};
  std::sort(w.requests.begin(), w.requests.end(), [](const auto& a, const auto& b) { return a.at_s < b.at_s; });
  std::ostringstream out;
  write_trace(w, out);
  auto back = parse_trace(out.str(), "t.jsonl");
  REQUIRE(back.requests.size() == w.requests.size());
  for (size_t i = 0; i < w.requests.size(); ++i) {
    CHECK(back.requests[i].at_s == w.requests[i].at_s);  // exact: JSON keeps every bit of a double
    CHECK(back.requests[i].model == w.requests[i].model);
    CHECK(back.requests[i].prompt_tokens == w.requests[i].prompt_tokens);
    CHECK(back.requests[i].output_tokens == w.requests[i].output_tokens);
  }
  CHECK(back.duration_s == 17.25);
  CHECK(back.source == "t.jsonl");
  // One line per request.
  const std::string text = out.str();
  CHECK(std::count(text.begin(), text.end(), '\n') == 4);
}

TEST_CASE("trace: lines in any order are sorted, models kept in first-seen line order", "[workload][trace]") {
  auto w = parse_trace(R"({"t": 5, "model": "late", "prompt_tokens": 3, "output_tokens": 4}

{"t": 1.5, "model": "early", "prompt_tokens": 1, "output_tokens": 2}
  {"t": 1.5, "model": "late", "prompt_tokens": 9, "output_tokens": 9}
)",
                       "t.jsonl");
  REQUIRE(w.requests.size() == 3);
  CHECK(w.requests[0].model == "early");
  CHECK(w.requests[1].model == "late");  // equal times keep line order
  CHECK(w.requests[1].prompt_tokens == 9);
  CHECK(w.requests[2].at_s == 5);
  CHECK(w.models == std::vector<std::string>{"late", "early"});
  CHECK(w.duration_s == 5);
  CHECK(parse_trace("", "e.jsonl").requests.empty());
}

TEST_CASE("trace: errors name the file and the line", "[workload][trace][error]") {
  const std::string good = "{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 1, \"output_tokens\": 1}\n";
  auto at_line3 = [&](const std::string& bad, const std::string& reason) {
    const auto what = error_of([&] { (void)parse_trace(good + "\n" + bad + "\n" + good, "t.jsonl"); });
    INFO(what);
    CHECK_THAT(what, Catch::StartsWith("t.jsonl:3: "));
    CHECK_THAT(what, Contains(reason));
  };
  at_line3("{\"t\": 0, \"model\": \"m\"", "not JSON");
  at_line3("[1, 2]", "JSON object");
  at_line3("{\"model\": \"m\", \"prompt_tokens\": 1, \"output_tokens\": 1}", "missing \"t\"");
  at_line3("{\"t\": 0, \"prompt_tokens\": 1, \"output_tokens\": 1}", "missing \"model\"");
  at_line3("{\"t\": 0, \"model\": \"m\", \"output_tokens\": 1}", "missing \"prompt_tokens\"");
  at_line3("{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 1}", "missing \"output_tokens\"");
  at_line3("{\"t\": -1, \"model\": \"m\", \"prompt_tokens\": 1, \"output_tokens\": 1}", "\"t\"");
  at_line3("{\"t\": \"0\", \"model\": \"m\", \"prompt_tokens\": 1, \"output_tokens\": 1}", "\"t\"");
  at_line3("{\"t\": 0, \"model\": \"\", \"prompt_tokens\": 1, \"output_tokens\": 1}", "\"model\"");
  at_line3("{\"t\": 0, \"model\": 5, \"prompt_tokens\": 1, \"output_tokens\": 1}", "\"model\"");
  at_line3("{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 0, \"output_tokens\": 1}", "\"prompt_tokens\"");
  at_line3("{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 1.5, \"output_tokens\": 1}", "\"prompt_tokens\"");
  at_line3("{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 1, \"output_tokens\": -3}", "\"output_tokens\"");
}

TEST_CASE("trace: lengths beyond int are refused, not wrapped", "[workload][trace][error]") {
  const std::string line = "{\"t\": 0, \"model\": \"m\", \"prompt_tokens\": 3000000000, \"output_tokens\": 1}\n";
  bool refused = false;
  try {
    auto w = parse_trace(line, "t.jsonl");
    REQUIRE(w.requests.size() == 1);
    CHECK(w.requests[0].prompt_tokens >= 1);
  } catch (const workload_error& e) {
    refused = true;
    CHECK_THAT(std::string{e.what()}, Catch::StartsWith("t.jsonl:1: "));
  }
  CHECK(refused);
}

TEST_CASE("load_workload: .jsonl is a trace, anything else a spec", "[workload]") {
  temp_dir d;
  const auto trace = d.write("w.jsonl", "{\"t\": 2, \"model\": \"m\", \"prompt_tokens\": 5, \"output_tokens\": 6}\n");
  auto t = load_workload(trace);
  REQUIRE(t.requests.size() == 1);
  CHECK(t.requests[0].prompt_tokens == 5);
  CHECK(t.source == trace);
  const auto spec = d.write("w.toml", "duration_s = 10\n[[model]]\nname = \"m\"\nrate = 3\n");
  auto s = load_workload(spec);
  CHECK(s.source == spec);
  CHECK(s.duration_s == 10);
  CHECK(s.models == std::vector<std::string>{"m"});
  CHECK_THAT(error_of([&] { (void)load_workload((d.path / "missing.toml").string()); }), Contains("missing.toml:0:"));
}

// --- empirical lengths ------------------------------------------------------

TEST_CASE("empirical lengths: a file of lengths, drawn uniformly among its samples", "[workload][empirical]") {
  temp_dir d;
  d.write("lens.txt", "10 20,30\n\n40,\n");
  auto s = parse_length_spec("empirical:lens.txt", d.path.string());
  CHECK(s.dist == length_spec::kind::empirical);
  CHECK(s.samples == std::vector<int>{10, 20, 30, 40});
  CHECK(s.mean == 25);
  CHECK(s.min == 10);
  CHECK(s.max == 40);
  // An absolute path ignores base_dir.
  auto abs = parse_length_spec("empirical:" + (d.path / "lens.txt").string(), "/nonexistent");
  CHECK(abs.samples == s.samples);

  // 4000 draws: each value 1000 times ± 5σ (σ = √(4000·¼·¾) ≈ 27.4).
  std::mt19937_64 rng{9};
  std::map<int, int> seen;
  for (int i = 0; i < 4000; ++i)
    ++seen[draw_length(s, rng)];
  REQUIRE(seen.size() == 4u);
  for (int v : {10, 20, 30, 40}) {
    INFO(v);
    CHECK(std::abs(seen[v] - 1000) <= 137);
  }
}

TEST_CASE("empirical lengths: bad files are refused with the reason", "[workload][empirical][error]") {
  temp_dir d;
  d.write("zero.txt", "5 0 7\n");
  d.write("word.txt", "5 seven\n");
  d.write("empty.txt", " \n,\n");
  CHECK_THROWS_AS(parse_length_spec("empirical:zero.txt", d.path.string()), std::invalid_argument);
  CHECK_THROWS_AS(parse_length_spec("empirical:word.txt", d.path.string()), std::invalid_argument);
  CHECK_THROWS_AS(parse_length_spec("empirical:empty.txt", d.path.string()), std::invalid_argument);
  CHECK_THROWS_AS(parse_length_spec("empirical:none.txt", d.path.string()), std::invalid_argument);
  try {
    (void)parse_length_spec("empirical:word.txt", d.path.string());
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(std::string{e.what()}, Contains("seven"));
  }
}

TEST_CASE("empirical lengths in a spec resolve against its directory", "[workload][empirical]") {
  temp_dir d;
  d.write("prompts.txt", "100 200\n");
  const std::string text = "duration_s = 20\nseed = 2\nprompt = \"empirical:prompts.txt\"\n"
                           "[[model]]\nname = \"m\"\nrate = 20\n";
  auto s = parse_workload_spec(text, "w.toml", d.path.string());
  auto w = generate(s);
  REQUIRE(w.requests.size() > 100u);
  size_t hundreds = 0;
  for (const auto& r : w.requests) {
    CHECK((r.prompt_tokens == 100 || r.prompt_tokens == 200));
    hundreds += r.prompt_tokens == 100 ? 1 : 0;
  }
  CHECK(hundreds > 0u);
  CHECK(hundreds < w.requests.size());
  // A missing file is the spec's error, on its line and key.
  const std::string bad = "duration_s = 20\nprompt = \"empirical:nope.txt\"\n[[model]]\nname = \"m\"\nrate = 1\n";
  const auto what = error_of([&] { (void)parse_workload_spec(bad, "w.toml", d.path.string()); });
  CHECK_THAT(what, Catch::StartsWith("w.toml:2: key 'prompt': "));
  CHECK_THAT(what, Contains("nope.txt"));
}

TEST_CASE("generate: prefix groups start prompts with their group's tokens", "[workload][sharing]") {
  auto spec = parse_workload_spec(R"(duration_s = 60
models = ["m"]
total_rate = 20
prompt = "fixed:40"
prefix_groups = 3
prefix_tokens = 32
prefix_alpha = 2.0
)", "s.toml");
  auto w = generate(spec);
  REQUIRE(w.requests.size() > 500);
  std::map<int, size_t> per_group;
  std::map<int, std::vector<int32_t>> head;
  for (uint32_t i = 0; i < w.requests.size(); ++i) {
    const auto& r = w.requests[i];
    REQUIRE(r.group >= 0);
    REQUIRE(r.group < 3);
    CHECK(r.prefix_tokens == 32);
    CHECK(r.prompt_tokens == 32 + 40);  // the prefix, then the drawn length
    CHECK(r.session == -1);
    ++per_group[r.group];
    auto p = prompt_of(r, i);
    REQUIRE(p.size() == 72u);
    for (auto t : p) {
      CHECK(t >= 3);
      CHECK(t < 253);
    }
    std::vector<int32_t> prefix(p.begin(), p.begin() + 32);
    auto [it, fresh] = head.try_emplace(r.group, prefix);
    CHECK(it->second == prefix);  // one prefix per group
  }
  REQUIRE(head.size() == 3);
  CHECK(head[0] != head[1]);
  CHECK(head[1] != head[2]);
  // rank^-2: group 0 carries about 1 / (1 + 1/4 + 1/9) = 73% of requests.
  const double share0 = static_cast<double>(per_group[0]) / static_cast<double>(w.requests.size());
  CHECK(share0 == Approx(0.735).margin(0.05));
  // Arrivals and the drawn lengths are those of the same spec without groups.
  auto plain = parse_workload_spec("duration_s = 60\nmodels = [\"m\"]\ntotal_rate = 20\nprompt = \"fixed:40\"\n", "p.toml");
  auto wp = generate(plain);
  REQUIRE(wp.requests.size() == w.requests.size());
  CHECK(wp.requests[7].at_s == w.requests[7].at_s);
  // Requests without a group share nothing but the vocabulary.
  auto a = prompt_of(wp.requests[0], 0), b = prompt_of(wp.requests[1], 1);
  CHECK(std::vector<int32_t>(a.begin(), a.begin() + 8) != std::vector<int32_t>(b.begin(), b.begin() + 8));
}

TEST_CASE("generate: a session's turns extend one another until it starts over", "[workload][sharing]") {
  auto spec = parse_workload_spec(R"(duration_s = 120
models = ["m"]
total_rate = 10
prompt = "fixed:100"
sessions = 4
session_alpha = 0
session_max_tokens = 450
prefix_groups = 2
prefix_tokens = 16
)", "s.toml");
  auto w = generate(spec);
  std::map<int64_t, std::vector<int32_t>> last;  // by session: the previous turn's prompt
  std::map<int64_t, int> epochs_per_user;
  size_t extended = 0;
  for (uint32_t i = 0; i < w.requests.size(); ++i) {
    const auto& r = w.requests[i];
    REQUIRE(r.session >= 0);
    CHECK(r.prefix_tokens == 16);
    CHECK(r.group == (r.session / 4096) % 2);  // a session keeps its group
    auto p = prompt_of(r, i);
    // At most session_max_tokens after the prefix.
    CHECK(r.prompt_tokens - r.prefix_tokens <= 450);
    auto it = last.find(r.session);
    if (it != last.end()) {
      // This turn is the last one plus 100 new tokens.
      REQUIRE(p.size() == it->second.size() + 100);
      CHECK(std::equal(it->second.begin(), it->second.end(), p.begin()));
      ++extended;
    } else {
      CHECK(r.prompt_tokens == 16 + 100);  // a conversation's first turn
      ++epochs_per_user[r.session / 4096];
    }
    last[r.session] = p;
  }
  CHECK(extended > w.requests.size() / 2);
  // 4 turns fit in 450 tokens: each user started over several times.
  for (const auto& [user, epochs] : epochs_per_user)
    CHECK(epochs >= 2);
  CHECK(epochs_per_user.size() == 4);
}

TEST_CASE("trace: prefix groups and sessions survive a round trip; bad ones are refused", "[workload][trace]") {
  workload w;
  w.models = {"x"};
  request_spec a{0.5, "x", 40, 8};
  a.group = 2;
  a.prefix_tokens = 32;
  a.session = 77;
  w.requests = {a, {1.0, "x", 5, 5}};
  std::ostringstream out;
  write_trace(w, out);
  auto back = parse_trace(out.str(), "t.jsonl");
  REQUIRE(back.requests.size() == 2);
  CHECK(back.requests[0].group == 2);
  CHECK(back.requests[0].prefix_tokens == 32);
  CHECK(back.requests[0].session == 77);
  CHECK(back.requests[1].group == -1);
  CHECK(back.requests[1].session == -1);
  CHECK(prompt_of(back.requests[0], 0) == prompt_of(a, 0));
  CHECK_THROWS_WITH(parse_trace(R"({"t":0,"model":"x","prompt_tokens":10,"output_tokens":1,"group":1})", "b.jsonl"),
                    Catch::Contains("b.jsonl:1") && Catch::Contains("prefix_tokens"));
  CHECK_THROWS_WITH(parse_trace(R"({"t":0,"model":"x","prompt_tokens":10,"output_tokens":1,"group":1,"prefix_tokens":10})",
                                "b.jsonl"),
                    Catch::Contains("prefix_tokens"));
  CHECK_THROWS_WITH(parse_trace(R"({"t":0,"model":"x","prompt_tokens":10,"output_tokens":1,"session":-3})", "b.jsonl"),
                    Catch::Contains("session"));
  CHECK_THROWS_WITH(parse_workload_spec("models = [\"m\"]\ntotal_rate = 1\nprefix_groups = -1\n", "e.toml"),
                    Catch::Contains("prefix_groups"));
  CHECK_THROWS_WITH(parse_workload_spec("models = [\"m\"]\ntotal_rate = 1\nsession_max_tokens = 1\n", "e.toml"),
                    Catch::Contains("session_max_tokens"));
}
