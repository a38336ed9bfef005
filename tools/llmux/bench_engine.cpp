#include "tools/llmux/bench_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/cpu_step_profiler.hpp"
#include "engine/llama_runner.hpp"
#include "engine/sampler.hpp"

namespace llmux::tools {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}


/// /proc/cpuinfo's first "model name" ("AMD EPYC ..."), or "unknown".
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0)
      if (auto colon = line.find(':'); colon != std::string::npos)
        return line.substr(line.find_first_not_of(" \t", colon + 1));
  return "unknown";
}

/// /proc/loadavg's first three fields: other work on the machine while a
/// profile was measured shows in its times.
std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return in ? one + " " + five + " " + fifteen : "unknown";
}

/// Clock ticks of CPU time: the machine's (all CPUs) and this process's.
/// Their difference over a run is what other processes used meanwhile.
struct cpu_ticks {
  long long machine_busy = 0, machine_total = 0, self = 0;
};

cpu_ticks read_cpu_ticks() {
  cpu_ticks t;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  long long v[8] = {};  // user nice system idle iowait irq softirq steal
  stat >> cpu;
  for (auto& x : v)
    stat >> x;
  for (auto x : v)
    t.machine_total += x;
  t.machine_busy = t.machine_total - v[3] - v[4];
  std::ifstream self("/proc/self/stat");
  std::string line;
  std::getline(self, line);
  // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces.
  if (auto paren = line.rfind(')'); paren != std::string::npos) {
    std::istringstream fields(line.substr(paren + 1));
    std::string skip;
    for (int field = 3; field <= 13; ++field)
      fields >> skip;
    long long utime = 0, stime = 0;
    fields >> utime >> stime;
    t.self = utime + stime;
  }
  return t;
}

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (int x : v)
    out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

/// The model file's weights, or null after saying why on stderr.
std::shared_ptr<engine::llama_model> load_model(const std::string& path) {
  try {
    return engine::llama_model::load(path);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return nullptr;
  }
}

}  // namespace

int run_bench_engine_profile(const engine_bench_options& o) {
  if (o.backend != "cpu") {
    std::cerr << "llmux bench engine: --profile is not implemented yet for the " << o.backend
              << " backend (only cpu); a GPU profile needs the SM-partition ladder timed per share\n";
    return 2;
  }
  if (o.model.empty()) {
    std::cerr << "llmux bench engine: --profile needs --model FILE\n";
    return 2;
  }
  auto model = load_model(o.model);
  if (!model)
    return 2;
  engine::cpu_profile_options po;
  po.key = o.profile_key.empty() ? std::filesystem::path(o.model).stem().string() : o.profile_key;
  po.threads = o.threads;
  po.batches = o.batches;
  po.lengths = o.lengths;
  po.prefill_token_budget = o.prefill_token_budget;
  po.decode_steps = o.decode_steps;
  po.sweeps = o.profile_sweeps;
  std::vector<int> lengths;
  try {
    lengths = engine::cpu_profile_lengths(*model, po);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return 2;
  }
  std::printf("profile of %s as '%s': threads %s, batches %s, lengths %s (context %d), prefill up to %lld "
              "tokens a step\n",
              o.model.c_str(), po.key.c_str(), join(po.threads).c_str(), join(po.batches).c_str(),
              join(lengths).c_str(), model->hparams().n_ctx_train,
              static_cast<long long>(po.prefill_token_budget));
  std::printf("%-6s %-8s %-7s %-6s %-6s %-7s %12s\n", "sweep", "phase", "threads", "share", "batch", "length",
              "ms/step");
  auto progress = [](int sweep, const char* kind, int threads, int share, int batch, int length, double ms) {
    if (ms > 0)
      std::printf("%-6d %-8s %-7d %-6d %-6d %-7d %12.2f\n", sweep, kind, threads, share, batch, length, ms);
    else
      std::printf("%-6d %-8s %-7d %-6d %-6d %-7d %12s\n", sweep, kind, threads, share, batch, length,
                  "skipped");
    std::fflush(stdout);
  };
  const std::string load_before = load_average();
  const cpu_ticks ticks_before = read_cpu_ticks();
  const auto t0 = clock_type::now();
  engine::step_profile profile;
  try {
    profile = engine::measure_cpu_profile(model, po, progress);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench engine: " << e.what() << "\n";
    return 1;
  }
  const double took = seconds_since(t0);
  const auto& hp = model->hparams();
  profile.set_meta("backend", "cpu");
  profile.set_meta("device", cpu_model_name());
  profile.set_meta("threads", join(po.threads));
  profile.set_meta("share", "threads as a percentage of "
                              + std::to_string(*std::max_element(po.threads.begin(), po.threads.end())));
  profile.set_meta("date", utc_now());
  profile.set_meta("command", o.command_line);
  profile.set_meta("model_file", std::filesystem::path(o.model).filename().string());
  profile.set_meta("model_shape", std::to_string(hp.n_layer) + " layers, " + std::to_string(hp.n_embd)
                                    + " hidden, " + std::to_string(hp.n_head) + " heads ("
                                    + std::to_string(hp.n_head_kv) + " kv), vocab "
                                    + std::to_string(hp.n_vocab));
  profile.set_meta("unit", "ms per step; -1: prefill above " + std::to_string(po.prefill_token_budget)
                             + " tokens, not measured");
  char statistic[256];
  std::snprintf(statistic, sizeof statistic,
                "mean step time: decode over up to %d steps after an untimed one, prefill over up to %d; "
                "a point stops repeating after %g s; the fastest of %d sweeps",
                po.decode_steps, po.prefill_repeats, po.point_seconds, po.sweeps);
  profile.set_meta("statistic", statistic);
  profile.set_meta("seconds", std::to_string(static_cast<int>(std::lround(took))));
  profile.set_meta("load_average", "before " + load_before + ", after " + load_average());
  const cpu_ticks ticks_after = read_cpu_ticks();
  const long long total = ticks_after.machine_total - ticks_before.machine_total;
  const long long others = (ticks_after.machine_busy - ticks_before.machine_busy)
                           - (ticks_after.self - ticks_before.self);
  char other_cpu[160];
  std::snprintf(other_cpu, sizeof other_cpu,
                "%.1f%% of the machine's CPU time went to other processes during the run",
                total > 0 ? 100.0 * static_cast<double>(std::max(others, 0LL)) / static_cast<double>(total) : 0.0);
  profile.set_meta("other_cpu", other_cpu);
  std::ofstream out(o.profile_out, std::ios::binary);
  out << profile.to_json_text();
  out.close();
  if (!out) {
    std::cerr << "llmux bench engine: cannot write " << o.profile_out << "\n";
    return 1;
  }
  std::printf("wrote %s (%.0f s)\n", o.profile_out.c_str(), took);
  return 0;
}

int run_bench_engine(const engine_bench_options& o) {
  if (!o.profile_out.empty())
    return run_bench_engine_profile(o);
  if (o.backend == "cuda")
    return run_bench_engine_cuda(o);
  if (o.model.empty()) {
    std::cerr << "llmux bench engine: --model FILE is required for the cpu backend\n";
    return 2;
  }
  auto model = load_model(o.model);
  if (!model)
    return 2;
  const auto& hp = model->hparams();
  const int vocab = hp.n_vocab;
  int prompt = std::min(o.prompt_tokens, hp.n_ctx_train - o.decode_steps - 1);
  std::printf("model %s: %d layers, %d hidden, %d heads (%d kv), vocab %d\n", o.model.c_str(),
              hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, vocab);
  std::printf("kernels: %s (the best this CPU offers: %s)\n", kernels::to_string(kernels::active_simd()),
              kernels::to_string(kernels::best_simd()));
  std::printf("%-8s %-7s %-6s %14s %12s\n", "phase", "threads", "batch", "tokens/s", "ms/step");
  std::vector<float> logits;
  for (int threads : o.threads) {
    kernels::thread_pool pool{threads};
    // Prefill: one prompt of `prompt` tokens in one step.
    {
      engine::llama_runner runner{model, 16, 1 << 20};
      auto toks = engine::filler_tokens(prompt, vocab, 1);
      std::vector<engine::runner_seq> seqs{{1, toks.data(), prompt, 0, true}};
      auto t0 = clock_type::now();
      if (!runner.forward(seqs, logits, pool))
        return 1;
      double s = seconds_since(t0);
      std::printf("%-8s %-7d %-6d %14.1f %12.2f\n", "prefill", threads, 1, prompt / s, s * 1e3);
      if (o.json)
        std::cout << nlohmann::json{{"phase", "prefill"}, {"threads", threads}, {"batch", 1},
                                    {"prompt_tokens", prompt}, {"tokens_per_s", prompt / s}}
                       .dump()
                  << std::endl;
    }
    // Decode: `batch` sequences with short prompts, then decode_steps steps.
    for (int batch : o.batches) {
      engine::llama_runner runner{model, 16, 1 << 20};
      std::vector<std::vector<int32_t>> prompts, feeds(static_cast<size_t>(batch));
      std::vector<engine::runner_seq> seqs;
      for (int b = 0; b < batch; ++b)
        prompts.push_back(engine::filler_tokens(16, vocab, b + 2));
      for (int b = 0; b < batch; ++b)
        seqs.push_back({static_cast<uint64_t>(b + 1), prompts[b].data(), 16, 0, true});
      if (!runner.forward(seqs, logits, pool))
        return 1;
      auto t0 = clock_type::now();
      for (int step = 0; step < o.decode_steps; ++step) {
        for (int b = 0; b < batch; ++b) {
          auto next = engine::sample_token(&logits[static_cast<size_t>(b) * vocab], vocab, {0.0f}, 0);
          feeds[static_cast<size_t>(b)] = {next};
          seqs[static_cast<size_t>(b)] = {static_cast<uint64_t>(b + 1),
                                          feeds[static_cast<size_t>(b)].data(), 1, 16 + step, true};
        }
        if (!runner.forward(seqs, logits, pool))
          return 1;
      }
      double s = seconds_since(t0);
      double tps = static_cast<double>(batch) * o.decode_steps / s;
      std::printf("%-8s %-7d %-6d %14.1f %12.2f\n", "decode", threads, batch, tps,
                  s * 1e3 / o.decode_steps);
      if (o.json)
        std::cout << nlohmann::json{{"phase", "decode"}, {"threads", threads}, {"batch", batch},
                                    {"steps", o.decode_steps}, {"tokens_per_s", tps}}
                       .dump()
                  << std::endl;
    }
  }
  return 0;
}

}  // namespace llmux::tools
