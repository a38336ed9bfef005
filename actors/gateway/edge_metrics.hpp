#pragma once
/// The edge's Prometheus metrics — pure core (no CAF, no HTTP): counters and
/// histograms the HTTP threads record into, and the text exposition format
/// (version 0.0.4) that `GET /metrics` serves. Names follow vLLM's where one
/// exists, with the prefix `llmux:` (see docs/operations.md).
///
/// Thread-safe: one mutex; recording is a few map lookups per request event.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace llmux::gateway {

/// A cumulative histogram with fixed upper bounds (seconds).
struct histogram {
  explicit histogram(std::vector<double> bounds = {});
  void observe(double v);
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  ///< per bucket (not cumulative); last is +Inf
  double sum = 0;
  uint64_t count = 0;
};

/// Live gauges read from the cluster's admin state at scrape time.
struct cluster_gauges {
  std::map<std::string, int64_t> running, waiting;  ///< per model
  std::map<std::string, int64_t> kv_used, kv_free;   ///< per unit
  std::map<std::string, int64_t> kv_evictable;       ///< per unit: cached, unreferenced
  /// (unit, model) → physical KV blocks the model holds, and its quota
  std::map<std::pair<std::string, std::string>, int64_t> kv_model_used, kv_model_quota;
  /// per unit laid out as several: replicas running its model now
  std::map<std::string, int64_t> layout_replicas;
  /// Cumulative counts as each actor reports them: (metric, label value,
  /// source) → that actor's own count, the source naming the actor and its
  /// node's incarnation (a restarted node is a new source). Metrics:
  /// prefix-cache queries and hits (tokens, per model), preemptions (per
  /// model), KV quota moves (per unit), share moves (per controller), layout
  /// switches and ms spent switching (per unit). edge_metrics sums them
  /// through its counter_book, so totals never go back.
  std::map<std::tuple<std::string, std::string, std::string>, int64_t> counters;
  /// (node, kind, name) → messages waiting in the actor's mailbox
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> mailbox;
};

/// Keeps the cluster's counters monotonic at the edge, not rebuilt from
/// each scrape's admin state: every source's last count stays in the total
/// when the source goes away (a node down or restarted), and a count that
/// goes back (an actor restarted within one incarnation) is added to what
/// that source had counted before.
class counter_book {
public:
  /// Takes one scrape's readings; returns (metric, label value) → total.
  std::map<std::pair<std::string, std::string>, int64_t> update(
    const std::map<std::tuple<std::string, std::string, std::string>, int64_t>& readings);

private:
  struct source {
    int64_t last = 0;     ///< the latest reading
    int64_t carried = 0;  ///< counted before the reading last went back
  };
  std::map<std::tuple<std::string, std::string, std::string>, source> sources_;
};

/// Reads cluster_gauges from `/admin/state`'s JSON (a list of {node, kind,
/// name, mailbox, state}). Unknown kinds and missing fields are skipped.
[[nodiscard]] cluster_gauges gauges_from_admin_state(const std::string& json_text);

class edge_metrics {
public:
  edge_metrics();

  /// One HTTP answer of a generation endpoint. `model` is empty when the
  /// request named no known model (so clients cannot grow the label set).
  void request_done(const std::string& model, int status);
  /// A 429 from a queue limit.
  void queue_rejection(const std::string& model);
  void first_token(const std::string& model, double seconds);
  /// `tokens` arrived `seconds` after the previous ones: one inter-token
  /// observation of seconds / tokens per token.
  void tokens_after(const std::string& model, double seconds, int64_t tokens);
  /// A finished request: end-to-end latency, token counts, and why each of
  /// its choices finished.
  void finished(const std::string& model, double seconds, int64_t prompt_tokens,
                int64_t generation_tokens, const std::vector<std::string>& finish_reasons);

  /// A request its client left before it ended, by where it was: "queued"
  /// (at the edge, not yet parsed), "prefill" (sent, no token yet) or
  /// "decode" (tokens generated), with its prompt tokens (work spent for
  /// nobody; 0 when not yet tokenized).
  void aborted(const std::string& model, const std::string& stage, int64_t prompt_tokens);

  /// The exposition text, with the cluster gauges appended.
  [[nodiscard]] std::string render(const cluster_gauges& gauges) const;

private:
  mutable std::mutex mtx_;
  mutable counter_book counters_;  ///< render() folds each scrape's readings in
  std::map<std::pair<std::string, int>, uint64_t> requests_;  ///< (model, status)
  std::map<std::pair<std::string, std::string>, uint64_t> success_;  ///< (model, reason)
  std::map<std::string, uint64_t> rejections_, prompt_tokens_, generation_tokens_;
  std::map<std::pair<std::string, std::string>, uint64_t> aborted_;  ///< (model, stage)
  std::map<std::string, uint64_t> aborted_prompt_tokens_;
  std::map<std::string, histogram> ttft_, itl_, e2e_;
  std::vector<double> ttft_bounds_, itl_bounds_, e2e_bounds_;
};

}  // namespace llmux::gateway
