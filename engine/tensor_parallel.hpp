#pragma once
/// One rank's part of a Llama-family model under tensor parallelism
/// (Megatron-LM's layout, as vLLM runs it): q/k/v and gate/up are
/// column-parallel (each rank computes a slice of their output rows: whole
/// attention heads, and a slice of the FFN width), o and down are
/// row-parallel (each rank multiplies its slice of their input columns, and
/// the partial sums are all-reduced). A rank's query heads are exactly those
/// of its KV heads (GQA groups stay whole), so attention needs no exchange.
/// Embeddings, norms and the output head are replicated. Pure: the cuda
/// engine slices its uploads with it.

#include <cstdint>
#include <stdexcept>
#include <string>

#include "engine/llama_model.hpp"

namespace llmux::engine {

struct index_range {
  int64_t begin = 0, end = 0;
  [[nodiscard]] int64_t size() const { return end - begin; }
};

struct tp_shard {
  int rank = 0, size = 1;
  int n_head = 0, n_head_kv = 0, n_ff = 0;  ///< this rank's counts
  int head_base = 0;                        ///< its first KV head (global)
  index_range q_rows;   ///< of wq (and bq); wo's input columns
  index_range kv_rows;  ///< of wk and wv (and their biases)
  index_range ff_rows;  ///< of w_gate and w_up; w_down's input columns
};

/// Rank `rank` of `size`. Throws std::runtime_error naming the count that
/// `size` does not divide (query heads, KV heads, FFN width). Inline: the
/// cuda plugin uses it and resolves the rest of the engine against llmux's
/// exports, which hold only what llmux itself uses.
[[nodiscard]] inline tp_shard make_tp_shard(const llama_hparams& hp, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw std::runtime_error("tensor parallelism: rank " + std::to_string(rank) + " of " + std::to_string(size));
  auto divides = [&](int n, const char* what) {
    if (n % size != 0)
      throw std::runtime_error("tensor parallelism over " + std::to_string(size) + " GPUs needs " + what + " (" +
                               std::to_string(n) + ") to be a multiple of " + std::to_string(size));
  };
  divides(hp.n_head, "the query heads");
  divides(hp.n_head_kv, "the KV heads");
  divides(hp.n_ff, "the FFN width");
  tp_shard s;
  s.rank = rank;
  s.size = size;
  s.n_head = hp.n_head / size;
  s.n_head_kv = hp.n_head_kv / size;
  s.n_ff = hp.n_ff / size;
  s.head_base = rank * s.n_head_kv;
  const int64_t D = hp.head_dim;
  s.q_rows = {int64_t{rank} * s.n_head * D, int64_t{rank + 1} * s.n_head * D};
  s.kv_rows = {int64_t{rank} * s.n_head_kv * D, int64_t{rank + 1} * s.n_head_kv * D};
  s.ff_rows = {int64_t{rank} * s.n_ff, int64_t{rank + 1} * s.n_ff};
  return s;
}

}  // namespace llmux::engine
