#include "engine/step_sampler.hpp"

#include <limits>

namespace llmux::engine {

void step_sampler::set_vocab(std::shared_ptr<const tokenizer> tok) {
  std::lock_guard<std::mutex> lock(mu_);
  tok_ = std::move(tok);
  trie_.reset();
}

const vocab_trie& step_sampler::trie() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!trie_) {
    std::vector<std::string> bytes(static_cast<size_t>(tok_->vocab_size()));
    for (int32_t i = 0; i < tok_->vocab_size(); ++i)
      bytes[static_cast<size_t>(i)] = tok_->token_bytes(i);
    trie_ = std::make_unique<vocab_trie>(bytes);
  }
  return *trie_;
}

grammar_matcher* step_sampler::matcher(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = matchers_.find(id);
  return it == matchers_.end() ? nullptr : it->second.get();
}

void step_sampler::release(const std::vector<uint64_t>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto id : ids) {
    history_.erase(id);
    matchers_.erase(id);
  }
}

bool step_sampler::allowed(const grammar_matcher& m, token_id tok) const {
  if (tok < 0)
    return false;
  if (tok == tok_->eos_id())
    return m.can_end();
  return tok < trie_->vocab_size() && m.allows(trie_->bytes(tok));
}

token_id step_sampler::sample_constrained(grammar_matcher& m, const float* lg, int32_t n_vocab,
                                          const sampling_params& p, int64_t pos, const token_history* hist) {
  const auto& vocab = trie();
  const token_id eos = tok_->eos_id();
  if (m.finished() && eos >= 0)
    return eos;
  // Masking then drawing equals drawing then, if refused, drawing again
  // from the masked distribution — when the chain is temperature alone
  // (top-k, top-p and min-p would cut a different candidate set).
  const bool plain = p.temperature <= 0 || (p.top_k <= 0 && p.top_p >= 1.0f && p.min_p <= 0.0f);
  if (plain) {
    const token_id first = sample_token(lg, n_vocab, p, pos, hist);
    if (allowed(m, first))
      return first;
  }
  const auto mask = m.rules().mask_for(m, vocab);
  std::vector<float> masked(lg, lg + n_vocab);
  const float off = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int32_t t = 0; t < n_vocab; ++t) {
    const bool ok = t == eos ? m.can_end() : t < vocab.vocab_size() && mask_has(*mask, t);
    if (!ok)
      masked[static_cast<size_t>(t)] = off;
    any = any || ok;
  }
  if (!any)
    return eos;  // a dead end the grammar should not have: end rather than emit garbage
  sampling_params again = p;
  again.seed = p.seed ^ 0x9E3779B97F4A7C15ull;  // an independent draw for the retry
  return sample_token(masked.data(), n_vocab, again, pos, hist);
}

void step_sampler::advance(const step_input& in, const step_output& out) {
  for (size_t i = 0; i < in.seqs.size() && i < out.tokens.size(); ++i) {
    const auto& w = in.seqs[i];
    if (!w.constrained || !w.sample)
      continue;
    auto* m = matcher(w.seq_id);
    const auto tok = out.tokens[i];
    try {
      if (m != nullptr && tok >= 0 && tok != tok_->eos_id())
        (void)m->accept(trie().bytes(tok));
    } catch (const grammar_error&) {
      std::lock_guard<std::mutex> lock(mu_);
      matchers_.erase(w.seq_id);  // expansion too deep: the rest runs free
    }
  }
}

void step_sampler::feed(const step_input& in) {
  for (const auto& w : in.seqs) {
    if (w.grammar.empty() || !tok_)
      continue;
    // The edge parsed this grammar already; a failure here would be a bug
    // there, and the sequence then runs unconstrained rather than fail.
    std::shared_ptr<const grammar> g;
    try {
      g = grammars_.get(w.grammar);
    } catch (const grammar_error&) {
      continue;
    }
    std::unique_ptr<grammar_matcher> m;
    try {
      m = std::make_unique<grammar_matcher>(std::move(g));
      const auto& vocab = trie();
      for (auto t : w.grammar_prefix)
        if (t >= 0 && t < vocab.vocab_size() && t != tok_->eos_id())
          (void)m->accept(vocab.bytes(t));
    } catch (const grammar_error&) {
      continue;  // expansion too deep: as a grammar that did not compile
    }
    std::lock_guard<std::mutex> lock(mu_);
    matchers_[w.seq_id] = std::move(m);
  }
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
    auto* m = w.constrained ? matcher(w.seq_id) : nullptr;
    token_id tok = -1;
    if (m == nullptr) {
      tok = sample_token(lg, n_vocab, p, pos, hist);
    } else {
      try {
        tok = sample_constrained(*m, lg, n_vocab, p, pos, hist);
        if (tok >= 0 && tok != tok_->eos_id())
          (void)m->accept(trie().bytes(tok));
      } catch (const grammar_error&) {
        // A user grammar whose expansion runs too deep here: the sequence
        // ends (EOS) rather than the step failing for the whole batch.
        tok = tok_->eos_id();
      }
    }
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
  auto* m = w.constrained ? matcher(w.seq_id) : nullptr;
  if (m != nullptr) {
    // The device adds these like a bias: every token the grammar refuses
    // goes to -inf (a long list where the grammar allows few).
    const auto& vocab = trie();
    std::shared_ptr<const token_mask> mask;
    bool failed = false;  // expansion too deep: EOS only, the sequence ends
    try {
      mask = m->rules().mask_for(*m, vocab);
    } catch (const grammar_error&) {
      failed = true;
      mask = std::make_shared<const token_mask>(token_mask((static_cast<size_t>(vocab.vocab_size()) + 63) / 64, 0));
    }
    const token_id eos = tok_->eos_id();
    for (int32_t t = 0; t < vocab.vocab_size(); ++t) {
      const bool ok = t == eos ? (m->can_end() || failed) : mask_has(*mask, t);
      if (!ok)
        entry(t).bias = -std::numeric_limits<float>::infinity();
    }
  }
}

}  // namespace llmux::engine
