// unit::step_queue: the steps waiting for a unit (or a shared prefill lane)
// that runs one at a time. One ticket per model, granted in the order of the
// unit's arbiter while the lane is free.

#include "actors/gpu_unit/unit_policy.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

using llmux::unit::policy_kind;
using llmux::unit::step_queue;

namespace {

/// Runs the queue dry: each grant as "model:ticket", finishing each step.
std::vector<std::string> drain(step_queue& q) {
  std::vector<std::string> out;
  while (auto g = q.start_next()) {
    out.push_back(g->model + ":" + std::to_string(g->ticket));
    q.finish();
  }
  return out;
}

using order = std::vector<std::string>;

}  // namespace

TEST_CASE("step_queue: a model has one ticket, a new one replaces and returns the old", "[step_queue]") {
  step_queue q(policy_kind::adbs, 0);
  q.add_model("a");
  q.add_model("b");
  CHECK_FALSE(q.submit("a", 1, true, 0.0).has_value());
  CHECK(q.queued() == 1);
  auto replaced = q.submit("a", 2, true, 0.5);
  REQUIRE(replaced.has_value());
  CHECK(*replaced == 1u);
  CHECK(q.queued() == 1);
  CHECK_FALSE(q.submit("b", 3, true, 0.5).has_value());
  CHECK(q.queued() == 2);
  CHECK(drain(q) == order{"a:2", "b:3"});  // ticket 1 is never granted
  CHECK(q.queued() == 0);
  // Once granted, a ticket is no longer queued: the model's next one replaces nothing.
  CHECK_FALSE(q.submit("a", 4, false, 1.0).has_value());
}

TEST_CASE("step_queue: a step starts only while the lane is free, finish frees it", "[step_queue]") {
  step_queue q(policy_kind::fcfs, 0);
  CHECK_FALSE(q.running());
  CHECK_FALSE(q.start_next().has_value());  // nothing waits
  CHECK_FALSE(q.running());

  (void)q.submit("a", 10, true, 0.0);
  (void)q.submit("b", 20, true, 1.0);
  auto g = q.start_next();
  REQUIRE(g.has_value());
  CHECK(g->model == "a");
  CHECK(g->ticket == 10u);
  CHECK(g->prefill);
  CHECK(q.running());
  CHECK(q.queued() == 1);
  // Busy: nothing else starts, however often asked, and nothing is lost.
  CHECK_FALSE(q.start_next().has_value());
  CHECK_FALSE(q.start_next().has_value());
  CHECK(q.queued() == 1);
  CHECK(q.grants() == 1u);

  q.finish();
  CHECK_FALSE(q.running());
  auto g2 = q.start_next();
  REQUIRE(g2.has_value());
  CHECK(g2->model == "b");
  CHECK(g2->ticket == 20u);
  CHECK(q.running());
  q.finish();
  CHECK_FALSE(q.start_next().has_value());
  CHECK_FALSE(q.running());  // an empty queue leaves the lane free
  CHECK(q.grants() == 2u);
}

TEST_CASE("step_queue: adbs grants prefill steps first, each rotation round-robin", "[step_queue]") {
  step_queue q(policy_kind::adbs, 0);
  for (auto m : {"a", "b", "c"})
    q.add_model(m);
  // a's decode came first, yet the prefills go ahead of it.
  (void)q.submit("a", 1, false, 0.0);
  (void)q.submit("b", 2, true, 1.0);
  (void)q.submit("c", 3, true, 2.0);
  CHECK(drain(q) == order{"b:2", "c:3", "a:1"});

  // The prefill rotation resumes after c (served last): a, then b, then c,
  // whatever the submit order.
  (void)q.submit("c", 4, true, 3.0);
  (void)q.submit("b", 5, true, 3.0);
  (void)q.submit("a", 6, true, 3.0);
  auto g = q.start_next();
  REQUIRE(g);
  CHECK(g->model == "a");
  CHECK(g->prefill);
  q.finish();
  (void)q.submit("a", 7, false, 4.0);
  CHECK(drain(q) == order{"b:5", "c:4", "a:7"});
  // The decode rotation resumes after a (its last decode grant): b before a.
  (void)q.submit("a", 8, false, 5.0);
  (void)q.submit("b", 9, false, 5.0);
  CHECK(drain(q) == order{"b:9", "a:8"});
}

TEST_CASE("step_queue: adbs max_prefill_streak lets a waiting decode step through", "[step_queue]") {
  step_queue q(policy_kind::adbs, 1);
  (void)q.submit("a", 1, true, 0.0);
  (void)q.submit("b", 2, false, 0.0);
  (void)q.submit("c", 3, true, 0.0);
  // One prefill, then the waiting decode, then the next prefill.
  CHECK(drain(q) == order{"a:1", "b:2", "c:3"});
}

TEST_CASE("step_queue: fcfs grants by arrival time", "[step_queue]") {
  step_queue q(policy_kind::fcfs, 0);
  for (auto m : {"a", "b", "c"})
    q.add_model(m);
  (void)q.submit("a", 1, true, 5.0);
  (void)q.submit("b", 2, false, 1.0);
  (void)q.submit("c", 3, true, 3.0);
  CHECK(drain(q) == order{"b:2", "c:3", "a:1"});
  // A replacement carries its own arrival.
  (void)q.submit("a", 4, true, 1.0);
  (void)q.submit("b", 5, true, 2.0);
  (void)q.submit("a", 6, true, 9.0);
  CHECK(drain(q) == order{"b:5", "a:6"});
}

TEST_CASE("step_queue: waited counts the grants between a step's arrival and its own", "[step_queue]") {
  step_queue q(policy_kind::fcfs, 0);
  (void)q.submit("a", 1, true, 0.0);
  (void)q.submit("b", 2, false, 1.0);
  (void)q.submit("c", 3, true, 2.0);
  std::vector<uint64_t> waited;
  while (auto g = q.start_next()) {
    waited.push_back(g->waited);
    q.finish();
  }
  CHECK(waited == std::vector<uint64_t>{0, 1, 2});
  // A step queued after those grants waited for none of them.
  (void)q.submit("c", 4, false, 3.0);
  auto g = q.start_next();
  REQUIRE(g);
  CHECK(g->waited == 0u);
  q.finish();
  // Per model and job: (prefill, decode) most waited.
  const auto& most = q.waited_max();
  CHECK(most.at("a") == std::pair<uint64_t, uint64_t>{0, 0});
  CHECK(most.at("b") == std::pair<uint64_t, uint64_t>{0, 1});
  CHECK(most.at("c") == std::pair<uint64_t, uint64_t>{2, 0});
  CHECK(q.grants() == 4u);
}

TEST_CASE("step_queue: a replaced step's wait counts from the replacement", "[step_queue]") {
  step_queue q(policy_kind::fcfs, 0);
  (void)q.submit("a", 1, true, 0.0);
  (void)q.submit("b", 2, true, 1.0);
  auto g = q.start_next();  // a
  REQUIRE(g);
  q.finish();
  (void)q.submit("b", 3, true, 2.0);  // replaces 2 after one grant
  auto g2 = q.start_next();
  REQUIRE(g2);
  CHECK(g2->ticket == 3u);
  CHECK(g2->waited == 0u);
}

TEST_CASE("step_queue: recent keeps the last 32 grants, newest last", "[step_queue]") {
  step_queue q(policy_kind::round_robin, 0);
  for (uint64_t t = 0; t < 40; ++t) {
    (void)q.submit(t % 2 ? "b" : "a", t, t % 3 == 0, static_cast<double>(t));
    auto g = q.start_next();
    REQUIRE(g);
    CHECK(g->ticket == t);
    CHECK(q.recent().size() == std::min<uint64_t>(t + 1, 32));
    q.finish();
  }
  const auto& r = q.recent();
  REQUIRE(r.size() == 32u);
  CHECK(r.front().ticket == 8u);
  CHECK(r.back().ticket == 39u);
  CHECK(r.back().model == "b");
  CHECK(r[1].ticket == 9u);
  CHECK(r[1].prefill);  // 9 % 3 == 0
  CHECK_FALSE(r[2].prefill);
  CHECK(q.grants() == 40u);
}

TEST_CASE("step_queue: a replacement of another kind is ordered as its own kind", "[step_queue]") {
  step_queue q(policy_kind::adbs, 0);
  q.add_model("a");
  q.add_model("b");
  (void)q.submit("a", 1, true, 0.0);   // a prefill step, given up on
  (void)q.submit("a", 2, false, 0.1);  // replaced by a decode step
  (void)q.submit("b", 3, true, 0.2);   // b's prefill
  auto g = q.start_next();
  REQUIRE(g);
  CHECK(g->model == "b");  // prefill first: b's prefill goes before a's decode
  CHECK(g->prefill);
}
