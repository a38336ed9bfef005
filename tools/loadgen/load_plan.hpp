#pragma once
/// `llmux bench serve`'s pure core: what to send when (a plan of arrivals and
/// lengths), and what the answers add up to (throughput, latency
/// percentiles, SLO attainment). No I/O; deterministic for a seed.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmux::loadgen {

/// How prompt or output lengths (in tokens) are drawn.
struct length_spec {
  enum class kind { fixed, uniform, lognormal, empirical } dist = kind::fixed;
  int mean = 128;     ///< fixed: the length; lognormal: the mean; empirical: the samples' mean
  int min = 1;        ///< uniform/lognormal: lower clamp (uniform: lower bound)
  int max = 4096;     ///< uniform/lognormal: upper clamp (uniform: upper bound)
  double sigma = 1.0; ///< lognormal: σ of ln(length) (ShareGPT-like: ~1)
  std::vector<int> samples;  ///< empirical: drawn uniformly (a measured length histogram)
};

/// Parses "fixed:128", "uniform:32:512", "lognormal:256[:sigma[:min:max]]"
/// or "empirical:FILE" (FILE holds positive integers separated by
/// whitespace or commas, e.g. the prompt lengths of a real trace; relative
/// to `base_dir`); a bare number is fixed. Throws std::invalid_argument
/// with the reason.
[[nodiscard]] length_spec parse_length_spec(const std::string& text, const std::string& base_dir = ".");

/// One length drawn from `s`.
[[nodiscard]] int draw_length(const length_spec& s, std::mt19937_64& rng);

struct planned_request {
  double at_s = 0;  ///< send time after the start (open loop; 0 in closed loop)
  int prompt_tokens = 0;
  int output_tokens = 0;
  std::string model;  ///< empty: the target's model (a workload names one per request)
};

/// n requests. rate > 0: Poisson arrivals at `rate` per second (exponential
/// gaps); rate <= 0: all at t = 0 (closed loop or a burst).
[[nodiscard]] std::vector<planned_request> make_plan(int n, double rate, const length_spec& prompt,
                                                     const length_spec& output, uint64_t seed);

/// What happened to one request.
struct request_result {
  bool ok = false;
  int status = 0;          ///< HTTP status (0: no answer)
  std::string error;
  double ttft_s = 0;       ///< to the first chunk with text
  double e2e_s = 0;        ///< to the end of the stream
  std::vector<double> itl_s;  ///< gaps between text chunks
  int output_tokens = 0;   ///< from the stream's usage chunk
  int prompt_tokens = 0;
};

struct latency_stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
  size_t n = 0;
};

/// Percentiles by nearest rank over sorted samples.
[[nodiscard]] latency_stats stats_of(std::vector<double> samples);

/// A service-level objective: a request meets it when its TTFT and its
/// TPOT are at most these (0: no bound on that one).
struct slo_spec {
  double ttft_s = 0;
  double tpot_s = 0;
};

struct run_summary {
  int requests = 0, ok = 0, failed = 0;
  double duration_s = 0;
  double requests_per_s = 0;       ///< completed OK per second of the run
  double output_tokens_per_s = 0;
  latency_stats ttft, tpot, itl, e2e;  ///< seconds
  double slo_attainment = 0;       ///< fraction of all requests (failures miss)
  std::string first_error;
  /// Failures that were 429 (overload: a defined answer, not a fault), and
  /// how long each took to come back (seconds).
  int rejected = 0;
  latency_stats rejected_latency;
};

/// TPOT of a request: (e2e − ttft) / (output tokens − 1), for 2+ tokens.
[[nodiscard]] run_summary summarize(const std::vector<request_result>& results, double duration_s,
                                    const slo_spec& slo);

[[nodiscard]] nlohmann::json to_json(const run_summary& s);

}  // namespace llmux::loadgen
