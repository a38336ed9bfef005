#include "actors/scheduler/scheduler_actor.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <unordered_map>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::scheduler {

using namespace protocol;
using clock_type = std::chrono::steady_clock;

namespace {

struct scheduler_state {
  static inline const char* name = "llmux.scheduler";
  scheduler_actor_options opts;
  std::unique_ptr<batch_scheduler> core;
  gpu_unit_actor unit;
  kv_manager_actor kv;
  std::vector<gateway_actor> sinks;
  std::unordered_map<caf::actor_addr, uint32_t> sink_index;
  std::vector<caf::actor> subscribers;
  bool alloc_in_flight = false;
  // What the kv_manager's ADBS quotas learn from this replica each tick.
  int32_t arrivals = 0;          ///< accepted since the last kv_load
  bool open_refused = false;     ///< the last kv_open granted nothing
  int64_t last_backlog = -1;     ///< tokens, as last reported
  uint64_t rejected = 0;
  uint64_t orphaned = 0;  ///< requests cancelled because their gateway went away
  // Load reporting and tokens/s.
  clock_type::time_point last_tick = clock_type::now();
  clock_type::time_point last_report = clock_type::now();
  uint64_t tokens_at_tick = 0;
  double tokens_per_s = 0;
  int32_t last_waiting = -1;
  int32_t last_running = -1;
  int64_t last_tokens = -1;
  bool draining = false;   ///< refusing new requests (a layout switch)
  uint64_t migrated = 0;   ///< sequences handed back to continue elsewhere
  // Steps past their deadline: their sequences got an error, their KV stays
  // held until the unit answers (batch_scheduler::abandon_step).
  uint64_t step_serial = 0;                     ///< of the last step sent
  std::map<int32_t, uint64_t> flying;           ///< job kind → serial of its step in flight
  uint64_t abandoned_steps = 0;
  // Sleep and wake: "ready", "sleeping", "loading" (waking) or "unloading".
  std::string residency = "ready";
  std::string last_residency;                        ///< as last reported
  uint64_t last_arrived = 0;                         ///< as last reported
  clock_type::time_point last_active = clock_type::now();  ///< a request came or a step ran
  clock_type::time_point wake_after = clock_type::now();   ///< retry a refused wake from then
  clock_type::time_point wake_began = clock_type::now();
  std::vector<caf::typed_response_promise<std::string>> wake_waiters;  ///< `wake` from the admin CLI
  /// `sleep` asked while only a step was in flight: answered once it returns.
  std::vector<caf::typed_response_promise<std::string>> sleep_waiters;
  /// Requests that arrived while asleep: when each stops being worth
  /// waiting for a wake (its TTFT budget, else the request deadline).
  std::unordered_map<uint64_t, clock_type::time_point> wake_deadline;
  std::string last_wake_error;
  uint64_t sleeps = 0;
  uint64_t wakes = 0;
  uint64_t arrived = 0;  ///< requests accepted since start (load reports)
  uint64_t wake_refusals = 0;       ///< wakes the unit could not do then
  uint64_t refused_asleep = 0;      ///< requests answered 503: no wake in time
  double wake_seconds_last = 0;
  uint64_t kv_blocks_freed_asleep = 0;
  [[nodiscard]] std::string served() const { return opts.served.empty() ? opts.model : opts.served; }
  /// What load reports and admin state say: the residency, or "draining"
  /// for an awake replica that refuses new requests (a move or a layout
  /// switch hands its sequences over).
  [[nodiscard]] std::string shown_residency() const {
    return draining && residency == "ready" ? "draining" : residency;
  }
};

using scheduler_ptr = scheduler_actor::stateful_pointer<scheduler_state>;

void pump(scheduler_ptr self);

void deliver(scheduler_ptr self, step_events& ev) {
  auto& s = self->state;
  for (auto& [seq, tokens] : ev.commits)
    self->send(s.kv, kv_commit_atom::value, s.opts.model, seq, std::move(tokens));
  if (!ev.closed.empty())
    self->send(s.kv, kv_close_atom::value, s.opts.model, std::move(ev.closed));
  if (ev.deltas.empty())
    return;
  // One message per gateway per step, whatever the number of requests.
  std::unordered_map<uint32_t, token_batch> by_sink;
  for (auto& rd : ev.deltas)
    by_sink[rd.sink].deltas.push_back(std::move(rd.delta));
  for (auto& [sink, batch] : by_sink)
    self->send(s.sinks[sink], std::move(batch));
}

/// Sends a step the core marked in flight. No request timeout: a step the
/// unit computes must come back before its sequences' KV blocks are freed
/// (the engine writes them until it returns). Its deadline is a timer
/// instead: past it, the step's clients get their error at once
/// (abandon_step), and the blocks follow when the unit answers.
void send_step(scheduler_ptr self, engine::job_kind job, engine::step_input in) {
  auto& s = self->state;
  const uint64_t serial = ++s.step_serial;
  s.flying[static_cast<int32_t>(job)] = serial;
  self->request(s.unit, caf::infinite, step_atom::value, s.opts.model, std::move(in))
    .then(
      [self, job](engine::step_output& out) {
        self->state.flying.erase(static_cast<int32_t>(job));
        self->state.last_active = clock_type::now();
        auto ev = self->state.core->apply(out, job);
        deliver(self, ev);
        pump(self);
      },
      [self, job](caf::error& err) {
        // The unit is gone or refused the step: nothing computes it.
        self->state.flying.erase(static_cast<int32_t>(job));
        auto ev = self->state.core->fail_step("engine step failed on unit '" + self->state.opts.unit
                                              + "': " + self->system().render(err), job);
        deliver(self, ev);
        pump(self);
      });
  self->delayed_send(self, std::chrono::milliseconds(s.opts.step_timeout_ms), step_timeout_atom::value, serial,
                     static_cast<int32_t>(job));
}

/// Split jobs: starts each job's step that can go (its partition is free and
/// it has work, or there are released sequences to tell the engine about).
void run_job_steps(scheduler_ptr self) {
  auto& s = self->state;
  for (auto job : {engine::job_kind::decode, engine::job_kind::prefill}) {
    if (s.core->step_in_flight(job))
      continue;
    if (!s.core->can_step(job) && !(s.core->has_released() && job == engine::job_kind::prefill))
      continue;
    send_step(self, job, s.core->next_step(job));
  }
}

void run_step(scheduler_ptr self) {
  auto& s = self->state;
  if (s.opts.core.split_jobs) {
    run_job_steps(self);
    return;
  }
  if (!s.core->can_step()) {
    if (s.core->has_released() && !s.core->step_in_flight()) {
      // Idle, but the engine still holds KV of ended sequences: tell it now.
      engine::step_input in;
      in.released = s.core->take_released();
      self->request(s.unit, std::chrono::milliseconds(s.opts.step_timeout_ms), step_atom::value,
                    s.opts.model, std::move(in))
        .then([](engine::step_output&) {}, [](caf::error&) {});
    }
    return;
  }
  send_step(self, engine::job_kind::mixed, s.core->next_step());
}

/// Admits what the KV pool allows, then runs a step; called whenever work may
/// have appeared (enqueue, step done, timer).
void wake(scheduler_ptr self);
void sleep_when_idle(scheduler_ptr self);

void pump(scheduler_ptr self) {
  auto& s = self->state;
  if (s.residency != "ready") {
    // Asleep: work that waits wakes the model (its unit makes room first).
    if (s.residency == "sleeping" && (s.core->waiting() > 0 || !s.wake_waiters.empty())
        && clock_type::now() >= s.wake_after)
      wake(self);
    return;
  }
  if (!s.sleep_waiters.empty()) {
    sleep_when_idle(self);
    if (s.residency != "ready")
      return;
  }
  // Mixed: KV changes only between steps. Split jobs: while one job's step
  // computes, the other's sequences grow and new ones are admitted.
  if (s.alloc_in_flight || (!s.opts.core.split_jobs && s.core->step_in_flight()))
    return;
  // Running sequences first: a block each for those the next step would
  // overrun; each refusal preempts the newest (by recompute).
  auto grow = s.core->growth_candidates();
  if (!grow.empty()) {
    s.alloc_in_flight = true;
    self->request(s.kv, std::chrono::milliseconds(s.opts.step_timeout_ms), kv_grow_atom::value,
                  s.opts.model, std::move(grow))
      .then(
        [self](kv_grant& grant) {
          auto& s = self->state;
          s.alloc_in_flight = false;
          auto ev = s.core->apply_growth(grant);
          deliver(self, ev);  // frees the preempted sequences' blocks first
          pump(self);
        },
        [self](caf::error&) {
          // Unknown outcome: nothing counted as granted, nothing preempted;
          // the step leaves out whoever lacks a block, the timer retries.
          self->state.alloc_in_flight = false;
          run_step(self);
        });
    return;
  }
  auto cand = s.core->admission_candidates();
  if (cand.empty()) {
    run_step(self);
    return;
  }
  s.alloc_in_flight = true;
  self->request(s.kv, std::chrono::milliseconds(s.opts.step_timeout_ms), kv_open_atom::value,
                s.opts.model, std::move(cand))
    .then(
      [self](kv_grant& grant) {
        auto& s = self->state;
        s.alloc_in_flight = false;
        s.open_refused = grant.granted == 0;
        if (grant.never) {
          // The first waiting request can never fit this unit's pool or quota.
          step_events ev;
          ev.deltas.push_back(s.core->reject_first_waiting(
            "request needs more KV cache than unit '" + s.opts.unit + "' can hold for model '"
            + s.opts.model + "'"));
          ++s.rejected;
          deliver(self, ev);
        } else if (grant.granted > 0) {
          s.core->admit(grant);
        }
        run_step(self);
        // Nothing granted: blocks are busy; the next step or timer retries.
      },
      [self](caf::error&) {
        self->state.alloc_in_flight = false;
        run_step(self);
      });
}

/// Requests that waited for a wake and can wait no longer get a 503 (with
/// Retry-After at the edge) saying why the model is not awake. Those with
/// time left keep waiting; the wake is asked again.
void refuse_late_sleepers(scheduler_ptr self, const std::string& why) {
  auto& s = self->state;
  const auto margin = std::chrono::milliseconds(2 * s.opts.load_report_ms + 100);
  const auto now = clock_type::now();
  step_events ev;
  for (auto it = s.wake_deadline.begin(); it != s.wake_deadline.end();) {
    if (now + margin < it->second) {
      ++it;
      continue;
    }
    if (auto rd = s.core->reject_waiting(it->first,
                                         "model '" + s.served() + "' is asleep on " + s.opts.replica
                                           + " and could not be woken in time: " + why,
                                         503)) {
      ev.deltas.push_back(std::move(*rd));
      ++s.refused_asleep;
    }
    it = s.wake_deadline.erase(it);
  }
  deliver(self, ev);
}

void answer_wake_waiters(scheduler_ptr self, const std::string& why) {
  auto waiters = std::move(self->state.wake_waiters);
  self->state.wake_waiters.clear();
  for (auto& p : waiters)
    p.deliver(why);
}

/// Asks the unit to build the model's engine again (it puts other idle
/// models to sleep first when its memory needs it). Requests wait meanwhile;
/// the wait counts in their TTFT and their deadline.
void wake(scheduler_ptr self) {
  auto& s = self->state;
  s.residency = "loading";
  s.wake_began = clock_type::now();
  self->request(s.unit, std::chrono::milliseconds(s.opts.step_timeout_ms), wake_atom::value, s.opts.model)
    .then(
      [self](std::string& why) {
        auto& s = self->state;
        if (why.empty()) {
          s.residency = "ready";
          ++s.wakes;
          s.wake_seconds_last = std::chrono::duration<double>(clock_type::now() - s.wake_began).count();
          s.last_active = clock_type::now();
          s.wake_deadline.clear();
          answer_wake_waiters(self, {});
          pump(self);
          return;
        }
        s.residency = "sleeping";
        ++s.wake_refusals;
        s.last_wake_error = why;
        answer_wake_waiters(self, why);
        if (why.rfind(load_failed_prefix, 0) == 0) {
          // The engine could not be built (a missing or broken file): not
          // a wait for room. Every waiting request learns why now; a new
          // request tries again, at most every few seconds.
          s.wake_after = clock_type::now() + std::chrono::seconds(5);
          for (auto& [id, deadline] : s.wake_deadline)
            deadline = clock_type::now();
          refuse_late_sleepers(self, why);
          return;
        }
        s.wake_after = clock_type::now() + std::chrono::milliseconds(s.opts.load_report_ms);
        refuse_late_sleepers(self, why);
      },
      [self](caf::error& err) {
        auto& s = self->state;
        s.residency = "sleeping";
        ++s.wake_refusals;
        s.last_wake_error = "unit '" + s.opts.unit + "' did not answer: " + self->system().render(err);
        s.wake_after = clock_type::now() + std::chrono::milliseconds(s.opts.load_report_ms);
        answer_wake_waiters(self, s.last_wake_error);
        refuse_late_sleepers(self, s.last_wake_error);
      });
}

/// Why the model cannot sleep now; empty when it can.
std::string busy_reason(scheduler_ptr self) {
  auto& s = self->state;
  if (!s.opts.can_sleep)
    return "model '" + s.served() + "' on " + s.opts.replica + " cannot sleep (its unit lays it out as replicas)";
  if (s.residency != "ready")
    return "model '" + s.served() + "' on " + s.opts.replica + " is " + s.residency;
  if (s.core->waiting() > 0 || s.core->running() > 0)
    return "model '" + s.served() + "' on " + s.opts.replica + " is busy: " + std::to_string(s.core->waiting())
           + " requests wait, " + std::to_string(s.core->running()) + " run";
  if (s.core->step_in_flight() || s.alloc_in_flight || !s.flying.empty())
    return "model '" + s.served() + "' on " + s.opts.replica + " has a step in flight";
  return {};
}

/// Puts the model to sleep: no step goes to the unit until it wakes; the
/// unit drops the engine, then the kv_manager its cached blocks. `done`
/// gets "" or why not.
void go_to_sleep(scheduler_ptr self, std::function<void(const std::string&)> done) {
  auto& s = self->state;
  s.residency = "unloading";
  // The engine that holds ended sequences' KV is going away with it.
  (void)s.core->take_released();
  self->request(s.unit, std::chrono::seconds(60), sleep_atom::value, s.opts.model)
    .then(
      [self, done](std::string& why) {
        auto& s = self->state;
        if (!why.empty()) {
          s.residency = "ready";
          done(why);
          pump(self);
          return;
        }
        s.residency = "sleeping";
        ++s.sleeps;
        self->request(s.kv, std::chrono::seconds(10), sleep_atom::value, s.opts.model)
          .then([self](int64_t freed) { self->state.kv_blocks_freed_asleep += static_cast<uint64_t>(freed); },
                [](caf::error&) {});
        done({});
        pump(self);  // requests that came meanwhile wake it again
      },
      [self, done](caf::error& err) {
        // Unknown outcome: the unit may have dropped the engine. Asleep is
        // the safe belief (a wake rebuilds it, or finds it ready).
        self->state.residency = "sleeping";
        done("unit '" + self->state.opts.unit + "' did not answer: " + self->system().render(err));
        pump(self);
      });
}

/// A `sleep` that waited for the last step in flight: now, if nothing else
/// came meanwhile (then it is refused, with why).
void sleep_when_idle(scheduler_ptr self) {
  auto& s = self->state;
  if (s.core->step_in_flight() || s.alloc_in_flight || !s.flying.empty())
    return;
  auto waiters = std::move(s.sleep_waiters);
  s.sleep_waiters.clear();
  auto why = busy_reason(self);
  if (!why.empty()) {
    for (auto& p : waiters)
      p.deliver(why);
    return;
  }
  go_to_sleep(self, [waiters](const std::string& why) mutable {
    for (auto& p : waiters)
      p.deliver(why);
  });
}

/// Arrivals and backlog (tokens the waiting requests need but could not
/// get) to the kv_manager, whose ADBS quotas follow them.
void report_kv_load(scheduler_ptr self) {
  auto& s = self->state;
  int64_t backlog = 0;
  if (s.open_refused)
    for (const auto& n : s.core->admission_candidates())
      backlog += n.tokens;
  if (s.arrivals == 0 && backlog == s.last_backlog)
    return;
  self->send(s.kv, kv_load_atom::value, s.opts.model, s.arrivals, backlog);
  s.arrivals = 0;
  s.last_backlog = backlog;
}

void report_load(scheduler_ptr self) {
  auto& s = self->state;
  auto now = clock_type::now();
  double dt = std::chrono::duration<double>(now - s.last_tick).count();
  if (dt > 0) {
    auto total = s.core->generated_tokens();
    double inst = static_cast<double>(total - s.tokens_at_tick) / dt;
    s.tokens_per_s = 0.5 * s.tokens_per_s + 0.5 * inst;  // smooth over ticks
    s.tokens_at_tick = total;
  }
  s.last_tick = now;
  auto waiting = static_cast<int32_t>(s.core->waiting());
  auto running = static_cast<int32_t>(s.core->running());
  const int64_t tokens = s.core->outstanding_tokens();
  bool changed = waiting != s.last_waiting || running != s.last_running || tokens != s.last_tokens
                 || s.shown_residency() != s.last_residency || s.arrived != s.last_arrived;
  if (s.subscribers.empty() || (!changed && now - s.last_report < std::chrono::seconds(1)))
    return;
  load_report rep{s.opts.replica, s.opts.model, waiting, running, s.tokens_per_s,
                  tokens, s.core->queued_prefill_tokens(), s.core->prefill_tokens_per_s(), s.shown_residency(),
                  s.arrived};
  for (auto& sub : s.subscribers)
    self->send(caf::actor_cast<router_actor>(sub), rep);
  s.last_waiting = waiting;
  s.last_running = running;
  s.last_tokens = tokens;
  s.last_residency = s.shown_residency();
  s.last_arrived = s.arrived;
  s.last_report = now;
}

}  // namespace

scheduler_actor spawn_scheduler(caf::actor_system& sys, scheduler_actor_options opts,
                                gpu_unit_actor unit, kv_manager_actor kv) {
  auto impl = [](scheduler_ptr self, scheduler_actor_options opts, gpu_unit_actor unit,
                 kv_manager_actor kv) -> scheduler_actor::behavior_type {
    auto& s = self->state;
    s.core = std::make_unique<batch_scheduler>(opts.core);
    s.opts = std::move(opts);
    s.unit = std::move(unit);
    s.kv = std::move(kv);
    if (s.opts.start_asleep)
      s.residency = "sleeping";
    if (s.opts.can_sleep)
      self->send(s.unit, attach_atom::value, s.opts.model, caf::actor_cast<caf::actor>(self));
    self->set_down_handler([self](caf::down_msg& dm) {
      // A gateway went away (its node died or the link timed out): nobody
      // will read those tokens, so stop computing them and free their KV.
      auto& s = self->state;
      auto it = s.sink_index.find(dm.source);
      if (it == s.sink_index.end() || s.sinks[it->second].address() != dm.source)
        return;
      size_t n = 0;
      std::vector<uint64_t> closed;
      (void)s.core->cancel_sink(it->second, &n, &closed);
      s.orphaned += n;
      if (!closed.empty())
        self->send(s.kv, kv_close_atom::value, s.opts.model, std::move(closed));
      pump(self);
    });
    self->send(self, tick_atom::value);
    return {
      [self](enqueue_atom, gen_request& req, gateway_actor& gw) -> enqueue_reply {
        auto& s = self->state;
        auto [it, fresh] = s.sink_index.emplace(gw.address(), static_cast<uint32_t>(s.sinks.size()));
        if (fresh) {
          s.sinks.push_back(gw);
          self->monitor(gw);
        } else if (caf::actor_cast<caf::strong_actor_ptr>(s.sinks[it->second]).get()
                   != caf::actor_cast<caf::strong_actor_ptr>(gw).get()) {
          // Same gateway (handles compare by address), new proxy: the
          // connection to it was lost and re-established, and the old proxy
          // silently drops what it is sent.
          s.sinks[it->second] = gw;
          self->monitor(gw);
        }
        enqueue_reply rep;
        rep.replica = s.opts.replica;
        rep.scheduler = caf::actor_cast<caf::actor>(self);
        if (s.draining) {
          // Its unit is changing layout: the router offers it elsewhere.
          rep.status = 429;
          rep.message = "replica " + s.opts.replica + " is draining (its unit is changing layout)";
          ++s.rejected;
          return rep;
        }
        const uint64_t id = req.id;
        const int32_t budget_ms = req.ttft_budget_ms > 0 ? req.ttft_budget_ms : s.opts.step_timeout_ms;
        // A sequence another replica handed back, continued here with the
        // tokens it delivered (the prompt past what the client sent): not a
        // new arrival, so the rates the controller and ADBS measure count
        // each request once.
        const bool continued = req.original_prompt_len > 0
                               && req.prompt.size() > static_cast<size_t>(req.original_prompt_len);
        switch (s.core->enqueue(std::move(req), it->second)) {
          case enqueue_status::accepted:
            rep.ok = true;
            if (!continued) {
              ++s.arrivals;
              ++s.arrived;
            }
            s.last_active = clock_type::now();
            if (s.residency != "ready")
              s.wake_deadline[id] = s.last_active + std::chrono::milliseconds(budget_ms);
            break;
          case enqueue_status::queue_full:
            rep.status = 429;
            rep.message = "model '" + s.served() + "' is overloaded: "
                          + std::to_string(s.core->waiting()) + " requests already wait on "
                          + s.opts.replica;
            break;
          case enqueue_status::prompt_too_long:
            rep.status = 400;
            rep.message = "prompt does not fit the context window ("
                          + std::to_string(s.opts.core.context_length) + " tokens)";
            break;
          case enqueue_status::empty_prompt:
            rep.status = 400;
            rep.message = "empty prompt";
            break;
          case enqueue_status::duplicate_id:
            // Its earlier copy is still here: a sequence this replica just
            // handed back (a layout switch) stays until its step returns.
            // 429: the router offers it to the next replica.
            rep.status = 429;
            rep.message = "replica " + s.opts.replica + " is still finishing an earlier copy of this request";
            break;
        }
        if (!rep.ok)
          ++s.rejected;
        pump(self);
        return rep;
      },
      [self](drain_atom, bool on) -> int32_t {
        auto& s = self->state;
        s.draining = on;
        if (!on)
          return 0;
        auto ev = s.core->migrate_all();
        const auto n = static_cast<int32_t>(ev.deltas.size());
        s.migrated += static_cast<uint64_t>(n);
        deliver(self, ev);
        return n;
      },
      [self](hand_back_atom, double fraction) -> int32_t {
        auto& s = self->state;
        const double total = static_cast<double>(s.core->waiting() + s.core->running());
        auto ev = s.core->migrate_some(static_cast<size_t>(std::floor(total * std::clamp(fraction, 0.0, 1.0))));
        const auto n = static_cast<int32_t>(ev.deltas.size());
        s.migrated += static_cast<uint64_t>(n);
        deliver(self, ev);
        pump(self);
        return n;
      },
      [self](cancel_atom, uint64_t id) {
        self->state.wake_deadline.erase(id);
        if (self->state.core->cancel(id) > 0)
          self->send(self->state.kv, kv_close_atom::value, self->state.opts.model,
                     std::vector<uint64_t>{id});
        pump(self);
      },
      [self](subscribe_atom, caf::actor& sub) {
        // A router that re-subscribes after a reconnect has the same address
        // but a fresh handle: replace the stale one.
        auto& subs = self->state.subscribers;
        auto it = std::find_if(subs.begin(), subs.end(),
                               [&](const caf::actor& a) { return a.address() == sub.address(); });
        if (it != subs.end())
          *it = std::move(sub);
        else
          subs.push_back(std::move(sub));
        self->state.last_waiting = -1;  // report at the next tick
      },
      [self](tick_atom) {
        auto& s = self->state;
        report_load(self);
        report_kv_load(self);
        if (s.residency == "sleeping" && !s.wake_deadline.empty() && !s.last_wake_error.empty())
          refuse_late_sleepers(self, s.last_wake_error);
        if (s.opts.idle_sleep_s > 0 && busy_reason(self).empty()
            && clock_type::now() - s.last_active >= std::chrono::duration<double>(s.opts.idle_sleep_s))
          go_to_sleep(self, [](const std::string&) {});
        pump(self);
        self->delayed_send(self, std::chrono::milliseconds(self->state.opts.load_report_ms),
                           tick_atom::value);
      },
      [self](step_timeout_atom, uint64_t serial, int32_t job) {
        auto& s = self->state;
        auto it = s.flying.find(job);
        if (it == s.flying.end() || it->second != serial)
          return;  // that step came back in time
        ++s.abandoned_steps;
        auto ev = s.core->abandon_step("engine step on unit '" + s.opts.unit + "' took longer than "
                                         + std::to_string(s.opts.step_timeout_ms) + " ms",
                                       static_cast<engine::job_kind>(job));
        deliver(self, ev);
      },
      [self](sleep_atom) -> caf::result<std::string> {
        auto& s = self->state;
        if (s.residency == "sleeping")
          return std::string{};
        if (s.opts.can_sleep && s.residency == "ready" && s.core->waiting() == 0
            && (s.core->step_in_flight() || s.alloc_in_flight || !s.flying.empty())) {
          // A step in flight (the last of a drained replica, whose sequences
          // count as running until it returns): decide when it has.
          auto promise = self->make_response_promise<std::string>();
          s.sleep_waiters.push_back(promise);
          return promise;
        }
        if (auto why = busy_reason(self); !why.empty())
          return why;
        auto promise = self->make_response_promise<std::string>();
        go_to_sleep(self, [promise](const std::string& why) mutable { promise.deliver(why); });
        return promise;
      },
      [self](wake_atom) -> caf::result<std::string> {
        auto& s = self->state;
        if (s.residency == "ready")
          return std::string{};
        auto promise = self->make_response_promise<std::string>();
        s.wake_waiters.push_back(promise);
        if (s.residency == "sleeping")
          wake(self);
        // loading: answered when it ends; unloading: woken once asleep.
        else if (s.residency == "unloading")
          s.wake_after = clock_type::now();
        return promise;
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        nlohmann::json j{{"model", s.opts.model},
                         {"unit", s.opts.unit},
                         {"replica", s.opts.replica},
                         {"waiting", s.core->waiting()},
                         {"running", s.core->running()},
                         {"finished", s.core->finished()},
                         {"rejected", s.rejected},
                         {"orphaned", s.orphaned},
                         {"steps", s.core->steps()},
                         {"generated_tokens", s.core->generated_tokens()},
                         {"tokens_per_s", s.tokens_per_s},
                         {"kv_token_blocks_held", s.core->blocks_held()},
                         {"preemptions", s.core->preemptions()},
                         {"preempted_waiting", s.core->preempted_waiting()},
                         {"served_model", s.served()},
                         {"draining", s.draining},
                         {"migrated", s.migrated},
                         {"abandoned_steps", s.abandoned_steps},
                         {"outstanding_tokens", s.core->outstanding_tokens()},
                         {"queued_prefill_tokens", s.core->queued_prefill_tokens()},
                         {"prefill_tokens_per_s", s.core->prefill_tokens_per_s()},
                         {"prompt_tokens_admitted", s.core->admitted_prompt_tokens()},
                         {"prompt_tokens_cached", s.core->cached_prompt_tokens()},
                         {"gateways", s.sinks.size()},
                         {"residency", s.shown_residency()},
                         {"idle_sleep_s", s.opts.idle_sleep_s},
                         {"sleeps", s.sleeps},
                         {"wakes", s.wakes},
                         {"wake_refusals", s.wake_refusals},
                         {"wake_seconds_last", s.wake_seconds_last},
                         {"refused_asleep", s.refused_asleep},
                         {"last_wake_error", s.last_wake_error},
                         {"kv_blocks_freed_asleep", s.kv_blocks_freed_asleep}};
        return {s.opts.node, "scheduler", s.opts.replica, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts), std::move(unit), std::move(kv));
}

}  // namespace llmux::scheduler
