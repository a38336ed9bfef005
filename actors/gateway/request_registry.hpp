#pragma once
/// The meeting point of HTTP threads and the gateway actor — pure core of the
/// edge (no CAF, no HTTP).
///
/// The edge opens a `request_sink` for its request id; the gateway actor
/// pushes what arrives for that id (token batches, errors). The edge is told
/// by the sink's notifier (no thread waits for tokens), or a caller blocks
/// on `wait_pop` with a deadline. Thread-safe: sinks and the registry lock
/// internally.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/protocol/generation.hpp"

namespace llmux::gateway {

/// What an HTTP thread sees of its request: tokens, an end, or an error with
/// the HTTP status it should become.
struct sink_event {
  uint64_t id = 0;  ///< the request it belongs to (a sink may serve several: n > 1)
  std::vector<int32_t> tokens;
  std::vector<engine::token_logprobs> logprobs;  ///< one per token, when asked for
  protocol::finish_reason finish = protocol::finish_reason::none;
  int status = 0;        ///< HTTP status for errors (0 otherwise)
  std::string message;   ///< error text
};

class request_sink {
public:
  /// Queues `ev`; runs the notifier (outside the lock) when the queue was empty.
  void push(sink_event ev);
  /// Called after a push onto an empty queue; empty: nobody is told.
  void set_notify(std::function<void()> fn);
  /// Moves what is queued into `out` (appending), without waiting.
  void try_pop(std::vector<sink_event>& out);
  /// Waits until events are queued or `deadline` passes; moves them into
  /// `out` (appending). Returns false on timeout with nothing new.
  bool wait_pop(std::vector<sink_event>& out, std::chrono::steady_clock::time_point deadline);
  /// Threads blocked in wait_pop now (they hold no lock while they wait):
  /// lets a test push only once its consumer is asleep.
  [[nodiscard]] size_t waiters();

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  size_t waiters_ = 0;
  std::vector<sink_event> queue_;
  std::function<void()> notify_;
};

class request_registry {
public:
  /// A fresh request id (unique within this process).
  uint64_t next_id();
  std::shared_ptr<request_sink> open(uint64_t id);
  /// Routes `id`'s events to an existing sink too (the choices of one
  /// request share a sink; events carry their id).
  void attach(uint64_t id, std::shared_ptr<request_sink> sink);
  void close(uint64_t id);
  [[nodiscard]] std::shared_ptr<request_sink> find(uint64_t id) const;
  [[nodiscard]] size_t open_count() const;
  /// Ends every open request with an error event (shutdown): no HTTP thread
  /// keeps waiting for a deadline that the process will not live to see.
  void fail_all(int status, const std::string& message);

  /// The HTTP edge's own figures (connections, admission) as a JSON object
  /// text, for the gateway's admin state; "{}" when no edge has said.
  void set_edge_probe(std::function<std::string()> probe);
  [[nodiscard]] std::string edge_state() const;

  /// Live replicas per model, as last learned from the router.
  /// `states`: each model's residency across its live replicas ("ready"
  /// when one is awake, else "loading" when one wakes, else "sleeping").
  void set_live_replicas(std::map<std::string, int> live, std::map<std::string, std::string> states = {});
  [[nodiscard]] std::map<std::string, int> live_replicas() const;
  [[nodiscard]] std::map<std::string, std::string> model_states() const;

private:
  mutable std::mutex mtx_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<request_sink>> sinks_;
  std::map<std::string, int> live_;
  std::map<std::string, std::string> states_;
  std::function<std::string()> edge_probe_;
};

}  // namespace llmux::gateway
