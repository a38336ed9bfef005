// libFuzzer target for the cluster config loader (config/cluster_config):
// the TOML file every node reads at start. On any text it must return a
// validated config or throw config_error naming the file — never crash, hit
// UB, or throw anything else — and a config it returns must hold what the
// runtime relies on: at least one node and unit, every unit on a known node
// hosting known models with shares in [0, 1] summing to at most 1 (unless
// oversubscribed), the gateway, router and controller on known nodes.
// Seeds: tests/fuzz/config_corpus/ (the example configs and broken ones).

#include "config/cluster_config.hpp"

#include "tests/fuzz/fuzz_require.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

using llmux::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmux::config;
  const std::string text(reinterpret_cast<const char*>(data), size);
  cluster_config cfg;
  try {
    // A base directory that does not exist: model files never resolve to
    // something on this machine.
    cfg = parse_cluster_config(text, "fuzz.toml", "/nonexistent-llmux-fuzz");
  } catch (const config_error& e) {
    require(e.file == "fuzz.toml");
    require(!e.reason.empty());
    return 0;
  }
  require(!cfg.nodes.empty());
  require(!cfg.units.empty());
  require(cfg.find_node(cfg.gateway.node) != nullptr);
  require(cfg.find_node(cfg.router.node) != nullptr);
  require(cfg.find_node(cfg.controller.node) != nullptr);
  for (const auto& u : cfg.units) {
    require(cfg.find_node(u.node) != nullptr);
    require(!u.models.empty());
    double sum = 0;
    for (const auto& um : u.models) {
      require(cfg.find_model(um.model) != nullptr);
      require(um.share >= 0 && um.share <= 1);
      sum += um.share;
    }
    require(u.oversubscribe || u.prefill == "shared" || sum <= 1.0 + 1e-9);
    require(u.block_tokens > 0 && u.max_running > 0);
  }
  return 0;
}
