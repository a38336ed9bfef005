#pragma once
/// CUDA kernels of the transformer forward pass, over the same head-wise
/// paged KV layout as the CPU engine (engine/paged_kv_cache.hpp). Host
/// functions: every pointer is device memory unless named otherwise, every
/// call is asynchronous on `stream`, and errors come back as a
/// std::runtime_error naming the launch (checked with cudaGetLastError).
///
/// Activations are f32, f16 or bf16 (`act`); reductions and softmax run in
/// f32. The KV cache holds f16, as the CPU engine's and llama.cpp's default.
/// Shapes are row-major, in elements.
///
/// This header needs only the CUDA runtime's types; the kernels live in
/// ops.cu (built for sm_90 when LLMUX_CUDA is on).

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

namespace llmux::cuda {

enum class act { f32 = 0, f16 = 1, bf16 = 2 };
[[nodiscard]] size_t act_bytes(act t);
[[nodiscard]] const char* to_string(act t);

struct cuda_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Throws cuda_error with `what` and the runtime's text when `e` is an error.
void check(cudaError_t e, const char* what);

/// Whether this process can use a CUDA device. When not, `why` says why
/// (no driver, no device, ...), for tests and the engine factory to print.
[[nodiscard]] bool device_available(std::string* why = nullptr);

/// Fused residual add and RMSNorm, per row of n: h = x + residual (x alone
/// when `residual` is null); if `h_out` is not null, h is written there (the
/// new residual stream; it may be x or residual); out = h / sqrt(mean(h²) +
/// eps) · weight. `weight` has the activation type. out may alias x.
void rmsnorm(act t, const void* x, const void* residual, void* h_out, const void* weight, float eps,
             int64_t rows, int64_t n, void* out, cudaStream_t stream);

/// Rotary embedding in place on `rows` vectors of `heads` heads of
/// `head_dim`, row r at position positions[r] (device), rotating the first
/// `rot_dim` dims of each head. neox = false: pairs (2i, 2i+1) (Llama);
/// neox = true: pairs (i, i + rot_dim/2). theta_i = pos · base^(−2i/rot_dim),
/// built as ggml does (i float products of base^(−2/rot_dim)).
void rope(act t, void* x, int64_t rows, int heads, int head_dim, int rot_dim,
          const int32_t* positions, float base, bool neox, cudaStream_t stream);

/// out[i] = silu(gate[i]) · up[i]. out may alias gate or up.
void swiglu(act t, const void* gate, const void* up, int64_t n, void* out, cudaStream_t stream);

/// x[r, i] += bias[i] for `rows` rows of n (qwen2's q/k/v biases); `bias`
/// has the activation type.
void add_bias(act t, void* x, const void* bias, int64_t rows, int64_t n, cudaStream_t stream);

/// out[r, :] = table[ids[r], :] for `rows` ids (device) of a [vocab, n]
/// table of the activation type.
void embedding(act t, const void* table, const int32_t* ids, int64_t rows, int64_t n, void* out,
               cudaStream_t stream);

/// Where each row's KV lives. `tables` holds the block tables of the step's
/// sequences back to back: per token-block, `per_tb` = n_layer · n_head_kv
/// physical block ids (layer-major, then KV head), as the kv_manager grants
/// them. Row r belongs to the sequence whose table starts at token-block
/// `table_start[r]`, and sits at position `positions[r]`. A block is
/// `block_elems` halves of `arena`: K as block_tokens rows of head_dim, then
/// V at block_tokens · head_dim.
struct paged_kv {
  uint16_t* arena = nullptr;
  int64_t block_elems = 0;
  int block_tokens = 16;
  int head_dim = 0;
  int n_head_kv = 0;   ///< KV heads in the rows (a tensor-parallel rank's own)
  int per_tb = 0;
  const int32_t* tables = nullptr;
  const int32_t* table_start = nullptr;
  const int32_t* positions = nullptr;
  /// Where the rows' heads sit in a table's per-layer run of ids: head h of
  /// the rows is the table's head head_base + h of table_heads (0: n_head_kv;
  /// a tensor-parallel rank holds heads head_base .. of the model's).
  int head_base = 0;
  int table_heads = 0;
};

/// Writes K and V ([rows, n_head_kv · head_dim], activation type) of `layer`
/// into each row's slot of the cache, rounded to f16.
void kv_append(act t, const void* k, const void* v, int64_t rows, int layer, const paged_kv& kv,
               cudaStream_t stream);

/// Causal attention of `rows` query rows ([rows, n_head · head_dim]) over
/// the paged cache of `layer`: row r attends to positions 0..positions[r]
/// of its sequence (its own K/V already appended), with GQA (n_head /
/// n_head_kv query heads per KV head). Covers decode (one row per sequence)
/// and prefill chunks over a cached prefix (rows of consecutive positions).
/// out: [rows, n_head · head_dim]. head_dim ≤ 256. With `row_ids`
/// (device), only rows row_ids[0 .. rows) are computed (the others are
/// not written): a step's decode rows beside prompt tiles.
void paged_attention(act t, const void* q, int64_t rows, int n_head, int layer, float scale,
                     const paged_kv& kv, void* out, cudaStream_t stream, const int32_t* row_ids = nullptr);

/// The same attention for prefill rows on tensor cores, a tile of up to 16
/// rows of one sequence at a time: tile i is rows tiles[2i] ..
/// tiles[2i] + tiles[2i + 1] − 1 (device memory; 1 to 16 rows), which
/// share a table, with every position up to the tile's last already
/// appended to the cache.
/// q and the probabilities are rounded to f16 (as llama.cpp's CPU attention
/// and the CPU engine do), sums are f32. Needs head_dim a multiple of 16 up
/// to 256 and block_tokens a multiple of 16 (supported() says; else
/// cuda_error). Rows in no tile are not written.
[[nodiscard]] bool paged_attention_tiled_supported(const paged_kv& kv);
void paged_attention_tiled(act t, const void* q, const int32_t* tiles, int64_t n_tiles, int n_head, int layer,
                           float scale, const paged_kv& kv, void* out, cudaStream_t stream);

/// Greedy pick per row of [rows, vocab] f32 logits: ids[r] = argmax (the
/// lowest id among ties) and logprob[r] = its log-softmax (natural log).
/// `logprob` may be null.
void argmax_logprob(const float* logits, int64_t rows, int64_t vocab, int32_t* ids, float* logprob,
                    cudaStream_t stream);

/// Dummy weights made where they are used: x[i] uniform in [−scale, scale]
/// from a hash of (seed, i) (std = scale / √3), or every element `value`.
void fill_uniform(act t, void* x, int64_t n, uint64_t seed, float scale, cudaStream_t stream);
void fill_value(act t, void* x, int64_t n, float value, cudaStream_t stream);
/// Dummy int8 weights: uniform in [−127, 127] from a hash of (seed, i).
void fill_uniform_int8(int8_t* x, int64_t n, uint64_t seed, cudaStream_t stream);

}  // namespace llmux::cuda
