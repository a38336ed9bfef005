// edge_metrics: what the edge records, and the Prometheus text it renders.

#include "actors/gateway/edge_metrics.hpp"

#include <catch2/catch.hpp>

#include <sstream>

using namespace llmux::gateway;

namespace {

/// The value of the sample line that starts with `series` + " ", or -1.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, series.size() + 1, series + " ") == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

}  // namespace

TEST_CASE("histogram buckets are cumulative in the exposition", "[edge_metrics]") {
  edge_metrics m;
  m.first_token("a", 0.003);   // in (0.0025, 0.005]
  m.first_token("a", 0.005);   // on a bound: le="0.005" counts it
  m.first_token("a", 1000.0);  // past every bound: only +Inf
  const auto text = m.render({});
  const std::string h = "llmux:time_to_first_token_seconds";
  CHECK(sample(text, h + "_bucket{model=\"a\",le=\"0.0025\"}") == 0);
  CHECK(sample(text, h + "_bucket{model=\"a\",le=\"0.005\"}") == 2);
  CHECK(sample(text, h + "_bucket{model=\"a\",le=\"80\"}") == 2);
  CHECK(sample(text, h + "_bucket{model=\"a\",le=\"+Inf\"}") == 3);
  CHECK(sample(text, h + "_count{model=\"a\"}") == 3);
  CHECK(sample(text, h + "_sum{model=\"a\"}") == Approx(1000.008));
  CHECK(text.find("# TYPE " + h + " histogram") != std::string::npos);
}

TEST_CASE("counters by model, status and finish reason", "[edge_metrics]") {
  edge_metrics m;
  m.request_done("a", 200);
  m.request_done("a", 200);
  m.request_done("", 404);
  m.request_done("a", 429);
  m.queue_rejection("a");
  m.finished("a", 0.5, 7, 3, {"stop", "length", "stop"});
  m.tokens_after("a", 0.02, 4);  // four tokens in one event: 4 observations of 5 ms
  const auto text = m.render({});
  CHECK(sample(text, "llmux:requests_total{model=\"a\",status=\"200\"}") == 2);
  CHECK(sample(text, "llmux:requests_total{model=\"\",status=\"404\"}") == 1);
  CHECK(sample(text, "llmux:requests_total{model=\"a\",status=\"429\"}") == 1);
  CHECK(sample(text, "llmux:queue_rejections_total{model=\"a\"}") == 1);
  CHECK(sample(text, "llmux:request_success_total{model=\"a\",finished_reason=\"stop\"}") == 2);
  CHECK(sample(text, "llmux:request_success_total{model=\"a\",finished_reason=\"length\"}") == 1);
  CHECK(sample(text, "llmux:prompt_tokens_total{model=\"a\"}") == 7);
  CHECK(sample(text, "llmux:generation_tokens_total{model=\"a\"}") == 3);
  CHECK(sample(text, "llmux:inter_token_latency_seconds_count{model=\"a\"}") == 4);
  CHECK(sample(text, "llmux:inter_token_latency_seconds_bucket{model=\"a\",le=\"0.005\"}") == 4);
  CHECK(sample(text, "llmux:e2e_request_latency_seconds_count{model=\"a\"}") == 1);
}

TEST_CASE("label values are escaped", "[edge_metrics]") {
  edge_metrics m;
  m.request_done("we\"ird\\name\n", 200);
  CHECK(m.render({}).find(R"(model="we\"ird\\name\n")") != std::string::npos);
}

TEST_CASE("cluster gauges come from the admin state", "[edge_metrics]") {
  const auto g = gauges_from_admin_state(R"([
    {"node":"n1","kind":"scheduler","name":"m@u1","mailbox":2,"state":{"model":"m","running":3,"waiting":1,"preemptions":2}},
    {"node":"n2","kind":"scheduler","name":"m@u2","mailbox":0,"state":{"model":"m","running":1,"waiting":4,"preemptions":5}},
    {"node":"n1","kind":"kv_manager","name":"u1/kv","mailbox":0,"state":{"blocks_used":10,"blocks_free":90,
     "blocks_evictable":6,"block_tokens":16,"quota_moves":3,
     "models":{"m":{"used":4,"quota":60,"prefix_queries":3,"prefix_hits":2}}}},
    {"node":"n1","kind":"gateway","name":"gw","mailbox":5,"state":{}},
    {"node":"n1","kind":"controller","name":"controller","mailbox":0,"state":{"move_shares":true,"share_moves":4}},
    {"node":"n1","kind":"admin","name":"admin","mailbox":0,"state":{"incarnation":"7"}},
    {"node":"n1","kind":"weird"}
  ])");
  CHECK(g.running.at("m") == 4);
  CHECK(g.waiting.at("m") == 5);
  CHECK(g.kv_used.at("u1/kv") == 10);
  CHECK(g.kv_free.at("u1/kv") == 90);
  CHECK(g.kv_evictable.at("u1/kv") == 6);
  CHECK(g.kv_model_used.at({"u1/kv", "m"}) == 4);
  CHECK(g.kv_model_quota.at({"u1/kv", "m"}) == 60);
  // Counters per reporting actor; n1's admin names its incarnation, n2 has no admin entry.
  CHECK(g.counters.at({"llmux:prefix_cache_queries_total", "m", "n1@7/kv_manager/u1/kv"}) == 48);  // × block_tokens
  CHECK(g.counters.at({"llmux:prefix_cache_hits_total", "m", "n1@7/kv_manager/u1/kv"}) == 32);
  CHECK(g.counters.at({"llmux:num_preemptions_total", "m", "n1@7/scheduler/m@u1"}) == 2);
  CHECK(g.counters.at({"llmux:num_preemptions_total", "m", "n2@/scheduler/m@u2"}) == 5);
  CHECK(g.counters.at({"llmux:kv_quota_moves_total", "u1/kv", "n1@7/kv_manager/u1/kv"}) == 3);
  CHECK(g.counters.at({"llmux:share_moves_total", "controller", "n1@7/controller/controller"}) == 4);
  CHECK(g.mailbox.at({"n1", "gateway", "gw"}) == 5);
  CHECK(g.mailbox.size() == 7);
  CHECK(gauges_from_admin_state("not json").mailbox.empty());

  edge_metrics m;
  const auto text = m.render(g);
  CHECK(sample(text, "llmux:num_requests_running{model=\"m\"}") == 4);
  CHECK(sample(text, "llmux:kv_blocks_free{unit=\"u1/kv\"}") == 90);
  CHECK(sample(text, "llmux:kv_model_blocks_quota{unit=\"u1/kv\",model=\"m\"}") == 60);
  CHECK(sample(text, "llmux:prefix_cache_hits_total{model=\"m\"}") == 32);
  CHECK(sample(text, "llmux:num_preemptions_total{model=\"m\"}") == 7);
  CHECK(sample(text, "llmux:actor_mailbox_size{node=\"n1\",kind=\"scheduler\",name=\"m@u1\"}") == 2);
}

TEST_CASE("cluster counters stay monotonic when a node restarts or goes away", "[edge_metrics]") {
  auto state = [](const std::string& node, const std::string& incarnation, int preemptions, int hits) {
    return R"({"node":")" + node + R"(","kind":"admin","name":"admin","state":{"incarnation":")" + incarnation
           + R"("}},{"node":")" + node + R"(","kind":"scheduler","name":"m@)" + node
           + R"(","state":{"model":"m","preemptions":)" + std::to_string(preemptions)
           + R"(}},{"node":")" + node + R"(","kind":"kv_manager","name":"kv@)" + node
           + R"(","state":{"block_tokens":16,"models":{"m":{"prefix_queries":10,"prefix_hits":)"
           + std::to_string(hits) + "}}}}";
  };
  edge_metrics m;
  auto scrape = [&](const std::string& body, const char* metric) {
    return sample(m.render(gauges_from_admin_state("[" + body + "]")), metric);
  };
  const char* pre = R"(llmux:num_preemptions_total{model="m"})";
  const char* hits = R"(llmux:prefix_cache_hits_total{model="m"})";
  CHECK(scrape(state("a", "1", 5, 2) + "," + state("b", "1", 3, 1), pre) == 8);
  // b restarts (a new incarnation, its counts from zero): its 3 stay counted.
  CHECK(scrape(state("a", "1", 6, 2) + "," + state("b", "2", 1, 0), pre) == 10);
  // b is down (absent from the state): what it counted stays.
  CHECK(scrape(state("a", "1", 6, 2), pre) == 10);
  CHECK(scrape(state("a", "1", 6, 4) + "," + state("b", "2", 2, 1), hits) == (4 + 1 + 1) * 16);
  // An actor restarted within one incarnation: a count that goes back is
  // added to what it had counted.
  CHECK(scrape(state("a", "1", 1, 4) + "," + state("b", "2", 2, 1), pre) == 6 + 1 + 3 + 2);
}
