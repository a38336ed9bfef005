#include "engine/step_sampler.hpp"

namespace llmux::engine {

void step_sampler::release(const std::vector<uint64_t>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto id : ids)
    history_.erase(id);
}

void step_sampler::feed(const step_input& in) {
  // Penalties look at what each sequence has fed: its prompt, and its own
  // sampled tokens coming back one step later (positions >= prompt_len).
  for (const auto& w : in.seqs) {
    bool penalized = w.presence_penalty != 0.0f || w.frequency_penalty != 0.0f
                     || w.repetition_penalty != 1.0f;
    if (!penalized)
      continue;
    token_history* hp = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hp = &history_[w.seq_id];  // stable: the map is node-based
    }
    auto& h = *hp;
    for (size_t i = 0; i < w.tokens.size(); ++i) {
      h.seen.insert(w.tokens[i]);
      if (w.context_len + static_cast<int32_t>(i) >= w.prompt_len)
        ++h.output_counts[w.tokens[i]];
    }
  }
}

void step_sampler::sample(const step_input& in, const float* logits, int32_t n_vocab, step_output& out) {
  out.tokens.reserve(in.seqs.size());
  size_t row = 0;
  for (const auto& w : in.seqs) {
    if (!w.sample || w.tokens.empty()) {
      out.tokens.push_back(-1);
      continue;
    }
    sampling_params p;
    p.temperature = w.temperature;
    p.top_p = w.top_p;
    p.top_k = w.top_k;
    p.min_p = w.min_p;
    p.seed = w.seed;
    p.presence_penalty = w.presence_penalty;
    p.frequency_penalty = w.frequency_penalty;
    p.repetition_penalty = w.repetition_penalty;
    p.bias_tokens = &w.bias_tokens;
    p.bias_values = &w.bias_values;
    const token_history* hist = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = history_.find(w.seq_id);
      hist = it == history_.end() ? nullptr : &it->second;
    }
    auto pos = int64_t{w.context_len} + static_cast<int64_t>(w.tokens.size());
    const float* lg = logits + row * static_cast<size_t>(n_vocab);
    auto tok = sample_token(lg, n_vocab, p, pos, hist);
    out.tokens.push_back(tok);
    if (w.logprobs >= 0) {
      out.logprobs.resize(in.seqs.size());
      out.logprobs[out.tokens.size() - 1] = top_logprobs(lg, n_vocab, tok, w.logprobs);
    }
    ++row;
  }
}

void step_sampler::processors(const seq_work& w, std::vector<token_adjust>& out) {
  out.clear();
  std::unordered_map<token_id, size_t> at;
  auto entry = [&](token_id t) -> token_adjust& {
    auto [it, fresh] = at.emplace(t, out.size());
    if (fresh)
      out.push_back(token_adjust{t, false, 0, 0.0f});
    return out[it->second];
  };
  const bool penalized = w.presence_penalty != 0.0f || w.frequency_penalty != 0.0f || w.repetition_penalty != 1.0f;
  if (penalized) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = history_.find(w.seq_id);
    if (it != history_.end()) {
      for (auto t : it->second.seen)
        entry(t).seen = true;
      for (const auto& [t, n] : it->second.output_counts)
        entry(t).count = n;
    }
  }
  for (size_t i = 0; i < w.bias_tokens.size() && i < w.bias_values.size(); ++i)
    entry(w.bias_tokens[i]).bias += w.bias_values[i];
}

}  // namespace llmux::engine
