#include "actors/gateway/admission.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

using namespace llmux::gateway;

TEST_CASE("the edge admits up to its limit, refuses beyond it, and counts refusals", "[admission]") {
  admission a{2, {}};
  CHECK(a.try_edge());
  CHECK(a.try_edge());
  CHECK_FALSE(a.try_edge());
  CHECK(a.in_flight() == 2);
  CHECK(a.edge_rejections() == 1);
  a.release_edge();
  CHECK(a.try_edge());
  CHECK_THROWS_AS((admission{0, {}}), std::invalid_argument);
}

TEST_CASE("a model with a limit is capped; others only by the edge", "[admission]") {
  admission a{10, {{"small", 1}}};
  CHECK(a.model_limit("small") == 1);
  CHECK(a.model_limit("other") == 0);
  CHECK(a.try_model("small"));
  CHECK_FALSE(a.try_model("small"));
  CHECK(a.model_rejections("small") == 1);
  for (int i = 0; i < 5; ++i)
    CHECK(a.try_model("other"));
  CHECK(a.in_flight("other") == 5);
  a.release_model("small");
  CHECK(a.try_model("small"));
}

TEST_CASE("a slot gives back what it holds, once, when released, moved from or destroyed", "[admission]") {
  admission a{3, {{"m", 1}}};
  {
    admission_slot s{&a};
    REQUIRE(a.try_edge());  // what the slot stands for was taken at the door
    CHECK(s.take_model("m"));
    CHECK_FALSE(s.take_model("m"));  // one model slot per request
    CHECK(a.in_flight("m") == 1);
    admission_slot moved = std::move(s);
    CHECK_FALSE(s.held());
    CHECK(moved.held());
    moved.release();
    moved.release();  // twice: nothing more given back
    CHECK(a.in_flight() == 0);
    CHECK(a.in_flight("m") == 0);
  }
  {
    REQUIRE(a.try_edge());
    admission_slot s{&a};
    CHECK(s.take_model("m"));
    admission_slot other{&a};
    REQUIRE(a.try_edge());
    CHECK_FALSE(other.take_model("m"));  // m is full: the edge slot alone stays held
    CHECK(a.in_flight() == 2);
  }  // both destroyed
  CHECK(a.in_flight() == 0);
  CHECK(a.in_flight("m") == 0);
}

TEST_CASE("admission holds its limit under concurrent takers", "[admission]") {
  admission a{100, {}};
  std::vector<std::thread> ts;
  std::atomic<int> admitted{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (a.try_edge())
          ++admitted;
    });
  for (auto& t : ts)
    t.join();
  CHECK(admitted == 100);
  CHECK(a.edge_rejections() == 3900);
}
