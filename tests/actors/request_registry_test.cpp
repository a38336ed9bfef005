#include "actors/gateway/request_registry.hpp"

#include <catch2/catch.hpp>

#include <atomic>

#include <chrono>
#include <set>
#include <thread>
#include <vector>

using namespace llmux;
using gateway::request_registry;
using gateway::request_sink;
using gateway::sink_event;
using protocol::finish_reason;
using clock_type = std::chrono::steady_clock;

namespace {

// Generous: a loaded CI machine must never hit it; the test does not time anything.
constexpr auto patience = std::chrono::seconds(30);

sink_event tokens_event(std::vector<int32_t> t) {
  sink_event ev;
  ev.tokens = std::move(t);
  return ev;
}

}  // namespace

TEST_CASE("request_registry: ids are unique, also across threads", "[registry]") {
  request_registry reg;
  std::vector<std::vector<uint64_t>> per_thread(4);
  std::vector<std::thread> threads;
  for (auto& ids : per_thread)
    threads.emplace_back([&reg, &ids] {
      for (int i = 0; i < 1000; ++i)
        ids.push_back(reg.next_id());
    });
  for (auto& t : threads)
    t.join();
  std::set<uint64_t> all;
  for (const auto& ids : per_thread)
    all.insert(ids.begin(), ids.end());
  CHECK(all.size() == 4000);
  CHECK(all.count(0) == 0);  // 0 is never handed out
}

TEST_CASE("request_registry: open, find, close", "[registry]") {
  request_registry reg;
  CHECK(reg.open_count() == 0);
  CHECK(reg.find(1) == nullptr);
  auto a = reg.open(1);
  auto b = reg.open(2);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a != b);
  CHECK(reg.open_count() == 2);
  CHECK(reg.find(1) == a);
  CHECK(reg.find(2) == b);
  reg.close(1);
  CHECK(reg.find(1) == nullptr);
  CHECK(reg.open_count() == 1);
  reg.close(1);  // closing twice is harmless
  CHECK(reg.open_count() == 1);
  // The HTTP thread's own handle outlives close().
  a->push(tokens_event({5}));
  std::vector<sink_event> got;
  CHECK(a->wait_pop(got, clock_type::now() + patience));
  REQUIRE(got.size() == 1);
  CHECK(got[0].tokens == std::vector<int32_t>{5});
}

TEST_CASE("request_sink: events pushed by another thread arrive in order", "[registry]") {
  request_registry reg;
  auto id = reg.next_id();
  auto sink = reg.open(id);
  std::thread producer([&reg, id] {
    for (int i = 0; i < 200; ++i) {
      auto s = reg.find(id);  // as the gateway actor does
      s->push(tokens_event({i, i + 1000}));
      if (i % 50 == 0)
        std::this_thread::yield();
    }
    sink_event end;
    end.finish = finish_reason::stop;
    reg.find(id)->push(end);
  });
  std::vector<sink_event> got;
  bool finished = false;
  const auto deadline = clock_type::now() + patience;
  while (!finished && clock_type::now() < deadline) {
    size_t before = got.size();
    if (!sink->wait_pop(got, deadline))
      break;
    REQUIRE(got.size() > before);  // true means something new was appended
    finished = got.back().finish != finish_reason::none;
  }
  producer.join();
  REQUIRE(finished);
  REQUIRE(got.size() == 201);
  for (int i = 0; i < 200; ++i)
    CHECK(got[static_cast<size_t>(i)].tokens == std::vector<int32_t>{i, i + 1000});
  CHECK(got[200].finish == finish_reason::stop);
  CHECK(got[200].tokens.empty());
}

TEST_CASE("request_sink: a waiting consumer wakes for an error event", "[registry]") {
  request_sink sink;
  std::atomic<bool> was_asleep{false};
  std::thread producer([&sink, &was_asleep] {
    // Push only once the consumer is blocked in wait_pop: what follows is
    // a wake-up by the push, not a queue found full.
    const auto until = clock_type::now() + patience;
    while (sink.waiters() == 0 && clock_type::now() < until)
      std::this_thread::yield();
    was_asleep = sink.waiters() == 1;
    sink_event ev;
    ev.finish = finish_reason::error;
    ev.status = 503;
    ev.message = "no replica";
    sink.push(ev);
  });
  std::vector<sink_event> got;
  got.push_back(tokens_event({1}));  // wait_pop appends, it does not replace
  bool ok = sink.wait_pop(got, clock_type::now() + patience);
  producer.join();
  REQUIRE(was_asleep);
  REQUIRE(ok);
  CHECK(sink.waiters() == 0);
  REQUIRE(got.size() == 2);
  CHECK(got[0].tokens == std::vector<int32_t>{1});
  CHECK(got[1].finish == finish_reason::error);
  CHECK(got[1].status == 503);
  CHECK(got[1].message == "no replica");
}

TEST_CASE("request_sink: a past deadline returns at once", "[registry]") {
  request_sink sink;
  std::vector<sink_event> got;
  CHECK_FALSE(sink.wait_pop(got, clock_type::now() - std::chrono::seconds(1)));
  CHECK(got.empty());
  // Queued events are handed out even when the deadline has passed.
  sink.push(tokens_event({1}));
  sink.push(tokens_event({2}));
  CHECK(sink.wait_pop(got, clock_type::now() - std::chrono::seconds(1)));
  REQUIRE(got.size() == 2);
  CHECK(got[1].tokens == std::vector<int32_t>{2});
  // And the queue is empty afterwards.
  CHECK_FALSE(sink.wait_pop(got, clock_type::now()));
  CHECK(got.size() == 2);
}

TEST_CASE("request_registry: live replicas are a snapshot", "[registry]") {
  request_registry reg;
  CHECK(reg.live_replicas().empty());
  reg.set_live_replicas({{"m1", 2}, {"m2", 0}});
  auto snap = reg.live_replicas();
  CHECK(snap == std::map<std::string, int>{{"m1", 2}, {"m2", 0}});
  snap["m1"] = 99;  // a copy: the registry keeps its own
  CHECK(reg.live_replicas().at("m1") == 2);
  reg.set_live_replicas({{"m3", 1}});
  CHECK(reg.live_replicas() == std::map<std::string, int>{{"m3", 1}});
}

TEST_CASE("request_registry: fail_all ends every open request with an error", "[request_registry]") {
  llmux::gateway::request_registry reg;
  auto a = reg.open(reg.next_id());
  auto b = reg.open(reg.next_id());
  reg.fail_all(503, "server is shutting down");
  for (auto& sink : {a, b}) {
    std::vector<llmux::gateway::sink_event> evs;
    REQUIRE(sink->wait_pop(evs, std::chrono::steady_clock::now() + std::chrono::seconds(30)));
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].finish == llmux::protocol::finish_reason::error);
    CHECK(evs[0].status == 503);
    CHECK(evs[0].message == "server is shutting down");
  }
}
