#include "kernels/cuda/nccl.hpp"

#include <dlfcn.h>

#include <string>

#include <nccl.h>

namespace llmux::cuda {

namespace {

struct nccl_api {
  decltype(&ncclCommInitAll) init_all = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclCommAbort) abort = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
};

/// Loads the library's functions; throws naming what is missing.
nccl_api load() {
  void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);  // kept for the process's life
  if (h == nullptr) {
    const char* e = dlerror();
    throw cuda_error(std::string{"tensor parallelism needs NCCL: cannot load libnccl.so.2: "} +
                     (e != nullptr ? e : "unknown error"));
  }
  std::string missing;
  auto sym = [&](const char* name) {
    void* p = dlsym(h, name);
    if (p == nullptr)
      missing = name;
    return p;
  };
  nccl_api a;
  a.init_all = reinterpret_cast<decltype(a.init_all)>(sym("ncclCommInitAll"));
  a.destroy = reinterpret_cast<decltype(a.destroy)>(sym("ncclCommDestroy"));
  a.abort = reinterpret_cast<decltype(a.abort)>(sym("ncclCommAbort"));
  a.all_reduce = reinterpret_cast<decltype(a.all_reduce)>(sym("ncclAllReduce"));
  a.error_string = reinterpret_cast<decltype(a.error_string)>(sym("ncclGetErrorString"));
  if (!missing.empty())
    throw cuda_error("libnccl.so.2 has no " + missing);
  return a;
}

/// The functions, loaded on first use (a failed load is tried again next
/// time: a static whose initialiser throws stays uninitialised).
const nccl_api& api() {
  static const nccl_api loaded = load();
  return loaded;
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    throw cuda_error(std::string{what} + ": " + api().error_string(r));
}

ncclDataType_t nccl_type(act t) {
  switch (t) {
    case act::f32: return ncclFloat32;
    case act::f16: return ncclFloat16;
    case act::bf16: return ncclBfloat16;
  }
  throw cuda_error("all_reduce_sum: unknown activation type");
}

}  // namespace

nccl_group::nccl_group(const std::vector<int>& devices) {
  const auto& a = api();
  comms_.assign(devices.size(), nullptr);
  check_nccl(a.init_all(comms_.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
}

nccl_group::~nccl_group() {
  for (auto* c : comms_)
    if (c != nullptr)
      api().destroy(c);  // abort() leaves none behind
}

void nccl_group::abort() {
  if (aborted_.exchange(true))
    return;
  for (auto* c : comms_)
    if (c != nullptr)
      api().abort(c);  // wakes ranks waiting in a collective; the group is unusable after
  comms_.assign(comms_.size(), nullptr);
}

void all_reduce_sum(act t, void* x, int64_t n, ncclComm* comm, cudaStream_t stream) {
  if (n <= 0)
    return;
  check_nccl(api().all_reduce(x, x, static_cast<size_t>(n), nccl_type(t), ncclSum, comm, stream), "ncclAllReduce");
}

}  // namespace llmux::cuda
