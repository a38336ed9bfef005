// The continuous-batching core, driven step by step with hand-made engine
// outputs. Small limits make every boundary reachable:
// max_running 4, max_batch_tokens 8, max_waiting 3, 4-token blocks,
// a 32-token context, EOS = 99.

#include "actors/scheduler/batch_scheduler.hpp"

#include <catch2/catch.hpp>

#include <cmath>

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace llmux;
using engine::step_input;
using engine::step_output;
using engine::token_id;
using protocol::finish_reason;
using protocol::gen_request;
using scheduler::batch_scheduler;
using scheduler::enqueue_status;
using scheduler::scheduler_options;
using scheduler::step_events;

namespace {

constexpr token_id eos = 99;

/// Reserve mode (prompt + max_tokens at admission): the tests up to the
/// on-demand section count blocks that way.
scheduler_options small_opts() {
  scheduler_options o;
  o.growth = scheduler::kv_growth::reserve;
  o.max_running = 4;
  o.max_batch_tokens = 8;
  o.max_waiting = 3;
  o.block_tokens = 4;
  o.context_length = 32;
  o.eos_id = eos;
  return o;
}

/// A request whose prompt tokens are 1000 + id·100 + i (distinct per request).
gen_request req(uint64_t id, int prompt_len, int max_tokens, bool ignore_eos = false) {
  gen_request r;
  r.id = id;
  r.model = "m";
  for (int i = 0; i < prompt_len; ++i)
    r.prompt.push_back(static_cast<int32_t>(1000 + id * 100 + static_cast<uint64_t>(i)));
  r.original_prompt_len = prompt_len;
  r.params.max_tokens = max_tokens;
  r.params.seed = id;
  r.params.ignore_eos = ignore_eos;
  return r;
}

/// The engine's answer: `tok(seq_id)` for sampled sequences, -1 elsewhere.
template <class F>
step_output answer(const step_input& in, F tok) {
  step_output out;
  out.seconds = 0.001;
  for (const auto& s : in.seqs)
    out.tokens.push_back(s.sample ? tok(s.seq_id) : -1);
  return out;
}

step_output answer_all(const step_input& in, token_id t) {
  return answer(in, [t](uint64_t) { return t; });
}

int64_t fed_tokens(const step_input& in) {
  int64_t n = 0;
  for (const auto& s : in.seqs)
    n += static_cast<int64_t>(s.tokens.size());
  return n;
}

const protocol::token_delta* delta_for(const step_events& ev, uint64_t id) {
  for (const auto& rd : ev.deltas)
    if (rd.delta.id == id)
      return &rd.delta;
  return nullptr;
}

/// Token-blocks each candidate asks for (tokens are whole blocks).
std::vector<int64_t> blocks_of(const std::vector<protocol::kv_need>& needs) {
  std::vector<int64_t> out;
  for (const auto& n : needs) {
    REQUIRE(n.tokens % small_opts().block_tokens == 0);
    out.push_back(n.tokens / small_opts().block_tokens);
  }
  return out;
}

std::vector<uint64_t> ids_of(const std::vector<protocol::kv_need>& needs) {
  std::vector<uint64_t> out;
  for (const auto& n : needs)
    out.push_back(n.seq);
  return out;
}

/// The work a step gives sequence `id`, or nullptr.
const engine::seq_work* work_for(const step_input& in, uint64_t id) {
  for (const auto& w : in.seqs)
    if (w.seq_id == id)
      return &w;
  return nullptr;
}

/// Enqueue + admit, requiring acceptance.
void admit_one(batch_scheduler& s, gen_request r, uint32_t sink = 0) {
  REQUIRE(s.enqueue(std::move(r), sink) == enqueue_status::accepted);
  REQUIRE_FALSE(s.admission_candidates().empty());
  s.admit(1);
}

}  // namespace

TEST_CASE("enqueue refuses empty, too long, duplicate, and over-full", "[scheduler]") {
  batch_scheduler s(small_opts());
  CHECK(s.enqueue(req(1, 0, 4), 0) == enqueue_status::empty_prompt);
  // The prompt alone may not fill the 32-token window.
  CHECK(s.enqueue(req(2, 32, 4), 0) == enqueue_status::prompt_too_long);
  CHECK(s.enqueue(req(3, 40, 4), 0) == enqueue_status::prompt_too_long);
  CHECK(s.enqueue(req(4, 31, 4), 0) == enqueue_status::accepted);
  CHECK(s.enqueue(req(4, 2, 4), 0) == enqueue_status::duplicate_id);
  CHECK(s.enqueue(req(5, 2, 4), 0) == enqueue_status::accepted);
  CHECK(s.enqueue(req(6, 2, 4), 0) == enqueue_status::accepted);
  CHECK(s.waiting() == 3);
  // max_waiting = 3
  CHECK(s.enqueue(req(7, 2, 4), 0) == enqueue_status::queue_full);
  CHECK(s.waiting() == 3);
  // Admitted requests still count as known ids; their queue slot is free again.
  s.admit(1);
  CHECK(s.running() == 1);
  CHECK(s.enqueue(req(4, 2, 4), 0) == enqueue_status::duplicate_id);
  CHECK(s.enqueue(req(7, 2, 4), 0) == enqueue_status::accepted);
}

TEST_CASE("max_tokens is clamped to the room left in the context window", "[scheduler]") {
  batch_scheduler s(small_opts());
  // prompt 30 + max_tokens 100 in a 32-token window: 2 tokens of room.
  REQUIRE(s.enqueue(req(1, 30, 100), 0) == enqueue_status::accepted);
  // blocks = ceil((30 + 2) / 4) = 8
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{8});
  s.admit(1);
  CHECK(s.blocks_held() == 8);
  // Prefill 30 tokens with budget 8: chunks 8, 8, 8, 6 (the last one samples).
  for (int chunk = 0; chunk < 3; ++chunk) {
    auto in = s.next_step();
    REQUIRE(in.seqs.size() == 1);
    CHECK_FALSE(in.seqs[0].sample);
    CHECK(s.apply(answer_all(in, 5)).deltas.empty());
  }
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].tokens.size() == 6);
  auto ev = s.apply(answer_all(in, 5));
  REQUIRE(ev.deltas.size() == 1);
  CHECK(ev.deltas[0].delta.finish == finish_reason::none);
  in = s.next_step();
  ev = s.apply(answer_all(in, 6));
  REQUIRE(ev.deltas.size() == 1);
  CHECK(ev.deltas[0].delta.tokens == std::vector<int32_t>{6});
  CHECK(ev.deltas[0].delta.finish == finish_reason::length);
  CHECK(ev.freed_blocks == 8);
  CHECK(s.blocks_held() == 0);

  // A request asking for no tokens still gets one: blocks = ceil((3 + 1) / 4) = 1.
  REQUIRE(s.enqueue(req(2, 3, 0), 0) == enqueue_status::accepted);
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{1});
}

TEST_CASE("admission candidates: ceil((prompt + max_tokens) / block_tokens), max_running bound",
          "[scheduler]") {
  auto o = small_opts();
  o.max_running = 2;
  batch_scheduler s(o);
  REQUIRE(s.enqueue(req(1, 5, 3), 0) == enqueue_status::accepted);   // 8 tokens  -> 2 blocks
  REQUIRE(s.enqueue(req(2, 8, 9), 0) == enqueue_status::accepted);   // 17 tokens -> 5 blocks
  REQUIRE(s.enqueue(req(3, 1, 1), 0) == enqueue_status::accepted);   // 2 tokens  -> 1 block
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{2, 5});
  s.admit(1);
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{5});
  CHECK(s.blocks_held() == 2);
  s.admit(1);
  CHECK(s.admission_candidates().empty());  // 2 running = max_running
  CHECK(s.waiting() == 1);
  CHECK(s.blocks_held() == 7);
  // admit() never takes more than is waiting.
  batch_scheduler t(small_opts());
  REQUIRE(t.enqueue(req(9, 2, 2), 0) == enqueue_status::accepted);
  t.admit(5);
  CHECK(t.running() == 1);
  CHECK(t.waiting() == 0);
  CHECK(t.blocks_held() == 1);
}

TEST_CASE("a long prompt is chunked across steps and only the last chunk samples",
          "[scheduler]") {
  batch_scheduler s(small_opts());  // 8 tokens per step
  auto r = req(1, 20, 4);
  auto prompt = r.prompt;
  admit_one(s, std::move(r), 3);
  const int expected_chunks[] = {8, 8, 4};
  int context = 0;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(s.can_step());
    auto in = s.next_step();
    REQUIRE(in.seqs.size() == 1);
    const auto& w = in.seqs[0];
    CHECK(w.seq_id == 1);
    CHECK(w.context_len == context);
    CHECK(w.prompt_len == 20);
    CHECK(w.seed == 1);
    REQUIRE(w.tokens.size() == static_cast<size_t>(expected_chunks[i]));
    CHECK(std::equal(w.tokens.begin(), w.tokens.end(), prompt.begin() + context));
    CHECK(w.sample == (i == 2));
    auto ev = s.apply(answer_all(in, 42));
    if (i < 2) {
      CHECK(ev.deltas.empty());
      CHECK(ev.new_tokens == 0);
    } else {
      REQUIRE(ev.deltas.size() == 1);
      CHECK(ev.deltas[0].sink == 3);
      CHECK(ev.deltas[0].delta.tokens == std::vector<int32_t>{42});
      CHECK(ev.new_tokens == 1);
    }
    context += expected_chunks[i];
  }
  // Then a decode feeds back the sampled token at context 20.
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].tokens == std::vector<token_id>{42});
  CHECK(in.seqs[0].context_len == 20);
  CHECK(in.seqs[0].sample);
}

TEST_CASE("decodes come first and a step never exceeds max_batch_tokens", "[scheduler]") {
  batch_scheduler s(small_opts());  // 8 tokens per step
  admit_one(s, req(1, 3, 10));
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  (void)s.apply(answer_all(in, 50));  // request 1 now decodes
  admit_one(s, req(2, 20, 4));
  admit_one(s, req(3, 5, 4));

  in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  CHECK(in.seqs[0].seq_id == 1);  // the decode, first
  CHECK(in.seqs[0].tokens == std::vector<token_id>{50});
  CHECK(in.seqs[0].context_len == 3);
  CHECK(in.seqs[1].seq_id == 2);  // then 7 of request 2's 20 prompt tokens
  CHECK(in.seqs[1].tokens.size() == 7);
  CHECK_FALSE(in.seqs[1].sample);
  CHECK(fed_tokens(in) == 8);
  (void)s.apply(answer_all(in, 51));

  in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  CHECK(in.seqs[0].seq_id == 1);
  CHECK(in.seqs[0].tokens == std::vector<token_id>{51});
  CHECK(in.seqs[1].seq_id == 2);
  CHECK(in.seqs[1].context_len == 7);
  CHECK(in.seqs[1].tokens.size() == 7);
  CHECK(fed_tokens(in) == 8);
  (void)s.apply(answer_all(in, 52));

  // Request 2 has 6 prompt tokens left; request 3 gets the last 1 of the budget.
  in = s.next_step();
  REQUIRE(in.seqs.size() == 3);
  CHECK(in.seqs[0].seq_id == 1);
  CHECK(in.seqs[1].seq_id == 2);
  CHECK(in.seqs[1].tokens.size() == 6);
  CHECK(in.seqs[1].sample);
  CHECK(in.seqs[2].seq_id == 3);
  CHECK(in.seqs[2].tokens.size() == 1);
  CHECK_FALSE(in.seqs[2].sample);
  CHECK(fed_tokens(in) == 8);
}

TEST_CASE("finish: length at max_tokens, stop at EOS, ignore_eos keeps going",
          "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 2, 3), 11);                  // ends by length after 3 tokens
  admit_one(s, req(2, 2, 10), 22);                 // ends on EOS
  admit_one(s, req(3, 2, 3, /*ignore_eos=*/true), 33);  // EOS is just a token

  // Step 1: three prefills; step 2, 3: decodes. Request 2 gets EOS at step 2.
  std::map<uint64_t, std::vector<int32_t>> streamed;
  std::map<uint64_t, finish_reason> finish;
  std::map<uint64_t, uint32_t> sink;
  auto run = [&](auto tok) {
    auto in = s.next_step();
    auto ev = s.apply(answer(in, tok));
    for (const auto& rd : ev.deltas) {
      auto& v = streamed[rd.delta.id];
      v.insert(v.end(), rd.delta.tokens.begin(), rd.delta.tokens.end());
      if (rd.delta.finish != finish_reason::none) {
        CHECK(finish.count(rd.delta.id) == 0);  // ends once
        finish[rd.delta.id] = rd.delta.finish;
      }
      sink[rd.delta.id] = rd.sink;
    }
    return ev;
  };
  run([](uint64_t id) { return static_cast<token_id>(10 * id); });
  auto ev = run([](uint64_t id) { return id == 1 ? 11 : eos; });
  // Request 2 stopped: its ceil((2 + 10) / 4) = 3 blocks come back.
  CHECK(ev.freed_blocks == 3);
  CHECK(finish.at(2) == finish_reason::stop);
  run([](uint64_t id) { return static_cast<token_id>(12 + id); });

  CHECK(finish.at(1) == finish_reason::length);
  CHECK(finish.at(3) == finish_reason::length);
  CHECK(streamed.at(1) == std::vector<int32_t>{10, 11, 13});
  CHECK(streamed.at(2) == std::vector<int32_t>{20});  // EOS is not streamed
  CHECK(streamed.at(3) == std::vector<int32_t>{30, eos, 15});
  CHECK(sink.at(1) == 11);
  CHECK(sink.at(2) == 22);
  CHECK(sink.at(3) == 33);
  CHECK(s.running() == 0);
  CHECK_FALSE(s.can_step());
  CHECK(s.blocks_held() == 0);
  CHECK(s.finished() == 3);
  CHECK(s.generated_tokens() == 7);
  CHECK(s.steps() == 3);
}

TEST_CASE("sequences join and leave between steps (continuous batching)", "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 2, 3), 1);
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  // B arrives while A's step is in flight; it joins the next step.
  admit_one(s, req(2, 2, 5), 2);
  CHECK_FALSE(s.can_step());
  (void)s.apply(answer_all(in, 7));
  CHECK(s.can_step());

  in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  CHECK(in.seqs[0].seq_id == 1);  // A decodes
  CHECK(in.seqs[1].seq_id == 2);  // B prefills
  (void)s.apply(answer_all(in, 8));

  in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  auto ev = s.apply(answer_all(in, 9));  // A's third token: A leaves
  auto* a = delta_for(ev, 1);
  REQUIRE(a);
  CHECK(a->finish == finish_reason::length);
  CHECK(s.running() == 1);

  in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].seq_id == 2);
}

TEST_CASE("cancel a waiting request", "[scheduler]") {
  batch_scheduler s(small_opts());
  REQUIRE(s.enqueue(req(1, 2, 2), 0) == enqueue_status::accepted);   // 1 block
  REQUIRE(s.enqueue(req(2, 6, 10), 0) == enqueue_status::accepted);  // 4 blocks
  CHECK(s.cancel(1) == 0);
  CHECK(s.waiting() == 1);
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{4});
  CHECK(s.cancel(1) == 0);   // already gone
  CHECK(s.cancel(77) == 0);  // never known
  CHECK(s.blocks_held() == 0);
}

TEST_CASE("cancel a running request between steps frees its blocks at once", "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 3, 10), 1);  // ceil(13/4) = 4 blocks
  admit_one(s, req(2, 2, 2), 2);   // 1 block
  auto in = s.next_step();
  (void)s.apply(answer_all(in, 5));
  CHECK(s.blocks_held() == 5);
  CHECK(s.cancel(1) == 4);
  CHECK(s.blocks_held() == 1);
  CHECK(s.running() == 1);
  in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].seq_id == 2);
  auto ev = s.apply(answer_all(in, 6));
  CHECK(delta_for(ev, 1) == nullptr);
  CHECK(s.cancel(1) == 0);
  // The id is free again.
  CHECK(s.enqueue(req(1, 2, 2), 0) == enqueue_status::accepted);
}

TEST_CASE("cancel during an in-flight step: dropped at apply, no delta", "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 3, 10), 1);  // 4 blocks
  admit_one(s, req(2, 2, 2), 2);   // 1 block
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  CHECK(s.cancel(1) == 0);  // in the step: freed when it returns
  CHECK(s.blocks_held() == 5);
  CHECK(s.cancel(1) == 0);  // a second cancel changes nothing
  auto ev = s.apply(answer_all(in, 7));
  CHECK(delta_for(ev, 1) == nullptr);
  REQUIRE(delta_for(ev, 2));
  CHECK(delta_for(ev, 2)->tokens == std::vector<int32_t>{7});
  CHECK(ev.freed_blocks == 4);
  CHECK(ev.new_tokens == 1);
  CHECK(s.blocks_held() == 1);
  CHECK(s.running() == 1);
  CHECK(s.finished() == 0);
}

TEST_CASE("cancel while a step is in flight, of a request outside that step", "[scheduler]") {
  auto o = small_opts();
  o.max_batch_tokens = 4;
  batch_scheduler s(o);
  admit_one(s, req(1, 4, 2), 1);  // fills the step
  admit_one(s, req(2, 4, 4), 2);  // 2 blocks, not in the step
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(s.cancel(2) == 2);
  CHECK(s.blocks_held() == 2);
  auto ev = s.apply(answer_all(in, 7));
  CHECK(ev.freed_blocks == 0);
  CHECK(delta_for(ev, 2) == nullptr);
}

TEST_CASE("fail_step ends every sequence of the step with an error and frees its blocks",
          "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 3, 5), 1);  // 2 blocks
  admit_one(s, req(2, 2, 6), 2);  // 2 blocks
  admit_one(s, req(3, 2, 2), 3);  // 1 block
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 3);
  CHECK(s.cancel(3) == 0);
  auto ev = s.fail_step("unit unreachable");
  REQUIRE(ev.deltas.size() == 2);  // none for the cancelled one
  for (const auto& rd : ev.deltas) {
    CHECK(rd.delta.finish == finish_reason::error);
    CHECK(rd.delta.error == "unit unreachable");
    CHECK(rd.delta.tokens.empty());
    CHECK(rd.sink == rd.delta.id);  // sinks were given as 1, 2
  }
  CHECK(ev.freed_blocks == 5);
  CHECK(s.blocks_held() == 0);
  CHECK(s.running() == 0);
  CHECK_FALSE(s.step_in_flight());
  CHECK_FALSE(s.can_step());
}

TEST_CASE("abandon_step answers the step's clients at once but keeps their blocks until the step returns",
          "[scheduler]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 3, 5), 1);  // 2 blocks
  admit_one(s, req(2, 2, 6), 2);  // 2 blocks
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 2);
  admit_one(s, req(3, 2, 2), 3);  // 1 block, admitted while the step computes: not in it
  CHECK(s.cancel(2) == 0);
  auto ev = s.abandon_step("took longer than 100 ms", engine::job_kind::mixed);
  REQUIRE(ev.deltas.size() == 1);  // none for the one its client cancelled
  CHECK(ev.deltas[0].delta.id == 1);
  CHECK(ev.deltas[0].delta.finish == finish_reason::error);
  CHECK(ev.deltas[0].delta.error == "took longer than 100 ms");
  CHECK(ev.deltas[0].delta.status == 504);
  // The engine may still be writing the step's KV: nothing is freed yet.
  CHECK(ev.freed_blocks == 0);
  CHECK(ev.closed.empty());
  CHECK(s.blocks_held() == 5);
  CHECK(s.step_in_flight());
  CHECK_FALSE(s.can_step());
  // A second deadline (or a cancel) says nothing more to the client.
  CHECK(s.abandon_step("again", engine::job_kind::mixed).deltas.empty());
  CHECK(s.cancel(1) == 0);
  // The late output frees the abandoned sequences' blocks, and tells nobody.
  auto late = s.apply(answer_all(in, 7));
  CHECK(late.deltas.empty());
  CHECK(late.freed_blocks == 4);
  CHECK(std::set<uint64_t>(late.closed.begin(), late.closed.end()) == std::set<uint64_t>{1, 2});
  CHECK(s.blocks_held() == 1);
  CHECK(s.running() == 1);  // the one admitted meanwhile goes on
  CHECK_FALSE(s.step_in_flight());
  CHECK(s.can_step());
}

TEST_CASE("reject_first_waiting fails the head of the queue", "[scheduler]") {
  batch_scheduler s(small_opts());
  REQUIRE(s.enqueue(req(5, 2, 2), 17) == enqueue_status::accepted);
  REQUIRE(s.enqueue(req(6, 2, 2), 18) == enqueue_status::accepted);
  auto rd = s.reject_first_waiting("too big");
  CHECK(rd.sink == 17);
  CHECK(rd.delta.id == 5);
  CHECK(rd.delta.finish == finish_reason::error);
  CHECK(rd.delta.error == "too big");
  CHECK(rd.delta.status == 400);  // too large for this deployment, not a server fault
  CHECK(s.waiting() == 1);
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{1});
  CHECK(s.blocks_held() == 0);
}

TEST_CASE("reject_waiting fails one waiting request by id, with its status", "[scheduler][residency]") {
  batch_scheduler s(small_opts());
  REQUIRE(s.enqueue(req(5, 2, 2), 17) == enqueue_status::accepted);
  REQUIRE(s.enqueue(req(6, 2, 2), 18) == enqueue_status::accepted);
  REQUIRE(s.enqueue(req(7, 2, 2), 19) == enqueue_status::accepted);
  CHECK_FALSE(s.reject_waiting(99, "nope", 503).has_value());
  auto rd = s.reject_waiting(6, "asleep", 503);
  REQUIRE(rd.has_value());
  CHECK(rd->sink == 18);
  CHECK(rd->delta.id == 6);
  CHECK(rd->delta.finish == finish_reason::error);
  CHECK(rd->delta.error == "asleep");
  CHECK(rd->delta.status == 503);
  CHECK(s.waiting() == 2);
  CHECK_FALSE(s.reject_waiting(6, "again", 503).has_value());
  // The others keep their order.
  auto first = s.reject_first_waiting("x");
  CHECK(first.delta.id == 5);
}

TEST_CASE("can_step: something admitted and no step in flight", "[scheduler]") {
  batch_scheduler s(small_opts());
  CHECK_FALSE(s.can_step());
  REQUIRE(s.enqueue(req(1, 2, 2), 0) == enqueue_status::accepted);
  CHECK_FALSE(s.can_step());  // waiting is not running
  s.admit(1);
  CHECK(s.can_step());
  auto in = s.next_step();
  CHECK(s.step_in_flight());
  CHECK_FALSE(s.can_step());
  (void)s.apply(answer_all(in, 3));
  CHECK_FALSE(s.step_in_flight());
  CHECK(s.can_step());
}

// --- randomized property test ----------------------------------------------

namespace {

/// What the test expects of one request, derived from the options by hand.
struct model_req {
  int prompt = 0;
  int max_tokens = 0;  ///< after clamping to the window
  int64_t blocks = 0;
  bool ignore_eos = false;
  uint32_t sink = 0;
  int computed = 0;   ///< prompt tokens already fed
  int generated = 0;  ///< tokens streamed
};

}  // namespace

TEST_CASE("property: blocks_held matches admitted-not-retired, every request ends once",
          "[scheduler][property]") {
  scheduler_options o;
  o.growth = scheduler::kv_growth::reserve;
  o.max_running = 6;
  o.max_batch_tokens = 16;
  o.max_waiting = 8;
  o.block_tokens = 4;
  o.context_length = 48;
  o.eos_id = eos;
  const int64_t pool = 60;  // token-blocks the (imagined) kv_manager can grant

  std::mt19937_64 rng(0x5eed1234);
  // How often each path ran, so the test proves it covered them.
  std::map<std::string, int> seen;
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  for (int round = 0; round < 20; ++round) {
    batch_scheduler s(o);
    std::deque<uint64_t> waiting;                 // ids in queue order
    std::map<uint64_t, model_req> reqs;           // every accepted request
    std::set<uint64_t> running;                   // admitted, not ended
    std::set<uint64_t> in_step;                   // ids of the in-flight step
    std::set<uint64_t> cancel_pending;            // cancelled inside the in-flight step
    std::map<uint64_t, int> ended;                // admitted id -> times it ended
    std::vector<uint64_t> admitted_ids;
    step_input current;
    uint64_t next_id = 1;

    auto held = [&] {
      int64_t sum = 0;
      for (auto id : running)
        sum += reqs.at(id).blocks;
      return sum;
    };
    auto end = [&](uint64_t id) {
      ++ended[id];
      running.erase(id);
    };
    auto check_invariants = [&] {
      REQUIRE(s.blocks_held() >= 0);
      REQUIRE(s.blocks_held() == held());
      REQUIRE(s.waiting() == waiting.size());
      REQUIRE(s.running() == running.size());
      REQUIRE(s.step_in_flight() == !in_step.empty());
    };

    for (int op = 0; op < 400; ++op) {
      int what = uniform(0, 99);
      if (what < 25) {  // enqueue
        auto id = next_id++;
        int prompt = uniform(0, 52);
        int max_tokens = uniform(0, 30);
        bool ignore = uniform(0, 3) == 0;
        auto sink = static_cast<uint32_t>(uniform(0, 5));
        auto st = s.enqueue(req(id, prompt, max_tokens, ignore), sink);
        enqueue_status expect = enqueue_status::accepted;
        if (prompt == 0)
          expect = enqueue_status::empty_prompt;
        else if (prompt >= o.context_length)
          expect = enqueue_status::prompt_too_long;
        else if (static_cast<int>(waiting.size()) >= o.max_waiting)
          expect = enqueue_status::queue_full;
        REQUIRE(st == expect);
        ++seen[st == enqueue_status::accepted ? "accepted" : "refused"];
        if (st == enqueue_status::accepted) {
          model_req m;
          m.prompt = prompt;
          m.max_tokens = std::max(1, std::min(max_tokens, o.context_length - prompt));
          m.blocks = (prompt + m.max_tokens + o.block_tokens - 1) / o.block_tokens;
          m.ignore_eos = ignore;
          m.sink = sink;
          reqs[id] = m;
          waiting.push_back(id);
        }
      } else if (what < 45) {  // admit what fits in the pool
        auto cand = blocks_of(s.admission_candidates());
        size_t room = static_cast<size_t>(o.max_running) - running.size();
        REQUIRE(cand.size() == std::min(room, waiting.size()));
        for (size_t i = 0; i < cand.size(); ++i)
          REQUIRE(cand[i] == reqs.at(waiting[i]).blocks);
        int64_t grantable = pool - held();
        size_t n = 0;
        while (n < cand.size() && cand[n] <= grantable)
          grantable -= cand[n++];
        s.admit(n);
        for (size_t i = 0; i < n; ++i) {
          running.insert(waiting.front());
          admitted_ids.push_back(waiting.front());
          waiting.pop_front();
        }
      } else if (what < 70) {  // step
        if (!s.can_step()) {
          REQUIRE((running.empty() || !in_step.empty()));
          continue;
        }
        current = s.next_step();
        REQUIRE_FALSE(current.seqs.empty());
        REQUIRE(fed_tokens(current) <= o.max_batch_tokens);
        bool seen_prefill = false;
        for (const auto& w : current.seqs) {
          REQUIRE(running.count(w.seq_id) == 1);
          REQUIRE(in_step.insert(w.seq_id).second);  // once per step
          const auto& m = reqs.at(w.seq_id);
          if (m.generated > 0) {  // decode
            REQUIRE_FALSE(seen_prefill);
            REQUIRE(w.tokens.size() == 1);
            REQUIRE(w.context_len == m.prompt + m.generated - 1);
            REQUIRE(w.sample);
          } else {
            seen_prefill = true;
            REQUIRE(w.context_len == m.computed);
            auto n = static_cast<int>(w.tokens.size());
            REQUIRE(n >= 1);
            REQUIRE(m.computed + n <= m.prompt);
            REQUIRE(w.sample == (m.computed + n == m.prompt));
            if (!w.sample)
              ++seen["partial chunk"];
          }
        }
      } else if (what < 90) {  // the step's result arrives
        if (in_step.empty())
          continue;
        std::map<uint64_t, token_id> given;
        auto out = answer(current, [&](uint64_t id) {
          token_id t = uniform(0, 9) == 0 ? eos : static_cast<token_id>(uniform(100, 200));
          given[id] = t;
          return t;
        });
        bool fail = uniform(0, 19) == 0;
        auto ev = fail ? s.fail_step("lost") : s.apply(out);
        int64_t expect_freed = 0;
        std::set<uint64_t> expect_end;
        for (auto id : cancel_pending) {
          expect_freed += reqs.at(id).blocks;
          expect_end.insert(id);
        }
        std::set<uint64_t> with_delta;
        for (const auto& w : current.seqs) {
          auto id = w.seq_id;
          if (cancel_pending.count(id))
            continue;
          auto& m = reqs.at(id);
          if (fail) {
            expect_end.insert(id);
            expect_freed += m.blocks;
            with_delta.insert(id);
            continue;
          }
          if (m.generated == 0)
            m.computed += static_cast<int>(w.tokens.size());
          if (!w.sample)
            continue;
          with_delta.insert(id);
          auto t = given.at(id);
          bool ends = (t == eos && !m.ignore_eos) || m.generated + 1 >= m.max_tokens;
          if (!(t == eos && !m.ignore_eos))
            ++m.generated;
          if (ends) {
            expect_end.insert(id);
            expect_freed += m.blocks;
          }
        }
        REQUIRE(ev.freed_blocks == expect_freed);
        std::set<uint64_t> got;
        for (const auto& rd : ev.deltas) {
          auto id = rd.delta.id;
          REQUIRE(got.insert(id).second);
          REQUIRE(with_delta.count(id) == 1);
          REQUIRE(rd.sink == reqs.at(id).sink);
          ++seen[rd.delta.finish == finish_reason::none ? "token"
                                                        : protocol::to_string(rd.delta.finish)];
          if (fail) {
            REQUIRE(rd.delta.finish == finish_reason::error);
          } else if (given.at(id) == eos && !reqs.at(id).ignore_eos) {
            REQUIRE(rd.delta.finish == finish_reason::stop);
            REQUIRE(rd.delta.tokens.empty());
          } else {
            REQUIRE(rd.delta.tokens == std::vector<int32_t>{given.at(id)});
            REQUIRE((rd.delta.finish == finish_reason::length) == (expect_end.count(id) == 1));
          }
        }
        REQUIRE(got == with_delta);
        for (auto id : expect_end)
          end(id);
        in_step.clear();
        cancel_pending.clear();
      } else {  // cancel something: waiting, running, ended or unknown
        if (next_id == 1)
          continue;
        auto id = static_cast<uint64_t>(uniform(1, static_cast<int>(next_id)));
        auto freed = s.cancel(id);
        auto w = std::find(waiting.begin(), waiting.end(), id);
        if (w != waiting.end()) {
          REQUIRE(freed == 0);
          waiting.erase(w);
          ++seen["cancel waiting"];
        } else if (running.count(id) && in_step.count(id)) {
          REQUIRE(freed == 0);
          cancel_pending.insert(id);
          ++seen["cancel in step"];
        } else if (running.count(id)) {
          REQUIRE(freed == reqs.at(id).blocks);
          end(id);
          ++seen["cancel running"];
        } else {
          REQUIRE(freed == 0);
        }
      }
      check_invariants();
    }

    // Drain: drop the queue, finish the in-flight step, cancel the rest.
    for (auto id : waiting)
      CHECK(s.cancel(id) == 0);
    waiting.clear();
    if (!in_step.empty()) {
      (void)s.fail_step("drain");
      for (const auto& w : current.seqs)
        end(w.seq_id);
      in_step.clear();
      cancel_pending.clear();
    }
    for (auto id : std::vector<uint64_t>(running.begin(), running.end())) {
      CHECK(s.cancel(id) == reqs.at(id).blocks);
      end(id);
    }
    check_invariants();
    CHECK(s.blocks_held() == 0);
    CHECK(s.running() == 0);
    INFO("round " << round);
    CHECK(admitted_ids.size() > 5);
    for (auto id : admitted_ids)
      REQUIRE(ended[id] == 1);
  }
  for (auto what : {"accepted", "refused", "partial chunk", "token", "stop", "length", "error",
                    "cancel in step", "cancel running", "cancel waiting"}) {
    INFO(what);
    CHECK(seen[what] > 0);
  }
}

TEST_CASE("batch_scheduler: cancel_sink drops every request of one gateway", "[batch_scheduler]") {
  batch_scheduler s{small_opts()};
  // Requests 1 and 3 stream to sink 0, 2 and 4 to sink 1.
  for (uint64_t id = 1; id <= 3; ++id)
    REQUIRE(s.enqueue(req(id, 4, 4), static_cast<uint32_t>((id + 1) % 2)) == enqueue_status::accepted);
  s.admit(2);  // 1 (sink 0) and 2 (sink 1) run; 3 (sink 0) waits
  REQUIRE(s.enqueue(req(4, 4, 4), 1) == enqueue_status::accepted);
  // Each running request holds ceil((4 + 4) / 4) = 2 token-blocks.
  REQUIRE(s.blocks_held() == 4);

  size_t n = 0;
  auto freed = s.cancel_sink(0, &n);
  CHECK(n == 2);           // running 1 and waiting 3
  CHECK(freed == 2);       // only the running one held blocks
  CHECK(s.running() == 1);
  CHECK(s.waiting() == 1);  // request 4 (sink 1) still waits
  CHECK(s.blocks_held() == 2);

  // The survivors still step and stream to sink 1 only.
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].seq_id == 2);
  CHECK(s.cancel_sink(7, &n) == 0);
  CHECK(n == 0);
}

TEST_CASE("batch_scheduler: a stop token ends a request like EOS, and is not streamed",
          "[batch_scheduler]") {
  batch_scheduler s{small_opts()};
  auto r = req(1, 4, 8);
  r.params.stop_tokens = {77};
  REQUIRE(s.enqueue(r, 0) == enqueue_status::accepted);
  REQUIRE(s.enqueue(req(2, 4, 8), 0) == enqueue_status::accepted);  // no stop tokens
  s.admit(2);
  auto ev = s.apply(answer_all(s.next_step(), 5));  // prefill: both get token 5
  REQUIRE(ev.deltas.size() == 2);
  ev = s.apply(answer_all(s.next_step(), 77));
  REQUIRE(ev.deltas.size() == 2);
  for (const auto& d : ev.deltas) {
    if (d.delta.id == 1) {
      CHECK(d.delta.finish == finish_reason::stop);
      CHECK(d.delta.tokens.empty());
    } else {
      CHECK(d.delta.finish == finish_reason::none);  // 77 is an ordinary token for request 2
      CHECK(d.delta.tokens == std::vector<int32_t>{77});
    }
  }
  CHECK(s.running() == 1);
  // The ended sequence is handed to the engine to free its KV.
  auto next = s.next_step();
  CHECK(next.released == std::vector<uint64_t>{1});
}

TEST_CASE("batch_scheduler: min_tokens masks EOS and stop tokens until that many are out",
          "[batch_scheduler]") {
  batch_scheduler s{small_opts()};
  auto r = req(1, 4, 8);
  r.params.stop_tokens = {77};
  r.params.min_tokens = 2;
  REQUIRE(s.enqueue(r, 0) == enqueue_status::accepted);
  s.admit(1);
  auto masked = [](const engine::seq_work& w) {
    std::map<int32_t, float> m;
    for (size_t i = 0; i < w.bias_tokens.size(); ++i)
      m[w.bias_tokens[i]] = w.bias_values[i];
    return m;
  };
  // Prefill samples the first token: EOS and 77 carry -inf.
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  auto m = masked(in.seqs[0]);
  REQUIRE(m.size() == 2);
  CHECK(std::isinf(m.at(eos)));
  CHECK(m.at(eos) < 0);
  CHECK(std::isinf(m.at(77)));
  // An engine that samples EOS anyway (the sim) gets it streamed as a token.
  auto ev = s.apply(answer_all(in, eos));
  REQUIRE(ev.deltas.size() == 1);
  CHECK(ev.deltas[0].delta.finish == finish_reason::none);
  CHECK(ev.deltas[0].delta.tokens == std::vector<int32_t>{eos});
  // Second token: still masked (1 out, 2 needed).
  in = s.next_step();
  CHECK(masked(in.seqs[0]).size() == 2);
  ev = s.apply(answer_all(in, 5));
  CHECK(ev.deltas[0].delta.finish == finish_reason::none);
  // Two out: the mask is gone and a stop token ends the request.
  in = s.next_step();
  CHECK(masked(in.seqs[0]).empty());
  ev = s.apply(answer_all(in, 77));
  CHECK(ev.deltas[0].delta.finish == finish_reason::stop);
  CHECK(ev.deltas[0].delta.tokens.empty());
}

TEST_CASE("batch_scheduler: with ignore_eos, min_tokens masks only the stop tokens", "[batch_scheduler]") {
  batch_scheduler s{small_opts()};
  auto r = req(1, 4, 8, /*ignore_eos=*/true);
  r.params.stop_tokens = {77};
  r.params.min_tokens = 1;
  r.params.bias_tokens = {3};
  r.params.bias_values = {2.5f};
  REQUIRE(s.enqueue(r, 0) == enqueue_status::accepted);
  s.admit(1);
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  // The request's own logit bias stays, the mask comes after it.
  CHECK(in.seqs[0].bias_tokens == std::vector<int32_t>{3, 77});
  CHECK(in.seqs[0].bias_values[0] == 2.5f);
}

// -- on-demand KV growth and preemption by recompute --------------------------

namespace {

scheduler_options on_demand_opts() {
  auto o = small_opts();
  o.growth = scheduler::kv_growth::on_demand;
  return o;
}

/// A deterministic stand-in for a model: each sequence's KV is the list of
/// tokens it was fed, at the positions it was fed them; a sampled token is a
/// hash of that whole list. It checks every step against its own record, so
/// a recompute that fed a wrong token, skipped one, or put one at the wrong
/// position changes every later token.
class history_engine {
public:
  step_output step(const step_input& in) {
    for (auto id : in.released)
      fed_.erase(id);
    step_output out;
    for (const auto& w : in.seqs) {
      auto& f = fed_[w.seq_id];
      REQUIRE(w.context_len == static_cast<int32_t>(f.size()));
      f.insert(f.end(), w.tokens.begin(), w.tokens.end());
      uint64_t h = 1469598103934665603ull;
      for (auto t : f)
        h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
      out.tokens.push_back(w.sample ? static_cast<token_id>(h % 100) : -1);  // 99 is EOS
    }
    return out;
  }
  [[nodiscard]] size_t live() const { return fed_.size(); }

private:
  std::map<uint64_t, std::vector<token_id>> fed_;
};

/// An imagined kv_manager: `pool` token-blocks, tables per sequence, granted
/// in order while they fit.
struct seq_pool {
  int64_t pool = 0;
  int64_t used = 0;
  std::map<uint64_t, int64_t> held;  ///< token-blocks per open sequence
  static int64_t blocks(const protocol::kv_need& n) { return (n.tokens + 3) / 4; }
  std::vector<int32_t> open(const std::vector<protocol::kv_need>& needs) {
    std::vector<int32_t> cached;
    for (const auto& n : needs) {
      REQUIRE(held.count(n.seq) == 0);
      if (used + blocks(n) > pool)
        break;
      used += blocks(n);
      held[n.seq] = blocks(n);
      cached.push_back(0);
    }
    if (cached.empty() && !needs.empty() && blocks(needs.front()) > pool)
      return {-1};
    return cached;
  }
  int32_t grow(const std::vector<protocol::kv_need>& needs) {
    int32_t n = 0;
    for (const auto& g : needs) {
      auto more = blocks(g) - held.at(g.seq);
      REQUIRE(more > 0);
      if (used + more > pool)
        break;
      used += more;
      held[g.seq] += more;
      ++n;
    }
    return n;
  }
  int64_t close(const std::vector<uint64_t>& seqs) {
    int64_t freed = 0;
    for (auto id : seqs) {
      freed += held.at(id);
      held.erase(id);
    }
    used -= freed;
    return freed;
  }
};

struct run_result {
  std::map<uint64_t, std::vector<token_id>> tokens;
  std::map<uint64_t, finish_reason> finish;
  uint64_t preemptions = 0;
};

/// What a driven scheduler streamed, checked as it goes: every request ends
/// once, and the blocks the imagined kv_manager frees are the ones the
/// scheduler says it freed.
struct driver {
  batch_scheduler s;
  history_engine eng;
  seq_pool kv;
  run_result r;

  driver(scheduler_options o, int64_t pool, const std::vector<gen_request>& reqs)
    : s(o), kv{pool, 0, {}} {
    for (const auto& q : reqs)
      REQUIRE(s.enqueue(q, 0) == enqueue_status::accepted);
  }
  void take(step_events& ev) {
    REQUIRE(kv.close(ev.closed) == ev.freed_blocks);
    for (auto& rd : ev.deltas) {
      auto& t = r.tokens[rd.delta.id];
      t.insert(t.end(), rd.delta.tokens.begin(), rd.delta.tokens.end());
      if (rd.delta.finish != finish_reason::none) {
        REQUIRE(r.finish.count(rd.delta.id) == 0);  // every request ends once
        r.finish[rd.delta.id] = rd.delta.finish;
      }
    }
  }
  /// Growth, then admission, as the actor does before a step; `growing`
  /// sees the growth candidates first. True if anything moved.
  template <class F>
  bool kv_moves(F growing) {
    bool progress = false;
    if (auto grow = s.growth_candidates(); !grow.empty()) {
      growing(grow);
      auto ev = s.apply_growth(kv.grow(grow));
      take(ev);
      progress = true;
    }
    if (auto cand = s.admission_candidates(); !cand.empty()) {
      auto cached = kv.open(cand);
      if (!cached.empty() && cached.front() >= 0) {
        s.admit(cached);
        progress = true;
      } else if (!cached.empty()) {
        step_events ev;
        ev.deltas.push_back(s.reject_first_waiting("never fits"));
        take(ev);
        progress = true;
      }
    }
    REQUIRE(s.blocks_held() == kv.used);
    REQUIRE(kv.used <= kv.pool);
    return progress;
  }
  /// Everything ended: nothing is held anywhere.
  run_result finish() {
    REQUIRE(s.blocks_held() == 0);
    REQUIRE(kv.used == 0);
    REQUIRE(kv.held.empty());  // every table was closed
    REQUIRE(s.waiting() == 0);
    r.preemptions = s.preemptions();
    return r;
  }
};

/// Drives a scheduler as its actor does (growth, then admission, then a
/// step) until every request has ended; checks the block accounting after
/// every move.
run_result drive(scheduler_options o, int64_t pool, const std::vector<gen_request>& reqs) {
  driver d(o, pool, reqs);
  for (int guard = 0; d.r.finish.size() < reqs.size(); ++guard) {
    REQUIRE(guard < 100000);
    bool progress = d.kv_moves([](const auto&) {});
    if (d.s.can_step()) {
      auto ev = d.s.apply(d.eng.step(d.s.next_step()));
      d.take(ev);
      REQUIRE(d.s.blocks_held() == d.kv.used);
      progress = true;
    }
    REQUIRE(progress);  // no state where nothing can move
  }
  return d.finish();
}

/// A random load for the property tests: options, requests (prompt 1–14
/// tokens, output 1–20; `short_outputs`: a quarter end at their first token),
/// and a pool that fits the largest request alone but often not all at once.
struct random_load {
  scheduler_options o;
  std::vector<gen_request> reqs;
  int64_t tight = 0;
};

random_load random_case(std::mt19937_64& rng, bool short_outputs) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  random_load c;
  c.o = on_demand_opts();
  c.o.max_running = uniform(1, 6);
  c.o.max_batch_tokens = uniform(4, 16);
  c.o.max_waiting = 64;
  c.o.context_length = 40;
  int64_t largest = 0;
  for (int i = 0, n = uniform(1, short_outputs ? 12 : 10); i < n; ++i) {
    const int prompt = uniform(1, 14);
    const int out = short_outputs && uniform(0, 3) == 0 ? 1 : uniform(short_outputs ? 2 : 1, 20);
    auto q = req(static_cast<uint64_t>(i + 1), prompt, out, uniform(0, 3) > 0);
    largest = std::max<int64_t>(largest, (static_cast<int64_t>(q.prompt.size()) + q.params.max_tokens + 3) / 4 + 1);
    c.reqs.push_back(q);
  }
  c.tight = largest + uniform(0, 4);
  return c;
}

}  // namespace

TEST_CASE("on-demand: admission takes the prompt and one token, decodes grow a block at a time",
          "[scheduler]") {
  batch_scheduler s(on_demand_opts());  // 4-token blocks
  REQUIRE(s.enqueue(req(1, 5, 8, true), 0) == enqueue_status::accepted);
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{2});  // ceil((5 + 1) / 4)
  s.admit(1);
  CHECK(s.growth_candidates().empty());
  auto ev = s.apply(answer_all(s.next_step(), 7));  // prefill 5, sample: 6 tokens, 8 fit
  REQUIRE(ev.deltas.size() == 1);
  CHECK(s.growth_candidates().empty());
  ev = s.apply(answer_all(s.next_step(), 7));  // decode at position 5: 7 tokens
  ev = s.apply(answer_all(s.next_step(), 7));  // position 6: 8 tokens
  CHECK(s.growth_candidates().empty());        // the 8th token is fed at position 7: fits
  ev = s.apply(answer_all(s.next_step(), 7));  // 9 tokens: position 8 needs a third block
  CHECK(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1});
  // Not granted yet: the step leaves the sequence out rather than overrun.
  CHECK(s.next_step().seqs.empty());
  CHECK_FALSE(s.step_in_flight());
  REQUIRE(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1});
  ev = s.apply_growth(1);
  CHECK(ev.freed_blocks == 0);
  CHECK(s.blocks_held() == 3);
  auto in = s.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].context_len == 8);
  CHECK(s.preemptions() == 0);
}

TEST_CASE("on-demand: a refused block preempts the newest sequence, which recomputes",
          "[scheduler]") {
  batch_scheduler s(on_demand_opts());
  admit_one(s, req(1, 3, 10, true));  // 1 block: 3 prompt + 1
  admit_one(s, req(2, 3, 10, true));
  CHECK(s.blocks_held() == 2);
  // Prefill both (sample 40 + id), then one decode each: 5 tokens > 4.
  auto ev = s.apply(answer(s.next_step(), [](uint64_t id) { return static_cast<token_id>(40 + id); }));
  ev = s.apply(answer(s.next_step(), [](uint64_t id) { return static_cast<token_id>(50 + id); }));
  REQUIRE(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1, 2});
  ev = s.apply_growth(1);  // the older one gets its block; the newer is preempted
  CHECK(ev.freed_blocks == 1);
  CHECK(s.preemptions() == 1);
  CHECK(s.running() == 1);
  CHECK(s.waiting() == 1);
  CHECK(s.preempted_waiting() == 1);
  CHECK(s.blocks_held() == 2);
  // Nothing is admitted until a sequence ends: the pool is short.
  REQUIRE(s.enqueue(req(3, 2, 2), 0) == enqueue_status::accepted);
  CHECK(s.admission_candidates().empty());
  CHECK(s.cancel(1) == 2);
  // Then it comes back first, with room for 3 prompt + 2 generated + 1.
  CHECK(blocks_of(s.admission_candidates()) == std::vector<int64_t>{2, 1});
  s.admit(1);
  CHECK(s.preempted_waiting() == 0);
  auto in = s.next_step();
  CHECK(in.released == std::vector<uint64_t>{2, 1});  // its old KV is dropped (and 1's)
  const auto* again = work_for(in, 2);
  REQUIRE(again != nullptr);
  CHECK(again->context_len == 0);
  CHECK(again->tokens == std::vector<token_id>{1200, 1201, 1202, 42, 52});
  CHECK(again->sample);
  // Its next token continues the stream; nothing is streamed twice.
  ev = s.apply(answer(in, [](uint64_t id) { return static_cast<token_id>(60 + id); }));
  auto* d = delta_for(ev, 2);
  REQUIRE(d != nullptr);
  CHECK(d->tokens == std::vector<token_id>{62});
}

TEST_CASE("grammar: sent on an admission's first work, with the output the engine did not sample",
          "[scheduler]") {
  batch_scheduler s(on_demand_opts());
  auto r1 = req(1, 3, 10, true);
  r1.params.grammar = "root ::= [0-9]+\n";
  admit_one(s, r1);
  // A migrated request: its prompt carries 2 tokens streamed elsewhere.
  auto r2 = req(2, 3, 10, true);
  r2.original_prompt_len = 1;
  r2.params.grammar = "root ::= [a-z]+\n";
  admit_one(s, r2);
  auto in = s.next_step();
  const auto* w1 = work_for(in, 1);
  const auto* w2 = work_for(in, 2);
  REQUIRE((w1 != nullptr && w2 != nullptr));
  CHECK(w1->grammar == "root ::= [0-9]+\n");
  CHECK(w1->constrained);
  CHECK(w1->grammar_prefix.empty());
  CHECK(w2->grammar_prefix == std::vector<token_id>{1201, 1202});
  auto ev = s.apply(answer(in, [](uint64_t id) { return static_cast<token_id>(40 + id); }));
  // Later steps say "constrained" without the text.
  in = s.next_step();
  REQUIRE(work_for(in, 1) != nullptr);
  CHECK(work_for(in, 1)->grammar.empty());
  CHECK(work_for(in, 1)->constrained);
  ev = s.apply(answer(in, [](uint64_t id) { return static_cast<token_id>(50 + id); }));
  // Sequence 1 outgrows its block, 2 is preempted and comes back later with
  // its grammar again and everything it had: the migrated tokens, then its own.
  REQUIRE(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1, 2});
  ev = s.apply_growth(1);
  REQUIRE(s.preemptions() == 1);
  CHECK(s.cancel(1) == 2);
  s.admit(1);
  in = s.next_step();
  const auto* back = work_for(in, 2);
  REQUIRE(back != nullptr);
  CHECK(back->grammar == "root ::= [a-z]+\n");
  CHECK(back->grammar_prefix == std::vector<token_id>{1201, 1202, 42, 52});
  // An unconstrained request carries none of it.
  batch_scheduler plain(on_demand_opts());
  admit_one(plain, req(3, 2, 4));
  in = plain.next_step();
  CHECK_FALSE(in.seqs.at(0).constrained);
  CHECK(in.seqs.at(0).grammar.empty());
}

TEST_CASE("on-demand: a cancelled preempted request frees nothing twice", "[scheduler]") {
  batch_scheduler s(on_demand_opts());
  admit_one(s, req(1, 4, 10, true));  // 4 + 1 tokens: 2 blocks
  auto ev = s.apply(answer_all(s.next_step(), 9));
  ev = s.apply(answer_all(s.next_step(), 9));
  ev = s.apply(answer_all(s.next_step(), 9));
  ev = s.apply(answer_all(s.next_step(), 9));  // 8 tokens: the 8 that fit 2 blocks
  CHECK(s.growth_candidates().empty());
  ev = s.apply(answer_all(s.next_step(), 9));  // 9: position 8 needs a third
  REQUIRE(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1});
  ev = s.apply_growth(0);  // preempts itself
  CHECK(ev.freed_blocks == 2);
  CHECK(s.blocks_held() == 0);
  CHECK(s.cancel(1) == 0);
  CHECK(s.waiting() == 0);
  CHECK(s.running() == 0);
  CHECK(s.take_released() == std::vector<uint64_t>{1});
}

TEST_CASE("on-demand: a preempted sequence that can never fit again ends with length",
          "[scheduler]") {
  // A pool of 3 token-blocks (12 tokens): the sequence grows to 12 tokens,
  // is preempted, and cannot come back with 13.
  auto r = drive(on_demand_opts(), 3, {req(1, 6, 20, true)});
  CHECK(r.finish.at(1) == finish_reason::length);
  // 6 prompt + 6 generated fill the 12 tokens; the 7th generated token was
  // sampled from them, then feeding it needed a 4th block.
  CHECK(r.tokens.at(1).size() == 7);
  CHECK(r.preemptions == 1);
  // The same request in a pool large enough: all 20 tokens, same first 6.
  auto full = drive(on_demand_opts(), 100, {req(1, 6, 20, true)});
  REQUIRE(full.tokens.at(1).size() == 20);
  CHECK(std::equal(r.tokens.at(1).begin(), r.tokens.at(1).end(), full.tokens.at(1).begin()));
}

TEST_CASE("property: preemption by recompute never changes what a request generates",
          "[scheduler][property]") {
  std::mt19937_64 rng(0xbeef5eed);
  uint64_t preemptions = 0;
  for (int round = 0; round < 60; ++round) {
    auto [o, reqs, tight] = random_case(rng, false);
    auto a = drive(o, tight, reqs);
    auto b = drive(o, 10000, reqs);
    preemptions += a.preemptions;
    CHECK(b.preemptions == 0);
    CHECK(a.tokens == b.tokens);
    CHECK(a.finish == b.finish);
  }
  CHECK(preemptions > 20);  // the tight pools really did preempt
}

TEST_CASE("share_prefix: computed full blocks are committed, a cached prefix skips its prefill",
          "[scheduler]") {
  auto o = on_demand_opts();
  o.share_prefix = true;
  batch_scheduler s(o);  // 4-token blocks, 8 tokens per step
  auto first = req(1, 9, 10, true);
  const auto prompt = first.prompt;
  REQUIRE(s.enqueue(first, 0) == enqueue_status::accepted);
  auto cand = s.admission_candidates();
  REQUIRE(cand.size() == 1);
  CHECK(cand[0].lookup == prompt);  // the prompt is looked up
  s.admit(std::vector<int32_t>{0});
  auto ev = s.apply(answer_all(s.next_step(), 7));  // 8 of 9 prompt tokens
  REQUIRE(ev.commits.size() == 1);
  CHECK(ev.commits[0].first == 1);
  CHECK(ev.commits[0].second == std::vector<int32_t>(prompt.begin(), prompt.begin() + 8));
  ev = s.apply(answer_all(s.next_step(), 7));  // the 9th, and a sample: no new full block
  CHECK(ev.commits.empty());
  REQUIRE(s.growth_candidates().empty());
  ev = s.apply(answer_all(s.next_step(), 7));  // decode: 10 tokens computed
  CHECK(ev.commits.empty());
  ev = s.apply(answer_all(s.next_step(), 7));  // 11 computed
  CHECK(ev.commits.empty());
  REQUIRE(s.growth_candidates().empty());      // 3 blocks hold 12
  ev = s.apply(answer_all(s.next_step(), 7));  // 12 computed: a third full block, with generated tokens
  REQUIRE(ev.commits.size() == 1);
  auto expect = std::vector<int32_t>(prompt.begin(), prompt.end());
  expect.insert(expect.end(), {7, 7, 7});
  CHECK(ev.commits[0].second == expect);

  // A second request with the same prompt, 8 tokens of it cached: it
  // prefills only the 9th and samples.
  auto second = req(2, 9, 2, true);
  second.prompt = prompt;
  REQUIRE(s.enqueue(second, 0) == enqueue_status::accepted);
  cand = s.admission_candidates();
  REQUIRE(cand.size() == 1);
  s.admit(std::vector<int32_t>{8});
  auto in = s.next_step();
  const auto* w = work_for(in, 2);
  REQUIRE(w != nullptr);
  CHECK(w->context_len == 8);
  CHECK(w->tokens == std::vector<int32_t>{prompt[8]});
  CHECK(w->sample);
  // A whole-prompt "hit" is never taken at its word: one token is computed.
  batch_scheduler t(o);
  auto third = req(3, 8, 2, true);
  REQUIRE(t.enqueue(third, 0) == enqueue_status::accepted);
  (void)t.admission_candidates();
  t.admit(std::vector<int32_t>{8});
  in = t.next_step();
  REQUIRE(in.seqs.size() == 1);
  CHECK(in.seqs[0].context_len == 7);
  CHECK(in.seqs[0].sample);
}

TEST_CASE("granted block ids reach the engine once, with the sequence's next step", "[scheduler]") {
  // Engines that read the unit's blocks get each table from the grants: the
  // whole table with the first step, each growth with the step after it,
  // and nothing of a table a preemption dropped.
  auto o = on_demand_opts();
  o.share_prefix = true;
  batch_scheduler s(o);  // 4-token blocks
  REQUIRE(s.enqueue(req(1, 3, 3, true), 0) == enqueue_status::accepted);
  REQUIRE(s.admission_candidates().size() == 1);
  protocol::kv_grant g;
  g.granted = 1;
  g.cached = {0};
  g.blocks = {{10}};
  s.admit(g);
  auto in = s.next_step();
  REQUIRE(work_for(in, 1) != nullptr);
  CHECK(work_for(in, 1)->kv_blocks == std::vector<int32_t>{10});
  (void)s.apply(answer_all(in, 7));  // 3 computed, 1 generated
  in = s.next_step();
  CHECK(work_for(in, 1)->kv_blocks.empty());  // given once
  (void)s.apply(answer_all(in, 7));  // 4 computed, 2 generated: the next decode needs a block

  // Meanwhile a second request is admitted with its table, and before it
  // ever steps, the first one's growth is refused: the newest is preempted.
  REQUIRE(s.enqueue(req(2, 3, 3, true), 0) == enqueue_status::accepted);
  REQUIRE(s.admission_candidates().size() == 1);
  g.blocks = {{20}};
  s.admit(g);
  REQUIRE(s.growth_candidates().size() == 1);
  protocol::kv_grant refused;
  auto ev = s.apply_growth(refused);
  CHECK(ev.closed == std::vector<uint64_t>{2});
  REQUIRE(s.growth_candidates().size() == 1);
  protocol::kv_grant grown;
  grown.granted = 1;
  grown.blocks = {{11}};
  ev = s.apply_growth(grown);
  CHECK(ev.closed.empty());
  in = s.next_step();
  CHECK(in.released == std::vector<uint64_t>{2});
  REQUIRE(in.seqs.size() == 1);
  CHECK(work_for(in, 1)->kv_blocks == std::vector<int32_t>{11});
  ev = s.apply(answer_all(in, 7));  // the first one finishes
  CHECK(ev.closed == std::vector<uint64_t>{1});

  // The preempted one comes back with a new table: only that reaches the engine.
  auto cand = s.admission_candidates();
  REQUIRE(cand.size() == 1);
  CHECK(cand[0].seq == 2);
  g.blocks = {{30}};
  s.admit(g);
  in = s.next_step();
  REQUIRE(work_for(in, 2) != nullptr);
  CHECK(work_for(in, 2)->kv_blocks == std::vector<int32_t>{30});
}

TEST_CASE("requests with penalties do not look their prompt up in the prefix cache", "[scheduler]") {
  // The engine counts the tokens a penalised sequence feeds; a cached prefix
  // is never fed, so its counts would be wrong.
  auto o = on_demand_opts();
  o.share_prefix = true;
  for (int which = 0; which < 3; ++which) {
    batch_scheduler s(o);
    auto r = req(1, 9, 4);
    if (which == 0)
      r.params.presence_penalty = 0.5;
    else if (which == 1)
      r.params.frequency_penalty = 0.5;
    else
      r.params.repetition_penalty = 1.1;
    REQUIRE(s.enqueue(r, 0) == enqueue_status::accepted);
    auto cand = s.admission_candidates();
    REQUIRE(cand.size() == 1);
    CHECK(cand[0].lookup.empty());
  }
  batch_scheduler plain(o);
  REQUIRE(plain.enqueue(req(1, 9, 4), 0) == enqueue_status::accepted);
  CHECK(plain.admission_candidates().at(0).lookup.size() == 9);
}

// -- Split jobs: a prefill step and a decode step in flight at once ----------

namespace {

scheduler_options split_opts() {
  auto o = on_demand_opts();
  o.split_jobs = true;
  return o;
}

std::set<uint64_t> seq_ids(const step_input& in) {
  std::set<uint64_t> ids;
  for (const auto& w : in.seqs)
    ids.insert(w.seq_id);
  return ids;
}

}  // namespace

TEST_CASE("split jobs: a decode step and a prefill step fly at once over disjoint sequences",
          "[scheduler][split]") {
  batch_scheduler s(split_opts());  // 4-token blocks, 8 tokens a step
  admit_one(s, req(1, 2, 10, true));  // 1 block: room for 2 decodes
  CHECK_FALSE(s.can_step(engine::job_kind::decode));  // nothing generated yet
  REQUIRE(s.can_step(engine::job_kind::prefill));
  auto p = s.next_step(engine::job_kind::prefill);
  CHECK(p.job == engine::job_kind::prefill);
  CHECK(seq_ids(p) == std::set<uint64_t>{1});
  CHECK(s.step_in_flight(engine::job_kind::prefill));
  CHECK_FALSE(s.step_in_flight(engine::job_kind::decode));
  (void)s.apply(answer_all(p, 7), engine::job_kind::prefill);  // 1 samples its first token

  // 2 arrives while 1 decodes: its prompt goes to the prefill job.
  admit_one(s, req(2, 7, 10, true));
  REQUIRE(s.can_step(engine::job_kind::decode));
  REQUIRE(s.can_step(engine::job_kind::prefill));
  auto d = s.next_step(engine::job_kind::decode);
  p = s.next_step(engine::job_kind::prefill);
  CHECK(d.job == engine::job_kind::decode);
  CHECK(seq_ids(d) == std::set<uint64_t>{1});
  REQUIRE(d.seqs.size() == 1);
  CHECK(d.seqs[0].tokens == std::vector<token_id>{7});
  CHECK(d.seqs[0].context_len == 2);
  CHECK(seq_ids(p) == std::set<uint64_t>{2});
  CHECK(p.seqs[0].tokens.size() == 7);
  CHECK(s.step_in_flight(engine::job_kind::decode));
  CHECK(s.step_in_flight(engine::job_kind::prefill));
  // Each job has one step in flight at most.
  CHECK_FALSE(s.can_step(engine::job_kind::decode));
  CHECK_FALSE(s.can_step(engine::job_kind::prefill));
  CHECK_FALSE(s.can_step());

  // They return in either order; the prefill one first here.
  auto ev = s.apply(answer_all(p, 8), engine::job_kind::prefill);
  REQUIRE(delta_for(ev, 2) != nullptr);
  CHECK(delta_for(ev, 2)->tokens == std::vector<token_id>{8});
  CHECK(delta_for(ev, 1) == nullptr);
  CHECK(s.step_in_flight(engine::job_kind::decode));
  // 2 now decodes too, but not until the decode job's step is back.
  CHECK_FALSE(s.can_step(engine::job_kind::decode));
  CHECK_FALSE(s.can_step(engine::job_kind::prefill));
  ev = s.apply(answer_all(d, 9), engine::job_kind::decode);
  REQUIRE(delta_for(ev, 1) != nullptr);
  CHECK(delta_for(ev, 1)->tokens == std::vector<token_id>{9});
  d = s.next_step(engine::job_kind::decode);
  CHECK(seq_ids(d) == std::set<uint64_t>{1, 2});
}

TEST_CASE("split jobs: a cancelled sequence in the other job's step is dropped when that step returns",
          "[scheduler][split]") {
  batch_scheduler s(split_opts());
  admit_one(s, req(1, 3, 10, true));
  (void)s.apply(answer_all(s.next_step(engine::job_kind::prefill), 7), engine::job_kind::prefill);
  admit_one(s, req(2, 5, 10, true));
  auto d = s.next_step(engine::job_kind::decode);
  auto p = s.next_step(engine::job_kind::prefill);
  CHECK(s.cancel(1) == 0);  // in the decode step: nothing freed yet
  CHECK(s.cancel(2) == 0);  // in the prefill step
  auto ev = s.apply(answer_all(d, 9), engine::job_kind::decode);
  CHECK(ev.deltas.empty());
  CHECK(ev.closed == std::vector<uint64_t>{1});
  ev = s.apply(answer_all(p, 9), engine::job_kind::prefill);
  CHECK(ev.deltas.empty());
  CHECK(ev.closed == std::vector<uint64_t>{2});
  CHECK(s.blocks_held() == 0);
  CHECK(s.running() == 0);
}

TEST_CASE("split jobs: growth goes on beside the other job's step, and never preempts a sequence in it",
          "[scheduler][split]") {
  batch_scheduler s(split_opts());  // 4-token blocks, 8 tokens a step
  admit_one(s, req(1, 3, 10, true));  // 1 block
  (void)s.apply(answer_all(s.next_step(engine::job_kind::prefill), 7), engine::job_kind::prefill);
  (void)s.apply(answer_all(s.next_step(engine::job_kind::decode), 7), engine::job_kind::decode);
  // 1 holds 5 tokens in one block: its next decode needs a second. A long
  // prompt (newer) starts its prefill meanwhile.
  admit_one(s, req(2, 14, 10, true));
  auto p = s.next_step(engine::job_kind::prefill);
  REQUIRE(seq_ids(p) == std::set<uint64_t>{2});
  CHECK(p.seqs[0].tokens.size() == 8);  // chunked
  // Mixed jobs would wait for the step; split jobs grow beside it.
  REQUIRE(ids_of(s.growth_candidates()) == std::vector<uint64_t>{1});
  auto ev = s.apply_growth(0);
  // Refused: the newest sequence is 2, but it is computing; 1 makes room.
  CHECK(ev.closed == std::vector<uint64_t>{1});
  CHECK(s.preempted_waiting() == 1);
  CHECK(s.step_in_flight(engine::job_kind::prefill));
  ev = s.apply(answer_all(p, 5), engine::job_kind::prefill);
  CHECK(ev.deltas.empty());  // 8 of 14 prompt tokens: nothing sampled yet
  CHECK(s.running() == 1);
}

TEST_CASE("split jobs: a preempted sequence comes back only after the step dropping its old KV returns",
          "[scheduler][split]") {
  // The two jobs' steps are not ordered at the engine: a new table adopted
  // by one job's step before the other job's step has dropped the old one
  // would append to the old one.
  batch_scheduler s(split_opts());
  admit_one(s, req(1, 3, 3, true));
  admit_one(s, req(2, 3, 10, true));
  (void)s.apply(answer_all(s.next_step(engine::job_kind::prefill), 7), engine::job_kind::prefill);
  (void)s.apply(answer_all(s.next_step(engine::job_kind::decode), 7), engine::job_kind::decode);
  REQUIRE(s.growth_candidates().size() == 2);
  auto ev = s.apply_growth(1);
  REQUIRE(ev.closed == std::vector<uint64_t>{2});
  // The prefill job has nothing to feed: it carries the release alone.
  REQUIRE_FALSE(s.can_step(engine::job_kind::prefill));
  REQUIRE(s.has_released());
  auto p = s.next_step(engine::job_kind::prefill);
  CHECK(p.released == std::vector<uint64_t>{2});
  CHECK(p.seqs.empty());
  CHECK(s.step_in_flight(engine::job_kind::prefill));
  // 1 finishes in the decode job, so admission is no longer held, but the
  // step dropping 2's old KV has not returned.
  auto d = s.next_step(engine::job_kind::decode);
  ev = s.apply(answer_all(d, 9), engine::job_kind::decode);
  REQUIRE(delta_for(ev, 1) != nullptr);
  CHECK(delta_for(ev, 1)->finish == finish_reason::length);
  CHECK(s.admission_candidates().empty());
  REQUIRE(s.enqueue(req(3, 2, 2), 0) == enqueue_status::accepted);
  CHECK(s.admission_candidates().empty());  // nobody jumps ahead of 2 either
  (void)s.apply(answer_all(p, 0), engine::job_kind::prefill);
  CHECK(ids_of(s.admission_candidates()) == std::vector<uint64_t>{2, 3});
}

TEST_CASE("split jobs: a failed step keeps its releases for the next step", "[scheduler][split]") {
  batch_scheduler s(split_opts());
  admit_one(s, req(1, 3, 10, true));
  admit_one(s, req(2, 3, 10, true));
  (void)s.apply(answer_all(s.next_step(engine::job_kind::prefill), 7), engine::job_kind::prefill);
  (void)s.apply(answer_all(s.next_step(engine::job_kind::decode), 7), engine::job_kind::decode);
  REQUIRE(s.growth_candidates().size() == 2);
  (void)s.apply_growth(1);  // 2 preempted
  auto d = s.next_step(engine::job_kind::decode);
  REQUIRE(d.released == std::vector<uint64_t>{2});
  auto ev = s.fail_step("unit gone", engine::job_kind::decode);
  REQUIRE(delta_for(ev, 1) != nullptr);
  CHECK(delta_for(ev, 1)->finish == finish_reason::error);
  // The engine may never have dropped 2's KV: the next step says so again.
  CHECK(s.admission_candidates().empty());
  REQUIRE(s.has_released());
  auto p = s.next_step(engine::job_kind::prefill);
  CHECK(p.released == std::vector<uint64_t>{2, 1});
  CHECK(p.seqs.empty());
  CHECK(s.step_in_flight(engine::job_kind::prefill));  // a release-only step is waited for
  (void)s.apply(answer_all(p, 0), engine::job_kind::prefill);
  CHECK(ids_of(s.admission_candidates()) == std::vector<uint64_t>{2});
}

namespace {

/// Drives a split-jobs scheduler as its actor does, with the two jobs'
/// steps started, computed and returned in a random interleaving (the
/// engine may compute a step any time between its start and its return).
/// Checks the block accounting after every move and that the two steps in
/// flight never share a sequence.
run_result drive_split(scheduler_options o, int64_t pool, const std::vector<gen_request>& reqs,
                       std::mt19937_64& rng, uint64_t* overlaps) {
  o.split_jobs = true;
  driver d(o, pool, reqs);
  auto& s = d.s;
  const engine::job_kind jobs[2] = {engine::job_kind::prefill, engine::job_kind::decode};
  std::optional<step_input> flying[2];
  std::optional<step_output> computed[2];
  auto coin = [&](int pct) { return std::uniform_int_distribution<int>(0, 99)(rng) < pct; };
  for (int guard = 0; d.r.finish.size() < reqs.size(); ++guard) {
    REQUIRE(guard < 100000);
    // Growth goes on while steps fly, never for a sequence inside one.
    bool progress = d.kv_moves([&](const std::vector<protocol::kv_need>& grow) {
      for (int k = 0; k < 2; ++k)
        if (flying[k])
          for (const auto& g : grow)
            REQUIRE(seq_ids(*flying[k]).count(g.seq) == 0);
    });
    for (int k = 0; k < 2; ++k) {
      const bool can = s.can_step(jobs[k]) || (k == 0 && s.has_released());
      // Sometimes a job waits while the other computes; with nothing in
      // flight, whatever can start does.
      if (flying[k] || !can || !(coin(70) || (!flying[0] && !flying[1])))
        continue;
      flying[k] = s.next_step(jobs[k]);
      REQUIRE(flying[k]->job == jobs[k]);
      if (jobs[k] == engine::job_kind::decode)
        for (const auto& w : flying[k]->seqs) {
          REQUIRE(w.tokens.size() == 1);
          REQUIRE(w.sample);
        }
      progress = true;
    }
    if (flying[0] && flying[1]) {
      for (auto id : seq_ids(*flying[0]))
        REQUIRE(seq_ids(*flying[1]).count(id) == 0);
      if (!flying[0]->seqs.empty() && !flying[1]->seqs.empty())
        ++*overlaps;
    }
    // The engine computes a step in flight at some moment before it
    // returns: now, or later; the two jobs' steps in either order.
    for (int j = 0; j < 2; ++j)
      if (flying[j] && !computed[j] && coin(50))
        computed[j] = d.eng.step(*flying[j]);
    // One of the steps in flight returns.
    int k = flying[0] && flying[1] ? static_cast<int>(coin(50)) : flying[0] ? 0 : 1;
    if (flying[k] && (coin(60) || !progress)) {
      if (!computed[k])
        computed[k] = d.eng.step(*flying[k]);
      auto ev = s.apply(*computed[k], jobs[k]);
      flying[k].reset();
      computed[k].reset();
      d.take(ev);
      REQUIRE(s.blocks_held() == d.kv.used);
      progress = true;
    }
    if (!progress)
      REQUIRE((flying[0] || flying[1]));  // the coin said wait; a step can still return
  }
  // Every request has ended; what still flies carries only releases.
  for (int k = 0; k < 2; ++k)
    if (flying[k]) {
      REQUIRE(flying[k]->seqs.empty());
      auto ev = s.apply(computed[k] ? *computed[k] : d.eng.step(*flying[k]), jobs[k]);
      d.take(ev);
    }
  d.eng.step(step_input{{}, s.take_released(), engine::job_kind::mixed});
  CHECK(d.eng.live() == 0);  // the engine was told of every sequence that ended
  return d.finish();
}

}  // namespace

TEST_CASE("property: split jobs generate what one mixed step at a time does, in any interleaving",
          "[scheduler][split][property]") {
  std::mt19937_64 rng(0x5b11750b);
  uint64_t preemptions = 0, overlaps = 0;
  for (int round = 0; round < 400; ++round) {
    auto [o, reqs, tight] = random_case(rng, true);
    auto split = drive_split(o, tight, reqs, rng, &overlaps);
    auto mixed = drive(o, 10000, reqs);
    preemptions += split.preemptions;
    CHECK(split.tokens == mixed.tokens);
    CHECK(split.finish == mixed.finish);
  }
  CHECK(preemptions > 20);  // tight pools preempted
  CHECK(overlaps > 100);    // and the two jobs really computed at once
}

TEST_CASE("outstanding and queued-prefill tokens count what is still to do", "[scheduler][routing]") {
  auto o = small_opts();
  o.max_batch_tokens = 6;
  batch_scheduler s(o);
  CHECK(s.outstanding_tokens() == 0);
  CHECK(s.queued_prefill_tokens() == 0);
  CHECK(s.prefill_tokens_per_s() == 0);
  admit_one(s, req(1, 10, 5));  // running: 10 prompt to feed, 5 to generate
  REQUIRE(s.enqueue(req(2, 4, 3), 0) == enqueue_status::accepted);  // waiting
  CHECK(s.outstanding_tokens() == (10 + 5) + (4 + 3));
  // The last prompt token is fed by the step that samples: 9 ahead of it
  // are prefill, plus the waiting prompt's 4.
  CHECK(s.queued_prefill_tokens() == 9 + 4);
  auto in = s.next_step();  // a 6-token chunk of request 1
  REQUIRE(fed_tokens(in) == 6);
  auto out = answer_all(in, 7);
  out.seconds = 0.5;
  (void)s.apply(out);
  CHECK(s.outstanding_tokens() == (4 + 5) + (4 + 3));
  CHECK(s.queued_prefill_tokens() == 3 + 4);
  CHECK(s.prefill_tokens_per_s() == Approx(12.0));  // 6 prompt tokens in 0.5 s
  CHECK(s.admitted_prompt_tokens() == 10);
  CHECK(s.cached_prompt_tokens() == 0);  // no prefix sharing here
}

TEST_CASE("migrate_all hands every sequence back with finish migrate and frees its blocks",
          "[scheduler][layout]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 4, 4), 0);
  admit_one(s, req(2, 4, 4), 1);
  REQUIRE(s.enqueue(req(3, 4, 4), 2) == enqueue_status::accepted);
  // One step: both running sequences prefill and sample a token.
  auto in = s.next_step();
  auto ev0 = s.apply(answer_all(in, 7));
  REQUIRE(delta_for(ev0, 1));
  CHECK(delta_for(ev0, 1)->tokens == std::vector<token_id>{7});
  // Request 2 is inside the next step when the unit changes layout.
  auto in2 = s.next_step();
  REQUIRE(work_for(in2, 2));
  const auto held = s.blocks_held();
  REQUIRE(held > 0);
  auto ev = s.migrate_all();
  REQUIRE(ev.deltas.size() == 3);
  std::map<uint64_t, uint32_t> sinks;
  for (const auto& rd : ev.deltas) {
    CHECK(rd.delta.finish == protocol::finish_reason::migrate);
    CHECK(rd.delta.tokens.empty());  // what was delivered stands; nothing new
    sinks[rd.delta.id] = rd.sink;
  }
  CHECK(sinks == std::map<uint64_t, uint32_t>{{1, 0}, {2, 1}, {3, 2}});
  CHECK(s.waiting() == 0);
  // Both running sequences are in the in-flight step: dropped when it returns.
  auto after = s.apply(answer_all(in2, 8));
  CHECK(after.deltas.empty());  // their tokens are not sent: the new replica recomputes them
  CHECK(s.running() == 0);
  CHECK(s.blocks_held() == 0);
  CHECK(s.migrate_all().deltas.empty());  // nothing left
}

TEST_CASE("migrate_some hands back waiting requests first, then the least advanced running ones",
          "[scheduler][layout]") {
  batch_scheduler s(small_opts());
  admit_one(s, req(1, 4, 4));
  admit_one(s, req(2, 4, 4));
  REQUIRE(s.enqueue(req(3, 4, 4), 0) == enqueue_status::accepted);
  REQUIRE(s.enqueue(req(4, 4, 4), 0) == enqueue_status::accepted);
  auto ids = [](const step_events& ev) {
    std::vector<uint64_t> out;
    for (const auto& rd : ev.deltas) {
      CHECK(rd.delta.finish == protocol::finish_reason::migrate);
      out.push_back(rd.delta.id);
    }
    return out;
  };
  CHECK(ids(s.migrate_some(1)) == std::vector<uint64_t>{4});     // the newest waiting
  CHECK(ids(s.migrate_some(2)) == std::vector<uint64_t>{3, 2});  // then the last admitted
  CHECK(s.running() == 1);
  CHECK(s.waiting() == 0);
  CHECK(ids(s.migrate_some(0)).empty());
  CHECK(ids(s.migrate_some(5)) == std::vector<uint64_t>{1});
}
