#pragma once
/// The `cuda` backend: a Llama-family model on one GPU, weights dequantised
/// at load to f16 (or bf16 with dtype = "bf16") in device memory, KV in a
/// head-wise paged f16 cache on the device whose blocks are the unit's
/// kv_manager grants (seq_work::kv_blocks), GEMMs through cuBLAS and the
/// kernels of kernels/cuda. Tokens are picked on the device: plain greedy
/// rows by argmax, the rest by the device sampler (temperature, top-k,
/// top-p, min-p, seeds, penalties, bias and log-probabilities, with the CPU
/// sampler's semantics); only ids and log-probabilities come back.
///
/// Built into libllmux_cuda.so, which `llmux` loads only when a unit asks for
/// backend = "cuda" (engine_factory), so the binary starts on machines
/// without a GPU driver. Runs arch llama and qwen2 (q/k/v biases, NeoX
/// RoPE). The models of a unit share one device KV memory
/// (device_kv_slot). Decode-only steps replay a CUDA graph per batch
/// bucket. cuda_tp_engine (below) runs a model tensor-parallel across GPUs.

#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.hpp"
#include "engine/engine_factory.hpp"
#include "engine/llama_model.hpp"
#include "engine/step_sampler.hpp"
#include "engine/tensor_parallel.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/int8.hpp"
#include "kernels/cuda/nccl.hpp"
#include "kernels/cuda/ops.hpp"
#include "kernels/cuda/partitions.hpp"
#include "kernels/cuda/sample.hpp"

namespace llmux::engine {

struct cuda_engine_options {
  cuda::act type = cuda::act::f16;  ///< weights and activations on the device
  int device = 0;
  int block_tokens = 16;
  int64_t kv_blocks = 0;  ///< the unit's pool: block ids the kv_manager may grant
  /// Decode-only steps replay a CUDA graph per batch bucket (powers of two
  /// up to max_graph_rows), captured on first use; false: every step
  /// launches its kernels one by one (vLLM's enforce_eager).
  bool graphs = true;
  /// The unit's shared GPU KV memory; null: the engine allocates its own.
  std::shared_ptr<device_kv_slot> shared_kv;
  /// Tensor parallelism: this engine is rank tp_rank of tp_size, on
  /// `device`, all-reducing with `comm` (null at tp_size 1: no NCCL call).
  int tp_rank = 0;
  int tp_size = 1;
  ncclComm* comm = nullptr;
  /// Weight-only int8 layer matrices (quantization = "int8").
  bool int8 = false;
};

/// The largest decode batch that replays a graph; larger ones run eagerly.
inline constexpr int64_t max_graph_rows = 256;

class cuda_engine final : public engine {
public:
  /// Uploads the weights. Throws cuda::cuda_error (no device, out of
  /// memory) or std::runtime_error (a model it cannot run), naming why.
  cuda_engine(std::shared_ptr<const llama_model> model, std::shared_ptr<const tokenizer> tok,
              cuda_engine_options opts);
  ~cuda_engine() override;

  [[nodiscard]] step_output step(const step_input& in) override;
  /// step() in two halves, for tensor-parallel ranks: prepare() checks the
  /// grants, sizes buffers and uploads the step's rows (what can fail
  /// before any rank enters an all-reduce); run() computes and picks.
  void prepare(const step_input& in);
  [[nodiscard]] step_output run(const step_input& in);
  /// A share alone places nothing on a GPU: the SM range comes with
  /// set_job_partition (offset and share), which the unit always sends.
  void set_share(double) override {}
  /// Moves the job's steps to the SM range [offset, offset + share) of the
  /// GPU (green contexts, in groups of the split granularity), from its next
  /// step. Where green contexts are unavailable the job keeps the whole GPU
  /// (said once on stderr).
  void set_job_partition(job_kind job, double offset, double share) override;
  /// One step at a time (step_mu_): a split model's two jobs share the
  /// activations and the cuBLAS handle, so they take turns on their SM
  /// ranges rather than overlap.
  [[nodiscard]] bool steps_at_once() const override { return false; }
  [[nodiscard]] std::string backend() const override { return "cuda"; }
  [[nodiscard]] const tokenizer& vocab() const override { return *tok_; }

  /// Graphs captured so far (a bucket on a stream, again after a buffer grew).
  [[nodiscard]] int64_t graph_captures() const { return graph_captures_; }

  /// Device bytes held by weights and the KV cache.
  [[nodiscard]] int64_t weight_bytes() const { return weight_bytes_; }
  [[nodiscard]] int64_t kv_bytes() const { return kv_bytes_; }

private:
  /// A layer matrix on the device: in the engine's type (w), or int8 with
  /// a scale per output row (q8; quantization = "int8"). n output rows of k.
  struct dev_matrix {
    void* w = nullptr;
    cuda::int8_weights q8;
    int64_t n = 0, k = 0;
  };
  struct dev_layer {
    void* attn_norm;
    dev_matrix wq, wk, wv, wo;
    void* ffn_norm;
    dev_matrix w_gate, w_up, w_down;
    void *bq, *bk, *bv;  ///< qwen2's attention biases, else null
  };
  /// A device copy of `rows` × `cols` weights, converted to the engine's type.
  /// Rows `rows` and columns `cols` of it (empty ranges: all), so a
  /// tensor-parallel rank holds its slice.
  void* upload_matrix(const kernels::matrix_view& m, index_range rows = {}, index_range cols = {});
  [[nodiscard]] bool root() const { return opts_.tp_rank == 0; }
  /// A layer matrix (its slice), in the engine's type or int8.
  dev_matrix upload_weight(const kernels::matrix_view& m, index_range rows = {}, index_range cols = {});
  /// y[m, n] = x[m, k] · Wᵀ on `st`, through cuBLAS or the int8 GEMM.
  void mm(const dev_matrix& w, const void* x, int64_t m, void* y, cudaStream_t st);
  void* upload_vector(const float* v, int64_t n);
  /// Device memory owned by the engine. `graph_visible`: a captured graph
  /// may hold it, so graphs captured before are stale (their epoch moves).
  void* alloc(size_t bytes, bool graph_visible = true);
  void ensure_rows(int64_t rows, int64_t out_rows);
  void prepare_locked(const step_input& in);
  step_output run_locked(const step_input& in);
  /// What prepare() leaves for run().
  struct pending_step {
    bool ready = false;
    std::chrono::steady_clock::time_point t0;
    cudaStream_t st = nullptr;
    int64_t T = 0, n_out = 0, graph_rows = 0;
    bool device_greedy = true;
  };
  pending_step pending_;
  /// The forward pass of the rows uploaded to d_tokens_ / d_pos_ /
  /// d_start_ / d_tables_, up to logits_ for the n_out rows in
  /// d_out_rows_: launches only (no allocation, no synchronisation), so it
  /// can be captured.
  void forward(int64_t T, int64_t n_out, cudaStream_t st);
  /// forward(rows, rows) through the graph captured for (rows, st).
  void run_graph(int64_t rows, cudaStream_t st);
  /// Samples the step's `n_out` logits rows on the device into results_
  /// (asynchronous on `st`).
  void sample_on_device(const step_input& in, int64_t n_out, cudaStream_t st);

  std::shared_ptr<const llama_model> model_;
  std::shared_ptr<const tokenizer> tok_;
  cuda_engine_options opts_;
  tp_shard shard_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::blas> blas_;
  std::vector<void*> owned_;  ///< every device allocation, freed at the end
  int64_t weight_bytes_ = 0, kv_bytes_ = 0;
  uint64_t dummy_seed_ = 0x5eed;

  void* tok_embd_ = nullptr;
  void* output_norm_ = nullptr;
  void* output_ = nullptr;
  std::vector<dev_layer> layers_;
  uint16_t* arena_ = nullptr;
  void* int8_scratch_ = nullptr;  ///< a matrix dequantized for an int8 prefill GEMM
  size_t int8_scratch_bytes_ = 0;
  std::shared_ptr<void> shared_arena_;  ///< keeps the unit's KV memory while this engine lives
  int64_t block_elems_ = 0;

  // Activations, grown on demand.
  int64_t rows_cap_ = 0, out_cap_ = 0;
  void *x_ = nullptr, *h_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *attn_ = nullptr,
       *tmp_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *hsel_ = nullptr;
  float* logits_ = nullptr;
  int32_t *d_tokens_ = nullptr, *d_pos_ = nullptr, *d_start_ = nullptr, *d_out_rows_ = nullptr;
  int32_t* d_picked_ = nullptr;  ///< greedy ids picked on the device
  std::vector<int32_t> picked_;
  int32_t* d_tables_ = nullptr;
  /// The step's prompt-row attention tiles (first row, rows), then its
  /// lone (decode) rows' indices.
  int32_t* d_tiles_ = nullptr;
  int64_t tiles_cap_ = 0, n_tiles_ = 0, n_lone_ = 0;
  int64_t tables_cap_ = 0;
  // The device sampler's rows (sample_on_device), grown on demand.
  std::vector<cuda::sample_params> params_;
  std::vector<cuda::logit_adjust> adjust_;
  std::vector<token_adjust> row_adjust_;
  std::vector<cuda::sample_result> results_;
  cuda::sample_params* d_params_ = nullptr;
  cuda::sample_result* d_results_ = nullptr;
  cuda::logit_adjust* d_adjust_ = nullptr;
  float* d_work_ = nullptr;  ///< processed copies of rows with penalties or bias
  int64_t params_cap_ = 0, adjust_cap_ = 0, work_rows_ = 0;

  /// seq → its block table (per token-block, n_layer · n_head_kv ids).
  std::unordered_map<uint64_t, std::vector<int32_t>> tables_;
  step_sampler sampler_;
  std::unique_ptr<cuda::sm_partitions> parts_;
  bool parts_failed_ = false;
  cudaStream_t lane_stream_[2] = {nullptr, nullptr};  ///< [0] mixed/prefill, [1] decode; null: stream_
  struct captured_graph {
    cudaGraphExec_t exec;
    int64_t epoch;  ///< buffers_epoch_ at capture
  };
  std::map<std::pair<int64_t, cudaStream_t>, captured_graph> graphs_;
  int64_t buffers_epoch_ = 0;  ///< bumped by every device allocation
  int64_t graph_captures_ = 0;
  /// One step at a time: a model's two jobs (split) run on their own
  /// streams but share the activations and the cuBLAS handle.
  std::mutex step_mu_;
};

/// A model tensor-parallel over several GPUs of a unit: one cuda_engine
/// rank per device (its slice of every layer, all-reducing after the
/// row-parallel o and down projections through NCCL), each stepped by its
/// own thread, since a rank's all-reduce waits for the others'. A step
/// prepares on every rank before any computes, so a rank that fails
/// (grants, memory) fails the step before the others wait in NCCL; a rank
/// failing while computing aborts the communicators (the others return),
/// and the engine refuses later steps. Every rank
/// keeps the sequences' block tables; rank 0 computes the logits and picks
/// the tokens. Each rank's KV holds its heads of every block id (the pool's
/// ids are shared across heads, so each GPU reserves the pool's blocks).
class cuda_tp_engine final : public engine {
public:
  cuda_tp_engine(std::shared_ptr<const llama_model> model, std::shared_ptr<const tokenizer> tok,
                 cuda_engine_options opts, const std::vector<int>& devices);
  ~cuda_tp_engine() override;

  [[nodiscard]] step_output step(const step_input& in) override;
  void set_share(double) override {}  ///< as cuda_engine: set_job_partition places
  void set_job_partition(job_kind job, double offset, double share) override;
  /// Its ranks take one step at a time, as cuda_engine.
  [[nodiscard]] bool steps_at_once() const override { return false; }
  [[nodiscard]] std::string backend() const override { return "cuda"; }
  [[nodiscard]] const tokenizer& vocab() const override { return ranks_[0]->vocab(); }
  [[nodiscard]] int tp_size() const { return static_cast<int>(ranks_.size()); }

private:
  void worker(size_t rank);
  /// Every rank prepares (compute = false) or runs the step; rank 0's
  /// output into *out; rethrows the first rank's error.
  void phase(const step_input& in, bool compute, step_output* out);

  std::unique_ptr<cuda::nccl_group> nccl_;
  std::vector<std::unique_ptr<cuda_engine>> ranks_;
  std::vector<std::thread> threads_;
  // One step at a time, handed to ranks 1.. (rank 0 runs on the caller).
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const step_input* job_ = nullptr;
  bool compute_ = false;  ///< the phase handed out: prepare, or run
  uint64_t generation_ = 0;
  size_t finished_ = 0;
  std::vector<std::exception_ptr> errors_;
  bool stop_ = false;
  std::mutex step_mu_;
};

/// What the plugin's entry point builds from config (load or dummy weights).
[[nodiscard]] std::unique_ptr<engine> make_cuda_engine(const config::model_config& model,
                                                       const engine_context& ctx);

}  // namespace llmux::engine
