#pragma once
/// Node links over mutual TLS: a middleman actor (CAF's interface for
/// `publish` and `connect`) whose connections are net::node_tls sessions,
/// feeding the same BASP broker as CAF's plain middleman. With `[tls]` in the
/// config a node publishes and connects only through it, so its cluster port
/// speaks nothing but TLS with the cluster's certificates.
///
/// Threads: the sessions run on the middleman's I/O loop; the actor itself
/// is spawned hidden, like CAF's own.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/io/middleman_actor.hpp>

#include "net/node_tls.hpp"

namespace llmux::node_tls {

/// Which node listens at a (host, port): a connecting node demands that the
/// certificate it meets there names that node.
using node_addresses = std::map<std::pair<std::string, uint16_t>, std::string>;

/// Spawns the TLS middleman. Needs the middleman module loaded (default
/// network backend).
[[nodiscard]] caf::io::middleman_actor spawn_tls_middleman(caf::actor_system& sys,
                                                           std::shared_ptr<const net::node_tls::context> ctx,
                                                           node_addresses nodes);

/// Publishes `whom` on `host:port` through `mm` (blocks until bound, for
/// start-up). Returns the bound port or the error.
[[nodiscard]] caf::expected<uint16_t> publish(caf::actor_system& sys, const caf::io::middleman_actor& mm,
                                              const caf::strong_actor_ptr& whom, std::set<std::string> sigs,
                                              uint16_t port, const std::string& host);

}  // namespace llmux::node_tls
