// thread_pool::parallel_for: every index exactly once, in contiguous chunks
// with valid worker ids, for many sizes and pool sizes, call after call.

#include "kernels/cpu/thread_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

using llmux::kernels::thread_pool;

TEST_CASE("parallel_for visits every index exactly once", "[thread_pool]") {
  for (int threads = 1; threads <= 5; ++threads) {
    thread_pool pool(threads);
    REQUIRE(pool.size() == threads);
    for (int repeat = 0; repeat < 20; ++repeat) {
      for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 16, 100, 1001}) {
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        std::vector<std::atomic<int>> calls_per_worker(static_cast<size_t>(threads));
        std::atomic<bool> bad_range{false};
        pool.parallel_for(n, [&](int64_t b, int64_t e, int worker) {
          if (b < 0 || e > n || b >= e || worker < 0 || worker >= threads)
            bad_range = true;
          else
            ++calls_per_worker[static_cast<size_t>(worker)];
          for (int64_t i = b; i < e; ++i)
            ++seen[static_cast<size_t>(i)];
        });
        INFO("threads " << threads << " n " << n << " repeat " << repeat);
        REQUIRE_FALSE(bad_range);
        for (const auto& s : seen)
          REQUIRE(s == 1);
        for (const auto& c : calls_per_worker)
          REQUIRE(c <= 1);  // one contiguous chunk per worker
      }
    }
  }
}

TEST_CASE("parallel_for uses all workers and balances chunks", "[thread_pool]") {
  thread_pool pool(3);
  std::vector<int64_t> sizes(3, -1);
  pool.parallel_for(10, [&](int64_t b, int64_t e, int w) { sizes[static_cast<size_t>(w)] = e - b; });
  CHECK(sizes == std::vector<int64_t>{4, 3, 3});
}

TEST_CASE("parallel_for rethrows a chunk's exception after all chunks finish", "[thread_pool]") {
  thread_pool pool(3);
  for (int thrower = 0; thrower < 3; ++thrower) {
    std::atomic<int> done{0};
    CHECK_THROWS_AS(pool.parallel_for(3,
                                      [&](int64_t, int64_t, int w) {
                                        if (w == thrower)
                                          throw std::runtime_error("chunk failed");
                                        ++done;
                                      }),
                    std::runtime_error);
    CHECK(done == 2);
  }
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i)
      sum += i;
  });
  CHECK(sum == 4950);
}

TEST_CASE("pools can be created and destroyed repeatedly", "[thread_pool]") {
  for (int i = 0; i < 50; ++i) {
    auto pool = std::make_unique<thread_pool>(1 + i % 4);
    std::atomic<int> count{0};
    pool->parallel_for(7, [&](int64_t b, int64_t e, int) { count += static_cast<int>(e - b); });
    REQUIRE(count == 7);
  }
}

TEST_CASE("workers and a caller that went to sleep are woken", "[thread_pool]") {
  // Idle past the spin (tens of microseconds to a millisecond) the workers
  // sleep on a condition variable, and a caller whose workers are still busy
  // past its own spin sleeps too: each call must still run every chunk and
  // return (a missed wake-up hangs here).
  using namespace std::chrono_literals;
  thread_pool pool(3);
  for (int round = 0; round < 12; ++round) {
    if (round % 3 != 0)
      std::this_thread::sleep_for(30ms);  // the workers go to sleep
    const bool slow_worker = round % 2 == 1;
    std::vector<std::atomic<int>> seen(30);
    pool.parallel_for(30, [&](int64_t b, int64_t e, int w) {
      if (slow_worker && w == 2)
        std::this_thread::sleep_for(20ms);  // the caller goes to sleep
      for (int64_t i = b; i < e; ++i)
        ++seen[static_cast<size_t>(i)];
    });
    INFO("round " << round);
    for (const auto& s : seen)
      REQUIRE(s == 1);
  }
}
