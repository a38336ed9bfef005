#include "tools/llmux/bench_gateway.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "config/cluster_config.hpp"
#include "tools/llmux/launch.hpp"
#include "tools/llmux/node_runtime.hpp"
#include "tools/loadgen/load_plan.hpp"
#include "tools/loadgen/load_runner.hpp"

namespace llmux::tools {

namespace {

using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

/// A child process in its own process group, its output in a log file; it
/// dies with us (PR_SET_PDEATHSIG) and is stopped with SIGTERM, then SIGKILL.
class child_process {
public:
  child_process(const std::vector<std::string>& argv, const std::string& log) : log_{log} {
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0)
      throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent)
        _exit(1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      std::vector<char*> args;
      for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      std::fprintf(stderr, "exec %s failed\n", args[0]);
      _exit(127);
    }
  }
  ~child_process() { stop(); }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] bool alive() {
    if (pid_ <= 0)
      return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return false;
    }
    return true;
  }

  void stop() {
    if (!alive())
      return;
    kill(-pid_, SIGTERM);
    for (int i = 0; i < 100 && alive(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (alive()) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = 0;
    }
  }

  [[nodiscard]] std::string log_tail() const {
    std::ifstream in{log_};
    std::stringstream ss;
    ss << in.rdbuf();
    auto s = ss.str();
    return s.size() > 1500 ? s.substr(s.size() - 1500) : s;
  }

private:
  pid_t pid_ = 0;
  std::string log_;
};

/// Polls until one short completion through `url` succeeds (the whole path
/// is up, a router's worker registration included), or throws.
void wait_serving(const std::string& url, child_process& proc, const std::string& what,
                  double timeout_s) {
  const auto deadline = clock_type::now() + std::chrono::duration<double>(timeout_s);
  const std::string body = R"({"model":"tiny","prompt":"hi","max_tokens":1})";
  std::string last;
  while (clock_type::now() < deadline) {
    if (!proc.alive())
      throw std::runtime_error(what + " exited before serving:\n" + proc.log_tail());
    httplib::Client cli{url};
    cli.set_connection_timeout(1, 0);
    cli.set_read_timeout(5, 0);
    auto res = cli.Post("/v1/completions", body, "application/json");
    if (res && res->status == 200)
      return;
    last = res ? "HTTP " + std::to_string(res->status) + " " + res->body.substr(0, 200)
               : httplib::to_string(res.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  throw std::runtime_error(what + " did not serve within " + std::to_string(int(timeout_s))
                           + " s (last answer: " + last + "):\n" + proc.log_tail());
}

struct row {
  row(std::string l, std::string h) : layout{std::move(l)}, how{std::move(h)} {}
  std::string layout;
  std::string how;  ///< what was started
  loadgen::latency_stats plain, ttft, stream;  ///< seconds
  /// The rate ladder, non-streaming ([0]) and streaming ([1]).
  struct ladder {
    double max_rate = 0;     ///< highest ladder rate that passed (0: none)
    double p99_at_max = 0;   ///< seconds
    double first_fail = 0;   ///< the first ladder rate that failed (0: none failed)
    std::string fail_reason;
    bool done = false;
  } rates[2];
  std::string skipped;
};

loadgen::latency_stats e2e_of(const std::vector<loadgen::request_result>& rs, bool ttft) {
  std::vector<double> v;
  for (const auto& r : rs)
    if (r.ok)
      v.push_back(ttft ? r.ttft_s : r.e2e_s);
  return loadgen::stats_of(std::move(v));
}

/// One request at a time through HTTP; throws on any failed request.
std::vector<loadgen::request_result> sequential(loadgen::target t, bool stream, int n, int output_len,
                                                uint64_t seed) {
  t.stream = stream;
  loadgen::length_spec prompt;
  prompt.mean = 1;  // unused: the text prompt is sent
  loadgen::length_spec out;
  out.mean = output_len;
  auto plan = loadgen::make_plan(n, 0, prompt, out, seed);
  double dur = 0;
  auto rs = loadgen::run_plan(t, plan, 1, std::vector<int32_t>{}, dur);
  for (const auto& r : rs)
    if (!r.ok)
      throw std::runtime_error(t.url + ": a sequential request failed: " + r.error);
  return rs;
}

void measure_http(row& r, const loadgen::target& t, const gateway_bench_options& o) {
  (void)sequential(t, false, o.warmup, o.output_len, 1);
  r.plain = e2e_of(sequential(t, false, o.requests, o.output_len, 2), false);
  auto st = sequential(t, true, o.requests, o.output_len, 3);
  r.ttft = e2e_of(st, true);
  r.stream = e2e_of(st, false);
  std::printf("  %-12s sequential: non-stream p50 %.0f us p99 %.0f us; stream TTFT p50 %.0f us, "
              "end p50 %.0f us p99 %.0f us\n",
              r.layout.c_str(), r.plain.p50 * 1e6, r.plain.p99 * 1e6, r.ttft.p50 * 1e6,
              r.stream.p50 * 1e6, r.stream.p99 * 1e6);
  std::fflush(stdout);

  loadgen::length_spec prompt;
  loadgen::length_spec out;
  out.mean = o.output_len;
  for (int mode = 0; mode < 2; ++mode) {
    loadgen::target ts = t;
    ts.stream = mode == 1;
    auto& lad = r.rates[mode];
    for (double rate : o.rates) {
      const int n = std::max(100, static_cast<int>(rate * o.rate_seconds));
      auto plan = loadgen::make_plan(n, rate, prompt, out, static_cast<uint64_t>(rate) + 11);
      loadgen::run_summary s;
      std::string why;
      // A rung that misses is run once more (on a shared 2-core machine a
      // stall of tens of ms now and then is the machine's, not the path's);
      // it fails when it misses twice. Every layout gets the same rule.
      for (int attempt = 0; attempt < 2; ++attempt) {
        double dur = 0;
        auto rs = loadgen::run_plan(ts, plan, o.max_workers, std::vector<int32_t>{}, dur);
        s = loadgen::summarize(rs, dur, {});
        // The offered rate counts as sustained when every request was
        // answered, the answers kept pace (the run did not stretch past the
        // arrivals by more than 10%), and the end-to-end p99 stayed under
        // the bound.
        const double offered_span = plan.back().at_s;
        why.clear();
        if (s.failed > 0)
          why = std::to_string(s.failed) + " failed (" + s.first_error + ")";
        else if (s.e2e.p99 * 1e3 > o.p99_bound_ms)
          why = "p99 " + std::to_string(s.e2e.p99 * 1e3).substr(0, 6) + " ms";
        else if (dur > offered_span * 1.1 + 0.05)
          why = "fell behind (" + std::to_string(static_cast<int>(s.requests_per_s))
                + " req/s achieved)";
        std::printf("  %-12s %-10s rate %6.0f req/s: achieved %7.1f, e2e p50 %.2f ms p99 %.2f ms%s%s\n",
                    r.layout.c_str(), ts.stream ? "stream" : "non-stream", rate, s.requests_per_s,
                    s.e2e.p50 * 1e3, s.e2e.p99 * 1e3, why.empty() ? "" : "  -> missed: ",
                    why.c_str());
        std::fflush(stdout);
        if (why.empty())
          break;
      }
      if (!why.empty()) {
        lad.first_fail = rate;
        lad.fail_reason = why;
        break;
      }
      lad.max_rate = rate;
      lad.p99_at_max = s.e2e.p99;
    }
    lad.done = true;
  }
}

/// Requests handed to the gateway actor directly, as the HTTP edge does.
void measure_inproc(row& r, const gateway_bench_options& o) {
  auto cfg = config::default_single_node("127.0.0.1", static_cast<uint16_t>(o.base_port));
  for (auto& u : cfg.units)
    u.time_scale = 0;
  node_run_options ro;
  ro.publish = false;
  ro.admin_port = false;
  ro.http = false;
  node_runtime rt{cfg, cfg.nodes[0].name, ro};
  auto reg = rt.registry();
  const auto& hooks = rt.hooks();
  // One request: first-token and end times in seconds, or the error's status.
  struct one {
    double first = -1, end = -1;
    int status = 0;
    std::string message;
  };
  auto run = [&](uint64_t seed) {
    protocol::gen_request g;
    g.id = reg->next_id();
    g.model = "tiny";
    g.prompt = {1, 2, 3};  // what the edge makes of "hi" for the sim model
    g.original_prompt_len = 3;
    g.params.max_tokens = o.output_len;
    g.params.seed = seed;
    const uint64_t id = g.id;
    auto sink = reg->open(id);
    const auto t0 = clock_type::now();
    hooks.submit(std::move(g));
    std::vector<gateway::sink_event> evs;
    one res;
    const auto deadline = t0 + std::chrono::seconds(10);
    while (res.end < 0 && res.status == 0) {
      evs.clear();
      if (!sink->wait_pop(evs, deadline)) {
        res.status = 504;
        res.message = "in-process request timed out";
        break;
      }
      const double now = std::chrono::duration<double>(clock_type::now() - t0).count();
      for (const auto& ev : evs) {
        if (ev.status != 0) {
          res.status = ev.status;
          res.message = ev.message;
        }
        if (res.first < 0 && !ev.tokens.empty())
          res.first = now;
        if (ev.finish != protocol::finish_reason::none)
          res.end = now;
      }
    }
    reg->close(id);
    return res;
  };
  // The replica registers with the router a moment after boot: until then
  // the answer is 503.
  const auto ready_by = clock_type::now() + std::chrono::seconds(10);
  for (one res; (res = run(0)).status != 0;)
    if (res.status != 503 || clock_type::now() > ready_by)
      throw std::runtime_error("in-process request failed: " + res.message);
  std::vector<double> ttft, e2e;
  for (int i = 0; i < o.warmup + o.requests; ++i) {
    auto res = run(static_cast<uint64_t>(i));
    if (res.status != 0)
      throw std::runtime_error("in-process request failed: " + res.message);
    if (i >= o.warmup) {
      ttft.push_back(res.first);
      e2e.push_back(res.end);
    }
  }
  r.ttft = loadgen::stats_of(ttft);
  r.stream = r.plain = loadgen::stats_of(e2e);
  std::printf("  %-12s sequential: end p50 %.0f us p99 %.0f us; first token p50 %.0f us\n",
              r.layout.c_str(), r.plain.p50 * 1e6, r.plain.p99 * 1e6, r.ttft.p50 * 1e6);
  std::fflush(stdout);
}

std::string two_node_config(int base) {
  std::ostringstream c;
  c << "# written by llmux bench gateway: an edge node and a sim unit node\n"
    << "[cluster]\nname = \"bench-gateway\"\nscheduler_threads = 2\n\n"
    << "[[nodes]]\nname = \"edge\"\nport = " << base + 2 << "\nadmin_port = " << base + 4 << "\n\n"
    << "[[nodes]]\nname = \"unit\"\nport = " << base + 3 << "\nadmin_port = " << base + 5 << "\n\n"
    << "[gateway]\nnode = \"edge\"\nport = " << base + 1 << "\n\n"
    << "[[models]]\nname = \"tiny\"\nbackend = \"sim\"\narchitecture = \"tiny\"\n\n"
    << "[[units]]\nname = \"unit0\"\nnode = \"unit\"\ntime_scale = 0.0\n"
    << "models = [ { name = \"tiny\", share = 1.0 } ]\n";
  return c.str();
}

std::string default_python() {
  if (const char* p = std::getenv("LLMUX_PYTHON"))
    return p;
  const char* home = std::getenv("HOME");
  return std::string{home ? home : "."} + "/.cache/llmux/venv/bin/python";
}

bool wants(const gateway_bench_options& o, const std::string& layout) {
  return std::find(o.layouts.begin(), o.layouts.end(), layout) != o.layouts.end();
}

}  // namespace

int run_bench_gateway(const gateway_bench_options& opts) {
  gateway_bench_options o = opts;
  if (o.rates.empty())
    o.rates = {250, 500, 1000, 2000, 4000, 6000, 8000, 10000, 12000, 16000, 20000, 24000};
  std::sort(o.rates.begin(), o.rates.end());
  for (const auto& l : o.layouts)
    if (l != "inproc" && l != "http" && l != "two-process" && l != "peer") {
      std::cerr << "llmux bench gateway: unknown layout '" << l
                << "' (inproc, http, two-process, peer)\n";
      return 2;
    }
  const std::string exe = self_exe();
  const fs::path dir = fs::temp_directory_path() / ("llmux-bench-gateway-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::printf("llmux bench gateway: sim backend at zero step time (simulated: no model math), "
              "%d sequential requests per mode after %d warm-up, max_tokens %d; rate ladders "
              "non-streaming and streaming, p99 bound %.1f ms; logs in %s\n",
              o.requests, o.warmup, o.output_len, o.p99_bound_ms, dir.c_str());
  std::fflush(stdout);

  std::vector<row> rows;
  int rc = 0;
  auto target_for = [&](int port) {
    loadgen::target t;
    t.url = "http://127.0.0.1:" + std::to_string(port);
    t.model = "tiny";
    t.text_prompt = "hi";
    t.temperature = 1.0;
    t.timeout_s = 30;
    return t;
  };
  try {
    if (wants(o, "inproc")) {
      row r{"inproc", "gateway actor in this process, no HTTP"};
      measure_inproc(r, o);
      rows.push_back(r);
    }
    const int http_port = o.base_port;
    std::unique_ptr<child_process> serve;
    if (wants(o, "http") || wants(o, "peer")) {
      serve = std::make_unique<child_process>(
        std::vector<std::string>{exe, "serve", "--sim", "--time-scale", "0", "--port",
                                 std::to_string(http_port)},
        (dir / "serve.log").string());
      wait_serving(target_for(http_port).url, *serve, "llmux serve", 30);
    }
    if (wants(o, "http")) {
      row r{"http", "llmux serve --sim --time-scale 0 (one process)"};
      measure_http(r, target_for(http_port), o);
      rows.push_back(r);
    }
    if (wants(o, "peer")) {
      row r{"peer", "sglang-router (PyPI) -> llmux serve"};
      const std::string py = o.python.empty() ? default_python() : o.python;
      const std::string probe = "'" + py + "' -c 'import sglang_router' >/dev/null 2>&1";
      if (std::system(probe.c_str()) != 0) {
        r.skipped = py + " has no sglang_router (pip install sglang-router; ./scripts/setup does)";
        std::printf("  peer         skipped: %s\n", r.skipped.c_str());
      } else {
        const int port = o.base_port + 6;
        child_process router{{py, "-m", "sglang_router.launch_router", "--host", "127.0.0.1",
                              "--port", std::to_string(port), "--worker-urls",
                              target_for(http_port).url, "--policy", "round_robin",
                              "--log-level", "warn", "--prometheus-port",
                              std::to_string(o.base_port + 7)},
                             (dir / "sglang-router.log").string()};
        wait_serving(target_for(port).url, router, "sglang-router", 90);
        measure_http(r, target_for(port), o);
      }
      rows.push_back(r);
    }
    serve.reset();
    if (wants(o, "two-process")) {
      row r{"two-process", "llmux launch: edge node + unit node"};
      const auto cfg_path = dir / "two-node.toml";
      std::ofstream{cfg_path} << two_node_config(o.base_port);
      child_process launch{{exe, "launch", "--config", cfg_path.string()},
                           (dir / "launch.log").string()};
      wait_serving(target_for(o.base_port + 1).url, launch, "llmux launch", 60);
      measure_http(r, target_for(o.base_port + 1), o);
      rows.push_back(r);
    }
  } catch (const std::exception& e) {
    std::cerr << "llmux bench gateway: " << e.what() << "\n";
    rc = 1;
  }

  // The table: latencies in microseconds; sustained rates per mode.
  auto rate_text = [&](const row::ladder& l) {
    if (!l.done)
      return std::string{"-"};
    char buf[64];
    if (l.max_rate <= 0)
      std::snprintf(buf, sizeof buf, "<%.0f", o.rates.front());
    else
      std::snprintf(buf, sizeof buf, "%s%.0f (%.1f)", l.first_fail == 0 ? ">=" : "", l.max_rate,
                    l.p99_at_max * 1e3);
    return std::string{buf};
  };
  std::printf("\n%-12s %9s %9s %9s %9s %9s %16s %16s  %s\n", "layout", "plain_p50", "plain_p99",
              "ttft_p50", "strm_p50", "strm_p99", "plain_rate(p99)", "strm_rate(p99)", "path");
  for (const auto& r : rows) {
    if (!r.skipped.empty()) {
      std::printf("%-12s skipped: %s\n", r.layout.c_str(), r.skipped.c_str());
      continue;
    }
    std::printf("%-12s %9.0f %9.0f %9.0f %9.0f %9.0f %16s %16s  %s\n", r.layout.c_str(),
                r.plain.p50 * 1e6, r.plain.p99 * 1e6, r.ttft.p50 * 1e6, r.stream.p50 * 1e6,
                r.stream.p99 * 1e6, rate_text(r.rates[0]).c_str(), rate_text(r.rates[1]).c_str(),
                r.how.c_str());
  }
  std::printf("(latencies in us, one request at a time; rates in req/s sustained with end-to-end "
              "p99 under %.1f ms, the p99 at that rate in ms in brackets)\n",
              o.p99_bound_ms);
  if (o.json)
    for (const auto& r : rows) {
      if (!r.skipped.empty())
        continue;
      nlohmann::json j{{"layout", r.layout},
                       {"path", r.how},
                       {"plain_p50_us", r.plain.p50 * 1e6},
                       {"plain_p99_us", r.plain.p99 * 1e6},
                       {"ttft_p50_us", r.ttft.p50 * 1e6},
                       {"stream_p50_us", r.stream.p50 * 1e6},
                       {"stream_p99_us", r.stream.p99 * 1e6}};
      const char* names[2] = {"plain", "stream"};
      for (int m = 0; m < 2; ++m)
        j[names[m]] = {{"max_rate", r.rates[m].max_rate},
                       {"p99_at_max_ms", r.rates[m].p99_at_max * 1e3},
                       {"first_failed_rate", r.rates[m].first_fail},
                       {"fail_reason", r.rates[m].fail_reason}};
      std::cout << j.dump() << std::endl;
    }
  std::fflush(stdout);
  std::error_code ec;
  if (rc == 0)
    fs::remove_all(dir, ec);
  return rc;
}

}  // namespace llmux::tools
