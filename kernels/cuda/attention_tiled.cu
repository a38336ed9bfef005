// Prefill attention on tensor cores (see paged_attention_tiled in ops.hpp):
// one warp per (tile of up to 16 query rows of one sequence, query head).
// Per key tile of 16 positions (one block's worth: block_tokens is a
// multiple of 16), K and V are staged in shared memory (positions past the
// tile's last query zeroed, so unwritten cache never reaches a product),
// S = Q·Kᵀ on WMMA (f16 inputs, f32 sums), an online softmax per row in f32
// with the probabilities rounded to f16, and O = O·corr + P·V on WMMA with O
// kept in shared memory as f32. The flash-attention recurrence; the cache
// is read once per tile and head instead of once per row and head.

#include <mma.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.hpp"

namespace llmux::cuda {

namespace {

namespace wmma = nvcuda::wmma;

constexpr int tile_rows = 16;

template <typename T, int DMAX>
__global__ void __launch_bounds__(32)
  tiled_attention_kernel(const T* q, const int32_t* tiles, int n_head, int layer, float scale, paged_kv kv,
                         T* out) {
  __shared__ __align__(32) half qs[tile_rows * DMAX];
  __shared__ __align__(32) half ks[tile_rows * DMAX];
  __shared__ __align__(32) half vs[tile_rows * DMAX];
  __shared__ __align__(32) float os[tile_rows * DMAX];
  __shared__ __align__(32) float ss[tile_rows * tile_rows];
  __shared__ __align__(32) half ps[tile_rows * tile_rows];
  __shared__ float corr_s[tile_rows];

  const int lane = threadIdx.x;
  const int64_t r0 = tiles[2 * blockIdx.x];
  const int count = tiles[2 * blockIdx.x + 1];
  const int h = blockIdx.y;
  const int D = kv.head_dim;
  const int kvh = h / (n_head / kv.n_head_kv);
  const int32_t start = kv.table_start[r0];

  // Q rows (zeros past `count`) as f16, O = 0; each row's position.
  int max_pos = 0;
  for (int r = 0; r < count; ++r)
    max_pos = max(max_pos, kv.positions[r0 + r]);
  for (int i = lane; i < tile_rows * DMAX; i += 32) {
    const int r = i / DMAX, d = i % DMAX;
    float v = 0.0f;
    if (r < count && d < D)
      v = to_f(q[((r0 + r) * n_head + h) * D + d]);
    qs[i] = __float2half_rn(v);
    os[i] = 0.0f;
  }
  // Row `lane & 15`'s softmax state, kept by lanes r and r + 16 alike.
  const int my_row = lane & 15;
  const int my_pos = my_row < count ? kv.positions[r0 + my_row] : -1;
  float m = -INFINITY, l = 0.0f;
  __syncwarp();

  const int key_tiles = max_pos / tile_rows + 1;
  for (int kt = 0; kt < key_tiles; ++kt) {
    const int64_t kpos0 = int64_t{kt} * tile_rows;
    const int32_t id = block_of(kv, start, layer, kvh, kpos0);
    const uint16_t* block = kv.arena + static_cast<int64_t>(id) * kv.block_elems;
    const int64_t slot0 = kpos0 % kv.block_tokens;
    const uint16_t* kb = block + slot0 * D;
    const uint16_t* vb = block + static_cast<int64_t>(kv.block_tokens) * D + slot0 * D;
    for (int i = lane; i < tile_rows * DMAX; i += 32) {
      const int j = i / DMAX, d = i % DMAX;
      const bool live = d < D && kpos0 + j <= max_pos;
      ks[i] = __ushort_as_half(live ? kb[j * D + d] : uint16_t{0});
      vs[i] = __ushort_as_half(live ? vb[j * D + d] : uint16_t{0});
    }
    __syncwarp();

    // S = Q · Kᵀ over D in chunks of 16.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag;
    wmma::fill_fragment(s_frag, 0.0f);
    for (int c = 0; c < D; c += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b;
      wmma::load_matrix_sync(a, qs + c, DMAX);
      wmma::load_matrix_sync(b, ks + c, DMAX);  // Kᵀ: K's rows are its columns
      wmma::mma_sync(s_frag, a, b, s_frag);
    }
    wmma::store_matrix_sync(ss, s_frag, tile_rows, wmma::mem_row_major);
    __syncwarp();

    // Online softmax: lanes r and r + 16 take 8 columns each of row r.
    const int c0 = (lane >> 4) * 8;
    float s_loc[8];
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int64_t kpos = kpos0 + c0 + c;
      s_loc[c] = kpos <= my_pos ? ss[my_row * tile_rows + c0 + c] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s_loc[c]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 16));
    const float m_new = fmaxf(m, tile_max);
    // A row with no live key yet (m_new = -inf: a padded row) keeps zeros.
    const float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const float p = s_loc[c] == -INFINITY ? 0.0f : expf(s_loc[c] - m_new);
      const half ph = __float2half_rn(p);
      ps[my_row * tile_rows + c0 + c] = ph;
      sum += __half2float(ph);  // the sum of what P·V adds
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    l = l * corr + sum;
    m = m_new;
    if (lane < 16)
      corr_s[my_row] = corr;
    __syncwarp();

    // O = O · corr (per row) + P · V.
    for (int i = lane; i < tile_rows * DMAX; i += 32)
      os[i] *= corr_s[i / DMAX];
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> p_frag;
    wmma::load_matrix_sync(p_frag, ps, tile_rows);
    for (int c = 0; c < D; c += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::row_major> v_frag;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_frag;
      wmma::load_matrix_sync(v_frag, vs + c, DMAX);
      wmma::load_matrix_sync(o_frag, os + c, DMAX, wmma::mem_row_major);
      wmma::mma_sync(o_frag, p_frag, v_frag, o_frag);
      wmma::store_matrix_sync(os + c, o_frag, DMAX, wmma::mem_row_major);
    }
    __syncwarp();  // ks, vs, ss, ps are rewritten by the next key tile
  }

  // Out = O / l for the tile's rows; lane r (< 16) holds row r's l.
  if (lane < 16)
    corr_s[lane] = l;
  __syncwarp();
  for (int i = lane; i < count * D; i += 32) {
    const int r = i / D, d = i % D;
    out[((r0 + r) * n_head + h) * D + d] = from_f<T>(os[r * DMAX + d] / corr_s[r]);
  }
}

}  // namespace

bool paged_attention_tiled_supported(const paged_kv& kv) {
  return kv.head_dim > 0 && kv.head_dim % 16 == 0 && kv.head_dim <= 256 && kv.block_tokens % tile_rows == 0;
}

void paged_attention_tiled(act t, const void* q, const int32_t* tiles, int64_t n_tiles, int n_head, int layer,
                           float scale, const paged_kv& kv, void* out, cudaStream_t stream) {
  if (n_tiles == 0)
    return;
  if (!paged_attention_tiled_supported(kv))
    throw cuda_error("paged_attention_tiled: head_dim must be a multiple of 16 up to 256 and block_tokens a "
                     "multiple of 16");
  if (kv.n_head_kv <= 0 || n_head % kv.n_head_kv != 0)
    throw cuda_error("paged_attention_tiled: n_head must be a multiple of n_head_kv");
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(n_head));
  dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const auto* qt = static_cast<const T*>(q);
    auto* ot = static_cast<T*>(out);
    if (kv.head_dim <= 64)
      tiled_attention_kernel<T, 64><<<grid, 32, 0, stream>>>(qt, tiles, n_head, layer, scale, kv, ot);
    else if (kv.head_dim <= 128)
      tiled_attention_kernel<T, 128><<<grid, 32, 0, stream>>>(qt, tiles, n_head, layer, scale, kv, ot);
    else
      tiled_attention_kernel<T, 256><<<grid, 32, 0, stream>>>(qt, tiles, n_head, layer, scale, kv, ot);
  });
  launched("paged_attention_tiled");
}

}  // namespace llmux::cuda
