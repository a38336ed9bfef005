#include "kernels/cuda/partitions.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include <cuda.h>
#include <cuda_runtime.h>

namespace llmux::cuda {

namespace {

/// The driver's `name` at the ABI of the headers we compiled against.
template <typename F>
F driver(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  check(cudaGetDriverEntryPointByVersion(name, &fn, CUDART_VERSION, cudaEnableDefault, &found), name);
  if (found != cudaDriverEntryPointSuccess || fn == nullptr)
    throw cuda_error(std::string{name} + ": not in this driver (green contexts need CUDA 12.4 or later)");
  return reinterpret_cast<F>(fn);
}

void check_cu(CUresult r, const char* what) {
  if (r != CUDA_SUCCESS)
    throw cuda_error(std::string{what} + ": driver error " + std::to_string(static_cast<int>(r)));
}

}  // namespace

sm_partitions::sm_partitions(int device) {
  std::string why;
  if (!device_available(&why))
    throw cuda_error("no usable CUDA device: " + why);
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaFree(nullptr), "CUDA context");  // the runtime initialises the driver
  auto get_device = driver<decltype(&cuDeviceGet)>("cuDeviceGet");
  auto get_resource = driver<decltype(&cuDeviceGetDevResource)>("cuDeviceGetDevResource");
  auto split = driver<decltype(&cuDevSmResourceSplitByCount)>("cuDevSmResourceSplitByCount");
  CUdevice dev{};
  check_cu(get_device(&dev, device), "cuDeviceGet");
  device_ = static_cast<int>(dev);
  CUdevResource all{};
  check_cu(get_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
  device_sms_ = static_cast<int>(all.sm.smCount);
  // As many groups of the minimum partition size as fit; the rest stays out.
  unsigned int n = 0;
  check_cu(split(nullptr, &n, &all, nullptr, 0, all.sm.minSmPartitionSize), "cuDevSmResourceSplitByCount (count)");
  std::vector<CUdevResource> parts(n);
  CUdevResource rest{};
  check_cu(split(parts.data(), &n, &all, &rest, 0, all.sm.minSmPartitionSize), "cuDevSmResourceSplitByCount");
  if (n == 0)
    throw cuda_error("cuDevSmResourceSplitByCount gave no SM group");
  group_sms_ = static_cast<int>(parts[0].sm.smCount);
  for (unsigned int i = 0; i < n; ++i) {
    std::vector<unsigned char> raw(sizeof(CUdevResource));
    std::memcpy(raw.data(), &parts[i], sizeof(CUdevResource));
    groups_.push_back(std::move(raw));
  }
}

sm_partitions::~sm_partitions() {
  try {
    auto destroy = driver<decltype(&cuGreenCtxDestroy)>("cuGreenCtxDestroy");
    for (auto& [range, p] : made_) {
      cudaStreamDestroy(p.stream);
      destroy(static_cast<CUgreenCtx>(p.green));
    }
  } catch (...) {
    // The driver is going away with the process; nothing to report to.
  }
}

int sm_partitions::groups_for(double share) const {
  const int g = static_cast<int>(std::lround(share * groups()));
  return std::max(1, std::min(g, groups()));
}

cudaStream_t sm_partitions::stream(int first, int count) {
  if (first < 0 || count < 1 || first + count > groups())
    throw cuda_error("SM partition [" + std::to_string(first) + ", " + std::to_string(first + count)
                     + ") outside the " + std::to_string(groups()) + " groups");
  auto key = std::make_pair(first, count);
  if (auto it = made_.find(key); it != made_.end())
    return it->second.stream;
  auto desc_of = driver<decltype(&cuDevResourceGenerateDesc)>("cuDevResourceGenerateDesc");
  auto create = driver<decltype(&cuGreenCtxCreate)>("cuGreenCtxCreate");
  auto stream_of = driver<decltype(&cuGreenCtxStreamCreate)>("cuGreenCtxStreamCreate");
  std::vector<CUdevResource> res(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i)
    std::memcpy(&res[static_cast<size_t>(i)], groups_[static_cast<size_t>(first + i)].data(), sizeof(CUdevResource));
  CUdevResourceDesc desc{};
  check_cu(desc_of(&desc, res.data(), static_cast<unsigned int>(count)), "cuDevResourceGenerateDesc");
  CUgreenCtx green{};
  check_cu(create(&green, desc, static_cast<CUdevice>(device_), CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate");
  CUstream s{};
  check_cu(stream_of(&s, green, CU_STREAM_NON_BLOCKING, 0), "cuGreenCtxStreamCreate");
  made_[key] = {green, s};
  return s;
}

}  // namespace llmux::cuda
