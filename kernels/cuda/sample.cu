// Device sampling: see sample.hpp. One block of `threads` per row; every
// pass strides over the row's vocabulary.

#include "kernels/cuda/sample.hpp"

#include <climits>
#include <string>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace llmux::cuda {

namespace {

constexpr int threads = 512;
using u64 = unsigned long long;

/// NaN sorts last and weighs nothing; -0 is +0 (the CPU sees them equal).
__device__ __forceinline__ float clean(float l) {
  return l != l ? -INFINITY : (l == 0.0f ? 0.0f : l);
}

/// Order-preserving key: a > b ⟺ key(a) > key(b) for cleaned floats.
__device__ __forceinline__ uint32_t key_of(float l) {
  const uint32_t b = __float_as_uint(l);
  return (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
}

/// Fixed-point mass of a probability ratio x in [0, 1]: 2^40 for 1. A
/// vocabulary of 2^23 tokens sums below 2^64.
__device__ __forceinline__ u64 fixed(float x) {
  return __float2ull_rz(x * 1099511627776.0f);
}

/// A prefix of the row's order (key descending, then id ascending): element
/// (key, id) is in it when key > c.key, or key == c.key and id <= c.id.
struct cut {
  uint32_t key;
  int32_t id;
};

__device__ __forceinline__ bool in_cut(uint32_t key, int64_t id, cut c) {
  return key > c.key || (key == c.key && id <= c.id);
}

constexpr cut whole_row{0u, INT_MAX};

struct fmax_op {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

struct shared_state {
  cub::BlockReduce<float, threads>::TempStorage fred;
  cub::BlockReduce<u64, threads>::TempStorage ured;
  cub::BlockScan<u64, threads>::TempStorage scan;
  u64 hist[256];
  u64 remaining, uval;
  float fval;
  int digit, found, n_top;
};

/// The block's reduction of v by `op`, in every thread.
template <class Op>
__device__ float block_reduce(float v, Op op, shared_state& s) {
  const float r = cub::BlockReduce<float, threads>(s.fred).Reduce(v, op);
  if (threadIdx.x == 0)
    s.fval = r;
  __syncthreads();
  const float out = s.fval;
  __syncthreads();
  return out;
}

struct fsum_op {
  __device__ float operator()(float a, float b) const { return a + b; }
};

/// Σ weight(e, key) over the row (exact: integers).
template <class Weight>
__device__ u64 total_weight(const float* row, int64_t vocab, Weight weight, shared_state& s) {
  u64 part = 0;
  for (int64_t e = threadIdx.x; e < vocab; e += threads)
    part += weight(e, key_of(clean(row[e])));
  const u64 r = cub::BlockReduce<u64, threads>(s.ured).Sum(part);
  if (threadIdx.x == 0)
    s.uval = r;
  __syncthreads();
  const u64 out = s.uval;
  __syncthreads();
  return out;
}

/// The element at which the inclusive prefix sum of weights, walking the
/// row in its order, first exceeds `target`, as the cut that ends there.
/// weight(e, key) is 0 outside the set being cut; target < the total.
/// Radix select: per 8-bit digit of the key, most significant first, the
/// mass of each digit among the elements matching the digits chosen so
/// far; then among the elements of exactly that key, in id order, a block
/// scan. id is -1 where target >= the total (the caller's fallback).
template <class Weight>
__device__ cut select_prefix(const float* row, int64_t vocab, Weight weight, u64 target, shared_state& s) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += threads)
      s.hist[i] = 0;
    __syncthreads();
    for (int64_t e = threadIdx.x; e < vocab; e += threads) {
      const uint32_t key = key_of(clean(row[e]));
      if ((key & mask) != prefix)
        continue;
      const u64 w = weight(e, key);
      if (w != 0)
        atomicAdd(&s.hist[(key >> shift) & 255u], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // Highest digit first: skip whole digits while their mass fits under
      // the target.
      u64 cum = 0;
      int d = 255;
      for (; d > 0; --d) {
        if (cum + s.hist[d] > target)
          break;
        cum += s.hist[d];
      }
      s.digit = d;
      s.remaining = target - cum;
    }
    __syncthreads();
    prefix |= static_cast<uint32_t>(s.digit) << shift;
    mask |= 255u << shift;
    target = s.remaining;
    __syncthreads();  // s.digit and s.remaining are rewritten next round
  }
  // The elements of key `prefix`, in id order: the first whose inclusive
  // sum exceeds what is left of the target.
  if (threadIdx.x == 0)
    s.found = -1;
  __syncthreads();
  for (int64_t base = 0; base < vocab; base += threads) {
    const int64_t e = base + threadIdx.x;
    u64 w = 0;
    if (e < vocab) {
      const uint32_t key = key_of(clean(row[e]));
      if (key == prefix)
        w = weight(e, key);
    }
    if (__syncthreads_or(w != 0) == 0)
      continue;  // no element of the key in this stretch (the common case)
    u64 incl = 0, total = 0;
    cub::BlockScan<u64, threads>(s.scan).InclusiveSum(w, incl, total);
    if (w != 0 && incl > target && incl - w <= target)
      s.found = static_cast<int>(e);
    __syncthreads();
    if (s.found >= 0)
      break;
    target -= total;
  }
  const int found = s.found;
  __syncthreads();
  return cut{prefix, found};
}

/// Top-k, top-p and min-p cut prefixes of the row's order (logit down,
/// id up), and the draw of u walks what is left; `m` is the row's maximum
/// (finite). -1 where no mass is left.
__device__ int32_t draw(const float* row, int64_t vocab, const sample_params& p, float m, shared_state& s) {
  auto one = [](int64_t, uint32_t) -> u64 { return 1; };
  cut ck = whole_row, cp = whole_row;
  if (p.top_k > 0 && p.top_k < vocab)
    ck = select_prefix(row, vocab, one, static_cast<u64>(p.top_k - 1), s);
  if (p.top_p < 1.0f) {
    // Probabilities at temperature 1 over the top-k set, as llama.cpp's
    // top-p sees them: keep the shortest prefix reaching top_p.
    auto w1 = [&](int64_t e, uint32_t key) -> u64 {
      return in_cut(key, e, ck) ? fixed(expf(clean(row[e]) - m)) : 0;
    };
    const u64 z = total_weight(row, vocab, w1, s);
    const double want = ceil(static_cast<double>(p.top_p) * static_cast<double>(z));
    u64 target = want >= 1.0 ? static_cast<u64>(want) - 1 : 0;
    if (z > 0 && target >= z)
      target = z - 1;
    cp = select_prefix(row, vocab, w1, target, s);
  }
  auto wt = [&](int64_t e, uint32_t key) -> u64 {
    if (!in_cut(key, e, ck) || !in_cut(key, e, cp))
      return 0;
    const float l = clean(row[e]);
    if (p.min_p > 0.0f && expf(l - m) < p.min_p)
      return 0;
    // Divided, as the CPU does; the maximum weighs 1 at any temperature.
    return fixed(l == m ? 1.0f : expf(__fdiv_rn(l - m, p.temperature)));
  };
  const u64 z = total_weight(row, vocab, wt, s);
  if (z > 0) {
    u64 target = static_cast<u64>(p.u * static_cast<double>(z));
    if (target >= z)
      target = z - 1;
    return select_prefix(row, vocab, wt, target, s).id;
  }
  return -1;
}

__global__ void __launch_bounds__(threads)
  sample_kernel(const float* logits, float* work, int64_t vocab, const sample_params* params,
                const logit_adjust* adjust, sample_result* out) {
  __shared__ shared_state s;
  const int64_t r = blockIdx.x;
  const sample_params p = params[r];
  const float* raw = logits + r * vocab;
  sample_result* res = out + r;
  auto one = [](int64_t, uint32_t) -> u64 { return 1; };

  // Log-sum-exp of the raw logits: log-probabilities are of those.
  float lse = 0.0f;
  if (p.n_top >= 0) {
    float m = -INFINITY;
    for (int64_t e = threadIdx.x; e < vocab; e += threads)
      m = fmaxf(m, clean(raw[e]));
    m = block_reduce(m, fmax_op{}, s);
    float sum = 0.0f;
    for (int64_t e = threadIdx.x; e < vocab; e += threads)
      sum += expf(clean(raw[e]) - m);
    lse = m + logf(block_reduce(sum, fsum_op{}, s));
  }

  // The processors apply to the row's copy in `work`, in the CPU's order:
  // repetition penalty, presence and frequency penalties, bias.
  const float* row = raw;
  if (p.adjust_end > p.adjust_begin) {
    float* w = work + r * vocab;
    for (int64_t e = threadIdx.x; e < vocab; e += threads)
      w[e] = raw[e];
    __syncthreads();
    for (int i = p.adjust_begin + static_cast<int>(threadIdx.x); i < p.adjust_end; i += threads) {
      const logit_adjust a = adjust[i];
      if (a.token < 0 || a.token >= vocab)
        continue;
      float l = w[a.token];
      if (a.seen != 0 && p.repetition_penalty != 1.0f)
        l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
      if (a.count > 0)  // rounded twice, as the CPU does (no fused multiply-add)
        l -= __fadd_rn(p.presence_penalty, __fmul_rn(p.frequency_penalty, static_cast<float>(a.count)));
      w[a.token] = l + a.bias;  // one entry per token: no other thread writes it
    }
    __syncthreads();  // global writes of the block are visible to it after this
    row = w;
  }

  // Top-k, top-p and min-p cut prefixes of the order, and the draw walks
  // what is left. Greedy (and the fallback of a row with no mass left):
  // the first of the order.
  int32_t token = -1;
  if (p.temperature > 0.0f) {
    float m = -INFINITY;
    for (int64_t e = threadIdx.x; e < vocab; e += threads)
      m = fmaxf(m, clean(row[e]));
    m = block_reduce(m, fmax_op{}, s);
    // Every logit -inf or NaN: nothing can be drawn; the greedy fallback
    // below picks the first id.
    if (m > -INFINITY)
      token = draw(row, vocab, p, m, s);
  }
  if (token < 0)
    token = select_prefix(row, vocab, one, 0, s).id;

  if (threadIdx.x == 0) {
    res->token = token;
    res->logprob = p.n_top >= 0 && token >= 0 ? clean(raw[token]) - lse : 0.0f;
    res->n_top = 0;
    s.n_top = 0;
  }
  __syncthreads();
  const int64_t k = p.n_top < 0 ? 0 : min(min(static_cast<int64_t>(p.n_top), int64_t{sample_max_top}), vocab);
  if (k > 0) {
    // The k most likely raw logits: a count cut, then a gather.
    const cut c = select_prefix(raw, vocab, one, static_cast<u64>(k - 1), s);
    for (int64_t e = threadIdx.x; e < vocab; e += threads) {
      const float l = clean(raw[e]);
      if (!in_cut(key_of(l), e, c))
        continue;
      const int slot = atomicAdd(&s.n_top, 1);
      if (slot < sample_max_top) {
        res->top_ids[slot] = static_cast<int32_t>(e);
        res->top_logprobs[slot] = l - lse;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0)
      res->n_top = min(s.n_top, sample_max_top);
  }
}

}  // namespace

void sample_rows(const float* logits, float* work, int64_t rows, int64_t vocab, const sample_params* params,
                 const logit_adjust* adjust, sample_result* out, cudaStream_t stream) {
  if (rows <= 0)
    return;
  // Masses are 2^40 per token at most: 2^23 tokens keep the sums in 64 bits.
  if (vocab <= 0 || vocab > (int64_t{1} << 23))
    throw cuda_error("sample_rows: vocabulary of " + std::to_string(vocab) + " outside 1..2^23");
  sample_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(logits, work, vocab, params, adjust, out);
  check(cudaGetLastError(), "sample_rows");
}

}  // namespace llmux::cuda
