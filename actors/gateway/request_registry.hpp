#pragma once
/// The meeting point of HTTP threads and the gateway actor — pure core of the
/// edge (no CAF, no HTTP).
///
/// An HTTP thread opens a `request_sink` for its request id and blocks on it;
/// the gateway actor pushes what arrives for that id (token batches, errors).
/// Thread-safe: sinks and the registry lock internally; waits are bounded by
/// a deadline, never unbounded.

#include <chrono>
#include <condition_variable>
#include <cstdint>
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
  void push(sink_event ev);
  /// Waits until events are queued or `deadline` passes; moves them into
  /// `out` (appending). Returns false on timeout with nothing new.
  bool wait_pop(std::vector<sink_event>& out, std::chrono::steady_clock::time_point deadline);

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<sink_event> queue_;
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

  /// Live replicas per model, as last learned from the router.
  void set_live_replicas(std::map<std::string, int> live);
  [[nodiscard]] std::map<std::string, int> live_replicas() const;

private:
  mutable std::mutex mtx_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<request_sink>> sinks_;
  std::map<std::string, int> live_;
};

}  // namespace llmux::gateway
