#pragma once
/// A fixed set of worker threads that runs data-parallel loops. One pool per
/// model partition: the gpu_unit hands each engine the pool it may use, which
/// is how compute shares are enforced on CPU (a share move swaps the pool
/// between steps, never during one).
///
/// `parallel_for` blocks the caller until every chunk is done; the caller's
/// thread takes part (so a pool of N threads uses N−1 workers + the caller).
/// Not reentrant: call it from one thread at a time.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace llmux::kernels {

class thread_pool {
public:
  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  [[nodiscard]] int size() const { return threads_; }

  /// Splits [0, n) into size() contiguous chunks and runs fn(begin, end, worker)
  /// for each, worker in [0, size()). Returns when all are done.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

private:
  void worker_loop(int index);
  void run_chunk(int64_t begin, int64_t end, int index);

  int threads_;
  std::vector<std::thread> workers_;
  // Hand-off: workers spin briefly on `generation_` (a step calls
  // parallel_for a few hundred times, microseconds apart, and a futex
  // wake-up costs more than a small matmul) and sleep on `wake_` after that;
  // the caller spins on `pending_`, then sleeps on `done_`. The mutex and the
  // condition variables are touched only when someone sleeps (`sleepers_`,
  // `caller_waiting_`: each side announces itself before its last check, the
  // other checks after its own store, both sequentially consistent, so a
  // wake-up cannot be missed). `job_` and `job_n_` are published by the
  // release of `generation_`.
  std::mutex mtx_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};
  std::atomic<bool> stop_{false};
  // The first exception a chunk threw this call (rethrown by parallel_for).
  std::mutex error_mtx_;
  std::exception_ptr error_;
};

}  // namespace llmux::kernels
