// Split jobs on the CPU engine: a model's prefill job and decode job step
// one engine at the same time, on two threads, over disjoint sequences, with
// the KV in the unit's arena as a real unit runs it. Every sequence must come
// out as when it runs alone; each job's lane has its own worker threads.

#include <catch2/catch.hpp>

#include "tests/skip.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#ifdef __linux__
#include <pthread.h>
#include <sched.h>
#endif

#include "engine/cpu_engine.hpp"
#include "engine/gguf.hpp"
#include "engine/vocab.hpp"

using namespace llmux;
using engine::job_kind;
using engine::seq_work;
using engine::step_input;

namespace {

const std::string model_path = LLMUX_SHARED_DIR "/models/stories260K/stories260K.gguf";

struct loaded_model {
  std::shared_ptr<const engine::llama_model> weights;
  std::shared_ptr<const engine::tokenizer> tok;
};

loaded_model stories() {
  auto weights = engine::llama_model::load(model_path);
  auto tok = engine::make_tokenizer(engine::read_vocab(weights->file()));
  return {weights, tok};
}

/// One request: its prompt, how many tokens it generates, how it samples.
struct request {
  std::vector<int32_t> prompt;
  size_t want = 0;
  std::vector<int32_t> golden;  ///< llama.cpp's greedy output; empty when it samples otherwise
  seq_work sampling;            ///< the sampling fields of each of its steps
};

/// The golden prompts three times over: greedy (llama.cpp's tokens known),
/// greedy with penalties (the engine's token history), and seeded sampling.
std::vector<request> requests() {
  std::ifstream in{LLMUX_SHARED_DIR "/golden/stories260K_greedy.json"};
  REQUIRE(in.good());
  auto g = nlohmann::json::parse(in);
  std::vector<request> out;
  for (int variant = 0; variant < 3; ++variant)
    for (const auto& c : g["cases"]) {
      request r;
      r.prompt = c["prompt_tokens"].get<std::vector<int32_t>>();
      auto completion = c["completion_tokens"].get<std::vector<int32_t>>();
      r.want = completion.size();
      auto& sp = r.sampling;
      sp.prompt_len = static_cast<int32_t>(r.prompt.size());
      sp.seed = 1000 + out.size();
      sp.temperature = 0.0f;
      if (variant == 0) {
        r.golden = completion;
      } else if (variant == 1) {
        sp.repetition_penalty = 1.3f;
        sp.frequency_penalty = 0.4f;
        sp.presence_penalty = 0.2f;
      } else {
        sp.temperature = 0.9f;
        sp.top_k = 40;
      }
      out.push_back(std::move(r));
    }
  return out;
}

seq_work work_of(const request& r, uint64_t id, std::vector<int32_t> tokens, int32_t context_len,
                 bool sample) {
  seq_work w = r.sampling;
  w.seq_id = id;
  w.tokens = std::move(tokens);
  w.context_len = context_len;
  w.sample = sample;
  return w;
}

/// `r` alone on a mixed-job engine: its whole prompt in one step, then one
/// token a step.
std::vector<int32_t> run_alone(engine::cpu_engine& e, const request& r, uint64_t id) {
  std::vector<int32_t> got;
  step_input in;
  in.seqs.push_back(work_of(r, id, r.prompt, 0, true));
  while (got.size() < r.want) {
    auto out = e.step(in);
    REQUIRE(out.tokens.size() == 1);
    got.push_back(out.tokens[0]);
    auto& w = in.seqs[0];
    w.context_len += static_cast<int32_t>(w.tokens.size());
    w.tokens = {got.back()};
  }
  step_input bye;
  bye.released = {id};
  (void)e.step(bye);
  return got;
}

/// The kv_manager's part for the test: physical ids of the unit's arena,
/// granted per token-block and taken back when a sequence is released.
struct block_grants {
  size_t per_tb;
  int block_tokens;
  std::vector<int32_t> free;
  std::map<uint64_t, std::vector<int32_t>> tables;

  block_grants(int64_t blocks, size_t per_token_block, int bt) : per_tb(per_token_block), block_tokens(bt) {
    for (auto id = static_cast<int32_t>(blocks) - 1; id >= 0; --id)
      free.push_back(id);
  }
  /// Ids `seq`'s table gains so that it covers `tokens` positions.
  std::vector<int32_t> grow(uint64_t seq, int64_t tokens) {
    auto& t = tables[seq];
    std::vector<int32_t> ids;
    while (static_cast<int64_t>(t.size() / per_tb) * block_tokens < tokens)
      for (size_t i = 0; i < per_tb; ++i) {
        REQUIRE_FALSE(free.empty());
        ids.push_back(free.back());
        t.push_back(free.back());
        free.pop_back();
      }
    return ids;
  }
  void give_back(uint64_t seq) {
    auto& t = tables.at(seq);
    free.insert(free.end(), t.begin(), t.end());
    tables.erase(seq);
  }
};

struct timed_step {
  engine::step_output out;
  std::chrono::steady_clock::time_point begin, end;
};

timed_step timed(engine::engine& e, const step_input& in) {
  timed_step t;
  t.begin = std::chrono::steady_clock::now();
  t.out = e.step(in);
  t.end = std::chrono::steady_clock::now();
  return t;
}

/// CPUs this process may run on.
int usable_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    return CPU_COUNT(&set);
#endif
  return static_cast<int>(std::thread::hardware_concurrency());
}

/// Keeps the calling thread on the `k`-th CPU it may use (nothing when it
/// may use fewer, or off Linux), until destroyed. Left to itself, the kernel
/// may keep two threads that wake each other for sub-millisecond steps on
/// one CPU (seen on 2-vCPU VMs), and the steps would take turns there.
class cpu_pin {
public:
  explicit cpu_pin(int k) {
#ifdef __linux__
    if (pthread_getaffinity_np(pthread_self(), sizeof old_, &old_) != 0)
      return;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &old_) && k-- == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        pinned_ = pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
        return;
      }
#else
    (void)k;
#endif
  }
  ~cpu_pin() {
#ifdef __linux__
    if (pinned_)
      pthread_setaffinity_np(pthread_self(), sizeof old_, &old_);
#endif
  }
  cpu_pin(const cpu_pin&) = delete;
  cpu_pin& operator=(const cpu_pin&) = delete;
  [[nodiscard]] bool pinned() const { return pinned_; }

private:
#ifdef __linux__
  cpu_set_t old_{};
#endif
  bool pinned_ = false;
};

/// The decode job's partition: one thread that steps the engine whenever
/// it is handed a step (it sleeps in between, as a partition actor does on
/// its mailbox).
class job_thread {
public:
  explicit job_thread(engine::engine& e) : e_(e), thread_([this] { loop(); }) {}
  ~job_thread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  job_thread(const job_thread&) = delete;
  job_thread& operator=(const job_thread&) = delete;

  /// Hands a copy of `in` over (the thread may outlive the caller's, when
  /// the caller throws) and returns once the thread has taken it, so that a
  /// step the caller starts now runs beside it.
  void start(const step_input& in) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = in;
      in_ = &job_;
      taken_ = false;
    }
    cv_.notify_all();
    while (!taken_.load())
      std::this_thread::yield();
  }
  /// Whether the thread runs on a CPU of its own (the second one).
  [[nodiscard]] bool pinned() const { return pinned_.load(); }
  /// Waits for the step handed over by `start`; rethrows what it threw.
  timed_step wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_ == nullptr; });
    if (error_)
      std::rethrow_exception(std::exchange(error_, nullptr));
    return std::move(result_);
  }

private:
  void loop() {
    cpu_pin pin{1};  // beside the test's thread, which runs the prefill job on the first
    pinned_ = pin.pinned();
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || in_ != nullptr; });
      if (stop_)
        return;
      lock.unlock();
      taken_ = true;
      try {
        result_ = timed(e_, *in_);
      } catch (...) {
        error_ = std::current_exception();
      }
      lock.lock();
      in_ = nullptr;
      cv_.notify_all();
    }
  }

  engine::engine& e_;
  std::mutex mu_;
  std::condition_variable cv_;
  step_input job_;
  const step_input* in_ = nullptr;  ///< the step to run (job_); null when done
  std::atomic<bool> taken_{false}, pinned_{false};
  timed_step result_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("split jobs: a prefill step and a decode step at once on one engine give each sequence its tokens as alone",
          "[split][llama]") {
  if (usable_cpus() < 2)
    llmux::test::skip_test("the two jobs' steps can overlap only with two CPUs; this process may use "
                           + std::to_string(usable_cpus()));
  auto m = stories();
  auto reqs = requests();

  // Reference: each request alone, one after another, on a mixed-job engine.
  std::vector<std::vector<int32_t>> alone;
  {
    engine::cpu_engine_options o;
    o.max_threads = 1;
    o.block_tokens = 16;
    o.kv_blocks = 4096;
    engine::cpu_engine ref{m.weights, m.tok, o};
    for (size_t i = 0; i < reqs.size(); ++i) {
      alone.push_back(run_alone(ref, reqs[i], i + 1));
      if (!reqs[i].golden.empty())
        CHECK(alone.back() == reqs[i].golden);  // the reference is llama.cpp's, where known
    }
  }

  // The split engine: a thread a lane (the test's two threads, one a CPU),
  // KV in a unit's arena of small blocks (a table crosses many of them),
  // ids recycled after release.
  const auto& hp = m.weights->hparams();
  const auto per_tb = static_cast<size_t>(hp.n_layer) * static_cast<size_t>(hp.n_head_kv);
  constexpr int bt = 4;
  constexpr int64_t arena_blocks = 8192;  // ~10 requests live at once, 16 token-blocks each
  auto arena = std::make_shared<engine::kv_arena>(arena_blocks, bt, hp.head_dim);
  engine::cpu_engine_options o;
  o.max_threads = 2;
  o.share = 0.5;
  o.arena = arena;
  engine::cpu_engine e{m.weights, m.tok, o};
  e.set_job_share(job_kind::prefill, 0.5);
  e.set_job_share(job_kind::decode, 0.5);
  REQUIRE(e.threads(job_kind::prefill) == 1);
  REQUIRE(e.threads(job_kind::decode) == 1);
  block_grants grants{arena_blocks, per_tb, bt};
  job_thread decoder{e};
  cpu_pin pin{0};

  // Requests queue for the prefill job, which feeds one of them 2 prompt
  // tokens a step (sampling its first token on the last chunk); the decode
  // job then feeds every started request its last token, each step.
  struct seq_state {
    int32_t pos = 0;  ///< tokens in the KV cache
    std::vector<int32_t> got;
  };
  std::vector<seq_state> st(reqs.size());
  size_t next_prefill = 0;
  std::vector<uint64_t> to_release;
  int rounds = 0, both = 0, overlapped = 0;
  auto seq_id = [](size_t i) { return uint64_t{100} + i; };
  for (;;) {
    step_input prefill, decode;
    prefill.job = job_kind::prefill;
    decode.job = job_kind::decode;
    std::vector<size_t> prefill_who, decode_who;
    if (next_prefill < reqs.size()) {
      const auto& r = reqs[next_prefill];
      auto& s = st[next_prefill];
      const auto pos = static_cast<size_t>(s.pos);
      const auto n = std::min<size_t>(2, r.prompt.size() - pos);
      std::vector<int32_t> chunk(r.prompt.begin() + static_cast<std::ptrdiff_t>(pos),
                                 r.prompt.begin() + static_cast<std::ptrdiff_t>(pos + n));
      auto w = work_of(r, seq_id(next_prefill), chunk, s.pos, pos + n == r.prompt.size());
      w.kv_blocks = grants.grow(w.seq_id, s.pos + static_cast<int64_t>(n));
      prefill.seqs.push_back(std::move(w));
      prefill_who.push_back(next_prefill);
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (st[i].got.empty() || st[i].got.size() >= reqs[i].want)
        continue;
      auto w = work_of(reqs[i], seq_id(i), {st[i].got.back()}, st[i].pos, true);
      w.kv_blocks = grants.grow(w.seq_id, st[i].pos + 1);
      decode.seqs.push_back(std::move(w));
      decode_who.push_back(i);
    }
    // Finished sequences leave through the decode job, while the prefill
    // job may be adopting blocks for another.
    decode.released = std::move(to_release);
    to_release.clear();
    if (prefill.seqs.empty() && decode.seqs.empty() && decode.released.empty())
      break;
    ++rounds;

    // The decode job steps on its own thread, the prefill job on this one,
    // as the unit's two partitions run them; both start together.
    timed_step p, d;
    const bool decode_work = !decode.seqs.empty() || !decode.released.empty();
    if (decode_work)
      decoder.start(decode);
    if (!prefill.seqs.empty())
      p = timed(e, prefill);
    if (decode_work)
      d = decoder.wait();
    if (!prefill.seqs.empty() && !decode.seqs.empty()) {
      ++both;
      if (std::max(p.begin, d.begin) < std::min(p.end, d.end))
        ++overlapped;
    }

    for (auto id : decode.released)
      grants.give_back(id);
    REQUIRE(p.out.tokens.size() == prefill.seqs.size());
    REQUIRE(d.out.tokens.size() == decode.seqs.size());
    for (size_t k = 0; k < prefill_who.size(); ++k) {
      auto& s = st[prefill_who[k]];
      s.pos += static_cast<int32_t>(prefill.seqs[k].tokens.size());
      if (prefill.seqs[k].sample) {
        REQUIRE(p.out.tokens[k] >= 0);
        s.got.push_back(p.out.tokens[k]);
        ++next_prefill;
      } else {
        CHECK(p.out.tokens[k] == -1);
      }
    }
    for (size_t k = 0; k < decode_who.size(); ++k) {
      auto i = decode_who[k];
      st[i].pos += 1;
      st[i].got.push_back(d.out.tokens[k]);
      if (st[i].got.size() == reqs[i].want)
        to_release.push_back(seq_id(i));
    }
  }

  for (size_t i = 0; i < reqs.size(); ++i) {
    INFO("request " << i << " (temperature " << reqs[i].sampling.temperature
                    << ", repetition penalty " << reqs[i].sampling.repetition_penalty << ")");
    CHECK(st[i].got == alone[i]);
  }
  // Every table was released, and every id came back.
  CHECK(e.runner().kv().sequences() == 0);
  CHECK(grants.free.size() == static_cast<size_t>(arena_blocks));
  // Both jobs had work in most rounds, and their steps did run at once.
  INFO(rounds << " rounds, " << both << " with both jobs, " << overlapped << " overlapping in time");
  CHECK(both >= 60);
  // With two CPUs to use, each job's thread has one (checked up front), so
  // their steps must have overlapped.
  REQUIRE(pin.pinned());
  REQUIRE(decoder.pinned());
  CHECK(overlapped > 0);
}

TEST_CASE("split jobs: each lane has its own worker threads, the decode lane starts with its first share or step",
          "[split]") {
  auto m = stories();
  engine::cpu_engine_options o;
  o.max_threads = 4;
  o.share = 0.5;
  o.kv_blocks = 256;

  SECTION("set_job_share moves one lane's threads") {
    engine::cpu_engine e{m.weights, m.tok, o};
    CHECK(e.threads() == 2);
    CHECK(e.threads(job_kind::mixed) == 2);
    CHECK(e.threads(job_kind::prefill) == 2);  // mixed and prefill steps share lane 0
    CHECK(e.threads(job_kind::decode) == 0);   // not started

    e.set_job_share(job_kind::decode, 0.25);
    CHECK(e.threads(job_kind::decode) == 1);
    CHECK(e.threads(job_kind::prefill) == 2);
    e.set_job_share(job_kind::decode, 0.75);
    CHECK(e.threads(job_kind::decode) == 3);
    CHECK(e.threads(job_kind::prefill) == 2);

    e.set_job_share(job_kind::prefill, 0.25);
    CHECK(e.threads(job_kind::prefill) == 1);
    CHECK(e.threads() == 1);
    CHECK(e.threads(job_kind::decode) == 3);
    e.set_share(1.0);  // the mixed job's share is lane 0's
    CHECK(e.threads(job_kind::prefill) == 4);
    CHECK(e.threads(job_kind::decode) == 3);
  }

  SECTION("a decode step with no share of its own starts the lane on the mixed share") {
    engine::cpu_engine e{m.weights, m.tok, o};
    request r;
    r.prompt = {1, 403, 407};
    step_input in;
    in.seqs.push_back(work_of(r, 1, r.prompt, 0, true));
    auto first = e.step(in);  // a mixed step: lane 0 only
    CHECK(e.threads(job_kind::decode) == 0);
    in.job = job_kind::decode;
    in.seqs[0].tokens = {first.tokens.at(0)};
    in.seqs[0].context_len = 3;
    auto second = e.step(in);
    CHECK(second.tokens.at(0) >= 0);
    CHECK(e.threads(job_kind::decode) == 2);
    CHECK(e.threads(job_kind::prefill) == 2);
  }
}
