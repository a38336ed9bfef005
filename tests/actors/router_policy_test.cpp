#include "actors/router/router_policy.hpp"

#include <catch2/catch.hpp>

#include <set>

#include "actors/kv_manager/kv_block_pool.hpp"

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

TEST_CASE("parse_policy knows every policy, to_string names it back", "[router]") {
  CHECK(parse_policy("least_loaded") == policy_kind::least_loaded);
  CHECK(parse_policy("round_robin") == policy_kind::round_robin);
  CHECK(parse_policy("power_of_two") == policy_kind::power_of_two);
  CHECK(parse_policy("least_tokens") == policy_kind::least_tokens);
  CHECK(parse_policy("prefix_aware") == policy_kind::prefix_aware);
  CHECK(parse_policy("session") == policy_kind::session);
  CHECK(parse_policy("slo_aware") == policy_kind::slo_aware);
  CHECK(policy_names().size() == 7);
  for (const auto& name : policy_names())
    CHECK(to_string(*parse_policy(name)) == name);
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

namespace {

load_sample sample(int32_t waiting, int32_t running, int64_t tokens, int64_t prefill = 0,
                   double prefill_rate = 0) {
  load_sample s;
  s.waiting = waiting;
  s.running = running;
  s.outstanding_tokens = tokens;
  s.queued_prefill = prefill;
  s.prefill_tok_s = prefill_rate;
  return s;
}

route_request request(const std::string& model, int32_t prompt_tokens, int32_t max_tokens,
                      std::string session = {}) {
  route_request r;
  r.model = model;
  r.prompt_tokens = prompt_tokens;
  r.max_tokens = max_tokens;
  r.session = std::move(session);
  return r;
}

std::vector<int32_t> tokens(std::initializer_list<int32_t> t) { return t; }

}  // namespace

TEST_CASE("least_tokens weighs outstanding tokens, not request counts", "[router]") {
  router_policy p{policy_kind::least_tokens};
  p.replica_up("a", "m", "n");
  p.replica_up("b", "m", "n");
  p.replica_up("c", "m", "n");
  p.report("a", sample(0, 1, 1000));  // one long request
  p.report("b", sample(5, 5, 300));   // ten short ones
  p.report("c", sample(1, 1, 600));
  // least_loaded would send this to a (1 request); by tokens b (300) is lightest.
  auto c1 = p.choose(request("m", 100, 50));
  CHECK(c1.replica == "b");
  CHECK(c1.tokens == 150);
  CHECK(p.replicas().at("b").tokens() == 450);
  CHECK(p.choose(request("m", 200, 100)).replica == "b");  // 450 < 600
  CHECK(p.replicas().at("b").tokens() == 750);
  CHECK(p.choose(request("m", 10, 10)).replica == "c");    // 600 < 750 < 1000
  // A refusal takes its tokens back.
  auto c4 = p.choose(request("m", 500, 0));
  CHECK(c4.replica == "c");  // 620 < 750
  p.refused("c", c4);
  CHECK(p.replicas().at("c").tokens() == 620);
  // A report replaces the estimate.
  p.report("a", sample(0, 0, 0));
  CHECK(p.choose(request("m", 1, 1)).replica == "a");
}

TEST_CASE("power_of_two never picks the most loaded of three, and is deterministic for a seed", "[router]") {
  auto run = [](uint64_t seed) {
    routing_options o;
    o.policy = policy_kind::power_of_two;
    o.seed = seed;
    router_policy p{o};
    p.replica_up("a", "m", "n");
    p.replica_up("b", "m", "n");
    p.replica_up("heavy", "m", "n");
    p.report("heavy", 60, 40, 0);  // load 100
    std::vector<std::string> seq;
    for (int i = 0; i < 100; ++i)
      seq.push_back(*p.pick("m"));
    return seq;
  };
  auto seq = run(7);
  std::map<std::string, int> n;
  for (const auto& r : seq)
    ++n[r];
  // Two distinct draws: heavy loses to whichever light replica it meets
  // (they stay below 100 within 100 picks).
  CHECK(n["heavy"] == 0);
  CHECK(n["a"] >= 30);
  CHECK(n["b"] >= 30);
  CHECK(run(7) == seq);
  // With two replicas the choice is the less loaded, whatever the draws.
  router_policy two{policy_kind::power_of_two};
  two.replica_up("x", "m", "n");
  two.replica_up("y", "m", "n");
  two.report("x", 3, 0, 0);
  CHECK(two.pick("m") == "y");
  CHECK(two.pick("m") == "y");
  CHECK(two.pick("m") == "y");  // y: 2 sent, x: 3
  CHECK(two.pick("m") == "x");  // 3 = 3: x was dispatched to less
}

TEST_CASE("block_hashes chain the KV manager's hash over full blocks", "[router]") {
  auto h = router_policy::block_hashes(tokens({1, 2, 3, 4, 5, 6, 7, 8, 9}), 4);
  REQUIRE(h.size() == 2);  // the partial third block is not hashed
  const int32_t b0[] = {1, 2, 3, 4};
  const int32_t b1[] = {5, 6, 7, 8};
  const uint64_t h0 = llmux::kv::kv_block_pool::chain_hash(0, b0, 4);
  CHECK(h[0] == h0);
  CHECK(h[1] == llmux::kv::kv_block_pool::chain_hash(h0, b1, 4));
  CHECK(router_policy::block_hashes(tokens({1, 2, 3}), 4).empty());
  CHECK(router_policy::block_hashes(tokens({1, 2, 3, 4}), 0).empty());
}

TEST_CASE("prefix_aware follows cached blocks within the load cap, then spills", "[router]") {
  routing_options o;
  o.policy = policy_kind::prefix_aware;
  o.block_tokens = 4;
  o.affinity_slack = 2;
  o.affinity_ratio = 1.5;
  router_policy p{o};
  p.replica_up("a", "m", "n");
  p.replica_up("b", "m", "n");
  p.replica_up("c", "m", "n");
  auto with = [](std::initializer_list<int32_t> tail) {
    std::vector<int32_t> v{1, 2, 3, 4, 5, 6, 7, 8};  // a shared two-block prefix
    v.insert(v.end(), tail);
    return v;
  };
  auto go = [&p](const std::vector<int32_t>& prompt) {
    route_request r;
    r.model = "m";
    r.prompt = &prompt;
    r.max_tokens = 4;
    return p.choose(r);
  };
  auto r1 = with({100, 101, 102, 103});
  auto c1 = go(r1);  // nothing cached anywhere: least tokens (ties: first)
  CHECK(c1.replica == "a");
  CHECK(c1.prefix_blocks == 0);
  CHECK_FALSE(c1.affinity);
  CHECK(p.prefix_entries("a") == 3);
  auto r2 = with({200, 201, 202, 203});
  auto c2 = go(r2);
  CHECK(c2.replica == "a");  // the shared prefix is there, a's load 1 <= 0 + 2
  CHECK(c2.prefix_blocks == 2);
  CHECK(c2.affinity);
  auto other = tokens({50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61});
  CHECK(go(other).replica == "b");  // no match anywhere: least tokens
  auto r4 = with({300, 301, 302, 303});
  CHECK(go(r4).replica == "a");  // load 2 <= min (c: 0) + 2
  // a now carries 3 > 0 + 2 and > 1.5 x 0: full for affinity. The hot
  // prefix spills to the least-tokens replica, c, which learns it.
  auto r5 = with({400, 401, 402, 403});
  auto c5 = go(r5);
  CHECK(c5.replica == "c");
  CHECK(c5.prefix_blocks == 0);
  // min load is now 1: a (3 <= 1 + 2) and c both hold the prefix; c has
  // fewer outstanding tokens.
  auto r6 = with({500, 501, 502, 503});
  auto c6 = go(r6);
  CHECK(c6.replica == "c");
  CHECK(c6.prefix_blocks == 2);
  CHECK(p.replicas().at("a").affinity_hits == 2);
  CHECK(p.replicas().at("c").affinity_hits == 1);
  // A restarted replica's cache is empty: the router forgets its blocks.
  p.replica_up("c", "m", "n");
  CHECK(p.prefix_entries("c") == 0);
}

TEST_CASE("prefix_aware's estimate is LRU-bounded and evicts tails before roots", "[router]") {
  routing_options o;
  o.policy = policy_kind::prefix_aware;
  o.block_tokens = 2;
  o.prefix_cache_blocks = 2;
  router_policy p{o};
  p.replica_up("a", "m", "n");
  p.replica_up("b", "m", "n");
  auto first = tokens({1, 2, 3, 4, 5, 6});
  route_request r;
  r.model = "m";
  r.prompt = &first;
  CHECK(p.choose(r).replica == "a");
  CHECK(p.prefix_entries("a") == 2);  // three blocks, two remembered
  auto second = tokens({1, 2, 3, 4, 9, 9});
  r.prompt = &second;
  auto c = p.choose(r);
  CHECK(c.replica == "a");  // the two root blocks survived
  CHECK(c.prefix_blocks == 2);
}

TEST_CASE("session affinity sticks, falls back when down or full, and follows the fallback", "[router]") {
  routing_options o;
  o.policy = policy_kind::session;
  o.affinity_slack = 2;
  o.affinity_ratio = 1.5;
  o.max_sessions = 2;
  router_policy p{o};
  p.replica_up("a", "m", "n0");
  p.replica_up("b", "m", "n1");
  p.report("b", sample(0, 0, 100));
  CHECK(p.choose(request("m", 10, 10, "s1")).replica == "a");  // new: least tokens
  p.report("a", sample(1, 1, 500));  // load 2: within 0 + 2
  p.report("b", sample(0, 0, 0));
  auto again = p.choose(request("m", 10, 10, "s1"));
  CHECK(again.replica == "a");
  CHECK(again.affinity);
  CHECK(p.choose(request("m", 10, 10)).replica == "b");  // no session: least tokens
  p.report("a", sample(5, 5, 500));  // load 10: full for affinity
  p.report("b", sample(0, 0, 0));
  auto spilled = p.choose(request("m", 10, 10, "s1"));
  CHECK(spilled.replica == "b");
  CHECK_FALSE(spilled.affinity);
  p.report("a", sample(0, 0, 0));
  p.report("b", sample(0, 1, 50));
  CHECK(p.choose(request("m", 10, 10, "s1")).replica == "b");  // follows the fallback
  p.replica_down("b");
  CHECK(p.choose(request("m", 10, 10, "s1")).replica == "a");
  p.replica_up("b", "m", "n1");
  CHECK(p.choose(request("m", 10, 10, "s1")).replica == "a");
  // A refused replica is excluded like a down one.
  CHECK(p.choose(request("m", 10, 10, "s1"), {"a"}).replica == "b");
  CHECK(p.sessions() == 1);
  (void)p.choose(request("m", 1, 1, "s2"));
  (void)p.choose(request("m", 1, 1, "s3"));
  CHECK(p.sessions() == 2);  // bounded: the least recent (s1) forgotten
}

TEST_CASE("slo_aware predicts TTFT from the prefill queue and refuses a request no replica can meet", "[router]") {
  router_policy p{policy_kind::slo_aware};
  p.replica_up("a", "m", "n", 1000);  // the cost model's rate
  p.replica_up("b", "m", "n");        // unknown until measured
  p.report("a", sample(0, 1, 0, 2000));
  p.report("b", sample(0, 1, 0, 6000, 4000));
  auto c1 = p.choose(request("m", 500, 10));
  // a: (2000 + 500) / 1000 = 2.5 s; b: (6000 + 500) / 4000 = 1.625 s.
  CHECK(c1.replica == "b");
  CHECK(c1.predicted_ttft_ms == Approx(1625));
  auto c2 = p.choose(request("m", 500, 10));
  CHECK(c2.replica == "b");
  CHECK(c2.predicted_ttft_ms == Approx(1750));  // the first prompt now queued ahead
  auto tight = request("m", 500, 10);
  tight.ttft_budget_ms = 1000;  // best is b at 1875 ms
  auto c3 = p.choose(tight);
  CHECK_FALSE(c3.replica);
  CHECK(c3.over_deadline);
  CHECK(c3.predicted_ttft_ms == Approx(1875));
  CHECK(p.replicas().at("b").prefill_since_report == 1000);  // nothing counted
  tight.ttft_budget_ms = 2000;
  CHECK(p.choose(tight).replica == "b");
  // A report without a measurement keeps the last rate.
  p.report("b", sample(0, 0, 0, 0, 0));
  CHECK(p.replicas().at("b").prefill_tok_s == 4000);

  router_policy blind{policy_kind::slo_aware};
  blind.replica_up("x", "m", "n");
  blind.replica_up("y", "m", "n");
  blind.report("x", sample(0, 0, 900));
  auto c = blind.choose(request("m", 100, 1, ""));
  CHECK(c.replica == "y");  // no rate anywhere: least tokens, no prediction
  CHECK(c.predicted_ttft_ms == -1);
}

TEST_CASE("each model routes by its own policy", "[router]") {
  routing_options o;
  o.policy = policy_kind::least_loaded;
  o.model_policy["rr"] = policy_kind::round_robin;
  router_policy p{o};
  CHECK(p.kind_of("rr") == policy_kind::round_robin);
  CHECK(p.kind_of("other") == policy_kind::least_loaded);
  p.replica_up("a/rr", "rr", "n");
  p.replica_up("b/rr", "rr", "n");
  p.report("a/rr", 100, 0, 0);
  auto first = *p.pick("rr");
  CHECK(*p.pick("rr") != first);  // rotation, whatever the load
}

TEST_CASE("a replica that is not routable gets no new requests, and can be again", "[router][layout]") {
  for (auto kind : {policy_kind::least_loaded, policy_kind::round_robin, policy_kind::least_tokens,
                    policy_kind::prefix_aware, policy_kind::session, policy_kind::power_of_two}) {
    router_policy p{kind};
    p.replica_up("u/m", "m", "n");
    p.replica_up("u/m#1", "m", "n");
    CHECK(p.set_routable("u/m#1", false));
    CHECK_FALSE(p.set_routable("ghost", false));
    for (int i = 0; i < 6; ++i)
      CHECK(p.choose(request("m", 5, 5, "s" + std::to_string(i))).replica == "u/m");
    CHECK(p.has_model("m"));
    CHECK(p.set_routable("u/m", false));
    CHECK_FALSE(p.pick("m"));  // none routable
    CHECK(p.set_routable("u/m#1", true));
    CHECK(p.pick("m") == "u/m#1");
    // A replica that comes up again is routable.
    p.replica_up("u/m", "m", "n");
    CHECK(p.replicas().at("u/m").routable);
  }
}

TEST_CASE("a sleeping replica gets requests only when every replica of the model sleeps", "[router][residency]") {
  for (auto kind : {policy_kind::least_loaded, policy_kind::round_robin, policy_kind::least_tokens,
                    policy_kind::power_of_two}) {
    INFO(to_string(kind));
    router_policy p(kind);
    p.replica_up("u0/m", "m", "n0");
    p.replica_up("u1/m", "m", "n1");
    load_sample idle;
    idle.residency = "sleeping";
    p.report("u0/m", idle);  // idle, asleep
    load_sample busy;
    busy.waiting = 5;
    busy.running = 8;
    busy.outstanding_tokens = 9000;
    p.report("u1/m", busy);  // loaded, awake
    for (int i = 0; i < 4; ++i)
      CHECK(p.pick("m") == "u1/m");
    // The awake one is excluded (it refused): the sleeping one wakes.
    CHECK(p.pick("m", {"u1/m"}) == "u0/m");
    // Both asleep: the policy picks among both again.
    busy.residency = "loading";
    p.report("u1/m", busy);
    std::set<std::string> picked;
    for (int i = 0; i < 4; ++i)
      picked.insert(*p.pick("m"));
    CHECK(picked.count("u0/m") == 1);
  }
}

TEST_CASE("a draining replica is awake: residency alone never makes the router pass it over", "[router][residency]") {
  router_policy p(policy_kind::least_loaded);
  p.replica_up("u0/m", "m", "n0");
  p.replica_up("u1/m", "m", "n1");
  load_sample draining;
  draining.residency = "draining";
  p.report("u0/m", draining);  // idle, awake, handing sequences over
  load_sample busy;
  busy.running = 4;
  p.report("u1/m", busy);
  CHECK_FALSE(p.replicas().at("u0/m").asleep());
  CHECK(p.pick("m") == "u0/m");  // routable decides whether it takes requests, not residency
}
