#pragma once
/// The HTTP server of the edge: OpenAI endpoints, SSE, authentication,
/// admission and `/admin/state`, on the event-loop server of net/ (one loop
/// thread holds every connection). No CAF here: it reaches the actor system
/// only through `edge_hooks`, which the gateway actor provides.
///
/// Threads: the loop (connections, /health, /v1/models, admission), a pool
/// of `gateway.http_threads` workers (parsing, tokenizing, rendering token
/// events into SSE: a stream waiting for its next token holds no thread), a
/// deadline timer, and a cluster-state thread that does the admin fan-out
/// for `/metrics` and `/admin/state` (never a request thread).

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "actors/gateway/admission.hpp"
#include "actors/gateway/edge_metrics.hpp"
#include "actors/gateway/request_registry.hpp"
#include "config/cluster_config.hpp"
#include "engine/chat_template.hpp"
#include "engine/tokenizer.hpp"

namespace llmux::net {
class http_server;
class http_exchange;
}  // namespace llmux::net

namespace llmux::gateway {

struct edge_hooks {
  /// Hands a tokenized request to the gateway actor (must not block).
  std::function<void(protocol::gen_request)> submit;
  /// The client went away or the deadline passed.
  std::function<void(uint64_t id)> cancel;
  /// Cluster-wide admin state as JSON text (may block up to a few seconds).
  std::function<std::string()> admin_state;
};

class http_edge {
public:
  http_edge(const config::cluster_config& cfg, std::shared_ptr<request_registry> registry,
            edge_hooks hooks);
  ~http_edge();

  /// Binds gateway.host:gateway.port and serves on background threads.
  /// Throws std::runtime_error when the port cannot be bound.
  void start();
  void stop();
  [[nodiscard]] int port() const { return port_; }

  struct model_entry {
    config::model_config cfg;
    std::shared_ptr<engine::tokenizer> tok;
    engine::chat_style chat;
  };
  struct runtime;  ///< pools, timer, state cache (http_edge.cpp)

private:
  void install_routes();
  void generate(std::shared_ptr<net::http_exchange> ex, int kind);

  config::cluster_config cfg_;
  std::shared_ptr<request_registry> registry_;
  edge_hooks hooks_;
  std::shared_ptr<edge_metrics> metrics_ = std::make_shared<edge_metrics>();
  std::map<std::string, model_entry> models_;
  std::unique_ptr<admission> admission_;
  std::unique_ptr<net::http_server> server_;
  std::unique_ptr<net::http_server> ops_server_;  ///< /metrics and /admin/* (gateway.ops_port)
  std::shared_ptr<runtime> rt_;
  int port_ = 0;
};

}  // namespace llmux::gateway
