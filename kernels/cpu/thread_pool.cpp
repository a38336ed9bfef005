#include "kernels/cpu/thread_pool.hpp"

#include <algorithm>
#include <exception>

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

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0)
    return;
  if (threads_ == 1 || n == 1) {
    fn(0, n, 0);
    return;
  }
  // A chunk that throws must neither unwind past workers still using `fn`
  // (the caller's chunk) nor escape a worker thread (std::terminate): the
  // first exception is kept and rethrown here once every chunk is done.
  std::exception_ptr error;
  std::mutex error_mtx;
  const std::function<void(int64_t, int64_t, int)> guarded = [&](int64_t b, int64_t e, int w) {
    try {
      fn(b, e, w);
    } catch (...) {
      std::lock_guard<std::mutex> lock{error_mtx};
      if (!error)
        error = std::current_exception();
    }
  };
  {
    std::lock_guard<std::mutex> guard{mtx_};
    job_ = &guarded;
    job_n_ = n;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  int64_t begin, end;
  chunk(n, threads_, 0, begin, end);
  if (begin < end)
    guarded(begin, end, 0);
  for (int spin = 0; spin < spin_limit && pending_.load(std::memory_order_acquire) != 0; ++spin)
    cpu_relax();
  {
    std::unique_lock<std::mutex> guard{mtx_};
    done_.wait(guard, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    job_ = nullptr;
  }
  if (error)
    std::rethrow_exception(error);
}

void thread_pool::worker_loop(int index) {
  uint64_t seen = 0;
  while (true) {
    for (int spin = 0; spin < spin_limit && generation_.load(std::memory_order_acquire) == seen
                       && !stop_.load(std::memory_order_relaxed);
         ++spin)
      cpu_relax();
    const std::function<void(int64_t, int64_t, int)>* job;
    int64_t n;
    {
      std::unique_lock<std::mutex> guard{mtx_};
      wake_.wait(guard, [&] {
        return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
      });
      if (stop_.load())
        return;
      seen = generation_.load(std::memory_order_acquire);
      job = job_;
      n = job_n_;
    }
    int64_t begin, end;
    chunk(n, threads_, index, begin, end);
    if (begin < end)
      (*job)(begin, end, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Last one: the caller may be asleep on done_ (take the lock so the
      // wake-up cannot slip between its check and its wait).
      { std::lock_guard<std::mutex> guard{mtx_}; }
      done_.notify_one();
    }
  }
}

}  // namespace llmux::kernels
