#pragma once
/// SM partitions of one GPU as green contexts: the device's SMs split into
/// equal groups (Hopper: 8 SMs, the split granularity), and a stream for
/// any contiguous range of groups, made on first use and kept. Work sent on
/// a range's stream runs on those SMs only, so jobs on disjoint ranges do
/// not compete for SMs. A job moves to another partition by sending its
/// next step on another range's stream (between steps, never inside one).
///
/// The driver API is reached through cudaGetDriverEntryPointByVersion, so
/// nothing links libcuda (absent on machines without a GPU driver).

#include <map>
#include <utility>
#include <vector>

#include "kernels/cuda/ops.hpp"

namespace llmux::cuda {

class sm_partitions {
public:
  /// Splits `device` into groups of its minimum partition size. Throws
  /// cuda_error naming the failing driver call (no driver, a GPU or driver
  /// without green contexts, ...).
  explicit sm_partitions(int device = 0);
  ~sm_partitions();
  sm_partitions(const sm_partitions&) = delete;
  sm_partitions& operator=(const sm_partitions&) = delete;

  [[nodiscard]] int groups() const { return static_cast<int>(groups_.size()); }
  [[nodiscard]] int group_sms() const { return group_sms_; }
  [[nodiscard]] int device_sms() const { return device_sms_; }
  /// The groups a share (0, 1] of the device gets: round(share · groups),
  /// at least one.
  [[nodiscard]] int groups_for(double share) const;
  /// A stream whose work runs on groups [first, first + count) only.
  /// Throws cuda_error for a range outside [0, groups()).
  [[nodiscard]] cudaStream_t stream(int first, int count);

private:
  struct partition {
    void* green = nullptr;  ///< CUgreenCtx
    cudaStream_t stream = nullptr;
  };
  int device_sms_ = 0, group_sms_ = 0;
  int device_ = 0;  ///< CUdevice
  std::vector<std::vector<unsigned char>> groups_;  ///< each a CUdevResource, opaque here
  std::map<std::pair<int, int>, partition> made_;
};

}  // namespace llmux::cuda
