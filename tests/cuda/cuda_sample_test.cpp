// Device sampling (kernels/cuda/sample.hpp) against the CPU sampler
// (engine/sampler.hpp), which is the engine's reference: the same logits,
// parameters and (seed, position) must pick the same token, and report the
// same log-probabilities. Logits are spread like a model's (normal, σ 3) so
// the top-p and min-p cuts keep tens to hundreds of tokens, and some rows
// are rounded to quarter steps so that ties (broken by the lower id) occur
// inside every cut. The device's masses are fixed point where the CPU's are
// doubles: a pick could differ only where u falls within ~1e-7 of a
// cumulative boundary, which these seeds do not hit (a failure here that
// sits on such a boundary would show a u next to a boundary in its INFO).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/sampler.hpp"
#include "kernels/cuda/sample.hpp"
#include "tests/cuda/cuda_test_util.hpp"

using namespace llmux::cuda::test;
namespace eng = llmux::engine;

namespace {

struct row_case {
  eng::sampling_params p;
  int64_t position = 0;
  int n_top = -1;
  eng::token_history history;
  bool penalised = false;
  std::vector<int32_t> bias_tokens;
  std::vector<float> bias_values;
};

struct run_result {
  std::vector<cu::sample_result> out;
  std::vector<float> logits_after;
};

/// Builds the device parameters and adjustment list of `cases` (one token
/// entry per row: seen, output count and summed bias), runs sample_rows.
run_result run_device(const std::vector<float>& logits, int64_t vocab, const std::vector<row_case>& cases) {
  std::vector<cu::sample_params> params;
  std::vector<cu::logit_adjust> adjust;
  for (const auto& c : cases) {
    cu::sample_params d;
    d.temperature = c.p.temperature;
    d.top_k = c.p.top_k;
    d.top_p = c.p.top_p;
    d.min_p = c.p.min_p;
    d.u = eng::sample_uniform(c.p.seed, c.position);
    d.n_top = c.n_top;
    d.repetition_penalty = c.p.repetition_penalty;
    d.presence_penalty = c.p.presence_penalty;
    d.frequency_penalty = c.p.frequency_penalty;
    d.adjust_begin = static_cast<int32_t>(adjust.size());
    std::vector<cu::logit_adjust> mine;
    auto entry = [&](int32_t t) -> cu::logit_adjust& {
      for (auto& a : mine)
        if (a.token == t)
          return a;
      mine.push_back(cu::logit_adjust{t, 0, 0, 0.0f});
      return mine.back();
    };
    if (c.penalised) {
      for (auto t : c.history.seen)
        entry(t).seen = 1;
      for (const auto& [t, n] : c.history.output_counts)
        entry(t).count = n;
    }
    for (size_t i = 0; i < c.bias_tokens.size(); ++i)
      entry(c.bias_tokens[i]).bias += c.bias_values[i];
    adjust.insert(adjust.end(), mine.begin(), mine.end());
    d.adjust_end = static_cast<int32_t>(adjust.size());
    params.push_back(d);
  }
  const auto rows = static_cast<int64_t>(cases.size());
  auto dl = upload_vec(logits);
  auto dp = upload_vec(params);
  auto da = upload_vec(adjust.empty() ? std::vector<cu::logit_adjust>(1) : adjust);
  device_buffer work(static_cast<size_t>(rows * vocab) * 4), out(static_cast<size_t>(rows) * sizeof(cu::sample_result));
  work.poison();
  out.poison();
  cu::sample_rows(dl.as<float>(), work.as<float>(), rows, vocab, dp.as<cu::sample_params>(),
                  da.as<cu::logit_adjust>(), out.as<cu::sample_result>(), nullptr);
  run_result r;
  auto ob = out.download();
  r.out.resize(static_cast<size_t>(rows));
  std::memcpy(r.out.data(), ob.data(), ob.size());
  r.logits_after = decode(act::f32, dl.download());
  return r;
}

eng::token_id cpu_pick(const std::vector<float>& logits, int64_t vocab, int64_t r, const row_case& c) {
  auto p = c.p;
  p.bias_tokens = &c.bias_tokens;
  p.bias_values = &c.bias_values;
  return eng::sample_token(&logits[static_cast<size_t>(r * vocab)], static_cast<int32_t>(vocab), p, c.position,
                           c.penalised ? &c.history : nullptr);
}

std::vector<float> model_like_logits(int64_t rows, int64_t vocab, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(rows * vocab));
  for (auto& v : x)
    v = n(rng);
  // Every third row in quarter steps: many ties inside the cuts.
  for (int64_t r = 0; r < rows; r += 3)
    for (int64_t i = 0; i < vocab; ++i) {
      auto& v = x[static_cast<size_t>(r * vocab + i)];
      v = std::round(v * 4.0f) / 4.0f;
    }
  return x;
}

}  // namespace

TEST_CASE("sample_rows picks the CPU sampler's token: temperature, top-k, top-p, min-p, seeds, ties", "[cuda]") {
  std::mt19937 rng(21);
  const int64_t vocab = 32003;
  struct knobs {
    float t, top_p, min_p;
    int32_t top_k;
  };
  const knobs grid[] = {{1.0f, 1.0f, 0.0f, 0},     {0.7f, 1.0f, 0.0f, 40},  {1.3f, 0.9f, 0.0f, 0},
                        {0.8f, 0.5f, 0.0f, 100},   {1.0f, 1.0f, 0.05f, 0},  {0.0f, 1.0f, 0.0f, 0},
                        {1.0f, 1.0f, 0.0f, 1},     {0.5f, 0.95f, 0.0f, 50000}, {0.2f, 0.99f, 0.01f, 64},
                        {2.0f, 0.3f, 0.0f, 0}};
  std::vector<row_case> cases;
  for (int rep = 0; rep < 24; ++rep)
    for (const auto& g : grid) {
      row_case c;
      c.p.temperature = g.t;
      c.p.top_p = g.top_p;
      c.p.min_p = g.min_p;
      c.p.top_k = g.top_k;
      c.p.seed = 1000 + static_cast<uint64_t>(cases.size()) * 7919;
      c.position = 5 + rep;
      cases.push_back(c);
    }
  const auto rows = static_cast<int64_t>(cases.size());
  auto logits = model_like_logits(rows, vocab, rng);
  auto got = run_device(logits, vocab, cases);
  int differ = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto want = cpu_pick(logits, vocab, r, cases[static_cast<size_t>(r)]);
    if (got.out[static_cast<size_t>(r)].token != want) {
      const auto& p = cases[static_cast<size_t>(r)].p;
      UNSCOPED_INFO("row " << r << ": device " << got.out[static_cast<size_t>(r)].token << ", cpu " << want
                           << " (t " << p.temperature << ", top_k " << p.top_k << ", top_p " << p.top_p
                           << ", min_p " << p.min_p << ", u "
                           << eng::sample_uniform(p.seed, cases[static_cast<size_t>(r)].position) << ")");
      ++differ;
    }
  }
  CHECK(differ == 0);
  // No adjustments: the logits are untouched.
  CHECK(got.logits_after == logits);
  // The same inputs again give the same bytes (integer masses: no order
  // dependence between threads).
  auto again = run_device(logits, vocab, cases);
  for (int64_t r = 0; r < rows; ++r)
    CHECK(again.out[static_cast<size_t>(r)].token == got.out[static_cast<size_t>(r)].token);
}

TEST_CASE("sample_rows applies repetition, presence and frequency penalties and logit bias as the CPU does", "[cuda]") {
  std::mt19937 rng(22);
  const int64_t vocab = 5003;
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab) - 1);
  std::vector<row_case> cases;
  for (int r = 0; r < 60; ++r) {
    row_case c;
    c.p.temperature = r % 4 == 0 ? 0.0f : 0.9f;
    c.p.top_p = 0.95f;
    c.p.seed = 77 + static_cast<uint64_t>(r);
    c.position = 40 + r;
    c.p.repetition_penalty = r % 3 == 0 ? 1.0f : 1.3f;
    c.p.presence_penalty = r % 2 == 0 ? 0.5f : 0.0f;
    c.p.frequency_penalty = r % 5 == 0 ? 0.0f : 0.7f;
    c.penalised = c.p.uses_history();
    // The row's top tokens are in its history, so the penalties move picks.
    for (int i = 0; i < 30; ++i)
      c.history.seen.insert(tok(rng));
    for (int i = 0; i < 12; ++i) {
      const auto t = tok(rng);
      c.history.seen.insert(t);
      ++c.history.output_counts[t];
    }
    // Bias: a token twice (the sums must add), a ban, a boost.
    c.bias_tokens = {tok(rng), 7, 7, 4000};
    c.bias_values = {-100.0f, 2.5f, 3.0f, r % 2 == 0 ? 12.0f : 0.0f};
    cases.push_back(c);
  }
  const auto rows = static_cast<int64_t>(cases.size());
  auto logits = model_like_logits(rows, vocab, rng);
  // Put some history tokens at the top of their rows.
  for (int64_t r = 0; r < rows; ++r)
    for (auto t : cases[static_cast<size_t>(r)].history.output_counts)
      logits[static_cast<size_t>(r * vocab + t.first)] += 6.0f;
  auto got = run_device(logits, vocab, cases);
  int differ = 0, moved = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& c = cases[static_cast<size_t>(r)];
    const auto want = cpu_pick(logits, vocab, r, c);
    row_case plain;
    plain.p = c.p;
    plain.position = c.position;
    if (cpu_pick(logits, vocab, r, plain) != want)
      ++moved;
    if (got.out[static_cast<size_t>(r)].token != want) {
      UNSCOPED_INFO("row " << r << ": device " << got.out[static_cast<size_t>(r)].token << ", cpu " << want);
      ++differ;
    }
  }
  CHECK(differ == 0);
  CHECK(moved > 20);  // the processors did change picks, so the check means something
  CHECK(got.logits_after == logits);  // processors work on the copy
}

TEST_CASE("sample_rows reports the pick's log-probability and the top 0, 5 and 20 as the CPU does", "[cuda]") {
  std::mt19937 rng(23);
  const int64_t vocab = 49152;
  std::vector<row_case> cases;
  for (int r = 0; r < 30; ++r) {
    row_case c;
    c.p.temperature = r % 2 == 0 ? 0.0f : 1.0f;
    c.p.seed = 9 + static_cast<uint64_t>(r);
    c.position = r;
    c.n_top = r % 3 == 1 ? 0 : r % 3 == 2 ? 5 : 20;  // the tied rows (r % 3 == 0) take the top 20
    if (r % 5 == 4) {  // bias changes the pick, not the reported (raw) log-probs
      c.bias_tokens = {3};
      c.bias_values = {50.0f};
    }
    cases.push_back(c);
  }
  const auto rows = static_cast<int64_t>(cases.size());
  auto logits = model_like_logits(rows, vocab, rng);
  auto got = run_device(logits, vocab, cases);
  for (int64_t r = 0; r < rows; ++r) {
    const auto& c = cases[static_cast<size_t>(r)];
    const auto& d = got.out[static_cast<size_t>(r)];
    const float* row = &logits[static_cast<size_t>(r * vocab)];
    INFO("row " << r << ", top " << c.n_top);
    const auto want = cpu_pick(logits, vocab, r, c);
    REQUIRE(d.token == want);
    if (r % 5 == 4)
      CHECK(d.token == 3);
    const auto ref = eng::top_logprobs(row, static_cast<int32_t>(vocab), want, c.n_top);
    CHECK(d.logprob == Approx(ref.logprob).margin(2e-4));
    REQUIRE(d.n_top == c.n_top);
    // Device order is free: sort as the CPU does (log-prob down, id up).
    std::vector<std::pair<float, int32_t>> top;
    for (int i = 0; i < d.n_top; ++i)
      top.emplace_back(d.top_logprobs[i], d.top_ids[i]);
    std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (int i = 0; i < d.n_top; ++i) {
      CHECK(top[static_cast<size_t>(i)].second == ref.top_ids[static_cast<size_t>(i)]);
      CHECK(top[static_cast<size_t>(i)].first == Approx(ref.top_logprobs[static_cast<size_t>(i)]).margin(2e-4));
    }
  }
}

TEST_CASE("sample_rows at the boundaries: top-p stopping on reaching p, -0 and +0, NaN, a tiny vocabulary", "[cuda]") {
  // A seed whose draw at position 0 is near the top, so keeping one token
  // too many under top-p would pick the second.
  uint64_t seed = 1;
  while (eng::sample_uniform(seed, 0) < 0.8)
    ++seed;
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t vocab = 4;
  std::vector<row_case> cases(4);
  // {0, 0, -inf, -inf}, top_p 0.5: the CPU keeps token 0 alone (its
  // cumulative 0.5 reaches p).
  cases[0].p.top_p = 0.5f;
  cases[0].p.seed = seed;
  // The same row with top_p 0.51: both zeros are candidates, u picks 1.
  cases[1].p.top_p = 0.51f;
  cases[1].p.seed = seed;
  // -0 and +0 tie: greedy picks the lower id.
  cases[2].p.temperature = 0.0f;
  // Ties across the whole row, sampled.
  cases[3].p.seed = seed + 1;
  std::vector<float> logits = {0, 0, -inf, -inf, 0, 0, -inf, -inf, -0.0f, 0.0f, -1, -2, 3, 3, 3, 3};
  auto got = run_device(logits, vocab, cases);
  for (int64_t r = 0; r < 4; ++r) {
    INFO("row " << r);
    CHECK(got.out[static_cast<size_t>(r)].token == cpu_pick(logits, vocab, r, cases[static_cast<size_t>(r)]));
  }
  CHECK(got.out[0].token == 0);
  CHECK(got.out[1].token == 1);
  CHECK(got.out[2].token == 0);
  // NaN sorts last on the device (it is never picked), greedy or sampled.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<row_case> two(2);
  two[0].p.temperature = 0.0f;
  two[1].p.seed = seed;
  auto n = run_device({nan, 1, 2, nan, nan, 1, 2, nan}, vocab, two);
  CHECK(n.out[0].token == 2);
  CHECK((n.out[1].token == 1 || n.out[1].token == 2));
}
