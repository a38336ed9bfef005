#include "tools/llmux/bench_matmul.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"

namespace llmux::tools {

namespace {

std::optional<kernels::dtype> parse_type(const std::string& name) {
  for (uint32_t t = 0; t <= 30; ++t)
    if (auto d = kernels::supported_dtype(t)) {
      std::string s = kernels::to_string(*d);
      std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
      if (s == name)
        return d;
    }
  return std::nullopt;
}

}  // namespace

int run_bench_matmul(const matmul_bench_options& o) {
  std::vector<kernels::dtype> types;
  for (const auto& name : o.types) {
    const auto t = parse_type(name);
    if (!t) {
      std::fprintf(stderr, "llmux bench matmul: unknown or unsupported type '%s'\n", name.c_str());
      return 2;
    }
    if (o.cols % static_cast<int64_t>(kernels::block_elems(*t)) != 0) {
      std::fprintf(stderr, "llmux bench matmul: --cols %lld is not a multiple of %s's block of %zu\n",
                   static_cast<long long>(o.cols), name.c_str(), kernels::block_elems(*t));
      return 2;
    }
    types.push_back(*t);
  }
  std::printf("kernels: %s\n", kernels::to_string(kernels::active_simd()));
  std::printf("%-6s %-6s %-6s %-6s %-7s %12s %10s\n", "type", "n", "k", "batch", "threads", "us", "GOPS");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t ti = 0; ti < types.size(); ++ti) {
    const auto t = &types[ti];
    const std::string& name = o.types[ti];
    const size_t stride = kernels::row_bytes(*t, o.cols);
    std::vector<uint8_t> w(stride * static_cast<size_t>(o.rows));
    std::vector<float> row(static_cast<size_t>(o.cols));
    for (int64_t r = 0; r < o.rows; ++r) {
      for (auto& v : row)
        v = u(rng);
      kernels::quantize_row_ref(*t, row.data(), w.data() + static_cast<size_t>(r) * stride, o.cols);
    }
    const kernels::matrix_view mv{w.data(), *t, o.rows, o.cols};
    for (int threads : o.threads) {
      kernels::thread_pool pool{threads};
      for (int m : o.batches) {
        std::vector<float> x(static_cast<size_t>(m) * static_cast<size_t>(o.cols));
        std::vector<float> y(static_cast<size_t>(m) * static_cast<size_t>(o.rows));
        for (auto& v : x)
          v = u(rng);
        // Each timed run repeats the call for about 20 ms (at 100 GOPS).
        const double ops = 2.0 * m * static_cast<double>(o.rows) * static_cast<double>(o.cols);
        const int calls = std::max(1, static_cast<int>(2e9 / ops));
        double best = 1e30;
        for (int rep = 0; rep < o.repeat; ++rep) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int c = 0; c < calls; ++c)
            kernels::matmul(mv, x.data(), m, y.data(), pool);
          best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
        }
        std::printf("%-6s %-6lld %-6lld %-6d %-7d %12.1f %10.1f\n", name.c_str(), static_cast<long long>(o.rows),
                    static_cast<long long>(o.cols), m, threads, best * 1e6, ops / best / 1e9);
      }
    }
  }
  // What the pool itself costs a matmul: a decode step calls parallel_for a
  // few hundred times, microseconds apart.
  for (int threads : o.threads) {
    if (threads < 2)
      continue;
    kernels::thread_pool pool{threads};
    std::vector<int64_t> sink(static_cast<size_t>(threads) * 8);  // a cache line each
    constexpr int calls = 20000;
    double best = 1e30;
    for (int rep = 0; rep < o.repeat; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int c = 0; c < calls; ++c)
        pool.parallel_for(threads, [&](int64_t b, int64_t e, int w) { sink[static_cast<size_t>(w) * 8] += e - b; });
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls);
    }
    std::printf("parallel_for of an empty body, %d threads: %.2f us\n", threads, best * 1e6);
  }
  return 0;
}

}  // namespace llmux::tools
