#include "engine/sim_engine.hpp"

#include "engine/mix_hash.hpp"

namespace llmux::engine {

sim_engine::sim_engine(config::model_arch arch, config::gpu_spec gpu, double share)
  : costs_(arch, gpu), share_(share) {
}

sim_engine::sim_engine(cost_model costs, double share) : costs_(std::move(costs)), share_(share) {
}

int64_t sim_engine::output_length(uint64_t seed) {
  return 16 + static_cast<int64_t>(mix64(seed ^ 0x5eedULL) % 256);
}

token_id sim_engine::token_at(uint64_t seed, int64_t prompt_len, int64_t pos) {
  if (pos - prompt_len >= output_length(seed))
    return sim_tokenizer::eos;
  auto h = mix64(seed * 0x100000001b3ULL + static_cast<uint64_t>(pos));
  return sim_tokenizer::first_word + static_cast<token_id>(h % sim_tokenizer::word_count());
}

step_cost sim_engine::cost_of(const step_input& in) const {
  step_shape shape;
  for (const auto& s : in.seqs) {
    auto n = static_cast<int64_t>(s.tokens.size());
    // Prompt (or recompute) tokens, as the unit's has_prefill counts them.
    cost_model::add_sequence(shape, s.context_len, n, s.context_len < s.prompt_len || n > 1);
  }
  const double share = in.job == job_kind::decode && decode_share_ > 0 ? decode_share_ : share_;
  return costs_.estimate(shape, share);
}

step_output sim_engine::step(const step_input& in) {
  step_output out;
  out.tokens.reserve(in.seqs.size());
  for (const auto& s : in.seqs) {
    auto n = static_cast<int64_t>(s.tokens.size());
    // The sampled token sits at the position right after the fed tokens.
    out.tokens.push_back(s.sample ? token_at(s.seed, s.prompt_len, s.context_len + n) : -1);
  }
  out.seconds = cost_of(in).seconds;
  return out;
}

}  // namespace llmux::engine
