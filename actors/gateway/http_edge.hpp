#pragma once
/// The HTTP server of the edge (cpp-httplib): OpenAI endpoints, SSE,
/// authentication, and `/admin/state`. No CAF here: it reaches the actor
/// system only through `edge_hooks`, which the gateway actor provides.
///
/// Threads: httplib's pool of `gateway.http_threads`; every open stream holds
/// one of them while it waits on its `request_sink` (bounded by the request
/// deadline). `start()` returns once the socket listens.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "actors/gateway/edge_metrics.hpp"
#include "actors/gateway/request_registry.hpp"
#include "config/cluster_config.hpp"
#include "engine/chat_template.hpp"
#include "engine/tokenizer.hpp"

namespace httplib {
class Server;
}

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

  /// Binds gateway.host:gateway.port and serves on a background thread.
  /// Throws std::runtime_error when the port cannot be bound.
  void start();
  void stop();
  [[nodiscard]] int port() const { return port_; }

private:
  struct model_entry {
    config::model_config cfg;
    std::shared_ptr<engine::tokenizer> tok;
    engine::chat_style chat;
  };

  void install_routes();

  config::cluster_config cfg_;
  std::shared_ptr<request_registry> registry_;
  edge_hooks hooks_;
  std::shared_ptr<edge_metrics> metrics_ = std::make_shared<edge_metrics>();
  std::map<std::string, model_entry> models_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace llmux::gateway
