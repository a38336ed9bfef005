#include "engine/sampler.hpp"

#include "engine/mix_hash.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

namespace llmux::engine {

namespace {

token_id argmax(const float* logits, int32_t n) {
  token_id best = 0;
  for (int32_t i = 1; i < n; ++i)
    if (logits[i] > logits[best])
      best = i;
  return best;
}

}  // namespace

token_id sample_token(const float* raw, int32_t n_vocab, const sampling_params& p,
                      int64_t position, const token_history* history) {
  if (n_vocab <= 0)
    return -1;
  const float* logits = raw;
  std::vector<float> adjusted;
  bool bias = p.bias_tokens != nullptr && !p.bias_tokens->empty();
  if (bias || (history != nullptr && p.uses_history())) {
    adjusted.assign(raw, raw + n_vocab);
    if (history != nullptr) {
      if (p.repetition_penalty != 1.0f)
        for (auto t : history->seen)
          if (t >= 0 && t < n_vocab) {
            auto& l = adjusted[static_cast<size_t>(t)];
            l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
          }
      for (const auto& [t, count] : history->output_counts)
        if (t >= 0 && t < n_vocab)
          adjusted[static_cast<size_t>(t)] -=
            p.presence_penalty + p.frequency_penalty * static_cast<float>(count);
    }
    if (bias) {
      // A token listed twice gets its biases' sum, added once (as the
      // device sampler adds it).
      std::unordered_map<token_id, float> sums;
      for (size_t i = 0; i < p.bias_tokens->size() && i < p.bias_values->size(); ++i) {
        auto t = (*p.bias_tokens)[i];
        if (t >= 0 && t < n_vocab)
          sums[t] += (*p.bias_values)[i];
      }
      for (const auto& [t, b] : sums)
        adjusted[static_cast<size_t>(t)] += b;
    }
    logits = adjusted.data();
  }
  if (p.temperature <= 0)
    return argmax(logits, n_vocab);

  // Candidates sorted by logit, highest first (stable: ties by id).
  std::vector<token_id> ids(static_cast<size_t>(n_vocab));
  std::iota(ids.begin(), ids.end(), 0);
  size_t keep = ids.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep)
    keep = static_cast<size_t>(p.top_k);
  auto by_logit = [&](token_id a, token_id b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end(),
                    by_logit);
  ids.resize(keep);

  // Probabilities of the candidates (before temperature, as llama.cpp's
  // top-p and min-p see them).
  auto probs_of = [&](float temp) {
    std::vector<double> pr(ids.size());
    double mx = logits[ids[0]];
    double sum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      pr[i] = std::exp((logits[ids[i]] - mx) / temp);
      sum += pr[i];
    }
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

double sample_uniform(uint64_t seed, int64_t position) {
  auto bits = mix64(mix64(seed) ^ static_cast<uint64_t>(position));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

void log_softmax(const float* logits, int32_t n, std::vector<float>& out) {
  out.resize(static_cast<size_t>(std::max(0, n)));
  if (n <= 0)
    return;
  double mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int32_t i = 0; i < n; ++i)
    sum += std::exp(logits[i] - mx);
  double lse = mx + std::log(sum);
  for (int32_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = static_cast<float>(logits[i] - lse);
}

token_logprobs top_logprobs(const float* logits, int32_t n, token_id chosen, int k) {
  std::vector<float> lp;
  log_softmax(logits, n, lp);
  token_logprobs out;
  if (chosen >= 0 && chosen < n)
    out.logprob = lp[static_cast<size_t>(chosen)];
  k = std::clamp(k, 0, n);
  std::vector<token_id> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](token_id a, token_id b) {
    return lp[static_cast<size_t>(a)] > lp[static_cast<size_t>(b)]
           || (lp[static_cast<size_t>(a)] == lp[static_cast<size_t>(b)] && a < b);
  });
  for (int i = 0; i < k; ++i) {
    out.top_ids.push_back(ids[static_cast<size_t>(i)]);
    out.top_logprobs.push_back(lp[static_cast<size_t>(ids[static_cast<size_t>(i)])]);
  }
  return out;
}

}  // namespace llmux::engine
