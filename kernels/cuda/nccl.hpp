#pragma once
/// NCCL for tensor parallelism, loaded at run time (dlopen of libnccl.so.2)
/// only when a unit spans more than one GPU: a one-GPU unit makes no NCCL
/// call and needs no NCCL library, and llmux's CUDA plugin links none.

#include <atomic>
#include <cstdint>
#include <vector>

#include "kernels/cuda/ops.hpp"

struct ncclComm;

namespace llmux::cuda {

/// One communicator per device of `devices` (ncclCommInitAll: one process
/// drives them all), rank r on devices[r].
class nccl_group {
public:
  /// Throws cuda_error when NCCL cannot be loaded or initialised, naming why.
  explicit nccl_group(const std::vector<int>& devices);
  ~nccl_group();
  nccl_group(const nccl_group&) = delete;
  nccl_group& operator=(const nccl_group&) = delete;

  [[nodiscard]] int size() const { return static_cast<int>(comms_.size()); }
  [[nodiscard]] ncclComm* comm(int rank) const { return comms_.at(static_cast<size_t>(rank)); }
  /// Aborts every communicator (ncclCommAbort), so ranks blocked in a
  /// collective return; from any thread, once. The group is then unusable.
  void abort();
  [[nodiscard]] bool aborted() const { return aborted_; }

private:
  std::vector<ncclComm*> comms_;
  std::atomic<bool> aborted_{false};
};

/// In place: x (n elements of type t, on comm's device) becomes the sum of
/// every rank's x. Asynchronous on `stream`; capturable into a CUDA graph.
void all_reduce_sum(act t, void* x, int64_t n, ncclComm* comm, cudaStream_t stream);

}  // namespace llmux::cuda
