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

  // The chain sees the candidates sorted by logit, highest first (ties by
  // id), but rarely needs more than the head of that order: the sort is
  // extended on demand, and sums over the whole candidate set are taken
  // unsorted. (A full sort of a 49k vocabulary per row was most of a
  // batch-32 step.)
  std::vector<token_id> ids(static_cast<size_t>(n_vocab));
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](token_id a, token_id b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t sorted = 0;
  size_t candidates = ids.size();
  auto sorted_to = [&](size_t k) {  // ids[0, k) in order
    k = std::min(k, candidates);
    if (k <= sorted)
      return;
    const size_t want = std::max(k, std::min(candidates, std::max<size_t>(64, sorted * 8)));
    std::partial_sort(ids.begin() + static_cast<std::ptrdiff_t>(sorted),
                      ids.begin() + static_cast<std::ptrdiff_t>(want),
                      ids.begin() + static_cast<std::ptrdiff_t>(candidates), by_logit);
    sorted = want;
  };
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < candidates) {
    sorted_to(static_cast<size_t>(p.top_k));
    candidates = static_cast<size_t>(p.top_k);
    sorted = std::min(sorted, candidates);
  }
  sorted_to(1);
  const double mx = logits[ids[0]];
  auto weight = [&](size_t i, double temp) { return std::exp((logits[ids[i]] - mx) / temp); };
  auto total = [&](size_t n, double temp) {  // over ids[0, n), which is the whole set or a sorted head
    double z = 0;
    for (size_t i = 0; i < n; ++i)
      z += weight(i, temp);
    return z;
  };

  // top-p and min-p see the probabilities before temperature, as llama.cpp's.
  size_t keep = candidates;
  if (p.top_p < 1.0f || p.min_p > 0.0f) {
    const double z1 = total(candidates, 1.0);
    if (p.top_p < 1.0f) {
      double cum = 0;
      size_t n = 0;
      while (n < keep) {
        sorted_to(n + 1);
        cum += weight(n++, 1.0) / z1;
        if (cum >= p.top_p)
          break;
      }
      keep = std::max<size_t>(1, n);
    }
    if (p.min_p > 0.0f) {
      const double cut = (weight(0, 1.0) / z1) * p.min_p;
      size_t n = 0;
      while (n < keep) {
        sorted_to(n + 1);
        if (weight(n, 1.0) / z1 < cut)
          break;
        ++n;
      }
      keep = std::max<size_t>(1, n);
    }
  }

  const double zt = total(keep, p.temperature);
  const double target = sample_uniform(p.seed, position) * zt;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    sorted_to(i + 1);
    cum += weight(i, p.temperature);
    if (target < cum)
      return ids[i];
  }
  sorted_to(keep);
  return ids[keep - 1];
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
