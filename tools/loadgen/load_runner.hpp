#pragma once
/// Runs a load plan against an OpenAI-compatible server: streaming
/// `/v1/completions` requests whose prompts are token ids (exact prompt
/// lengths for any model: ids come from the server's own `/tokenize` of a
/// stock text), timed per chunk.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tools/loadgen/load_plan.hpp"

namespace llmux::loadgen {

struct target {
  std::string url = "http://127.0.0.1:8080";
  std::string model;
  std::string api_key;
  double temperature = 0.0;
  double timeout_s = 600;
  bool stream = true;        ///< false: one JSON answer; TTFT is then the whole request
  /// Sent as the prompt of every request when no token source is given
  /// (for servers or routers that take neither /tokenize nor token ids).
  std::string text_prompt;
  /// Open every prompt with two tokens that spell its request's index in
  /// base (the source's distinct ids), so no two of the first n² requests
  /// share a prefix block (a replayed workload's prompts are distinct, as
  /// `llmux simulate` takes them; otherwise prompts cut from one stock text
  /// hit the server's prefix cache).
  bool distinct_prompts = false;
};

/// Token ids to cut prompts from. Throws std::runtime_error naming the
/// server's answer when /tokenize fails.
[[nodiscard]] std::vector<int32_t> prompt_source(const target& t);

/// Sends every request of `plan` from `workers` client threads (prompts cut
/// from `source`, or `t.text_prompt` when `source` is empty), each on its
/// own keep-alive connection: a request waits for its `at_s` (open loop)
/// and for a free worker (closed loop: workers = concurrency). Returns one
/// result per planned request, and the run's wall time in `duration_s`.
[[nodiscard]] std::vector<request_result> run_plan(const target& t,
                                                   const std::vector<planned_request>& plan,
                                                   int workers, const std::vector<int32_t>& source,
                                                   double& duration_s);
/// The same for a plan whose requests name their models: each model's
/// prompts are cut from its own token source (its tokenizer's ids).
[[nodiscard]] std::vector<request_result> run_plan(const target& t,
                                                   const std::vector<planned_request>& plan, int workers,
                                                   const std::map<std::string, std::vector<int32_t>>& sources,
                                                   double& duration_s);

/// The same on one thread with an event loop (non-blocking sockets, keep-
/// alive connections reused most recently used first): at most
/// `max_in_flight` requests at once (the concurrency of a closed loop; the
/// cap on an open loop), so thousands of clients cost no threads.
[[nodiscard]] std::vector<request_result> run_plan_async(const target& t,
                                                         const std::vector<planned_request>& plan,
                                                         int max_in_flight, const std::vector<int32_t>& source,
                                                         double& duration_s);

}  // namespace llmux::loadgen
