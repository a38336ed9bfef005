#include "kernels/cpu/thread_pool.hpp"

#include <algorithm>
#include <exception>
#include <utility>

namespace llmux::kernels {

thread_pool::thread_pool(int threads) : threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i)
    workers_.emplace_back([this, i] { worker_loop(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_)
    t.join();
}

namespace {

/// Busy-wait iterations before sleeping (tens of microseconds).
constexpr int spin_limit = 20000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void chunk(int64_t n, int parts, int index, int64_t& begin, int64_t& end) {
  int64_t base = n / parts;
  int64_t extra = n % parts;
  begin = index * base + std::min<int64_t>(index, extra);
  end = begin + base + (index < extra ? 1 : 0);
}

}  // namespace

// A chunk that throws must neither unwind past workers still using the job
// (the caller's chunk) nor escape a worker thread (std::terminate): the first
// exception is kept and rethrown by parallel_for once every chunk is done.
void thread_pool::run_chunk(int64_t begin, int64_t end, int index) {
  if (begin >= end)
    return;
  try {
    (*job_)(begin, end, index);
  } catch (...) {
    std::lock_guard<std::mutex> lock{error_mtx_};
    if (!error_)
      error_ = std::current_exception();
  }
}

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0)
    return;
  if (threads_ == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  error_ = nullptr;
  pending_.store(threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    // A worker that announced itself is inside wake_.wait (or will see the
    // new generation): taking the lock orders this after its check.
    { std::lock_guard<std::mutex> guard{mtx_}; }
    wake_.notify_all();
  }
  int64_t begin, end;
  chunk(n, threads_, 0, begin, end);
  run_chunk(begin, end, 0);
  for (int spin = 0; spin < spin_limit && pending_.load(std::memory_order_acquire) != 0; ++spin)
    cpu_relax();
  if (pending_.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> guard{mtx_};
    caller_waiting_.store(true, std::memory_order_seq_cst);
    done_.wait(guard, [this] { return pending_.load(std::memory_order_seq_cst) == 0; });
    caller_waiting_.store(false, std::memory_order_relaxed);
  }
  job_ = nullptr;
  if (error_)
    std::rethrow_exception(std::exchange(error_, nullptr));
}

void thread_pool::worker_loop(int index) {
  uint64_t seen = 0;
  while (true) {
    uint64_t g;
    int spin = 0;
    while ((g = generation_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_relaxed)) {
      if (++spin < spin_limit) {
        cpu_relax();
        continue;
      }
      std::unique_lock<std::mutex> guard{mtx_};
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wake_.wait(guard, [&] {
        return stop_.load(std::memory_order_seq_cst) || generation_.load(std::memory_order_seq_cst) != seen;
      });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
      spin = 0;
    }
    if (stop_.load(std::memory_order_acquire))
      return;
    seen = g;
    int64_t begin, end;
    chunk(job_n_, threads_, index, begin, end);
    run_chunk(begin, end, index);
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_waiting_.load(std::memory_order_seq_cst)) {
      // The caller is asleep on done_ (or about to check pending_ under the
      // lock): taking the lock orders the wake-up after its check.
      { std::lock_guard<std::mutex> guard{mtx_}; }
      done_.notify_one();
    }
  }
}

}  // namespace llmux::kernels
