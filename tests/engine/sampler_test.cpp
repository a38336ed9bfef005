// The sampler's logit processors and chain, on hand-made logits.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <map>
#include <memory>
#include <vector>

#include "engine/sampler.hpp"
#include "engine/step_sampler.hpp"

using namespace llmux::engine;

namespace {

sampling_params greedy() {
  sampling_params p;
  p.temperature = 0.0f;
  return p;
}

}  // namespace

TEST_CASE("greedy is the argmax, ties to the lowest id", "[sampler]") {
  std::vector<float> l{0.5f, 2.0f, 2.0f, -1.0f};
  CHECK(sample_token(l.data(), 4, greedy(), 0) == 1);
}

TEST_CASE("logit_bias can force or ban a token", "[sampler]") {
  std::vector<float> l{3.0f, 1.0f, 0.0f};
  std::vector<int32_t> toks{2};
  std::vector<float> force{100.0f}, ban{-100.0f};
  auto p = greedy();
  p.bias_tokens = &toks;
  p.bias_values = &force;
  CHECK(sample_token(l.data(), 3, p, 0) == 2);
  std::vector<int32_t> top{0};
  p.bias_tokens = &top;
  p.bias_values = &ban;
  CHECK(sample_token(l.data(), 3, p, 0) == 1);
  // Sampling with temperature obeys a ban as well (10 different draws).
  p.temperature = 1.0f;
  for (int64_t pos = 0; pos < 10; ++pos)
    CHECK(sample_token(l.data(), 3, p, pos) != 0);
}

TEST_CASE("presence and frequency penalties follow OpenAI's formula", "[sampler]") {
  // logit − presence·[count > 0] − frequency·count
  std::vector<float> l{2.0f, 1.5f, 0.0f};
  token_history h;
  h.output_counts[0] = 2;
  auto p = greedy();
  p.presence_penalty = 0.4f;  // 2.0 − 0.4 = 1.6 > 1.5: token 0 still wins
  CHECK(sample_token(l.data(), 3, p, 0, &h) == 0);
  p.frequency_penalty = 0.1f;  // 2.0 − 0.4 − 0.2 = 1.4 < 1.5: token 1 wins
  CHECK(sample_token(l.data(), 3, p, 0, &h) == 1);
  // Without history the penalties have nothing to act on.
  CHECK(sample_token(l.data(), 3, p, 0, nullptr) == 0);
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits", "[sampler]") {
  std::vector<float> l{2.0f, 1.2f, -0.5f, -0.6f};
  token_history h;
  h.seen = {0, 2};
  auto p = greedy();
  p.repetition_penalty = 2.0f;  // token 0: 2.0 / 2 = 1.0 < 1.2
  CHECK(sample_token(l.data(), 4, p, 0, &h) == 1);
  // Among negatives: token 2 becomes −1.0, below token 3's −0.6.
  std::vector<int32_t> ban{0, 1};
  std::vector<float> b{-100.0f, -100.0f};
  p.bias_tokens = &ban;
  p.bias_values = &b;
  CHECK(sample_token(l.data(), 4, p, 0, &h) == 3);
}

TEST_CASE("seeded sampling is a function of seed and position only", "[sampler]") {
  std::vector<float> l(64);
  for (size_t i = 0; i < l.size(); ++i)
    l[i] = static_cast<float>(i % 7) * 0.3f;
  sampling_params p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::vector<int32_t> a, b;
  for (int64_t pos = 0; pos < 50; ++pos) {
    a.push_back(sample_token(l.data(), 64, p, pos));
    b.push_back(sample_token(l.data(), 64, p, pos));
  }
  CHECK(a == b);
  p.seed = 43;
  std::vector<int32_t> c;
  for (int64_t pos = 0; pos < 50; ++pos)
    c.push_back(sample_token(l.data(), 64, p, pos));
  CHECK(a != c);
  // Every draw stays inside the candidates top-k leaves.
  p.top_k = 3;
  for (int64_t pos = 0; pos < 50; ++pos) {
    auto t = sample_token(l.data(), 64, p, pos);
    CHECK(l[static_cast<size_t>(t)] == Approx(1.8f));  // the top logit (i % 7 == 6) ties
  }
}

TEST_CASE("top-p and min-p cut the tail", "[sampler]") {
  // Probabilities ~ softmax{4, 3, 0, 0}: 0.72, 0.26, 0.013, 0.013.
  std::vector<float> l{4.0f, 3.0f, 0.0f, 0.0f};
  sampling_params p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;  // keeps tokens 0 and 1 only
  std::map<int32_t, int> seen;
  for (int64_t pos = 0; pos < 400; ++pos)
    ++seen[sample_token(l.data(), 4, p, pos)];
  CHECK(seen.count(2) == 0);
  CHECK(seen.count(3) == 0);
  CHECK(seen[1] > 40);  // ~27% of 400 once renormalised
  p.top_p = 1.0f;
  p.min_p = 0.5f;  // keeps p >= 0.36: token 0 only
  for (int64_t pos = 0; pos < 50; ++pos)
    CHECK(sample_token(l.data(), 4, p, pos) == 0);
}

TEST_CASE("top_logprobs: the chosen token's log-prob and the k best, from the raw logits",
          "[sampler]") {
  // log-softmax of {ln 1, ln 2, ln 5, ln 2}: log(1/10), log(2/10), log(5/10), log(2/10)
  std::vector<float> l{0.0f, std::log(2.0f), std::log(5.0f), std::log(2.0f)};
  auto t = top_logprobs(l.data(), 4, 0, 3);
  CHECK(t.logprob == Approx(std::log(0.1)));
  CHECK(t.top_ids == std::vector<int32_t>{2, 1, 3});  // tie between 1 and 3: lower id first
  REQUIRE(t.top_logprobs.size() == 3);
  CHECK(t.top_logprobs[0] == Approx(std::log(0.5)));
  CHECK(t.top_logprobs[2] == Approx(std::log(0.2)));
  CHECK(top_logprobs(l.data(), 4, 2, 0).top_ids.empty());
}

TEST_CASE("step_sampler::processors: one entry per token, as sample() would apply them", "[sampler]") {
  // A sequence with a 4-token prompt, then two steps of its own output
  // coming back (token 7 twice, token 2 once).
  step_sampler ss;
  step_input in;
  seq_work w;
  w.seq_id = 5;
  w.prompt_len = 4;
  w.tokens = {1, 2, 3, 1};
  w.repetition_penalty = 1.5f;
  w.presence_penalty = 0.25f;
  w.frequency_penalty = 0.5f;
  w.bias_tokens = {9, 3, 9};
  w.bias_values = {1.0f, -2.0f, 0.5f};
  in.seqs = {w};
  ss.feed(in);
  for (std::vector<token_id> out : {std::vector<token_id>{7}, {7}, {2}}) {
    in.seqs[0].context_len += static_cast<int32_t>(in.seqs[0].tokens.size());
    in.seqs[0].tokens = out;
    ss.feed(in);
  }
  std::vector<token_adjust> adj;
  ss.processors(in.seqs[0], adj);
  std::map<token_id, token_adjust> by;
  for (const auto& a : adj) {
    CHECK(by.count(a.token) == 0);  // one entry per token
    by[a.token] = a;
  }
  REQUIRE(by.size() == 5);  // 1 2 3 7 9
  CHECK((by[1].seen && by[1].count == 0));
  CHECK((by[2].seen && by[2].count == 1));  // in the prompt and once in the output
  CHECK((by[7].seen && by[7].count == 2));
  CHECK(by[3].bias == -2.0f);
  CHECK((!by[9].seen && by[9].bias == 1.5f));  // two bias entries summed

  // Applied by hand to random logits, the entries give sample()'s greedy
  // pick, with the penalties moving it in most rows.
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  int moved = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> l(12);
    for (auto& x : l)
      x = u(rng);
    l[static_cast<size_t>(trial % 12)] += 3.0f;
    step_output want;
    in.seqs[0].temperature = 0.0f;
    in.seqs[0].sample = true;
    ss.sample(in, l.data(), 12, want);
    auto m = l;
    for (const auto& a : adj) {
      auto& x = m[static_cast<size_t>(a.token)];
      if (a.seen)
        x = x > 0 ? x / w.repetition_penalty : x * w.repetition_penalty;
      if (a.count > 0)
        x -= w.presence_penalty + w.frequency_penalty * static_cast<float>(a.count);
      x += a.bias;
    }
    const auto pick = std::max_element(m.begin(), m.end()) - m.begin();
    CHECK(want.tokens.at(0) == pick);
    if (pick != std::max_element(l.begin(), l.end()) - l.begin())
      ++moved;
  }
  CHECK(moved > 40);
}

namespace {

/// Token i is pieces[i]; token 0 is EOS (no bytes).
class piece_vocab final : public tokenizer {
public:
  explicit piece_vocab(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::vector<token_id> encode(std::string_view, bool) const override { return {}; }
  std::string token_bytes(token_id id) const override { return pieces_.at(static_cast<size_t>(id)); }
  token_id bos_id() const override { return -1; }
  token_id eos_id() const override { return 0; }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }

private:
  std::vector<std::string> pieces_;
};

/// The vocabulary of the grammar cases: EOS, "a", "b", "ab", "x", "{".
std::shared_ptr<piece_vocab> ab_vocab() {
  return std::make_shared<piece_vocab>(std::vector<std::string>{"", "a", "b", "ab", "x", "{"});
}

/// A sampling row of sequence `id` held to `grammar` (its first step).
seq_work constrained_row(uint64_t id, const std::string& grammar) {
  seq_work w;
  w.seq_id = id;
  w.sample = true;
  w.constrained = true;
  w.grammar = grammar;
  return w;
}

/// The tokens `ss` bans (-inf) for `w`, sorted.
std::vector<int32_t> banned_tokens(step_sampler& ss, const seq_work& w) {
  std::vector<token_adjust> adj;
  ss.processors(w, adj);
  std::vector<int32_t> banned;
  for (const auto& a : adj)
    if (std::isinf(a.bias) && a.bias < 0)
      banned.push_back(a.token);
  std::sort(banned.begin(), banned.end());
  return banned;
}

}  // namespace

TEST_CASE("step_sampler: a constrained row samples only what its grammar allows", "[sampler][grammar]") {
  auto tok = ab_vocab();
  const int32_t n = 6;
  for (float temperature : {0.0f, 1.0f}) {
    for (bool top_p_cut : {false, true}) {
      INFO("temperature " << temperature << " top_p cut " << top_p_cut);
      step_sampler ss;
      ss.set_vocab(tok);
      step_input in;
      seq_work w = constrained_row(1, "root ::= \"a\" \"b\"{1,2}\n");
      w.tokens = {9, 9};
      w.prompt_len = 2;
      w.temperature = temperature;
      w.top_p = top_p_cut ? 0.9f : 1.0f;
      w.seed = 3;
      in.seqs = {w};
      ss.feed(in);
      // The model prefers "x", then EOS: neither is allowed until "ab" or "abb".
      std::vector<float> logits{4.0f, 1.0f, 0.5f, 0.8f, 6.0f, 2.0f};
      std::string text;
      for (int step = 0; step < 6; ++step) {
        step_output out;
        ss.sample(in, logits.data(), n, out);
        const auto t = out.tokens.at(0);
        if (t == 0)
          break;
        text += tok->token_bytes(t);
        in.seqs[0].grammar.clear();
        in.seqs[0].context_len += static_cast<int32_t>(in.seqs[0].tokens.size());
        in.seqs[0].tokens = {t};
      }
      CHECK((text == "ab" || text == "abb"));
    }
  }
}

TEST_CASE("step_sampler: grammar_prefix replays output, and a finished grammar gives EOS", "[sampler][grammar]") {
  step_sampler ss;
  ss.set_vocab(ab_vocab());
  step_input in;
  seq_work w = constrained_row(7, "root ::= \"a\" \"b\"{1,2}\n");
  w.tokens = {2};
  w.prompt_len = 1;
  w.context_len = 3;
  w.temperature = 0.0f;
  w.grammar_prefix = {1, 2};  // "ab" came before this engine saw the sequence
  in.seqs = {w};
  ss.feed(in);
  std::vector<float> logits{-5.0f, 3.0f, 1.0f, 2.0f, 0.0f, 0.0f};  // prefers "a", then "ab"
  step_output out;
  ss.sample(in, logits.data(), 6, out);
  CHECK(out.tokens.at(0) == 2);  // only "b" (or EOS, less likely) fits after "ab"
  in.seqs[0].grammar.clear();
  in.seqs[0].grammar_prefix.clear();
  step_output done;
  ss.sample(in, logits.data(), 6, done);
  CHECK(done.tokens.at(0) == 0);  // "abb": the grammar is finished
  // Released, the sequence samples freely again.
  ss.release({7});
  step_output freed;
  ss.sample(in, logits.data(), 6, freed);
  CHECK(freed.tokens.at(0) == 1);
}

TEST_CASE("step_sampler::processors: a constrained row bans what its grammar refuses", "[sampler][grammar]") {
  step_sampler ss;
  ss.set_vocab(ab_vocab());
  step_input in;
  seq_work w = constrained_row(2, "root ::= \"a\" \"b\"?\n");
  w.tokens = {4};
  in.seqs = {w};
  ss.feed(in);
  CHECK(banned_tokens(ss, in.seqs[0]) == std::vector<int32_t>{0, 2, 4, 5});  // "a" and "ab" may come
  step_output out;
  out.tokens = {3};  // the device drew "ab"
  ss.advance(in, out);
  CHECK(banned_tokens(ss, in.seqs[0]) == std::vector<int32_t>{1, 2, 3, 4, 5});  // finished: EOS only
}

namespace {

/// The chain as it was first written (a full sort of the vocabulary), kept
/// as the reference for the on-demand sort. No penalties or bias.
token_id reference_chain(const float* logits, int32_t n_vocab, const sampling_params& p, int64_t position) {
  std::vector<token_id> ids(static_cast<size_t>(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i)
    ids[static_cast<size_t>(i)] = i;
  size_t keep = ids.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep)
    keep = static_cast<size_t>(p.top_k);
  std::stable_sort(ids.begin(), ids.end(), [&](token_id a, token_id b) { return logits[a] > logits[b]; });
  ids.resize(keep);
  auto probs_of = [&](float temp) {
    std::vector<double> pr(ids.size());
    double mx = logits[ids[0]], sum = 0;
    for (size_t i = 0; i < ids.size(); ++i)
      sum += pr[i] = std::exp((logits[ids[i]] - mx) / temp);
    for (auto& x : pr)
      x /= sum;
    return pr;
  };
  auto pr = probs_of(1.0f);
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < pr.size()) {
      cum += pr[n++];
      if (cum >= p.top_p)
        break;
    }
    ids.resize(std::max<size_t>(1, n));
  }
  if (p.min_p > 0.0f) {
    double cut = pr[0] * p.min_p;
    size_t n = 0;
    while (n < ids.size() && pr[n] >= cut)
      ++n;
    ids.resize(std::max<size_t>(1, n));
  }
  pr = probs_of(p.temperature);
  const double u = sample_uniform(p.seed, position);
  double cum = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cum += pr[i];
    if (u < cum)
      return ids[i];
  }
  return ids.back();
}

}  // namespace

TEST_CASE("the chain's on-demand sort draws what a full sort draws", "[sampler]") {
  std::mt19937 rng{123};
  std::normal_distribution<float> logit{0.0f, 3.0f};
  int draws = 0;
  for (int32_t n : {1, 7, 100, 5000, 49152}) {
    std::vector<float> l(static_cast<size_t>(n));
    for (auto& x : l)
      x = std::round(logit(rng) * 4.0f) / 4.0f;  // coarse: many ties
    for (float temperature : {0.3f, 1.0f, 1.7f})
      for (int top_k : {0, 1, 40, 3000})
        for (float top_p : {1.0f, 0.9f, 0.3f})
          for (float min_p : {0.0f, 0.05f}) {
            sampling_params p;
            p.temperature = temperature;
            p.top_k = top_k;
            p.top_p = top_p;
            p.min_p = min_p;
            for (uint64_t seed = 0; seed < (n > 5000 ? 3u : 12u); ++seed) {
              p.seed = seed;
              INFO("n " << n << " T " << temperature << " k " << top_k << " p " << top_p << " min_p " << min_p
                        << " seed " << seed);
              CHECK(sample_token(l.data(), n, p, 17) == reference_chain(l.data(), n, p, 17));
              ++draws;
            }
          }
  }
  CHECK(draws > 1000);
}
