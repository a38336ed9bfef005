#include "engine/sim_engine.hpp"

#include <catch2/catch.hpp>

#include "tests/gpu_specs.hpp"

#include <set>
#include <vector>

using namespace llmux;
using engine::seq_work;
using engine::sim_engine;
using engine::sim_tokenizer;
using engine::step_input;
using engine::token_id;

namespace {

using test::h100_like;

sim_engine make_sim(double share = 1.0) {
  auto a = config::arch_preset("llama-7b");
  REQUIRE(a);
  return sim_engine(*a, h100_like(), share);
}

seq_work work(uint64_t id, int n_tokens, int context, bool sample, uint64_t seed,
              int prompt_len) {
  seq_work w;
  w.seq_id = id;
  w.tokens.assign(static_cast<size_t>(n_tokens), 'x');
  w.context_len = context;
  w.prompt_len = prompt_len;
  w.sample = sample;
  w.seed = seed;
  return w;
}

bool is_word(token_id t) {
  return t >= sim_tokenizer::first_word
         && t < sim_tokenizer::first_word + sim_tokenizer::word_count();
}

}  // namespace

TEST_CASE("sim_engine: tokens depend only on seed and position", "[sim_engine]") {
  std::vector<std::vector<token_id>> outputs;
  for (uint64_t seed : {0ULL, 1ULL, 42ULL, 0xdeadbeefULL}) {
    const int64_t len = sim_engine::output_length(seed);
    CHECK(len >= 16);
    CHECK(len <= 271);
    // Words for the whole output, then EOS: the length is where EOS starts.
    std::vector<token_id> out;
    for (int64_t pos = 5; pos < 5 + len; ++pos) {
      CHECK(is_word(sim_engine::token_at(seed, 5, pos)));
      out.push_back(sim_engine::token_at(seed, 5, pos));
    }
    CHECK(sim_engine::token_at(seed, 5, 5 + len) == sim_tokenizer::eos);
    // Not one token repeated: at least a few distinct words in the first 16.
    std::set<token_id> distinct(out.begin(), out.begin() + 16);
    CHECK(distinct.size() >= 4);
    outputs.push_back(out);
  }
  // Different seeds give different outputs.
  for (size_t i = 1; i < outputs.size(); ++i)
    CHECK(outputs[i] != outputs[0]);
  // A step samples the token at the sequence's next position: context plus
  // the tokens it feeds.
  {
    auto e = make_sim(1.0);
    step_input in;
    in.seqs.push_back(work(1, 7, 0, true, 99, 7));     // a 7-token prompt
    in.seqs.push_back(work(2, 1, 30, true, 12345, 20));  // a decode at context 30
    auto got = e.step(in).tokens;
    REQUIRE(got.size() == 2);
    CHECK(got[0] == sim_engine::token_at(99, 7, 7));
    CHECK(got[1] == sim_engine::token_at(12345, 20, 31));
  }
  // Two engines (different shares, different instances) agree token for token.
  auto a = make_sim(1.0);
  auto b = make_sim(0.3);
  step_input in;
  in.seqs.push_back(work(1, 7, 0, true, 99, 7));
  in.seqs.push_back(work(2, 1, 30, true, 12345, 20));
  CHECK(a.step(in).tokens == b.step(in).tokens);
}

TEST_CASE("sim_engine: different seeds give different outputs", "[sim_engine]") {
  int differing_pairs = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    bool differ = false;
    for (int64_t pos = 0; pos < 16; ++pos)
      differ = differ || sim_engine::token_at(seed, 0, pos) != sim_engine::token_at(seed + 1, 0, pos);
    differing_pairs += differ ? 1 : 0;
  }
  CHECK(differing_pairs == 20);
  // Output lengths vary with the seed too.
  std::set<int64_t> lengths;
  for (uint64_t seed = 0; seed < 64; ++seed)
    lengths.insert(sim_engine::output_length(seed));
  CHECK(lengths.size() > 8);
}

TEST_CASE("sim_engine: output is words, then EOS exactly at output_length", "[sim_engine]") {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto len = sim_engine::output_length(seed);
    INFO("seed " << seed << " length " << len);
    REQUIRE(len >= 16);
    REQUIRE(len <= 271);
    const int64_t prompt = static_cast<int64_t>(seed % 7) + 1;
    for (int64_t k = 0; k < len; ++k)
      REQUIRE(is_word(sim_engine::token_at(seed, prompt, prompt + k)));
    CHECK(sim_engine::token_at(seed, prompt, prompt + len) == sim_tokenizer::eos);
    CHECK(sim_engine::token_at(seed, prompt, prompt + len + 5) == sim_tokenizer::eos);
  }
}

TEST_CASE("sim_engine: a generation loop through step() ends after output_length tokens",
          "[sim_engine]") {
  auto e = make_sim();
  const uint64_t seed = 7;
  const int prompt = 11;
  // Prefill in two chunks: 8 tokens (no sample), then 3 (sample).
  step_input first;
  first.seqs.push_back(work(1, 8, 0, false, seed, prompt));
  auto o1 = e.step(first);
  REQUIRE(o1.tokens.size() == 1);
  CHECK(o1.tokens[0] == -1);
  step_input second;
  second.seqs.push_back(work(1, 3, 8, true, seed, prompt));
  auto o2 = e.step(second);
  REQUIRE(o2.tokens.size() == 1);
  token_id last = o2.tokens[0];
  int64_t produced = 0;
  int context = prompt;
  while (last != sim_tokenizer::eos) {
    REQUIRE(is_word(last));
    ++produced;
    REQUIRE(produced < 1000);
    step_input dec;
    dec.seqs.push_back(work(1, 1, context, true, seed, prompt));
    dec.seqs[0].tokens = {last};
    last = e.step(dec).tokens.at(0);
    ++context;
  }
  CHECK(produced == sim_engine::output_length(seed));
}

TEST_CASE("sim_engine: one output per sequence, -1 where not sampled", "[sim_engine]") {
  auto e = make_sim();
  step_input in;
  in.seqs.push_back(work(1, 16, 0, false, 1, 40));   // middle prefill chunk
  in.seqs.push_back(work(2, 4, 0, true, 2, 4));      // whole short prompt
  in.seqs.push_back(work(3, 1, 10, true, 3, 10));    // first decode after a 10-token prompt
  in.seqs.push_back(work(4, 16, 16, false, 4, 40));  // another middle chunk
  auto out = e.step(in);
  REQUIRE(out.tokens.size() == 4);
  CHECK(out.tokens[0] == -1);
  CHECK(is_word(out.tokens[1]));
  CHECK(is_word(out.tokens[2]));
  CHECK(out.tokens[3] == -1);
  CHECK(e.step(step_input{}).tokens.empty());
  CHECK(e.backend() == "sim");
  CHECK(e.vocab().eos_id() == sim_tokenizer::eos);
}

TEST_CASE("sim_engine: step time is positive and grows with the batch", "[sim_engine]") {
  auto e = make_sim();
  step_input small, big;
  small.seqs.push_back(work(1, 1, 100, true, 1, 10));
  for (uint64_t i = 0; i < 64; ++i)
    big.seqs.push_back(work(i, 1, 100, true, i, 10));
  auto ts = e.step(small).seconds;
  auto tb = e.step(big).seconds;
  CHECK(ts > 0);
  CHECK(tb > ts);
  // One decode of a 7B model on an H100-like device: about 4 ms.
  CHECK(ts > 0.003);
  CHECK(ts < 0.006);
}

TEST_CASE("sim_engine: a smaller share slows a compute-bound step", "[sim_engine]") {
  auto e = make_sim(1.0);
  step_input prefill;
  prefill.seqs.push_back(work(1, 4096, 0, true, 1, 4096));
  auto t_full = e.step(prefill).seconds;
  e.set_share(0.25);
  auto t_quarter = e.step(prefill).seconds;
  const double overhead = 40e-6;
  CHECK(t_quarter - overhead == Approx(4 * (t_full - overhead)).epsilon(1e-9));
}
