#include "actors/router/router_policy.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

using namespace llmux::router;

namespace {

/// Picks `n` times and counts where requests went.
std::map<std::string, int> spread(router_policy& p, const std::string& model, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    auto r = p.pick(model);
    REQUIRE(r);
    ++out[*r];
  }
  return out;
}

}  // namespace

TEST_CASE("parse_policy knows the two policies", "[router]") {
  CHECK(parse_policy("least_loaded") == policy_kind::least_loaded);
  CHECK(parse_policy("round_robin") == policy_kind::round_robin);
  CHECK_FALSE(parse_policy(""));
  CHECK_FALSE(parse_policy("Least_Loaded"));
  CHECK_FALSE(parse_policy("random"));
}

TEST_CASE("least_loaded picks the lowest waiting + running", "[router]") {
  router_policy p(policy_kind::least_loaded);
  p.replica_up("u0/m", "m", "n0");
  p.replica_up("u1/m", "m", "n1");
  p.replica_up("u2/m", "m", "n2");
  p.report("u0/m", 3, 4, 0);  // 7
  p.report("u1/m", 0, 5, 0);  // 5
  p.report("u2/m", 6, 0, 0);  // 6
  CHECK(p.pick("m") == "u1/m");
  // u1 now counts 5 + 1 sent = 6, tied with u2 (never dispatched): u2.
  CHECK(p.pick("m") == "u2/m");
  // u0 = 7, u1 = 6, u2 = 7: u1.
  CHECK(p.pick("m") == "u1/m");
  // A fresh report resets what was sent since.
  p.report("u0/m", 0, 0, 0);
  CHECK(p.pick("m") == "u0/m");
  CHECK(p.replicas().at("u1/m").dispatched == 2);
  CHECK(p.replicas().at("u1/m").sent_since_report == 2);
  p.report("u1/m", 1, 1, 12.5);
  CHECK(p.replicas().at("u1/m").sent_since_report == 0);
  CHECK(p.replicas().at("u1/m").tokens_per_s == 12.5);
}

TEST_CASE("least_loaded spreads a burst between reports", "[router]") {
  router_policy p(policy_kind::least_loaded);
  p.replica_up("a", "m", "n0");
  p.replica_up("b", "m", "n1");
  p.replica_up("c", "m", "n2");
  p.report("a", 0, 10, 0);
  p.report("b", 0, 0, 0);
  p.report("c", 0, 0, 0);
  // 50 requests with no report in between: b and c absorb the first 20, then
  // all three stand at 10 and share the remaining 30 evenly.
  auto got = spread(p, "m", 50);
  CHECK(got["a"] == 10);
  CHECK(got["b"] == 20);
  CHECK(got["c"] == 20);
}

TEST_CASE("least_loaded: equal replicas alternate", "[router]") {
  router_policy p(policy_kind::least_loaded);
  p.replica_up("x", "m", "n0");
  p.replica_up("y", "m", "n1");
  std::vector<std::string> seq;
  for (int i = 0; i < 6; ++i) {
    // Reports of equal load after every pick: only the tie-break decides.
    p.report("x", 2, 2, 0);
    p.report("y", 2, 2, 0);
    seq.push_back(*p.pick("m"));
  }
  for (size_t i = 1; i < seq.size(); ++i)
    CHECK(seq[i] != seq[i - 1]);
}

TEST_CASE("round_robin cycles through live replicas of the model", "[router]") {
  router_policy p(policy_kind::round_robin);
  CHECK(p.kind() == policy_kind::round_robin);
  p.replica_up("a", "m", "n0");
  p.replica_up("b", "m", "n1");
  p.replica_up("c", "m", "n2");
  p.replica_up("z", "other", "n0");
  p.report("a", 100, 100, 0);  // load does not matter to round robin
  std::vector<std::string> seq;
  for (int i = 0; i < 6; ++i)
    seq.push_back(*p.pick("m"));
  // A cycle of length 3 visiting each once.
  CHECK(seq[0] != seq[1]);
  CHECK(seq[1] != seq[2]);
  CHECK(seq[0] != seq[2]);
  CHECK(seq[3] == seq[0]);
  CHECK(seq[4] == seq[1]);
  CHECK(seq[5] == seq[2]);
  CHECK(p.pick("other") == "z");
}

TEST_CASE("down replicas are skipped, a model with none live gets nullopt", "[router]") {
  for (auto kind : {policy_kind::least_loaded, policy_kind::round_robin}) {
    router_policy p(kind);
    p.replica_up("a", "m", "n0");
    p.replica_up("b", "m", "n1");
    p.report("b", 50, 50, 0);  // busy, but the only one left below
    p.replica_down("a");
    CHECK(p.replicas().at("a").up == false);
    for (int i = 0; i < 4; ++i)
      CHECK(p.pick("m") == "b");
    p.replica_down("b");
    CHECK_FALSE(p.pick("m"));
    CHECK(p.replicas().at("b").dispatched == 4);
    p.replica_down("ghost");  // unknown: nothing happens
    CHECK(p.replicas().size() == 2);
    CHECK_FALSE(p.pick("never-heard-of"));
  }
}

TEST_CASE("node_down marks every replica of the node, replica_up revives", "[router]") {
  router_policy p(policy_kind::least_loaded);
  p.replica_up("u0/m1", "m1", "gpu0");
  p.replica_up("u0/m2", "m2", "gpu0");
  p.replica_up("u1/m1", "m1", "gpu1");
  CHECK(p.node_down("gpu0") == 2);
  CHECK(p.node_down("gpu0") == 0);  // already down
  CHECK(p.node_down("nowhere") == 0);
  CHECK_FALSE(p.replicas().at("u0/m1").up);
  CHECK_FALSE(p.replicas().at("u0/m2").up);
  CHECK(p.replicas().at("u1/m1").up);
  CHECK_FALSE(p.pick("m2"));
  CHECK(p.pick("m1") == "u1/m1");

  p.report("u0/m2", 9, 9, 0);
  p.replica_up("u0/m2", "m2", "gpu0");
  const auto& r = p.replicas().at("u0/m2");
  CHECK(r.up);
  CHECK(r.waiting == 0);  // load reset on revival
  CHECK(r.running == 0);
  CHECK(p.pick("m2") == "u0/m2");
}

TEST_CASE("has_model knows every model with a replica", "[router]") {
  router_policy p(policy_kind::least_loaded);
  CHECK_FALSE(p.has_model("m"));
  p.replica_up("u0/m", "m", "n0");
  CHECK(p.has_model("m"));
  CHECK_FALSE(p.has_model("other"));
  // Known but down: the model exists, it just has no live replica now.
  p.replica_down("u0/m");
  CHECK(p.has_model("m"));
  CHECK_FALSE(p.pick("m"));
}

TEST_CASE("a replica that refused a request is skipped when it is offered again", "[router]") {
  for (auto kind : {policy_kind::least_loaded, policy_kind::round_robin}) {
    router_policy p{kind};
    p.replica_up("u1/m", "m", "n1");
    p.replica_up("u2/m", "m", "n2");
    p.replica_up("u3/x", "x", "n1");
    auto first = p.pick("m");
    REQUIRE(first);
    // It refused (queue full): the retry goes to the other one, then none is left.
    p.refused(*first);
    auto second = p.pick("m", {*first});
    REQUIRE(second);
    CHECK(*second != *first);
    CHECK_FALSE(p.pick("m", {"u1/m", "u2/m"}));
    // Another model's replica is never a fallback.
    CHECK_FALSE(p.pick("x", {"u3/x"}));
  }
}

TEST_CASE("a refusal does not count against the replica's load", "[router]") {
  router_policy p{policy_kind::least_loaded};
  p.replica_up("a", "m", "n");
  p.replica_up("b", "m", "n");
  p.report("a", 0, 0, 0);
  p.report("b", 0, 1, 0);
  // a is lighter; it refuses; the refusal is taken back, so a is still lighter.
  REQUIRE(*p.pick("m") == "a");
  p.refused("a");
  CHECK(p.replicas().at("a").sent_since_report == 0);
  CHECK(*p.pick("m") == "a");
  p.refused("nobody");  // unknown: ignored
}
