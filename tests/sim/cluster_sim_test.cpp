// sim/cluster_sim: a cluster config served in virtual time. Expected times
// are worked out by hand from MuxServe's A100 profile
// (../shared/muxserve/a100_llama_profile.json, llama-7b, tp 1, batch 1):
//
//   share 100%: prefill(128) = 16.023 ms; decoding at length 128 = 11.490 ms,
//               at 256 = 11.795 ms
//   share  50%: prefill(128) = 21.348 ms
//
// A decode step of one sequence whose KV holds c tokens after the step costs
// decoding(c), linear between the measured lengths:
//   decoding(129) = 11.490 + (1/128)·0.305 = 11.4923828125 ms
//   decoding(130) = 11.490 + (2/128)·0.305 = 11.494765625 ms
//
// The scheduler's first step computes the whole prompt and samples the first
// token; each later step feeds the last token and samples the next. So a
// request of prompt 128 alone on a unit gets its first token at
// prefill(128) and its k-th at prefill(128) + Σ decoding(128 + i), i = 1..k-1.

#include "plan/online.hpp"
#include "sim/cluster_sim.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

using namespace llmux;
using sim::request_spec;
using sim::sim_options;
using sim::sim_result;
using sim::workload;

namespace {

constexpr double prefill128_full = 16.023e-3;
constexpr double prefill128_half = 21.348e-3;
constexpr double decode129_full = 11.4923828125e-3;
constexpr double decode130_full = 11.494765625e-3;

Approx exactly(double v) {
  return Approx(v).epsilon(1e-9).margin(1e-12);
}

/// A one-node cluster with one unit u0 on `gpu` hosting `models` (llama-7b
/// each); `unit_keys` and each model's entry keys are added as given.
/// One node n0 with the gateway; the a100 GPU type on MuxServe's profile.
constexpr const char* kPreamble = R"([cluster]
name = "t"
[[nodes]]
name = "n0"
port = 7301
[gateway]
node = "n0"
[gpus.a100]
profile = "builtin:a100"
)";

std::string cluster_text(const std::string& gpu, const std::vector<std::string>& models,
                         const std::string& unit_keys = "", const std::string& model_keys = "") {
  std::string t = kPreamble;
  for (const auto& m : models)
    t += "[[models]]\nname = \"" + m + "\"\narchitecture = \"llama-7b\"\n";
  t += "[[units]]\nname = \"u0\"\nnode = \"n0\"\ngpu = \"" + gpu + "\"\nkv_blocks = 100000\n" + unit_keys
       + (unit_keys.empty() ? "" : "\n") + "models = [";
  for (size_t i = 0; i < models.size(); ++i)
    t += std::string(i ? ", " : " ") + "{ name = \"" + models[i] + "\"" + (model_keys.empty() ? "" : ", " + model_keys)
         + " }";
  t += " ]\n";
  return t;
}

/// Two llama-7b models m0, m1, the controller re-placing every 2 s, and `units`.
std::string replan_text(const std::string& units) {
  std::string text = std::string{kPreamble} + "[controller]\nreplan_s = 2\n";
  for (const char* m : {"m0", "m1"})
    text += std::string{"[[models]]\nname = \""} + m + "\"\narchitecture = \"llama-7b\"\n";
  return text + units;
}

config::cluster_config parse(const std::string& text) {
  return config::parse_cluster_config(text, "test.toml");
}

workload make_workload(std::vector<request_spec> reqs) {
  workload w;
  std::stable_sort(reqs.begin(), reqs.end(), [](const auto& a, const auto& b) { return a.at_s < b.at_s; });
  for (const auto& r : reqs)
    if (std::find(w.models.begin(), w.models.end(), r.model) == w.models.end())
      w.models.push_back(r.model);
  w.requests = std::move(reqs);
  w.duration_s = w.requests.empty() ? 0 : w.requests.back().at_s;
  w.source = "test";
  return w;
}

double last_finish(const sim_result& r) {
  double t = 0;
  for (const auto& q : r.requests)
    t = std::max(t, q.finish_s);
  return t;
}

}  // namespace

TEST_CASE("cluster_sim: one request alone takes its profiled prefill, then one decode step per token",
          "[cluster_sim]") {
  auto cfg = parse(cluster_text("a100", {"m0"}));
  // Far apart, so neither waits for the other.
  auto w = make_workload({{1.0, "m0", 128, 3}, {10.0, "m0", 128, 1}, {20.0, "m0", 128, 2}});
  auto r = sim::simulate(cfg, w);
  INFO(r.violations.size() << " violations" << (r.violations.empty() ? "" : ": " + r.violations[0]));
  CHECK(r.violations.empty());
  REQUIRE(r.requests.size() == 3);

  const auto& three = r.requests[0];
  CHECK(three.ok());
  CHECK(three.replica == "u0/m0");
  CHECK(three.arrival_s == 1.0);
  CHECK(three.generated == 3);
  CHECK(three.first_token_s == exactly(1.0 + prefill128_full));
  CHECK(three.finish_s == exactly(1.0 + prefill128_full + decode129_full + decode130_full));
  // Its SLO reference: prefill + (output - 1) decodes at the mean context
  // 128 + 3/2: decoding(129.5) = 11.490 + (1.5/128)·0.305 ms.
  CHECK(three.reference_s == exactly(prefill128_full + 2 * (11.490 + 1.5 / 128 * 0.305) * 1e-3));

  // One token: the prefill step samples it and the request ends there.
  const auto& one = r.requests[1];
  CHECK(one.ok());
  CHECK(one.generated == 1);
  CHECK(one.first_token_s == exactly(10.0 + prefill128_full));
  CHECK(one.finish_s == exactly(10.0 + prefill128_full));
  CHECK(one.reference_s == exactly(prefill128_full));

  const auto& two = r.requests[2];
  CHECK(two.first_token_s == exactly(20.0 + prefill128_full));
  CHECK(two.finish_s == exactly(20.0 + prefill128_full + decode129_full));

  REQUIRE(r.units.size() == 1);
  CHECK(r.units[0].name == "u0");
  CHECK(r.units[0].steps == 3u + 1u + 2u);
  CHECK(r.units[0].kv_blocks == 100000);
  CHECK(r.units[0].busy_s == exactly(3 * prefill128_full + 2 * decode129_full + decode130_full));
  CHECK(r.preemptions == 0u);
  CHECK(r.end_s >= two.finish_s);
}

TEST_CASE("cluster_sim: every request is accounted for once and every KV block comes back", "[cluster_sim]") {
  // Two models share a pool of 100000 blocks: 1024 per token-block of
  // llama-7b, so 97 token-blocks (1552 tokens) in all. 120 requests arrive
  // 10 ms apart and each runs for at least 32 decode steps (> 0.3 s), so
  // dozens run at once: admitted with prompt + 1 tokens, they outgrow the
  // pool and the scheduler must preempt. ADBS floors (512 tokens: 32
  // token-blocks) leave one model at most 97 - 32 = 65 token-blocks (1040
  // tokens), so the 1600-token prompt can never be served: 400.
  auto cfg = parse(cluster_text("a100", {"m0", "m1"}, "", "share = 0.5"));
  std::vector<request_spec> reqs;
  for (int i = 0; i < 120; ++i)
    reqs.push_back({0.01 * i, i % 2 ? "m1" : "m0", 64 + (i % 5) * 16, 32 + (i % 7) * 8});
  reqs.push_back({0.305, "m0", 1600, 10});
  auto w = make_workload(reqs);
  sim_options o;
  o.check_every_events = 50;
  auto r = sim::simulate(cfg, w, o);

  for (const auto& v : r.violations)
    UNSCOPED_INFO(v);
  CHECK(r.violations.empty());
  REQUIRE(r.requests.size() == w.requests.size());
  size_t ok = 0, failed = 0, unfinished = 0;
  for (size_t i = 0; i < r.requests.size(); ++i) {
    const auto& q = r.requests[i];
    const auto& spec = w.requests[i];
    INFO("request " << i << " (" << spec.model << ", prompt " << spec.prompt_tokens << ")");
    CHECK(q.model == spec.model);
    CHECK(q.arrival_s == spec.at_s);
    if (spec.prompt_tokens == 1600) {
      CHECK_FALSE(q.ok());
      CHECK(q.status == 400);
      CHECK(q.finish_s >= q.arrival_s);
      CHECK(q.generated == 0);
      ++failed;
      continue;
    }
    CHECK(q.replica == "u0/" + spec.model);
    REQUIRE(q.ok());
    ++ok;
    CHECK(q.generated == spec.output_tokens);
    CHECK(q.first_token_s > q.arrival_s);
    CHECK(q.finish_s > q.first_token_s);
    unfinished += q.finish_s < 0 ? 1 : 0;
  }
  CHECK(ok == 120u);
  CHECK(failed == 1u);
  CHECK(unfinished == 0u);
  CHECK(r.preemptions > 0u);
  REQUIRE(r.units.size() == 1);
  CHECK(r.units[0].kv_peak_used <= 100000);
  // A growth refusal (there were preemptions) means a model reached its
  // quota (half the pool, 50000) or the pool ran out: the pool was well used.
  CHECK(r.units[0].kv_peak_used > 40000);
  CHECK(r.units[0].max_share_sum <= 1.0 + 1e-9);
}

TEST_CASE("cluster_sim: models decoding at once on a unit share its memory bandwidth", "[cluster_sim]") {
  // Roofline h100: at share 0.5 a job gets the whole bandwidth (it saturates
  // at half the SMs), and every step here is memory-bound (a 128-token
  // prefill reads 13.5 GB of weights in 4.0 ms; its compute takes 3.5 ms).
  // Two identical requests on two models step in lockstep: each alone uses
  // (t - 40 µs) / t ≈ 99% of the bandwidth, so together they run 1.98× as
  // long, never more than 2×.
  auto cfg = parse(cluster_text("h100", {"m0", "m1"}, "", "share = 0.5"));
  auto w = make_workload({{0.0, "m0", 128, 64}, {0.0, "m1", 128, 64}});
  sim_options on;
  sim_options off;
  off.bandwidth_contention = false;
  auto with = sim::simulate(cfg, w, on);
  auto without = sim::simulate(cfg, w, off);
  REQUIRE(with.requests.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    INFO("request " << i);
    REQUIRE(with.requests[i].ok());
    REQUIRE(without.requests[i].ok());
    const double ratio = with.requests[i].finish_s / without.requests[i].finish_s;
    CHECK(ratio > 1.8);
    CHECK(ratio <= 2.0 + 1e-9);
    CHECK(with.requests[i].first_token_s > without.requests[i].first_token_s);
  }
  CHECK(with.violations.empty());

  SECTION("a model alone is not slowed") {
    auto w1 = make_workload({{0.0, "m0", 128, 64}});
    auto a = sim::simulate(cfg, w1, on);
    auto b = sim::simulate(cfg, w1, off);
    REQUIRE(a.requests[0].ok());
    CHECK(a.requests[0].first_token_s == b.requests[0].first_token_s);
    CHECK(a.requests[0].finish_s == b.requests[0].finish_s);
    // And on the whole unit too.
    auto whole = parse(cluster_text("h100", {"m0"}));
    auto c = sim::simulate(whole, w1, on);
    auto d = sim::simulate(whole, w1, off);
    CHECK(c.requests[0].finish_s == d.requests[0].finish_s);
    // Half the SMs already get the whole bandwidth: memory-bound steps take
    // as long on half the unit as on all of it.
    CHECK(c.requests[0].finish_s == Approx(a.requests[0].finish_s).epsilon(0.01));
  }
}

TEST_CASE("cluster_sim: a temporal unit runs one step at a time, on the whole unit", "[cluster_sim]") {
  // Two models, one request each (prompt 128, output 2), both at t = 0, m0
  // first. adbs: prefills first, each at 100% of the A100:
  //   m0 prefill [0, 16.023] → m0's first token
  //   m1 prefill [16.023, 32.046] → m1's first token
  //   m0 decode  [32.046, 43.538…]  (m0 queued its decode at 16.023)
  //   m1 decode  [43.538…, 55.031…]
  auto temporal = parse(cluster_text("a100", {"m0", "m1"}, "multiplex = \"temporal\"", "share = 0.5"));
  auto w = make_workload({{0.0, "m0", 128, 2}, {0.0, "m1", 128, 2}});
  auto t = sim::simulate(temporal, w);
  REQUIRE(t.requests.size() == 2);
  const auto& m0 = t.requests[0];
  const auto& m1 = t.requests[1];
  REQUIRE(m0.model == "m0");
  REQUIRE(m0.ok());
  REQUIRE(m1.ok());
  CHECK(m0.first_token_s == exactly(prefill128_full));
  CHECK(m1.first_token_s == exactly(2 * prefill128_full));
  CHECK(m0.finish_s == exactly(2 * prefill128_full + decode129_full));
  CHECK(m1.finish_s == exactly(2 * prefill128_full + 2 * decode129_full));
  // Busy all along, never two at once: busy time is the sum of the steps.
  REQUIRE(t.units.size() == 1);
  CHECK(t.units[0].busy_s == exactly(2 * prefill128_full + 2 * decode129_full));

  // The same load spatially (each model on half the SMs, at once) ends sooner.
  auto spatial = parse(cluster_text("a100", {"m0", "m1"}, "", "share = 0.5"));
  auto s = sim::simulate(spatial, w);
  REQUIRE(s.requests[1].ok());
  CHECK(last_finish(t) >= last_finish(s));
  // Spatially the prefills overlap: m1 does not wait for m0's.
  CHECK(s.requests[1].first_token_s < t.requests[1].first_token_s);
}

TEST_CASE("cluster_sim: a temporal unit of several models reports no broken invariant", "[cluster_sim]") {
  // Each model's engine runs on the whole unit (share 1) one step at a
  // time: that must not count as shares summing to 2 (the first version
  // reported "unit u0 shares summed to 2.000000" here).
  auto temporal = parse(cluster_text("a100", {"m0", "m1"}, "multiplex = \"temporal\"", "share = 0.5"));
  auto t = sim::simulate(temporal, make_workload({{0.0, "m0", 128, 2}, {0.0, "m1", 128, 2}}));
  for (const auto& v : t.violations)
    UNSCOPED_INFO(v);
  CHECK(t.violations.empty());
  REQUIRE(t.units.size() == 1);
  CHECK(t.units[0].max_share_sum <= 1.0 + 1e-9);
}

TEST_CASE("cluster_sim: on a shared prefill lane the models' prefill steps take turns", "[cluster_sim]") {
  // prefill_share 0.5: the lane is 50% of the A100, the two decode jobs get
  // 0.25 each. Both prompts arrive at t = 0, m0 first: m0's prefill takes the
  // lane for prefill(128) at 50% = 21.348 ms; m1's starts when it ends.
  auto cfg = parse(cluster_text("a100", {"m0", "m1"}, "jobs = \"split\"\nprefill = \"shared\"\nprefill_share = 0.5"));
  REQUIRE(cfg.units[0].models[0].decode_share == Approx(0.25));
  auto w = make_workload({{0.0, "m0", 128, 2}, {0.0, "m1", 128, 2}});
  SECTION("exact without bandwidth contention") {
    sim_options o;
    o.bandwidth_contention = false;
    auto r = sim::simulate(cfg, w, o);
    REQUIRE(r.requests[0].ok());
    REQUIRE(r.requests[1].ok());
    CHECK(r.requests[0].first_token_s == exactly(prefill128_half));
    CHECK(r.requests[1].first_token_s == exactly(2 * prefill128_half));
    CHECK(r.violations.empty());
  }
  SECTION("with contention the second prefill can only end later") {
    auto r = sim::simulate(cfg, w);
    REQUIRE(r.requests[1].ok());
    CHECK(r.requests[0].first_token_s >= prefill128_half - 1e-12);
    CHECK(r.requests[1].first_token_s >= r.requests[0].first_token_s + prefill128_half - 1e-12);
    CHECK(r.violations.empty());
  }
  SECTION("without the lane each model's prefill runs in its own partition at once") {
    auto own = parse(cluster_text("a100", {"m0", "m1"}, "jobs = \"split\"", "share = 0.5"));
    sim_options o;
    o.bandwidth_contention = false;
    auto r = sim::simulate(own, w, o);
    REQUIRE(r.requests[1].ok());
    CHECK(r.requests[1].first_token_s == exactly(r.requests[0].first_token_s));
  }
}

TEST_CASE("cluster_sim: configs it cannot simulate are refused", "[cluster_sim][error]") {
  auto cfg = parse(cluster_text("a100", {"m0"}));
  SECTION("a workload model no unit hosts") {
    auto w = make_workload({{0.0, "m0", 16, 2}, {0.1, "ghost", 16, 2}});
    CHECK_THROWS_AS(sim::simulate(cfg, w), std::invalid_argument);
  }
  SECTION("a unit that is not sim") {
    auto cpu = cfg;
    cpu.units[0].backend = "cpu";
    CHECK_THROWS_AS(sim::simulate(cpu, make_workload({{0.0, "m0", 16, 2}})), std::invalid_argument);
  }
  SECTION("an empty workload runs to nothing") {
    auto r = sim::simulate(cfg, make_workload({}));
    CHECK(r.requests.empty());
    CHECK(r.violations.empty());
  }
}

TEST_CASE("cluster_sim: a request naming an unhosted model is refused even when w.models omits it",
          "[cluster_sim][error]") {
  // A hand-built workload whose `models` list is incomplete: the check
  // reads the requests too, so the error names the model.
  auto cfg = parse(cluster_text("a100", {"m0"}));
  workload w;
  w.models = {"m0"};
  w.requests = {{0.0, "m0", 16, 2}, {0.1, "ghost", 16, 2}};
  CHECK_THROWS_AS(sim::simulate(cfg, w), std::invalid_argument);
}

TEST_CASE("cluster_sim: the router's policy decides prefix hits; prefix_aware and session find them",
          "[cluster_sim][routing]") {
  // Three replicas of one model; 8 long shared prefixes and multi-turn
  // sessions. Which replica a request goes to decides whether its prefix is
  // in that unit's cache.
  std::string text = std::string(kPreamble) + "[[models]]\nname = \"m\"\narchitecture = \"llama-7b\"\n";
  for (int u = 0; u < 3; ++u)
    text += "[[units]]\nname = \"u" + std::to_string(u) + "\"\nnode = \"n0\"\ngpu = \"a100\"\n"
            "models = [{ name = \"m\" }]\n";
  auto spec = sim::parse_workload_spec(R"(duration_s = 40
seed = 5
models = ["m"]
total_rate = 6
prompt = "lognormal:100:0.5:4:400"
output = "fixed:16"
prefix_groups = 8
prefix_tokens = 512
sessions = 60
session_max_tokens = 1500
)", "w.toml");
  const auto w = sim::generate(spec);
  std::map<std::string, sim::sim_result> by_policy;
  for (const char* policy : {"round_robin", "prefix_aware", "session"}) {
    auto cfg = parse(text);
    cfg.router.policy = policy;
    by_policy[policy] = sim::simulate(cfg, w);
    const auto& r = by_policy[policy];
    CHECK(r.violations.empty());
    for (const auto& q : r.requests) {
      INFO(policy << ": " << q.error);
      CHECK(q.ok());
    }
    REQUIRE(r.replicas.size() == 3);
    uint64_t sent = 0;
    for (const auto& x : r.replicas) {
      CHECK(x.policy == policy);
      CHECK(x.dispatched > 0);
      sent += x.dispatched;
    }
    CHECK(sent == w.requests.size());
  }
  auto hit_rate = [](const sim::sim_result& r) {
    uint64_t admitted = 0, cached = 0;
    for (const auto& x : r.replicas) {
      admitted += x.prompt_tokens;
      cached += x.cached_tokens;
    }
    return static_cast<double>(cached) / static_cast<double>(admitted);
  };
  auto affinity = [](const sim::sim_result& r) {
    uint64_t n = 0;
    for (const auto& x : r.replicas)
      n += x.affinity_hits;
    return n;
  };
  const double rr = hit_rate(by_policy["round_robin"]);
  const double pa = hit_rate(by_policy["prefix_aware"]);
  const double se = hit_rate(by_policy["session"]);
  INFO("hit rates: round_robin " << rr << ", prefix_aware " << pa << ", session " << se);
  // Round robin finds a session's history only where its last turn happened
  // to go (1 in 3); affinity finds it nearly always.
  CHECK(pa > rr + 0.1);
  CHECK(se > rr + 0.1);
  CHECK(affinity(by_policy["round_robin"]) == 0);
  CHECK(affinity(by_policy["prefix_aware"]) > w.requests.size() / 2);
  CHECK(affinity(by_policy["session"]) > w.requests.size() / 2);
}

TEST_CASE("cluster_sim: a request for a sleeping model waits for its wake; the idle model sleeps to make room",
          "[cluster_sim][residency]") {
  // Room for one llama-7b (12.55 GiB of f16 weights) in 20000 MiB: m1
  // starts asleep. Each model has half the GPU (shares sum to 1 whoever sleeps).
  auto text = cluster_text("a100", {"m0", "m1"}, "memory_mib = 20000", "share = 0.5");
  auto cfg = parse(text);
  const double wake_s = cfg.find_model("m1")->arch.params() * 2 / (cfg.gpus.at("a100").load_gbs * 1e9);
  REQUIRE(cfg.gpus.at("a100").load_gbs == 25);
  auto w = make_workload({{1.0, "m1", 128, 1}, {10.0, "m0", 128, 1}, {20.0, "m0", 128, 1}});
  auto r = sim::simulate(cfg, w);
  INFO(r.violations.size() << " violations" << (r.violations.empty() ? "" : ": " + r.violations[0]));
  CHECK(r.violations.empty());
  // m1 wakes at its arrival (m0, idle, sleeps first), then prefills alone.
  CHECK(r.requests[0].ok());
  CHECK(r.requests[0].first_token_s == Approx(1.0 + wake_s + prefill128_half).epsilon(1e-6));
  // m0 wakes back (m1 sleeps); then it is awake: no wake for the third.
  CHECK(r.requests[1].first_token_s == Approx(10.0 + wake_s + prefill128_half).epsilon(1e-6));
  CHECK(r.requests[2].first_token_s == Approx(20.0 + prefill128_half).epsilon(1e-6));
  REQUIRE(r.units.size() == 1);
  CHECK(r.units[0].wakes == 2);
  CHECK(r.units[0].sleeps == 2);
  CHECK(r.units[0].wake_s == Approx(2 * wake_s));
}

TEST_CASE("cluster_sim: no room while the other model is busy: a 503 when the TTFT budget runs out",
          "[cluster_sim][residency]") {
  auto text = cluster_text("a100", {"m0", "m1"}, "memory_mib = 20000", "share = 0.5");
  // m1's requests may wait 1 s for their first token.
  text = text.replace(text.find("name = \"m1\"\narchitecture = \"llama-7b\"\n"),
                      std::string{"name = \"m1\"\narchitecture = \"llama-7b\"\n"}.size(),
                      "name = \"m1\"\narchitecture = \"llama-7b\"\nttft_slo_ms = 1000\n");
  auto cfg = parse(text);
  // m0 decodes 2000 tokens from t = 1 (about 23 s): it cannot sleep.
  auto w = make_workload({{1.0, "m0", 128, 2000}, {2.0, "m1", 128, 1}, {40.0, "m1", 128, 1}});
  auto r = sim::simulate(cfg, w);
  CHECK(r.violations.empty());
  CHECK(r.requests[0].ok());
  CHECK(r.requests[1].status == 503);
  CHECK(r.requests[1].error.find("could not be woken in time") != std::string::npos);
  // Refused at the first load tick within two ticks (0.2 s) of its budget's end.
  CHECK(r.requests[1].finish_s >= 2.0 + 1.0 - 0.2 - 1e-9);
  CHECK(r.requests[1].finish_s <= 2.0 + 1.0);
  CHECK(r.units[0].wake_refusals > 0);
  // Later, m0 idle: m1 wakes and serves.
  CHECK(r.requests[2].ok());
  CHECK(r.units[0].wakes == 1);
}

TEST_CASE("cluster_sim: idle_sleep_s puts an idle model to sleep at a load tick", "[cluster_sim][residency]") {
  auto text = cluster_text("a100", {"m0"});
  text = text.replace(text.find("architecture = \"llama-7b\"\n"), std::string{"architecture = \"llama-7b\"\n"}.size(),
                      "architecture = \"llama-7b\"\nidle_sleep_s = 5\n");
  auto cfg = parse(text);
  const double wake_s = cfg.find_model("m0")->arch.params() * 2 / 25e9;
  auto w = make_workload({{1.0, "m0", 128, 1}, {3.0, "m0", 128, 1}, {20.0, "m0", 128, 1}});
  auto r = sim::simulate(cfg, w);
  CHECK(r.violations.empty());
  // Busy at 3 s (less than 5 s after the first): still awake.
  CHECK(r.requests[1].first_token_s == Approx(3.0 + prefill128_full).epsilon(1e-6));
  // Asleep by 20 s: the third waits for a wake.
  CHECK(r.requests[2].first_token_s == Approx(20.0 + wake_s + prefill128_full).epsilon(1e-6));
  CHECK(r.units[0].sleeps == 1);
  CHECK(r.units[0].wakes == 1);
}

TEST_CASE("cluster_sim: re-placement wakes the popular model back before its next request",
          "[cluster_sim][residency][replan]") {
  // Room for one of two. m0 is asked twice a second for 9 s; one request for
  // m1 at 10.2 s puts m0 (idle) to sleep. With [controller] replan_s = 1, the
  // controller's plan at 11 s wakes m0 back (m1 idle, far less popular), so
  // m0's request at 12 s finds it awake; without, that request waits a wake.
  auto text = cluster_text("a100", {"m0", "m1"}, "memory_mib = 20000", "share = 0.5");
  std::vector<request_spec> reqs;
  for (int i = 0; i < 19; ++i)
    reqs.push_back({1.0 + 0.5 * i, "m0", 128, 1});
  reqs.push_back({10.2, "m1", 128, 1});
  reqs.push_back({12.0, "m0", 128, 1});
  const auto w = make_workload(reqs);
  auto off = sim::simulate(parse(text), w);
  auto on = sim::simulate(parse(text + "[controller]\nreplan_s = 1\n"), w);
  for (const auto* r : {&off, &on}) {
    INFO(r->violations.size() << " violations" << (r->violations.empty() ? "" : ": " + r->violations[0]));
    CHECK(r->violations.empty());
    for (const auto& q : r->requests)
      CHECK(q.ok());
  }
  const auto cfg = parse(text);
  const double wake_s = cfg.find_model("m0")->arch.params() * 2 / 25e9;
  const auto& last_off = off.requests.back();
  const auto& last_on = on.requests.back();
  REQUIRE(last_on.model == "m0");
  CHECK(last_off.first_token_s == Approx(12.0 + wake_s + prefill128_half).epsilon(1e-6));
  CHECK(last_on.first_token_s == Approx(12.0 + prefill128_half).epsilon(1e-6));
  CHECK(on.replan_wakes == 1);
  CHECK(off.replan_wakes == 0);
}

TEST_CASE("cluster_sim: re-placement with the placement planner moves a model to the unit it plans for it",
          "[cluster_sim][residency][replan]") {
  // Two A100s: u0 lists m0 and m1 and holds both awake, u1 lists m1
  // (asleep). m0 is busy (its requests wait on u0: at most 8 run), m1
  // light. A planner that puts m0 on u0 and m1 on u1 (fixed here: the
  // placement's own choices are tested in plan_test): as u0 does not keep
  // up (for m0) while m1's own requests do not wait, m1 moves to u1 — woken
  // there, its sequences handed back and continued there, asleep on u0.
  const std::string text = replan_text(R"([[units]]
name = "u0"
node = "n0"
gpu = "a100"
memory_mib = 30000
max_running = 8
models = [ { name = "m0", share = 0.5 }, { name = "m1", share = 0.5 } ]
[[units]]
name = "u1"
node = "n0"
gpu = "a100"
devices = [1]
memory_mib = 30000
max_running = 8
models = [ { name = "m1", share = 0.5, awake = false } ]
)");
  const auto cfg = parse(text);
  std::vector<request_spec> reqs;
  for (int i = 0; i < 300; ++i)
    reqs.push_back({0.1 * i, "m0", 128, 256});
  for (int i = 0; i < 30; ++i)
    reqs.push_back({1.0 * i + 0.05, "m1", 128, 64});
  const auto w = make_workload(reqs);
  sim_options with;
  int calls = 0;
  with.planner = [&calls](const std::map<std::string, double>&, const std::map<std::string, std::vector<std::string>>&) {
    ++calls;
    std::map<std::string, controller::unit_target> t;
    t["u0"].models = {"m0"};
    t["u1"].models = {"m1"};
    return t;
  };
  auto r = sim::simulate(cfg, w, with);
  INFO(r.violations.size() << " violations" << (r.violations.empty() ? "" : ": " + r.violations[0]));
  CHECK(r.violations.empty());
  CHECK(calls > 10);
  for (const auto& q : r.requests)
    CHECK(q.ok());
  CHECK(r.replan_moves == 1);
  CHECK(r.units[0].sleeps >= 1);  // m1 on u0, once handed over and the target awake
  // m1's requests after the move all went to u1.
  double moved_at = -1;
  for (const auto& q : r.requests)
    if (q.model == "m1" && q.replica == "u1/m1" && (moved_at < 0 || q.arrival_s < moved_at))
      moved_at = q.arrival_s;
  REQUIRE(moved_at >= 0);
  for (const auto& q : r.requests)
    if (q.model == "m1" && q.arrival_s > moved_at + 1)
      CHECK(q.replica == "u1/m1");
  // The rate rule never moves: it wakes second replicas where queues build.
  auto rule = sim::simulate(cfg, w);
  CHECK(rule.replan_moves == 0);
}

TEST_CASE("cluster_sim: re-placement moves decode shares toward the planner's on MuxServe's layout",
          "[cluster_sim][replan]") {
  // One A100 with a shared prefill lane (0.2) and two decode jobs of 0.4;
  // m0 is asked ten times as often as m1: the planner gives m0's decode job
  // the larger part of the 0.8 the two hold.
  const std::string text = replan_text(R"([[units]]
name = "u0"
node = "n0"
gpu = "a100"
kv_blocks = 20000
memory_mib = 30000
jobs = "split"
prefill = "shared"
prefill_share = 0.2
models = [ { name = "m0", decode_share = 0.4 }, { name = "m1", decode_share = 0.4 } ]
)");
  const auto cfg = parse(text);
  std::vector<request_spec> reqs;
  for (int i = 0; i < 200; ++i)
    reqs.push_back({0.2 * i, i % 10 == 0 ? "m1" : "m0", 128, 128});
  const auto w = make_workload(reqs);
  auto planner = plan::online_planner(cfg);
  REQUIRE(planner);
  // The planner's split for these rates, straight from it: m0's larger.
  auto target = (*planner)({{"m0", 4.5}, {"m1", 0.5}}, {});
  REQUIRE(target.at("u0").shares.size() == 2);
  CHECK(target.at("u0").job == "decode");
  CHECK(target.at("u0").shares.at("m0") > target.at("u0").shares.at("m1"));
  sim_options with;
  with.planner = *planner;
  auto r = sim::simulate(cfg, w, with);
  CHECK(r.violations.empty());
  for (const auto& q : r.requests)
    CHECK(q.ok());
  CHECK(r.replan_share_moves >= 2);  // one pair at least: m1's down, m0's up
  CHECK(r.replan_wakes == 0);
  // Never more than the unit: the decode jobs keep the 0.8 they held.
  CHECK(r.units[0].max_share_sum <= 1.0 + 1e-9);
}
