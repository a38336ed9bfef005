#include "engine/cpu_step_profiler.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>
#include <tuple>

#include "engine/llama_runner.hpp"
#include "engine/paged_kv_cache.hpp"
#include "kernels/cpu/thread_pool.hpp"

namespace llmux::engine {

std::vector<int32_t> filler_tokens(int n, int vocab, int salt) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  const int span = std::max(vocab - 100, 1);
  for (int i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = std::min(vocab - 1, 100 + (i * 7919 + salt * 104729) % span);
  return out;
}

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::vector<int> sorted_positive(std::vector<int> v, const char* what) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  if (v.empty() || v.front() <= 0)
    throw std::invalid_argument(std::string{"cpu profile: "} + what + " must be positive (and not empty)");
  return v;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Mean step time in ms, to the microsecond (as MuxServe's file).
double mean_ms(double total_seconds, int steps) {
  return std::round(total_seconds / steps * 1e6) / 1e3;
}

/// (share %, batch, length) → point; both kinds fill it, unmeasured stay -1.
using point_map = std::map<std::tuple<int, int, int>, profile_point>;

void run_step(llama_runner& runner, const std::vector<runner_seq>& seqs, std::vector<float>& logits,
              kernels::thread_pool& pool) {
  if (!runner.forward(seqs, logits, pool))
    throw std::runtime_error("cpu profile: the KV cache could not hold a step (a sizing bug)");
}

/// Prefill points, thread count by thread count.
void measure_prefill(const std::shared_ptr<const llama_model>& model, const cpu_profile_options& o,
                     const std::vector<int>& threads, const std::vector<int>& batches,
                     const std::vector<int>& lengths, int sweep, point_map& out,
                     const cpu_profile_progress& progress) {
  const auto& hp = model->hparams();
  const int64_t per_tb = int64_t{hp.n_layer} * hp.n_head_kv;
  // One private cache for every point, big enough for the largest one:
  // its memory is touched by the first steps and reused after.
  int64_t blocks = per_tb;
  for (int b : batches)
    for (int l : lengths)
      if (int64_t{b} * l <= o.prefill_token_budget)
        blocks = std::max(blocks, b * ceil_div(l, o.block_tokens) * per_tb);
  llama_runner runner{model, o.block_tokens, blocks};
  std::vector<float> logits;
  uint64_t next_id = 1;
  auto step = [&](int batch, int length, kernels::thread_pool& pool) {
    std::vector<std::vector<int32_t>> prompts;
    std::vector<runner_seq> seqs;
    for (int b = 0; b < batch; ++b)
      prompts.push_back(filler_tokens(length, hp.n_vocab, b + 1));
    for (int b = 0; b < batch; ++b)
      seqs.push_back({next_id++, prompts[static_cast<size_t>(b)].data(), length, 0, true});
    auto t0 = clock_type::now();
    run_step(runner, seqs, logits, pool);
    const double s = seconds_since(t0);
    for (const auto& sq : seqs)
      runner.release(sq.id);
    return s;
  };
  const int max_threads = threads.back();
  for (int t : threads) {
    kernels::thread_pool pool{t};
    const int share = static_cast<int>(std::lround(100.0 * t / max_threads));
    (void)step(1, lengths.front(), pool);  // untimed: the first step of a pool pays its start-up
    for (int b : batches)
      for (int l : lengths) {
        double ms = -1;
        if (int64_t{b} * l <= o.prefill_token_budget) {
          double total = 0;
          int n = 0;
          do {
            total += step(b, l, pool);
            ++n;
          } while (n < o.prefill_repeats && total < o.point_seconds);
          ms = mean_ms(total, n);
        }
        out[{share, b, l}].prefill_ms = ms;
        if (progress)
          progress(sweep, "prefill", t, share, b, l, ms);
      }
  }
}

/// Decode points, length by length (the KV of a length is built once).
void measure_decode(const std::shared_ptr<const llama_model>& model, const cpu_profile_options& o,
                    const std::vector<int>& threads, const std::vector<int>& batches,
                    const std::vector<int>& lengths, int sweep, point_map& out,
                    const cpu_profile_progress& progress) {
  const auto& hp = model->hparams();
  const int64_t per_tb = int64_t{hp.n_layer} * hp.n_head_kv;
  const int max_batch = batches.back();
  const int max_threads = threads.back();
  std::vector<float> logits;
  for (int l : lengths) {
    // The source prompt's blocks, then each sequence's copy with room for
    // the decoded position l.
    const int64_t src_tb = ceil_div(l, o.block_tokens);
    const int64_t seq_tb = ceil_div(int64_t{l} + 1, o.block_tokens);
    auto arena = std::make_shared<kv_arena>((src_tb + max_batch * seq_tb) * per_tb, o.block_tokens,
                                            hp.head_dim);
    llama_runner runner{model, arena};
    int32_t next_block = 0;
    auto grant = [&](int64_t token_blocks) {
      std::vector<int32_t> ids(static_cast<size_t>(token_blocks * per_tb));
      for (auto& id : ids)
        id = next_block++;
      return ids;
    };
    const uint64_t source = 1u << 30;
    const auto source_ids = grant(src_tb);
    runner.adopt(source, source_ids);
    {
      auto prompt = filler_tokens(l, hp.n_vocab, 0);
      kernels::thread_pool pool{max_threads};
      run_step(runner, {{source, prompt.data(), l, 0, true}}, logits, pool);
    }
    runner.release(source);  // shared mode: forgets the table, the blocks stay
    const size_t block_elems = 2 * static_cast<size_t>(o.block_tokens) * static_cast<size_t>(hp.head_dim);
    for (int b = 0; b < max_batch; ++b) {
      const auto ids = grant(seq_tb);
      for (size_t i = 0; i < source_ids.size(); ++i)
        std::memcpy(arena->block(ids[i]), arena->block(source_ids[i]), block_elems * sizeof(uint16_t));
      runner.adopt(static_cast<uint64_t>(b + 1), ids);
    }
    const auto feed = filler_tokens(max_batch, hp.n_vocab, 7);

    for (int t : threads) {
      kernels::thread_pool pool{t};
      const int share = static_cast<int>(std::lround(100.0 * t / max_threads));
      for (int batch : batches) {
        std::vector<runner_seq> seqs;
        for (int b = 0; b < batch; ++b)
          seqs.push_back({static_cast<uint64_t>(b + 1), &feed[static_cast<size_t>(b)], 1, l, true});
        run_step(runner, seqs, logits, pool);  // untimed
        double total = 0;
        int n = 0;
        do {
          auto t0 = clock_type::now();
          run_step(runner, seqs, logits, pool);
          total += seconds_since(t0);
          ++n;
        } while (n < o.decode_steps && total < o.point_seconds);
        const double ms = mean_ms(total, n);
        out[{share, batch, l}].decode_ms = ms;
        if (progress)
          progress(sweep, "decode", t, share, batch, l, ms);
      }
    }
  }
}

}  // namespace

std::vector<int> cpu_profile_lengths(const llama_model& model, const cpu_profile_options& opts) {
  const int ctx = model.hparams().n_ctx_train;
  std::vector<int> out;
  for (int l : sorted_positive(opts.lengths, "lengths"))
    if (ctx <= 0 || l + 1 <= ctx)
      out.push_back(l);
  return out;
}

step_profile measure_cpu_profile(const std::shared_ptr<const llama_model>& model,
                                 const cpu_profile_options& opts, const cpu_profile_progress& progress) {
  const auto threads = sorted_positive(opts.threads, "thread counts");
  const auto batches = sorted_positive(opts.batches, "batches");
  const auto lengths = cpu_profile_lengths(*model, opts);
  if (lengths.empty())
    throw std::invalid_argument("cpu profile: no length fits the model's context of "
                                + std::to_string(model->hparams().n_ctx_train) + " tokens");
  point_map points;
  for (int sweep = 1; sweep <= std::max(opts.sweeps, 1); ++sweep) {
    point_map this_sweep;
    measure_prefill(model, opts, threads, batches, lengths, sweep, this_sweep, progress);
    measure_decode(model, opts, threads, batches, lengths, sweep, this_sweep, progress);
    for (const auto& [at, p] : this_sweep) {
      auto [it, first] = points.emplace(at, p);
      if (first)
        continue;
      auto fastest = [](double a, double b) { return a <= 0 ? b : b <= 0 ? a : std::min(a, b); };
      it->second.prefill_ms = fastest(it->second.prefill_ms, p.prefill_ms);
      it->second.decode_ms = fastest(it->second.decode_ms, p.decode_ms);
    }
  }
  step_profile out;
  for (const auto& [at, p] : points)
    out.set(opts.key, 1, std::get<0>(at), std::get<1>(at), std::get<2>(at), p);
  return out;
}

}  // namespace llmux::engine
