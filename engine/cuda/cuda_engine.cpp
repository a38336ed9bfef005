#include "engine/cuda/cuda_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "engine/sampler.hpp"
#include "engine/vocab.hpp"
#include "kernels/cpu/int8_rows.hpp"
#include "kernels/cpu/ops.hpp"

namespace llmux::engine {

namespace cu = llmux::cuda;

namespace {

/// n floats in the engine's device type, at dst (host memory).
void encode_row(cu::act t, const float* x, int64_t n, void* dst) {
  if (t == cu::act::f32) {
    std::memcpy(dst, x, static_cast<size_t>(n) * 4);
  } else if (t == cu::act::f16) {
    kernels::fp32_to_fp16_row(x, static_cast<uint16_t*>(dst), n);
  } else {
    auto* o = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, &x[i], 4);
      u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
      o[i] = static_cast<uint16_t>(u >> 16);
    }
  }
}

}  // namespace

void* cuda_engine::alloc(size_t bytes, bool graph_visible) {
  void* p = nullptr;
  cu::check(cudaMalloc(&p, std::max<size_t>(bytes, 1)), "cudaMalloc");
  owned_.push_back(p);
  if (graph_visible)
    ++buffers_epoch_;  // captured graphs that used an older buffer are stale
  return p;
}

void* cuda_engine::upload_matrix(const kernels::matrix_view& m, index_range rows, index_range cols) {
  if (rows.end == 0)
    rows = {0, m.rows};
  if (cols.end == 0)
    cols = {0, m.cols};
  const int64_t R = rows.size(), C = cols.size();
  const size_t es = cu::act_bytes(opts_.type);
  auto* dev = static_cast<uint8_t*>(alloc(static_cast<size_t>(R * C) * es));
  if (m.data == nullptr) {
    // Dummy weights (a shape-only model), made here: std 0.02 as vLLM's dummy.
    cu::fill_uniform(opts_.type, dev, R * C, ++dummy_seed_, 0.02f * std::sqrt(3.0f), stream_);
    cu::check(cudaStreamSynchronize(stream_), "dummy weights");
    weight_bytes_ += R * C * static_cast<int64_t>(es);
    return dev;
  }
  // Dequantise a slab of rows at a time on the host, keep the slice's
  // columns (a tensor-parallel rank's), convert, copy.
  const int64_t slab = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(m.cols * 4, 1));
  std::vector<float> row(static_cast<size_t>(m.cols));
  std::vector<uint8_t> buf;
  for (int64_t r0 = 0; r0 < R; r0 += slab) {
    const int64_t n = std::min(slab, R - r0);
    buf.resize(static_cast<size_t>(n * C) * es);
    for (int64_t r = 0; r < n; ++r) {
      kernels::get_row(m, rows.begin + r0 + r, row.data());
      encode_row(opts_.type, row.data() + cols.begin, C, buf.data() + static_cast<size_t>(r * C) * es);
    }
    cu::check(cudaMemcpy(dev + static_cast<size_t>(r0 * C) * es, buf.data(), buf.size(), cudaMemcpyHostToDevice),
              "upload weights");
  }
  weight_bytes_ += R * C * static_cast<int64_t>(es);
  return dev;
}

cuda_engine::dev_matrix cuda_engine::upload_weight(const kernels::matrix_view& m, index_range rows,
                                                   index_range cols) {
  if (rows.end == 0)
    rows = {0, m.rows};
  if (cols.end == 0)
    cols = {0, m.cols};
  dev_matrix d;
  d.n = rows.size();
  d.k = cols.size();
  if (!opts_.int8) {
    d.w = upload_matrix(m, rows, cols);
    return d;
  }
  // Weight-only int8: q [n, k] and a scale per output row, quantized on the
  // host from the file's rows (their slice, for a tensor-parallel rank).
  auto* q = static_cast<int8_t*>(alloc(static_cast<size_t>(d.n * d.k)));
  auto* scales = static_cast<float*>(alloc(static_cast<size_t>(d.n) * 4));
  d.q8 = cu::int8_weights{q, scales, d.n, d.k};
  weight_bytes_ += d.n * d.k + d.n * 4;
  int8_scratch_bytes_ = std::max(int8_scratch_bytes_, cu::int8_scratch_bytes(opts_.type, d.n, d.k));
  if (m.data == nullptr) {
    // Dummy: uniform q, scales giving vLLM's dummy spread (std 0.02).
    cu::fill_uniform_int8(q, d.n * d.k, ++dummy_seed_, stream_);
    cu::fill_value(cu::act::f32, scales, d.n, 0.02f * std::sqrt(3.0f) / 127.0f, stream_);
    cu::check(cudaStreamSynchronize(stream_), "dummy int8 weights");
    return d;
  }
  const int64_t slab = std::max<int64_t>(1, (int64_t{16} << 20) / std::max<int64_t>(m.cols * 4, 1));
  std::vector<float> row(static_cast<size_t>(m.cols)), sliced;
  std::vector<int8_t> qbuf;
  std::vector<float> sbuf;
  for (int64_t r0 = 0; r0 < d.n; r0 += slab) {
    const int64_t n = std::min(slab, d.n - r0);
    sliced.resize(static_cast<size_t>(n * d.k));
    for (int64_t r = 0; r < n; ++r) {
      kernels::get_row(m, rows.begin + r0 + r, row.data());
      std::copy_n(row.data() + cols.begin, d.k, sliced.data() + r * d.k);
    }
    qbuf.resize(sliced.size());
    sbuf.resize(static_cast<size_t>(n));
    kernels::quantize_int8_rows(sliced.data(), n, d.k, qbuf.data(), sbuf.data());
    cu::check(cudaMemcpy(q + r0 * d.k, qbuf.data(), qbuf.size(), cudaMemcpyHostToDevice), "upload int8 weights");
    cu::check(cudaMemcpy(scales + r0, sbuf.data(), sbuf.size() * 4, cudaMemcpyHostToDevice), "upload int8 scales");
  }
  return d;
}

void cuda_engine::mm(const dev_matrix& w, const void* x, int64_t m, void* y, cudaStream_t st) {
  if (w.w != nullptr)
    blas_->matmul(opts_.type, w.w, x, m, w.n, w.k, y);
  else
    cu::matmul_int8(opts_.type, w.q8, x, m, y, opts_.type, int8_scratch_, int8_scratch_bytes_, *blas_, st);
}

void* cuda_engine::upload_vector(const float* v, int64_t n) {
  const size_t es = cu::act_bytes(opts_.type);
  if (v == nullptr) {  // a shape-only model's norm weights: ones
    void* dev = alloc(static_cast<size_t>(n) * es);
    cu::fill_value(opts_.type, dev, n, 1.0f, stream_);
    cu::check(cudaStreamSynchronize(stream_), "dummy norms");
    weight_bytes_ += n * static_cast<int64_t>(es);
    return dev;
  }
  std::vector<uint8_t> buf(static_cast<size_t>(n) * es);
  encode_row(opts_.type, v, n, buf.data());
  void* dev = alloc(buf.size());
  cu::check(cudaMemcpy(dev, buf.data(), buf.size(), cudaMemcpyHostToDevice), "upload norm");
  weight_bytes_ += static_cast<int64_t>(buf.size());
  return dev;
}

cuda_engine::cuda_engine(std::shared_ptr<const llama_model> model, std::shared_ptr<const tokenizer> tok,
                         cuda_engine_options opts)
  : model_(std::move(model)), tok_(std::move(tok)), opts_(opts) {
  sampler_.set_vocab(tok_);
  std::string why;
  if (!cu::device_available(&why))
    throw cu::cuda_error("no usable CUDA device: " + why);
  const auto& hp = model_->hparams();
  if (hp.arch != "llama" && hp.arch != "qwen2")
    throw std::runtime_error("the cuda backend runs arch 'llama' and 'qwen2'; this model is '" + hp.arch + "'");
  if (hp.head_dim > 256)
    throw std::runtime_error("the cuda backend's attention takes heads up to 256 values; this model has "
                             + std::to_string(hp.head_dim));
  int count = 0;
  cu::check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (opts_.device < 0 || opts_.device >= count)
    throw cu::cuda_error("CUDA device " + std::to_string(opts_.device) + " does not exist; this machine has " +
                         std::to_string(count));
  // This engine's rank of the model (all of it at tp_size 1).
  shard_ = make_tp_shard(hp, opts_.tp_rank, opts_.tp_size);
  if (opts_.tp_size > 1 && opts_.comm == nullptr)
    throw std::runtime_error("tensor parallelism over " + std::to_string(opts_.tp_size) + " GPUs needs a communicator");
  cu::check(cudaSetDevice(opts_.device), "cudaSetDevice");
  cu::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  blas_ = std::make_unique<cu::blas>(stream_);
  try {
    tok_embd_ = upload_matrix(model_->tok_embd());
    if (root()) {  // only rank 0 computes logits
      output_norm_ = upload_vector(model_->output_norm(), hp.n_embd);
      output_ = model_->output().data == model_->tok_embd().data ? tok_embd_ : upload_matrix(model_->output());
    }
    const auto& sh = shard_;
    for (const auto& L : model_->layers()) {
      auto bias = [&](const float* b, index_range r) { return b == nullptr ? nullptr : upload_vector(b + r.begin, r.size()); };
      // Column-parallel q/k/v and gate/up: the rank's output rows;
      // row-parallel o and down: its input columns.
      layers_.push_back({upload_vector(L.attn_norm, hp.n_embd), upload_weight(L.wq, sh.q_rows),
                         upload_weight(L.wk, sh.kv_rows), upload_weight(L.wv, sh.kv_rows),
                         upload_weight(L.wo, {}, sh.q_rows), upload_vector(L.ffn_norm, hp.n_embd),
                         upload_weight(L.w_gate, sh.ff_rows), upload_weight(L.w_up, sh.ff_rows),
                         upload_weight(L.w_down, {}, sh.ff_rows), bias(L.bq, sh.q_rows), bias(L.bk, sh.kv_rows),
                         bias(L.bv, sh.kv_rows)});
    }
    if (int8_scratch_bytes_ > 0)  // int8 prefill GEMMs dequantize a matrix here first
      int8_scratch_ = alloc(int8_scratch_bytes_);
    // One token-block more than the pool (ids kv_blocks .. kv_blocks +
    // per_tb - 1, never granted): where a graph's padded rows write and read.
    const int per_tb = hp.n_layer * hp.n_head_kv;
    if (auto& slot = opts_.shared_kv) {
      if (slot->blocks != opts_.kv_blocks || slot->block_tokens != opts_.block_tokens
          || slot->max_head_dim < hp.head_dim || slot->scratch_blocks < per_tb)
        throw std::runtime_error("the unit's GPU KV memory does not fit this model (blocks "
                                 + std::to_string(slot->blocks) + " of " + std::to_string(slot->block_tokens)
                                 + " tokens, heads up to " + std::to_string(slot->max_head_dim) + ")");
      block_elems_ = 2 * int64_t{opts_.block_tokens} * slot->max_head_dim;
      std::lock_guard<std::mutex> lock(slot->mu);
      auto& memory = slot->memory[opts_.device];  // one per GPU of the unit
      if (!memory) {
        void* p = nullptr;
        cu::check(cudaMalloc(&p, static_cast<size_t>((slot->blocks + slot->scratch_blocks) * block_elems_ * 2)),
                  "the unit's KV memory");
        memory = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
      }
      shared_arena_ = memory;
      arena_ = static_cast<uint16_t*>(shared_arena_.get());
    } else {
      block_elems_ = 2 * int64_t{opts_.block_tokens} * hp.head_dim;
      arena_ = static_cast<uint16_t*>(alloc(static_cast<size_t>((opts_.kv_blocks + per_tb) * block_elems_ * 2)));
    }
    kv_bytes_ = opts_.kv_blocks * block_elems_ * 2;
  } catch (...) {
    for (void* p : owned_)
      cudaFree(p);
    owned_.clear();
    blas_.reset();
    cudaStreamDestroy(stream_);
    throw;
  }
}

cuda_engine::~cuda_engine() {
  cudaSetDevice(opts_.device);  // the current device is per thread: this engine's
  cudaDeviceSynchronize();      // every stream: the engine's and its partitions'
  for (auto& [key, g] : graphs_)
    cudaGraphExecDestroy(g.exec);
  for (void* p : owned_)
    cudaFree(p);
  blas_.reset();
  cudaStreamDestroy(stream_);
}

void cuda_engine::ensure_rows(int64_t rows, int64_t out_rows) {
  const auto& hp = model_->hparams();
  const size_t es = cu::act_bytes(opts_.type);
  if (rows > rows_cap_) {
    const int64_t cap = std::max<int64_t>(rows, rows_cap_ * 2);
    const int64_t E = hp.n_embd, QD = int64_t{shard_.n_head} * hp.head_dim,
                  KVD = int64_t{shard_.n_head_kv} * hp.head_dim;
    auto act_buf = [&](int64_t width) { return alloc(static_cast<size_t>(cap * width) * es); };
    x_ = act_buf(E);
    h_ = act_buf(E);
    q_ = act_buf(QD);
    k_ = act_buf(KVD);
    v_ = act_buf(KVD);
    attn_ = act_buf(QD);
    tmp_ = act_buf(E);
    gate_ = act_buf(shard_.n_ff);
    up_ = act_buf(shard_.n_ff);
    d_tokens_ = static_cast<int32_t*>(alloc(static_cast<size_t>(cap) * 4));
    d_pos_ = static_cast<int32_t*>(alloc(static_cast<size_t>(cap) * 4));
    d_start_ = static_cast<int32_t*>(alloc(static_cast<size_t>(cap) * 4));
    rows_cap_ = cap;  // the old buffers stay owned until the engine goes (rare growth)
  }
  if (out_rows > out_cap_) {
    const int64_t cap = std::max<int64_t>(out_rows, out_cap_ * 2);
    hsel_ = alloc(static_cast<size_t>(cap * hp.n_embd) * es);
    logits_ = static_cast<float*>(alloc(static_cast<size_t>(cap) * hp.n_vocab * 4));
    d_out_rows_ = static_cast<int32_t*>(alloc(static_cast<size_t>(cap) * 4));
    d_picked_ = static_cast<int32_t*>(alloc(static_cast<size_t>(cap) * 4));
    out_cap_ = cap;
  }
}

void cuda_engine::forward(int64_t T, int64_t n_out, cudaStream_t st) {
  const auto& hp = model_->hparams();
  const int per_tb = hp.n_layer * hp.n_head_kv;
  const auto t = opts_.type;
  // This rank's heads and FFN width (the whole model at tp_size 1).
  const int n_head = shard_.n_head;
  const int64_t E = hp.n_embd, F = shard_.n_ff, D = hp.head_dim;
  const int64_t QD = int64_t{n_head} * D, KVD = int64_t{shard_.n_head_kv} * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const cu::paged_kv kv{arena_,   block_elems_, opts_.block_tokens, hp.head_dim,     shard_.n_head_kv, per_tb,
                        d_tables_, d_start_,    d_pos_,             shard_.head_base, hp.n_head_kv};
  cu::embedding(t, tok_embd_, d_tokens_, T, E, x_, st);
  for (int l = 0; l < hp.n_layer; ++l) {
    const auto& L = layers_[static_cast<size_t>(l)];
    // x += the last layer's FFN output (none before layer 0); h = norm(x).
    cu::rmsnorm(t, l == 0 ? x_ : tmp_, l == 0 ? nullptr : x_, l == 0 ? nullptr : x_, L.attn_norm, hp.norm_eps,
                T, E, h_, st);
    mm(L.wq, h_, T, q_, st);
    mm(L.wk, h_, T, k_, st);
    mm(L.wv, h_, T, v_, st);
    // qwen2's biases.
    if (L.bq != nullptr)
      cu::add_bias(t, q_, L.bq, T, QD, st);
    if (L.bk != nullptr)
      cu::add_bias(t, k_, L.bk, T, KVD, st);
    if (L.bv != nullptr)
      cu::add_bias(t, v_, L.bv, T, KVD, st);
    cu::rope(t, q_, T, n_head, hp.head_dim, hp.rope_dim, d_pos_, hp.rope_base, hp.rope_neox, st);
    cu::rope(t, k_, T, shard_.n_head_kv, hp.head_dim, hp.rope_dim, d_pos_, hp.rope_base, hp.rope_neox, st);
    cu::kv_append(t, k_, v_, T, l, kv, st);
    if (n_tiles_ > 0) {
      // Prompt rows on tensor cores, 16 rows of a sequence at a time; the
      // step's decode rows with the per-row kernel.
      cu::paged_attention_tiled(t, q_, d_tiles_, n_tiles_, n_head, l, scale, kv, attn_, st);
      cu::paged_attention(t, q_, n_lone_, n_head, l, scale, kv, attn_, st, d_tiles_ + 2 * n_tiles_);
    } else {
      cu::paged_attention(t, q_, T, n_head, l, scale, kv, attn_, st);
    }
    mm(L.wo, attn_, T, tmp_, st);
    if (opts_.comm != nullptr)  // row-parallel o: the ranks' partial sums
      cu::all_reduce_sum(t, tmp_, T * E, opts_.comm, st);
    // x += attention output; h = norm(x).
    cu::rmsnorm(t, tmp_, x_, x_, L.ffn_norm, hp.norm_eps, T, E, h_, st);
    mm(L.w_gate, h_, T, gate_, st);
    mm(L.w_up, h_, T, up_, st);
    cu::swiglu(t, gate_, up_, T * F, gate_, st);
    mm(L.w_down, gate_, T, tmp_, st);
    if (opts_.comm != nullptr)  // row-parallel down
      cu::all_reduce_sum(t, tmp_, T * E, opts_.comm, st);
  }
  if (n_out > 0) {
    // x += the last FFN output; the output norm; logits of the rows that sample.
    cu::rmsnorm(t, tmp_, x_, x_, output_norm_, hp.norm_eps, T, E, h_, st);
    cu::embedding(t, h_, d_out_rows_, n_out, E, hsel_, st);
    blas_->matmul(t, output_, hsel_, n_out, hp.n_vocab, E, logits_, cu::act::f32);
  }
}

step_output cuda_engine::step(const step_input& in) {
  std::lock_guard<std::mutex> lock(step_mu_);
  prepare_locked(in);
  return run_locked(in);
}

void cuda_engine::prepare(const step_input& in) {
  std::lock_guard<std::mutex> lock(step_mu_);
  prepare_locked(in);
}

step_output cuda_engine::run(const step_input& in) {
  std::lock_guard<std::mutex> lock(step_mu_);
  return run_locked(in);
}

void cuda_engine::prepare_locked(const step_input& in) {
  // The current device is per host thread, and steps come from the unit's
  // partition threads (or a tensor-parallel rank's): this engine's GPU.
  cu::check(cudaSetDevice(opts_.device), "cudaSetDevice");
  auto& pend = pending_;
  pend = pending_step{};
  pend.t0 = std::chrono::steady_clock::now();
  // The job's SM partition (set_job_partition), else the engine's stream.
  cudaStream_t st = lane_stream_[in.job == job_kind::decode ? 1 : 0];
  if (st == nullptr)
    st = stream_;
  const auto& hp = model_->hparams();
  const int per_tb = hp.n_layer * hp.n_head_kv;

  for (auto id : in.released)
    tables_.erase(id);
  sampler_.release(in.released);
  for (const auto& w : in.seqs) {
    if (w.kv_blocks.empty())
      continue;
    if (w.kv_blocks.size() % static_cast<size_t>(per_tb) != 0)
      throw std::invalid_argument("KV table grant of " + std::to_string(w.kv_blocks.size())
                                  + " block ids is not whole token-blocks of " + std::to_string(per_tb));
    for (auto id : w.kv_blocks)
      if (id < 0 || id >= opts_.kv_blocks)
        throw std::invalid_argument("KV block id " + std::to_string(id) + " outside the unit's "
                                    + std::to_string(opts_.kv_blocks) + " blocks");
    auto& table = tables_[w.seq_id];
    table.insert(table.end(), w.kv_blocks.begin(), w.kv_blocks.end());
  }
  sampler_.feed(in);

  // The step's rows: every token fed, its position, its sequence's table.
  std::vector<int32_t> tokens, positions, starts, out_rows, tables;
  for (const auto& w : in.seqs) {
    if (w.tokens.empty())
      continue;
    const auto& table = tables_[w.seq_id];
    const auto held = static_cast<int64_t>(table.size() / static_cast<size_t>(per_tb)) * opts_.block_tokens;
    if (held < int64_t{w.context_len} + static_cast<int64_t>(w.tokens.size()))
      throw std::runtime_error("KV table of sequence " + std::to_string(w.seq_id) + " holds " + std::to_string(held)
                               + " tokens; the step needs "
                               + std::to_string(w.context_len + static_cast<int64_t>(w.tokens.size())));
    const auto start = static_cast<int32_t>(tables.size() / static_cast<size_t>(per_tb));
    tables.insert(tables.end(), table.begin(), table.end());
    for (size_t j = 0; j < w.tokens.size(); ++j) {
      tokens.push_back(w.tokens[j]);
      positions.push_back(w.context_len + static_cast<int32_t>(j));
      starts.push_back(start);
    }
    if (w.sample)
      out_rows.push_back(static_cast<int32_t>(tokens.size()) - 1);
  }
  const auto T = static_cast<int64_t>(tokens.size());
  const auto n_out = static_cast<int64_t>(out_rows.size());
  // Plain greedy rows pick with argmax and bring back only the ids; any
  // row with sampling, penalties, bias or log-probabilities goes through
  // the device sampler (the CPU sampler's semantics, kernels/cuda/sample).
  bool device_greedy = true;
  for (const auto& w : in.seqs)
    if (w.sample && (w.temperature > 0 || w.logprobs >= 0 || !w.bias_tokens.empty() || w.constrained
                     || w.presence_penalty != 0
                     || w.frequency_penalty != 0 || w.repetition_penalty != 1))
      device_greedy = false;
  // A decode-only step (one token per sequence, every one sampling) replays
  // the CUDA graph of its batch bucket: rows padded up to the bucket feed
  // token 0 at position 0 of the scratch table, and nobody reads their logits.
  int64_t graph_rows = 0;
  if (opts_.graphs && T > 0 && T == n_out && T <= max_graph_rows) {
    graph_rows = 1;
    while (graph_rows < T)
      graph_rows *= 2;
    const auto pad_start = static_cast<int32_t>(tables.size() / static_cast<size_t>(per_tb));
    for (int i = 0; i < per_tb; ++i)
      tables.push_back(static_cast<int32_t>(opts_.kv_blocks) + i);
    for (int64_t r = T; r < graph_rows; ++r) {
      tokens.push_back(0);
      positions.push_back(0);
      starts.push_back(pad_start);
      out_rows.push_back(static_cast<int32_t>(r));
    }
  }
  if (T > 0) {
    // Graphs keep the buffers' addresses: they are sized for the largest
    // bucket before the first capture.
    // Only rank 0 (the whole model at tp_size 1) computes logits and samples.
    ensure_rows(graph_rows > 0 ? max_graph_rows : T, !root() ? 0 : graph_rows > 0 ? max_graph_rows : n_out);
    if (static_cast<int64_t>(tables.size()) > tables_cap_) {
      tables_cap_ = std::max<int64_t>(static_cast<int64_t>(tables.size()), tables_cap_ * 2);
      d_tables_ = static_cast<int32_t*>(alloc(static_cast<size_t>(tables_cap_) * 4));
    }
    auto up = [&](int32_t* dst, const std::vector<int32_t>& src) {
      cu::check(cudaMemcpyAsync(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice, st), "upload rows");
    };
    up(d_tokens_, tokens);
    up(d_pos_, positions);
    up(d_start_, starts);
    up(d_tables_, tables);
    if (root() && !out_rows.empty())
      up(d_out_rows_, out_rows);
    // A step with prompt rows runs their attention in tiles of up to 16
    // rows of a sequence; decode rows (one row of a sequence) keep the
    // per-row kernel, which spreads a long context over more warps. The
    // tiles, then the lone rows' indices, share one device buffer.
    n_tiles_ = 0;
    n_lone_ = 0;
    const bool prompt_rows =
      std::any_of(in.seqs.begin(), in.seqs.end(), [](const seq_work& w) { return w.tokens.size() > 1; });
    if (graph_rows == 0 && prompt_rows &&
        cu::paged_attention_tiled_supported(cu::paged_kv{nullptr, 0, opts_.block_tokens, hp.head_dim})) {
      std::vector<int32_t> tiles, lone;
      int32_t row = 0;
      for (const auto& w : in.seqs) {
        if (w.tokens.size() == 1) {
          lone.push_back(row++);
          continue;
        }
        for (size_t j = 0; j < w.tokens.size(); j += 16) {
          const auto n = static_cast<int32_t>(std::min<size_t>(16, w.tokens.size() - j));
          tiles.push_back(row);
          tiles.push_back(n);
          row += n;
        }
      }
      n_tiles_ = static_cast<int64_t>(tiles.size() / 2);
      n_lone_ = static_cast<int64_t>(lone.size());
      tiles.insert(tiles.end(), lone.begin(), lone.end());
      if (static_cast<int64_t>(tiles.size()) > tiles_cap_) {
        tiles_cap_ = std::max<int64_t>(static_cast<int64_t>(tiles.size()), tiles_cap_ * 2);
        d_tiles_ = static_cast<int32_t*>(alloc(static_cast<size_t>(tiles_cap_) * 4));
      }
      up(d_tiles_, tiles);
    }
  }
  pend.st = st;
  pend.T = T;
  pend.n_out = n_out;
  pend.graph_rows = graph_rows;
  pend.device_greedy = device_greedy;
  pend.ready = true;
}

step_output cuda_engine::run_locked(const step_input& in) {
  if (!pending_.ready)
    throw std::logic_error("cuda_engine::run without a prepared step");
  const auto p = pending_;
  pending_.ready = false;
  cu::check(cudaSetDevice(opts_.device), "cudaSetDevice");
  const auto& hp = model_->hparams();
  cudaStream_t st = p.st;
  blas_->set_stream(st);
  const int64_t T = p.T, n_out = p.n_out, graph_rows = p.graph_rows;
  const bool device_greedy = p.device_greedy;
  step_output out;
  if (T > 0) {
    if (graph_rows > 0)
      run_graph(graph_rows, st);
    else
      forward(T, root() ? n_out : 0, st);
    if (root() && n_out > 0) {
      if (device_greedy) {
        cu::argmax_logprob(logits_, n_out, hp.n_vocab, d_picked_, nullptr, st);
        picked_.resize(static_cast<size_t>(n_out));
        cu::check(cudaMemcpyAsync(picked_.data(), d_picked_, picked_.size() * 4, cudaMemcpyDeviceToHost, st),
                  "download tokens");
      } else {
        sample_on_device(in, n_out, st);
      }
    }
    cu::check(cudaStreamSynchronize(st), "step");
  }
  if (root() && n_out > 0) {
    size_t k = 0;
    for (const auto& w : in.seqs) {
      if (!w.sample || w.tokens.empty()) {
        out.tokens.push_back(-1);
        continue;
      }
      if (device_greedy) {
        out.tokens.push_back(picked_[k++]);
        continue;
      }
      const auto& r = results_[k++];
      out.tokens.push_back(r.token);
      if (w.logprobs >= 0) {
        out.logprobs.resize(in.seqs.size());
        auto& lp = out.logprobs[out.tokens.size() - 1];
        lp.logprob = r.logprob;
        // The device gives the top in no order: best first, ties by id.
        std::vector<std::pair<float, int32_t>> top;
        for (int i = 0; i < r.n_top; ++i)
          top.emplace_back(r.top_logprobs[i], r.top_ids[i]);
        std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
          return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        for (const auto& [l, id] : top) {
          lp.top_ids.push_back(id);
          lp.top_logprobs.push_back(l);
        }
      }
    }
    // Structured outputs: the grammar masks went to the device as -inf
    // processors; the matchers follow the tokens drawn there.
    sampler_.advance(in, out);
  } else {
    out.tokens.assign(in.seqs.size(), -1);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.t0).count();
  return out;
}

void cuda_engine::run_graph(int64_t rows, cudaStream_t st) {
  const auto key = std::make_pair(rows, st);
  auto it = graphs_.find(key);
  if (it != graphs_.end() && it->second.epoch != buffers_epoch_) {
    cudaGraphExecDestroy(it->second.exec);  // a buffer moved since the capture
    graphs_.erase(it);
    it = graphs_.end();
  }
  if (it == graphs_.end()) {
    // Capture this thread's launches only (another engine's thread may
    // allocate meanwhile); nothing in forward() allocates or synchronises.
    cudaGraph_t g = nullptr;
    cu::check(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "begin graph capture");
    try {
      forward(rows, root() ? rows : 0, st);
    } catch (...) {
      cudaStreamEndCapture(st, &g);
      if (g != nullptr)
        cudaGraphDestroy(g);
      throw;
    }
    cu::check(cudaStreamEndCapture(st, &g), "end graph capture");
    cudaGraphExec_t exec = nullptr;
    const auto made = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    cu::check(made, "instantiate graph");
    it = graphs_.emplace(key, captured_graph{exec, buffers_epoch_}).first;
    ++graph_captures_;
  }
  cu::check(cudaGraphLaunch(it->second.exec, st), "launch graph");
}

void cuda_engine::sample_on_device(const step_input& in, int64_t n_out, cudaStream_t st) {
  const auto vocab = model_->hparams().n_vocab;
  params_.clear();
  adjust_.clear();
  for (const auto& w : in.seqs) {
    if (!w.sample || w.tokens.empty())
      continue;
    cu::sample_params p;
    p.temperature = w.temperature;
    p.top_k = w.top_k;
    p.top_p = w.top_p;
    p.min_p = w.min_p;
    p.u = sample_uniform(w.seed, int64_t{w.context_len} + static_cast<int64_t>(w.tokens.size()));
    p.n_top = std::min(w.logprobs, cu::sample_max_top);
    p.repetition_penalty = w.repetition_penalty;
    p.presence_penalty = w.presence_penalty;
    p.frequency_penalty = w.frequency_penalty;
    sampler_.processors(w, row_adjust_);
    p.adjust_begin = static_cast<int32_t>(adjust_.size());
    for (const auto& a : row_adjust_)
      adjust_.push_back(cu::logit_adjust{a.token, a.seen ? 1 : 0, a.count, a.bias});
    p.adjust_end = static_cast<int32_t>(adjust_.size());
    params_.push_back(p);
  }
  const bool any_adjust = !adjust_.empty();
  if (static_cast<int64_t>(params_.size()) > params_cap_) {
    params_cap_ = std::max<int64_t>(static_cast<int64_t>(params_.size()), params_cap_ * 2);
    d_params_ = static_cast<cu::sample_params*>(alloc(static_cast<size_t>(params_cap_) * sizeof(cu::sample_params), false));
    d_results_ = static_cast<cu::sample_result*>(alloc(static_cast<size_t>(params_cap_) * sizeof(cu::sample_result), false));
  }
  if (static_cast<int64_t>(adjust_.size()) > adjust_cap_) {
    adjust_cap_ = std::max<int64_t>(static_cast<int64_t>(adjust_.size()), adjust_cap_ * 2);
    d_adjust_ = static_cast<cu::logit_adjust*>(alloc(static_cast<size_t>(adjust_cap_) * sizeof(cu::logit_adjust), false));
  }
  if (any_adjust && n_out > work_rows_) {
    work_rows_ = std::max(n_out, work_rows_ * 2);
    d_work_ = static_cast<float*>(alloc(static_cast<size_t>(work_rows_) * static_cast<size_t>(vocab) * 4, false));
  }
  cu::check(cudaMemcpyAsync(d_params_, params_.data(), params_.size() * sizeof(cu::sample_params),
                            cudaMemcpyHostToDevice, st),
            "upload sampling parameters");
  if (any_adjust)
    cu::check(cudaMemcpyAsync(d_adjust_, adjust_.data(), adjust_.size() * sizeof(cu::logit_adjust),
                              cudaMemcpyHostToDevice, st),
              "upload logit processors");
  cu::sample_rows(logits_, d_work_, n_out, vocab, d_params_, d_adjust_, d_results_, st);
  results_.resize(static_cast<size_t>(n_out));
  cu::check(cudaMemcpyAsync(results_.data(), d_results_, results_.size() * sizeof(cu::sample_result),
                            cudaMemcpyDeviceToHost, st),
            "download samples");
}

void cuda_engine::set_job_partition(job_kind job, double offset, double share) {
  std::lock_guard<std::mutex> lock(step_mu_);
  cu::check(cudaSetDevice(opts_.device), "cudaSetDevice");
  if (share >= 1.0 - 1e-9) {
    // The whole GPU (one model alone, or a temporal unit's one step at a
    // time, whose jobs all hold share 1 at their own offsets): no partition.
    lane_stream_[job == job_kind::decode ? 1 : 0] = nullptr;
    return;
  }
  if (parts_ == nullptr && !parts_failed_) {
    try {
      parts_ = std::make_unique<cu::sm_partitions>(opts_.device);
      // The ladder: every prefix and suffix range of the groups, made now,
      // so moving a job between them (set-share) creates nothing at its
      // next step. Other ranges are made on first use.
      for (int k = 1; k <= parts_->groups(); ++k) {
        (void)parts_->stream(0, k);
        (void)parts_->stream(parts_->groups() - k, k);
      }
    } catch (const std::exception& e) {
      parts_.reset();
      parts_failed_ = true;
      std::fprintf(stderr, "llmux cuda: no SM partitions (%s): jobs run on the whole GPU\n", e.what());
    }
  }
  if (parts_ == nullptr)
    return;
  const int g = parts_->groups();
  const int first = std::min(g - 1, static_cast<int>(std::floor(offset * g + 1e-9)));
  const int count = std::min(g - first, parts_->groups_for(share));
  lane_stream_[job == job_kind::decode ? 1 : 0] = parts_->stream(first, count);
}

std::unique_ptr<engine> make_cuda_engine(const config::model_config& model, const engine_context& ctx) {
  std::shared_ptr<llama_model> weights;
  std::shared_ptr<tokenizer> tok;
  if (model.load_format == "dummy") {
    // Random weights at the model's real size, made on the device.
    weights = llama_model::shape_only(model.arch);
    tok = make_frontend(model).tok;
  } else {
    weights = llama_model::load(model.file);
    tok = make_tokenizer(read_vocab(weights->file()));
  }
  cuda_engine_options o;
  o.type = model.dtype == "bf16" ? cu::act::bf16 : model.dtype == "f32" ? cu::act::f32 : cu::act::f16;
  o.block_tokens = ctx.block_tokens;
  o.kv_blocks = ctx.kv_blocks;
  o.graphs = !model.enforce_eager;
  o.int8 = model.quantization == "int8";
  o.shared_kv = ctx.device_kv;
  if (ctx.devices.size() > 1)
    return std::make_unique<cuda_tp_engine>(std::move(weights), std::move(tok), o, ctx.devices);
  o.device = ctx.devices.empty() ? 0 : ctx.devices[0];
  return std::make_unique<cuda_engine>(std::move(weights), std::move(tok), o);
}

}  // namespace llmux::engine
