#include "actors/controller/node_table.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace llmux;
using controller::node_status;
using controller::node_table;

namespace {

std::vector<config::node_config> three_nodes() {
  std::vector<config::node_config> out;
  for (auto name : {"edge", "gpu0", "gpu1"}) {
    config::node_config n;
    n.name = name;
    out.push_back(n);
  }
  return out;
}

}  // namespace

TEST_CASE("node_table: every configured node starts connecting", "[node_table]") {
  node_table t(three_nodes(), "edge");
  CHECK(t.self() == "edge");
  REQUIRE(t.rows().size() == 3);
  for (const auto& r : t.rows()) {
    CHECK(r.status == node_status::connecting);
    CHECK_FALSE(r.attempt_in_flight);
    CHECK(r.attempts == 0);
  }
  CHECK(t.up_count() == 0);
  CHECK(t.find("gpu1") != nullptr);
  CHECK(t.find("gpu9") == nullptr);
  CHECK(std::string(controller::to_string(node_status::connecting)) == "connecting");
  CHECK(std::string(controller::to_string(node_status::up)) == "up");
  CHECK(std::string(controller::to_string(node_status::down)) == "down");
}

TEST_CASE("node_table: attempts are not repeated while one is in flight", "[node_table]") {
  node_table t(three_nodes(), "edge");
  auto first = t.start_attempts(1.0);
  CHECK(first == std::vector<std::string>{"edge", "gpu0", "gpu1"});
  for (const auto& r : t.rows()) {
    CHECK(r.attempt_in_flight);
    CHECK(r.attempts == 1);
  }
  CHECK(t.start_attempts(2.0).empty());  // all in flight

  t.attempt_failed("gpu0", "connection refused", 2.5);
  const auto* g0 = t.find("gpu0");
  CHECK(g0->status == node_status::connecting);  // never up: still connecting
  CHECK_FALSE(g0->attempt_in_flight);
  CHECK(g0->last_error == "connection refused");
  CHECK(g0->failures == 0);  // failures count losses, not failed attempts
  CHECK(g0->since_s == 0.0);  // no status change, so no new "since"

  CHECK(t.start_attempts(3.0) == std::vector<std::string>{"gpu0"});
  CHECK(t.find("gpu0")->attempts == 2);
  CHECK(t.start_attempts(3.5).empty());
}

TEST_CASE("node_table: connected -> up, lost -> down, then reconnect", "[node_table]") {
  node_table t(three_nodes(), "edge");
  (void)t.start_attempts(1.0);
  t.connected("edge", 1.5);
  t.connected("gpu0", 2.0);
  CHECK(t.up_count() == 2);
  const auto* g0 = t.find("gpu0");
  CHECK(g0->status == node_status::up);
  CHECK_FALSE(g0->attempt_in_flight);
  CHECK(g0->since_s == 2.0);
  // Up nodes get no attempts; gpu1's attempt is still in flight.
  CHECK(t.start_attempts(3.0).empty());

  CHECK(t.lost("gpu0", "heartbeat timeout", 4.0));
  CHECK(g0->status == node_status::down);
  CHECK(g0->failures == 1);
  CHECK(g0->since_s == 4.0);
  CHECK(g0->last_error == "heartbeat timeout");
  CHECK(t.up_count() == 1);
  // A second notification for the same loss is stale.
  CHECK_FALSE(t.lost("gpu0", "again", 4.1));
  CHECK(g0->failures == 1);
  CHECK(g0->last_error == "heartbeat timeout");

  // Down nodes are retried and stay down while attempts fail.
  CHECK(t.start_attempts(5.0) == std::vector<std::string>{"gpu0"});
  t.attempt_failed("gpu0", "refused", 5.5);
  CHECK(g0->status == node_status::down);
  CHECK(g0->since_s == 4.0);  // still down since the loss
  CHECK(g0->last_error == "refused");
  CHECK(t.start_attempts(6.0) == std::vector<std::string>{"gpu0"});
  t.connected("gpu0", 6.5);
  CHECK(g0->status == node_status::up);
  CHECK(g0->last_error.empty());
  CHECK(t.up_count() == 2);
}

TEST_CASE("node_table: lost only from up, unknown names are ignored", "[node_table]") {
  node_table t(three_nodes(), "edge");
  CHECK_FALSE(t.lost("gpu1", "never connected", 1.0));
  CHECK(t.find("gpu1")->status == node_status::connecting);
  CHECK_FALSE(t.lost("nope", "x", 1.0));
  t.connected("nope", 1.0);
  t.attempt_failed("nope", "x", 1.0);
  CHECK(t.rows().size() == 3);
  CHECK(t.up_count() == 0);
  // A late failure report for a node that is already up changes nothing.
  (void)t.start_attempts(2.0);
  t.connected("gpu1", 2.5);
  t.attempt_failed("gpu1", "late", 3.0);
  CHECK(t.find("gpu1")->status == node_status::up);
  CHECK(t.find("gpu1")->last_error.empty());
}
