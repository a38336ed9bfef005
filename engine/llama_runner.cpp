#include "engine/llama_runner.hpp"

#include <algorithm>
#include <cmath>

namespace llmux::engine {

using kernels::matmul;

llama_runner::llama_runner(std::shared_ptr<const llama_model> model, int block_tokens,
                           int64_t kv_blocks)
  : model_(std::move(model)),
    kv_(model_->hparams().n_layer, model_->hparams().n_head_kv, model_->hparams().head_dim,
        block_tokens, kv_blocks) {
}

llama_runner::llama_runner(std::shared_ptr<const llama_model> model, std::shared_ptr<kv_arena> arena)
  : model_(std::move(model)),
    kv_(model_->hparams().n_layer, model_->hparams().n_head_kv, model_->hparams().head_dim,
        std::move(arena)) {
}

namespace {

void add_bias(float* x, const float* b, int64_t rows, int64_t n) {
  if (b == nullptr)
    return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i)
      x[r * n + i] += b[i];
}

}  // namespace

bool llama_runner::forward(const std::vector<runner_seq>& seqs, std::vector<float>& logits,
                           kernels::thread_pool& pool, runner_scratch& sc) {
  const auto& hp = model_->hparams();
  const int64_t E = hp.n_embd, F = hp.n_ff, D = hp.head_dim;
  const int64_t H = hp.n_head, HKV = hp.n_head_kv, QD = H * D, KVD = HKV * D;
  const int64_t group = H / HKV;

  // Room in the cache for every sequence's new positions.
  for (const auto& s : seqs)
    if (!kv_.reserve(s.id, int64_t{s.pos0} + s.n))
      return false;

  // Each sequence's table, looked up once: the workers below read it without
  // the cache's lock.
  std::vector<const paged_kv_cache::table*> tables(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i)
    tables[i] = kv_.find_table(seqs[i].id);

  // Token rows: which sequence and position each row of the batch is.
  struct row_info {
    size_t seq;
    int64_t pos;
  };
  std::vector<row_info> rows;
  for (size_t i = 0; i < seqs.size(); ++i)
    for (int32_t j = 0; j < seqs[i].n; ++j)
      rows.push_back({i, int64_t{seqs[i].pos0} + j});
  const auto T = static_cast<int64_t>(rows.size());
  if (T == 0) {
    logits.clear();
    return true;
  }
  sc.x.resize(T * E);
  sc.h.resize(T * E);
  sc.q.resize(T * QD);
  sc.k.resize(T * KVD);
  sc.v.resize(T * KVD);
  sc.attn.resize(T * QD);
  sc.gate.resize(T * F);
  sc.up.resize(T * F);
  sc.tmp.resize(T * std::max(E, F));

  int64_t r = 0;
  for (const auto& s : seqs)
    for (int32_t j = 0; j < s.n; ++j)
      kernels::get_row(model_->tok_embd(), s.tokens[j], &sc.x[(r++) * E]);

  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Attention jobs (the same for every layer: see the attention below). A
  // long prefill is cut into chunks of rows, so the threads share one
  // sequence's few kv heads (SmolLM2 has 3: on 2 threads one of them did
  // two thirds); each chunk decodes K/V only up to its own last position.
  // A row's later chunks cost more (they attend to more), so each (seq,
  // head)'s chunks are listed first, last, second, second-to-last, ...: the
  // pool's contiguous ranges of jobs then hold similar work.
  // A sequence stepping one row (decode) has a job per query head instead,
  // reading its K/V from the f16 cache as it goes (nothing to share a
  // decoded copy with but the group's other heads): SmolLM2's 3 kv heads
  // left one of 2 threads with two of them, its 9 query heads split 5/4.
  struct attn_job {
    size_t si;
    int kvh;
    int64_t t0, t1;  // rows [t0, t1) of the step
    int64_t h;       // that query head alone, from the cache; -1: the group's heads
  };
  constexpr int64_t chunk_rows = 32;
  std::vector<attn_job> jobs;  // not thread_local: the pool's threads read it
  int64_t first = 0;
  for (size_t si = 0; si < seqs.size(); ++si) {
    const int64_t n = seqs[si].n;
    const int64_t chunks = (n + chunk_rows - 1) / chunk_rows;
    for (int kvh = 0; kvh < static_cast<int>(HKV); ++kvh) {
      if (n == 1) {
        for (int64_t h = int64_t{kvh} * group; h < (int64_t{kvh} + 1) * group; ++h)
          jobs.push_back({si, kvh, first, first + 1, h});
        continue;
      }
      for (int64_t j = 0; j < chunks; ++j) {
        const int64_t c = j % 2 == 0 ? j / 2 : chunks - 1 - j / 2;
        jobs.push_back({si, kvh, first + c * chunk_rows, first + std::min(n, (c + 1) * chunk_rows), -1});
      }
    }
    first += n;
  }

  for (int layer = 0; layer < hp.n_layer; ++layer) {
    const auto& L = model_->layers()[static_cast<size_t>(layer)];
    kernels::rmsnorm(sc.x.data(), L.attn_norm, hp.norm_eps, T, E, sc.h.data());
    matmul(L.wq, sc.h.data(), T, sc.q.data(), pool);
    matmul(L.wk, sc.h.data(), T, sc.k.data(), pool);
    matmul(L.wv, sc.h.data(), T, sc.v.data(), pool);
    add_bias(sc.q.data(), L.bq, T, QD);
    add_bias(sc.k.data(), L.bk, T, KVD);
    add_bias(sc.v.data(), L.bv, T, KVD);

    // RoPE, then K and V into the cache (f16), row by row.
    for (int64_t t = 0; t < T; ++t) {
      auto p = rows[t].pos;
      kernels::rope_ref(&sc.q[t * QD], static_cast<int>(H), static_cast<int>(D), hp.rope_dim, p,
                        hp.rope_base, hp.rope_neox);
      kernels::rope_ref(&sc.k[t * KVD], static_cast<int>(HKV), static_cast<int>(D), hp.rope_dim, p,
                        hp.rope_base, hp.rope_neox);
      const auto& table = *tables[rows[t].seq];
      for (int64_t h = 0; h < HKV; ++h) {
        kernels::fp32_to_fp16_row(&sc.k[t * KVD + h * D], kv_.k(table, layer, static_cast<int>(h), p), D);
        kernels::fp32_to_fp16_row(&sc.v[t * KVD + h * D], kv_.v(table, layer, static_cast<int>(h), p), D);
      }
    }

    // Attention, one job per (sequence, kv head, chunk of rows): its cached
    // K and V are decoded to f32 once and shared by the group's query heads
    // and by every row of the chunk (a prefill chunk has many); a decode
    // row's job (one query head) reads the f16 cache directly. Each row attends to
    // positions 0..pos; kernels::attention_row rounds as llama.cpp's CPU
    // attention does (with it, log-probabilities agree with llama.cpp's to
    // ~1e-4; without, to ~4e-3).
    pool.parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t begin, int64_t end, int) {
      thread_local std::vector<float> kf, vf, scores;
      thread_local std::vector<const uint16_t*> k_runs, v_runs;
      for (int64_t ji = begin; ji < end; ++ji) {
        const attn_job& job = jobs[static_cast<size_t>(ji)];
        const int64_t ctx = int64_t{rows[job.t1 - 1].pos} + 1;
        if (job.h >= 0) {
          const int64_t bt = kv_.block_tokens();
          k_runs.clear();
          v_runs.clear();
          for (int64_t j = 0; j < ctx; j += bt) {
            k_runs.push_back(kv_.k(*tables[job.si], layer, job.kvh, j));
            v_runs.push_back(kv_.v(*tables[job.si], layer, job.kvh, j));
          }
          scores.resize(static_cast<size_t>(ctx));
          const int64_t t = job.t0;
          kernels::attention_row_f16(&sc.q[t * QD + job.h * D], k_runs.data(), v_runs.data(), bt, ctx, D, scale,
                                     scores.data(), &sc.attn[t * QD + job.h * D]);
          continue;
        }
        kf.resize(static_cast<size_t>(ctx * D));
        vf.resize(static_cast<size_t>(ctx * D));
        scores.resize(static_cast<size_t>(ctx));
        // The cache holds block_tokens positions of one head contiguously.
        for (int64_t j = 0; j < ctx;) {
          const int64_t run = std::min<int64_t>(ctx - j, kv_.block_tokens() - j % kv_.block_tokens());
          kernels::fp16_to_fp32_row(kv_.k(*tables[job.si], layer, job.kvh, j), &kf[j * D], run * D);
          kernels::fp16_to_fp32_row(kv_.v(*tables[job.si], layer, job.kvh, j), &vf[j * D], run * D);
          j += run;
        }
        for (int64_t t = job.t0; t < job.t1; ++t)
          for (int64_t h = int64_t{job.kvh} * group; h < (int64_t{job.kvh} + 1) * group; ++h)
            kernels::attention_row(&sc.q[t * QD + h * D], kf.data(), vf.data(), rows[t].pos + 1, D,
                                   scale, scores.data(), &sc.attn[t * QD + h * D]);
      }
    });

    matmul(L.wo, sc.attn.data(), T, sc.tmp.data(), pool);
    for (int64_t i = 0; i < T * E; ++i)
      sc.x[i] += sc.tmp[i];

    kernels::rmsnorm(sc.x.data(), L.ffn_norm, hp.norm_eps, T, E, sc.h.data());
    matmul(L.w_gate, sc.h.data(), T, sc.gate.data(), pool);
    matmul(L.w_up, sc.h.data(), T, sc.up.data(), pool);
    kernels::swiglu(sc.gate.data(), sc.up.data(), T * F, sc.gate.data());
    matmul(L.w_down, sc.gate.data(), T, sc.tmp.data(), pool);
    for (int64_t i = 0; i < T * E; ++i)
      sc.x[i] += sc.tmp[i];
  }

  // Logits only for the last row of sequences that sample.
  std::vector<int64_t> out_rows;
  int64_t row = 0;
  for (const auto& s : seqs) {
    row += s.n;
    if (s.logits && s.n > 0)
      out_rows.push_back(row - 1);
  }
  auto n_out = static_cast<int64_t>(out_rows.size());
  std::vector<float> last(static_cast<size_t>(n_out * E));
  for (int64_t i = 0; i < n_out; ++i)
    std::copy_n(&sc.x[out_rows[i] * E], E, &last[i * E]);
  kernels::rmsnorm(last.data(), model_->output_norm(), hp.norm_eps, n_out, E, last.data());
  logits.resize(static_cast<size_t>(n_out * hp.n_vocab));
  matmul(model_->output(), last.data(), n_out, logits.data(), pool);
  return true;
}

}  // namespace llmux::engine
