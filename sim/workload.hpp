#pragma once
/// What arrives, when, for which model: the input of `llmux simulate`, and
/// of `llmux bench serve --workload` (the same requests replayed against a
/// real cluster). Pure: no I/O beyond reading the file named.
///
/// Two file forms, one format:
///
/// - A **trace** (`.jsonl`): one request per line,
///   `{"t": 0.0132, "model": "llm-0", "prompt_tokens": 161, "output_tokens": 337}`
///   (`t` in seconds from the start; lines in any order).
/// - A **spec** (`.toml`): arrival processes drawn with a seed.
///
///       duration_s = 240            # arrivals in [0, duration_s)
///       seed = 1
///       arrival = "poisson"         # or "gamma": gaps with coefficient of variation `cv`
///       cv = 2.0                    # gamma only; > 1 is burstier than Poisson
///       prompt = "lognormal:161:1.0:4:2048"   # loadgen length forms, also "empirical:FILE"
///       output = "lognormal:337:1.0:4:2048"
///       # rates: a popularity law over `models` (rank = position) ...
///       models = ["llm-0", "llm-1", "llm-2"]
///       total_rate = 40             # req/s over all models
///       alpha = 0.9                 # rate of rank i ∝ (i+1)^-alpha (0: equal)
///       # ... or per model (either form; [[model]] entries override):
///       [[model]]
///       name = "llm-0"
///       rate = 20
///       prompt = "fixed:128"        # optional per-model lengths
///       # popularity that changes during the run:
///       [[phase]]
///       at_s = 120
///       alpha = 2.1                 # any of total_rate, alpha, rotate, rates
///       rotate = 1                  # rank i takes the rate rank i+1 had (cyclic)
///       rates = { "llm-2" = 15 }    # explicit rates win
///
///       # what prompts share (for routing: prefix hits, sessions):
///       prefix_groups = 8           # shared prefixes (system prompts); 0: none
///       prefix_tokens = 512         # each one's length
///       prefix_alpha = 1.0          # popularity of group i ∝ (i+1)^-alpha
///       sessions = 200              # conversations per model; 0: none
///       session_alpha = 1.0         # popularity of session i ∝ (i+1)^-alpha
///       session_max_tokens = 3072   # a longer conversation starts over
///
/// Each model's arrivals are an independent process whose rate is constant
/// within a phase; a phase restarts every model's process at its start.
///
/// Prompt content (what `prompt_of` builds; only the simulator looks): a
/// request in a prefix group starts with that group's `prefix_tokens`
/// tokens; a session's requests (the session fixes its group) continue
/// with the session's own tokens, each turn's prompt the previous one's
/// plus the new turn (`prompt` draws the turn's length), so every turn
/// extends the last; other tokens are the request's own.

#include <cstdint>
#include <iosfwd>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "tools/loadgen/load_plan.hpp"

namespace llmux::sim {

/// One request of a workload.
struct request_spec {
  double at_s = 0;        ///< arrival, seconds from the start
  std::string model;
  int prompt_tokens = 1;
  int output_tokens = 1;  ///< generated exactly (the simulator ignores EOS)
  int group = -1;         ///< the shared prefix it starts with; -1: none
  int prefix_tokens = 0;  ///< that prefix's length (< prompt_tokens)
  int64_t session = -1;   ///< its conversation; -1: none
};

/// The prompt's token ids (see "Prompt content"), inside `[3, 3 + words)`;
/// `index`: the request's position in its workload.
[[nodiscard]] std::vector<int32_t> prompt_of(const request_spec& r, uint32_t index, int words = 250);

/// A resolved arrival schedule (what a trace holds, or a spec generates).
struct workload {
  std::vector<request_spec> requests;  ///< sorted by `at_s`
  std::vector<std::string> models;     ///< every model named, in first-seen (spec: rank) order
  double duration_s = 0;               ///< spec: its duration; trace: the last arrival
  std::string source;
};

enum class arrival_kind { poisson, gamma };

/// One model's load within a phase.
struct model_load {
  std::string model;
  double rate = 0;  ///< requests/s
  loadgen::length_spec prompt;
  loadgen::length_spec output;
};

struct workload_phase {
  double at_s = 0;
  std::vector<model_load> models;  ///< every model, rank order
};

struct workload_spec {
  double duration_s = 60;
  uint64_t seed = 1;
  arrival_kind arrival = arrival_kind::poisson;
  double cv = 1.0;
  std::vector<workload_phase> phases;  ///< the first starts at 0
  int prefix_groups = 0;
  int prefix_tokens = 512;
  double prefix_alpha = 1.0;
  int sessions = 0;
  double session_alpha = 1.0;
  int session_max_tokens = 3072;
};

/// A bad workload file: "FILE:LINE: key 'KEY': REASON" (LINE 0 when unknown).
struct workload_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parses a spec's TOML text. Relative `empirical:` files resolve against
/// `base_dir`. Throws workload_error.
[[nodiscard]] workload_spec parse_workload_spec(const std::string& toml_text, const std::string& source,
                                                const std::string& base_dir = ".");
/// Draws every arrival of `spec` (deterministic for its seed).
[[nodiscard]] workload generate(const workload_spec& spec);
/// Parses a trace's JSON lines. Throws workload_error.
[[nodiscard]] workload parse_trace(const std::string& text, const std::string& source);
/// Reads `path`: a `.jsonl` trace, else a TOML spec that is generated.
[[nodiscard]] workload load_workload(const std::string& path);
/// Writes `w` as a trace (JSON lines).
void write_trace(const workload& w, std::ostream& out);

/// Rates of `n` models of total `total_rate` whose popularity follows
/// rank^-alpha (rank from 1): rate_i = total · (i+1)^-α / Σ_j (j+1)^-α.
[[nodiscard]] std::vector<double> power_law_rates(size_t n, double total_rate, double alpha);

}  // namespace llmux::sim
