#include "actors/gpu_unit/gpu_unit_actor.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/gpu_unit/unit_policy.hpp"

namespace llmux::unit {

using namespace protocol;
using clock_type = std::chrono::steady_clock;

namespace {

struct held_step {
  caf::typed_response_promise<engine::step_output> promise;
  engine::step_output out;
  bool temporal = false;  ///< the unit's one running step (temporal mode)
  std::string model;  ///< empty for a step that feeds nothing
};

/// A step waiting for the unit (temporal mode): the step_queue holds its
/// ticket and picks it.
struct queued_step {
  caf::typed_response_promise<engine::step_output> promise;
  engine::step_input in;
};

/// Whether a step computes prompt tokens (a prefill job in ADBS's terms):
/// some sequence feeds positions before the end of its prompt, or more than
/// one token (a recompute after preemption).
bool has_prefill(const engine::step_input& in) {
  for (const auto& w : in.seqs)
    if (w.context_len < w.prompt_len || w.tokens.size() > 1)
      return true;
  return false;
}

/// One job's partition of a unit with a real engine: a detached actor, so
/// its steps compute on their own thread while other partitions compute
/// theirs. A model with one mixed job has one; a model with split jobs has
/// two (prefill, decode) over one engine. It sees only its model's slot of
/// the unit_core.
using partition_actor = caf::typed_actor<
  caf::replies_to<step_atom, std::string, engine::step_input>::with<engine::step_output>,
  caf::replies_to<set_share_atom, std::string, int32_t, double, double>::with<std::string>,
  // Sleep and wake of its model: the engine is dropped or built on this
  // thread, between steps (there are none: the model's scheduler waits).
  caf::replies_to<wake_atom, std::string>::with<std::string>,
  caf::replies_to<sleep_atom, std::string>::with<std::string>>;

/// The partition key of a job: the model's name for its mixed job.
std::string job_key(const std::string& model, engine::job_kind job) {
  return job == engine::job_kind::mixed ? model : model + "/" + engine::job_name(job);
}

/// Steps running now on the unit's partitions, and the most seen at once.
struct concurrency {
  std::atomic<int> now{0};
  std::atomic<int> most{0};
};

partition_actor::behavior_type partition(partition_actor::pointer self,
                                         std::shared_ptr<unit_core> core,
                                         std::shared_ptr<concurrency> busy) {
  (void)self;
  return {
    [core, busy](step_atom, const std::string& model,
                 const engine::step_input& in) -> caf::result<engine::step_output> {
      // Steps that compute (not release-only ones) count as running.
      const int counted = in.seqs.empty() ? 0 : 1;
      const int n = busy->now += counted;
      for (int m = busy->most; n > m && !busy->most.compare_exchange_weak(m, n);)
        ;
      try {
        auto out = core->step(model, in);
        busy->now -= counted;
        return out;
      } catch (const std::exception& e) {
        busy->now -= counted;
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
    },
    [core](set_share_atom, const std::string& model, int32_t job, double offset, double share) -> std::string {
      // Between two of this partition's steps, never inside one (a sleeping
      // model's engine gets its partition when it loads).
      core->place_job(model, static_cast<engine::job_kind>(job), offset, share);
      return {};
    },
    [core](wake_atom, const std::string& model) -> std::string {
      try {
        core->load(model);
        return {};
      } catch (const std::exception& e) {
        return std::string{load_failed_prefix} + model + "' failed: " + e.what();
      }
    },
    [core](sleep_atom, const std::string& model) -> std::string {
      try {
        core->unload(model);
        return {};
      } catch (const std::exception& e) {
        return e.what();
      }
    },
  };
}

struct unit_state {
  static inline const char* name = "llmux.gpu_unit";
  gpu_unit_options opts;
  std::shared_ptr<unit_core> core;
  std::map<std::string, partition_actor> partitions;  ///< real engines only
  std::shared_ptr<concurrency> busy = std::make_shared<concurrency>();
  std::unordered_map<uint64_t, held_step> held;
  std::map<std::string, int> held_of;  ///< per model
  size_t held_max = 0;  ///< most steps in flight at once
  uint64_t next_job = 1;
  // Temporal mode: the queue's arbiter picks which step runs when the unit frees up.
  std::unique_ptr<step_queue> queue;
  std::unordered_map<uint64_t, queued_step> queued;  ///< by ticket
  uint64_t next_ticket = 1;
  clock_type::time_point start = clock_type::now();
  clock_type::time_point rate_t = clock_type::now();
  uint64_t rate_steps = 0;
  // Sleep and wake (opts.memory is the book).
  std::map<std::string, caf::actor> schedulers;  ///< by model, to ask victims to sleep
  std::map<std::string, std::vector<caf::typed_response_promise<std::string>>> waiters;  ///< wakes asked
  std::deque<std::string> wake_queue;  ///< models to wake, one at a time while room is made
  bool making_room = false;
  std::map<std::string, clock_type::time_point> load_started;
  std::map<std::string, uint64_t> sim_wake;  ///< model → serial of its modelled wake
  uint64_t next_wake = 1;
  [[nodiscard]] double now_s() const { return std::chrono::duration<double>(clock_type::now() - start).count(); }
};

using unit_ptr = gpu_unit_actor::stateful_pointer<unit_state>;

/// Runs a sim step now and delivers its output to `promise` after its
/// modelled time (at once when there is none). Returns false if the step
/// failed (the promise has the error) or was delivered at once.
bool run_sim_step(unit_ptr self, const std::string& model, const engine::step_input& in,
                  caf::typed_response_promise<engine::step_output> promise, bool temporal) {
  auto& s = self->state;
  engine::step_output out;
  try {
    out = s.core->step(model, in);
  } catch (const std::exception& e) {
    promise.deliver(caf::make_error(caf::sec::runtime_error, e.what()));
    return false;
  }
  auto hold = s.core->hold_seconds(model, out);
  if (hold <= 0) {
    promise.deliver(std::move(out));
    return false;
  }
  auto job = s.next_job++;
  // Only steps that feed tokens count as the model's steps at once.
  const std::string counted = in.seqs.empty() ? std::string{} : model;
  s.held.emplace(job, held_step{promise, std::move(out), temporal, counted});
  s.held_max = std::max(s.held_max, s.held.size());
  if (!counted.empty())
    s.core->note_running(model, ++s.held_of[model]);
  self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(hold)),
                     step_done_atom::value, job);
  return true;
}

/// Temporal mode: while the unit is free, the queue's next grant runs.
void run_next(unit_ptr self) {
  auto& s = self->state;
  while (auto g = s.queue->start_next()) {
    auto it = s.queued.find(g->ticket);
    auto q = std::move(it->second);
    s.queued.erase(it);
    if (s.partitions.empty()) {
      if (!run_sim_step(self, g->model, q.in, q.promise, true))
        s.queue->finish();
      continue;
    }
    // A real engine: the model's partition computes the step on the whole
    // unit's threads; the next grant waits for its reply.
    auto p = s.partitions.find(g->model);
    auto promise = q.promise;
    self->request(p->second, caf::infinite, step_atom::value, g->model, std::move(q.in))
      .then(
        [self, promise](engine::step_output& out) mutable {
          promise.deliver(std::move(out));
          self->state.queue->finish();
          run_next(self);
        },
        [self, promise](caf::error& err) mutable {
          promise.deliver(std::move(err));
          self->state.queue->finish();
          run_next(self);
        });
  }
}

/// The partition that loads and drops a model's engine: its mixed job's, or
/// its prefill job's (a split model's two partitions share one engine).
partition_actor* engine_partition(unit_state& s, const std::string& model) {
  for (const auto& key : {model, job_key(model, engine::job_kind::prefill)}) {
    auto p = s.partitions.find(key);
    if (p != s.partitions.end())
      return &p->second;
  }
  return nullptr;
}

void answer_wakes(unit_ptr self, const std::string& model, const std::string& why) {
  auto it = self->state.waiters.find(model);
  if (it == self->state.waiters.end())
    return;
  auto promises = std::move(it->second);
  self->state.waiters.erase(it);
  for (auto& p : promises)
    p.deliver(why);
}

void process_wakes(unit_ptr self);

/// The engine of `model` is built (or failed to be): book it, answer.
void loaded(unit_ptr self, const std::string& model, const std::string& err) {
  auto& s = self->state;
  const double took = std::chrono::duration<double>(clock_type::now() - s.load_started[model]).count();
  if (err.empty()) {
    s.opts.memory.woke(model, took);
    s.opts.memory.touch(model, s.now_s());
    caf::aout(self) << "llmux: unit " << s.opts.name << ": " << model << " is awake ("
                    << static_cast<int>(took * 1e3) << " ms" << (s.opts.backend == "sim" ? ", modelled" : "") << ")"
                    << std::endl;
  } else {
    s.opts.memory.set_state(model, residency_state::sleeping);
    caf::aout(self) << "llmux: unit " << s.opts.name << ": waking " << model << " failed: " << err << std::endl;
  }
  answer_wakes(self, model, err);
  process_wakes(self);
}

void start_load(unit_ptr self, const std::string& model) {
  auto& s = self->state;
  caf::aout(self) << "llmux: unit " << s.opts.name << ": waking " << model << " ("
                  << (s.opts.memory.models().at(model).bytes >> 20) << " MiB of weights; "
                  << (s.opts.memory.bytes_awake() >> 20) << " MiB awake of "
                  << (s.opts.memory.cap() > 0 ? std::to_string(s.opts.memory.cap() >> 20) : std::string{"no limit"})
                  << ")" << std::endl;
  s.opts.memory.set_state(model, residency_state::loading);
  s.load_started[model] = clock_type::now();
  if (auto* p = engine_partition(s, model)) {
    self->request(*p, caf::infinite, wake_atom::value, model)
      .then([self, model](std::string& err) { loaded(self, model, err); },
            [self, model](caf::error& err) { loaded(self, model, self->system().render(err)); });
    return;
  }
  // Sim: the engine is the actor's own and builds at once; the wake takes
  // the modelled time of copying the weights back to the device.
  try {
    s.core->load(model);
  } catch (const std::exception& e) {
    loaded(self, model, std::string{load_failed_prefix} + model + "' failed: " + e.what());
    return;
  }
  auto w = s.opts.sim_wake_s.find(model);
  const double hold = w == s.opts.sim_wake_s.end() ? 0 : w->second * s.core->time_scale();
  const uint64_t serial = s.next_wake++;
  s.sim_wake[model] = serial;
  self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(hold)),
                     woke_atom::value, model, serial);
}

/// Wakes the queued models one at a time: a model that fits loads; one that
/// does not asks the least recently used ready models' schedulers to sleep
/// (each agrees only when it has nothing queued or running), then tries
/// again; when nothing more can sleep, its wakes are answered with why.
void make_room(unit_ptr self, const std::string& model, std::set<std::string> refused);

void process_wakes(unit_ptr self) {
  auto& s = self->state;
  while (!s.making_room && !s.wake_queue.empty()) {
    auto model = s.wake_queue.front();
    s.wake_queue.pop_front();
    make_room(self, model, {});
  }
}

void make_room(unit_ptr self, const std::string& model, std::set<std::string> refused) {
  auto& s = self->state;
  auto plan = s.opts.memory.plan_wake(model, refused);
  switch (plan.kind) {
    case residency::wake_plan::ready:
      answer_wakes(self, model, {});
      return;
    case residency::wake_plan::busy:
      // Loading: its waiters are answered when it ends. Unloading: its
      // scheduler asks again once the sleep is done.
      if (s.opts.memory.state(model) == residency_state::unloading)
        answer_wakes(self, model, "model '" + model + "' is going to sleep; ask again");
      return;
    case residency::wake_plan::fits:
      start_load(self, model);
      return;
    case residency::wake_plan::too_big:
    case residency::wake_plan::no_room:
      answer_wakes(self, model, plan.why);
      return;
    case residency::wake_plan::evict:
      break;
  }
  const auto victim = plan.victims.front();
  auto sched = s.schedulers.find(victim);
  if (sched == s.schedulers.end()) {
    refused.insert(victim);
    make_room(self, model, std::move(refused));
    return;
  }
  s.making_room = true;
  self->request(caf::actor_cast<scheduler_actor>(sched->second), std::chrono::seconds(60), sleep_atom::value)
    .then(
      [self, model, victim, refused](std::string& why) mutable {
        self->state.making_room = false;
        if (!why.empty())
          refused.insert(victim);
        make_room(self, model, std::move(refused));
        process_wakes(self);
      },
      [self, model, victim, refused](caf::error&) mutable {
        self->state.making_room = false;
        refused.insert(victim);
        make_room(self, model, std::move(refused));
        process_wakes(self);
      });
}

}  // namespace

gpu_unit_actor spawn_gpu_unit(caf::actor_system& sys, gpu_unit_options opts,
                              std::shared_ptr<unit_core> core, bool partitions) {
  auto impl = [](unit_ptr self, gpu_unit_options opts, std::shared_ptr<unit_core> core,
                 bool partitions) -> gpu_unit_actor::behavior_type {
    self->state.opts = std::move(opts);
    self->state.core = std::move(core);
    if (self->state.opts.temporal || self->state.opts.shared_prefill) {
      auto kind = parse_policy(self->state.opts.policy).value_or(policy_kind::adbs);
      self->state.queue = std::make_unique<step_queue>(kind, self->state.opts.max_prefill_streak);
      for (const auto& [model, slot] : self->state.core->models())
        self->state.queue->add_model(model);
    }
    if (partitions)
      for (const auto& [model, slot] : self->state.core->models())
        for (auto job : slot.split ? std::vector<engine::job_kind>{engine::job_kind::prefill,
                                                                   engine::job_kind::decode}
                                   : std::vector<engine::job_kind>{engine::job_kind::mixed})
          self->state.partitions[job_key(model, job)] = self->spawn<caf::detached + caf::linked>(
            partition, self->state.core, self->state.busy);
    return {
      [self](step_atom, const std::string& model,
             const engine::step_input& in) -> caf::result<engine::step_output> {
        auto& s = self->state;
        if (!in.seqs.empty())
          s.opts.memory.touch(model, s.now_s());
        // A real engine steps on its job's partition thread; the reply goes
        // straight back to the scheduler. (A mixed step of a split model,
        // such as a release-only one, goes to its prefill partition.)
        // Temporal units queue every step that feeds something; a shared
        // prefill lane queues prefill steps.
        const bool queued = s.queue && !in.seqs.empty()
                            && (!s.opts.shared_prefill || in.job == engine::job_kind::prefill);
        if (!s.partitions.empty() && !queued) {
          auto p = s.partitions.find(job_key(model, in.job));
          if (p == s.partitions.end())
            p = s.partitions.find(job_key(model, engine::job_kind::prefill));
          if (p == s.partitions.end())
            p = s.partitions.find(model);
          if (p != s.partitions.end())
            return self->delegate(p->second, step_atom::value, model, in);
        }
        auto promise = self->make_response_promise<engine::step_output>();
        if (queued) {
          // Temporal: the step waits its turn on the whole unit (or on the
          // shared prefill lane).
          const uint64_t ticket = s.next_ticket++;
          s.queued.emplace(ticket, queued_step{promise, in});
          auto replaced = s.queue->submit(model, ticket, has_prefill(in),
                                          std::chrono::duration<double>(clock_type::now() - s.start).count());
          if (replaced) {
            // A scheduler sends its next step only after the last one's
            // answer; one still queued was given up on (its request timed
            // out): it is replaced, and told so.
            auto old = s.queued.find(*replaced);
            old->second.promise.deliver(caf::make_error(caf::sec::request_timeout,
                                                        "step replaced by a newer one of the same model"));
            s.queued.erase(old);
          }
          run_next(self);
          return promise;
        }
        run_sim_step(self, model, in, promise, false);
        return promise;
      },
      [self](step_done_atom, uint64_t job) {
        auto it = self->state.held.find(job);
        if (it == self->state.held.end())
          return;
        it->second.promise.deliver(std::move(it->second.out));
        const bool temporal = it->second.temporal;
        if (!it->second.model.empty())
          --self->state.held_of[it->second.model];
        self->state.held.erase(it);
        if (temporal) {
          self->state.queue->finish();
          run_next(self);
        }
      },
      [self](set_share_atom, const std::string& target,
             double share) -> caf::result<std::string> {
        auto& s = self->state;
        if (s.partitions.empty()) {
          // Sim: the engine is the actor's own; a message runs between steps.
          auto err = s.core->set_share(target, share);
          return err ? *err : std::string{};
        }
        // The unit's books first (so two moves cannot both pass the sum
        // check), then each job whose partition moved (its share, or where
        // it starts) applies it between two of its own steps.
        unit_core::share_change change;
        if (auto err = s.core->take_share(target, share, &change))
          return *err;
        auto promise = self->make_response_promise<std::string>();
        auto left = std::make_shared<size_t>(change.places.size());
        for (const auto& place : change.places) {
          auto p = s.partitions.find(job_key(place.model, place.job));
          if (p == s.partitions.end()) {
            promise.deliver(std::string{"no partition for "} + job_key(place.model, place.job));
            return promise;
          }
          self->request(p->second, caf::infinite, set_share_atom::value, place.model,
                        static_cast<int32_t>(place.job), place.offset, place.share)
            .then([promise, left](std::string&) mutable {
                    if (--*left == 0)
                      promise.deliver(std::string{});
                  },
                  [promise](caf::error& err) mutable {
                    promise.deliver(caf::make_error(caf::sec::runtime_error, to_string(err)));
                  });
        }
        return promise;
      },
      [self](attach_atom, const std::string& model, caf::actor& sched) {
        self->state.schedulers[model] = std::move(sched);
      },
      [self](wake_atom, const std::string& model) -> caf::result<std::string> {
        auto& s = self->state;
        if (!s.opts.memory.has(model))
          return s.core->models().count(model) ? std::string{} : "model '" + model + "' is not on this unit";
        if (s.opts.memory.state(model) == residency_state::ready)
          return std::string{};
        auto promise = self->make_response_promise<std::string>();
        auto& w = s.waiters[model];
        w.push_back(promise);
        if (w.size() == 1 && s.opts.memory.state(model) != residency_state::loading)
          s.wake_queue.push_back(model);
        process_wakes(self);
        return promise;
      },
      [self](woke_atom, const std::string& model, uint64_t serial) {
        auto it = self->state.sim_wake.find(model);
        if (it == self->state.sim_wake.end() || it->second != serial)
          return;
        self->state.sim_wake.erase(it);
        loaded(self, model, {});
      },
      [self](sleep_atom, const std::string& model) -> caf::result<std::string> {
        auto& s = self->state;
        if (!s.opts.memory.has(model))
          return "model '" + model + "' cannot sleep on unit '" + s.opts.name + "'";
        const auto st = s.opts.memory.state(model);
        if (st == residency_state::sleeping)
          return std::string{};
        if (st != residency_state::ready)
          return "model '" + model + "' is " + to_string(st);
        s.opts.memory.set_state(model, residency_state::unloading);
        auto done = [self, model](const std::string& err) {
          auto& s = self->state;
          caf::aout(self) << "llmux: unit " << s.opts.name << ": " << model
                          << (err.empty() ? " is asleep" : " did not go to sleep: " + err) << std::endl;
          if (err.empty())
            s.opts.memory.slept(model);
          else
            s.opts.memory.set_state(model, residency_state::ready);
          process_wakes(self);
        };
        if (auto* p = engine_partition(s, model)) {
          auto promise = self->make_response_promise<std::string>();
          self->request(*p, caf::infinite, sleep_atom::value, model)
            .then(
              [done, promise](std::string& err) mutable {
                done(err);
                promise.deliver(err);
              },
              [self, done, promise](caf::error& err) mutable {
                auto why = self->system().render(err);
                done(why);
                promise.deliver(why);
              });
          return promise;
        }
        std::string err;
        try {
          s.core->unload(model);
        } catch (const std::exception& e) {
          err = e.what();
        }
        done(err);
        return err;
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto now = clock_type::now();
        double dt = std::chrono::duration<double>(now - s.rate_t).count();
        auto steps = s.core->total_steps();
        double rate = dt > 0 ? static_cast<double>(steps - s.rate_steps) / dt : 0;
        s.rate_t = now;
        s.rate_steps = steps;
        auto models = nlohmann::json::object();
        for (const auto& [name, slot] : s.core->models()) {
          models[name] = {{"backend", slot.backend},
                          {"share", slot.total_share()},
                          {"steps", slot.steps.load()},
                          {"tokens_in", slot.tokens_in.load()},
                          {"busy_seconds", slot.busy_seconds()},
                          {"share_moves", slot.share_moves.load()},
                          {"steps_at_once_max", slot.running_max.load()}};
          if (s.opts.memory.has(name)) {
            const auto& r = s.opts.memory.models().at(name);
            models[name]["state"] = to_string(r.state);
            models[name]["weights_mib"] = static_cast<double>(r.bytes) / (1 << 20);
            models[name]["wakes"] = r.wakes;
            models[name]["sleeps"] = r.sleeps;
            models[name]["wake_seconds_last"] = r.last_wake_seconds;
            models[name]["wake_seconds_max"] = r.wake_seconds_max;
            models[name]["wake_seconds_total"] = r.wake_seconds_total;
          } else {
            models[name]["state"] = "ready";
          }
          // Each job's partition and share: one mixed job, or prefill and
          // decode side by side.
          const auto decode_steps = slot.decode_steps.load();
          const double decode_busy = static_cast<double>(slot.decode_busy_ns.load()) * 1e-9;
          if (slot.split)
            models[name]["jobs"] = {
              {"prefill", {{"share", slot.share.load()},
                           {"steps", slot.steps.load() - decode_steps},
                           {"busy_seconds", slot.busy_seconds() - decode_busy}}},
              {"decode", {{"share", slot.decode_share.load()},
                          {"steps", decode_steps},
                          {"busy_seconds", decode_busy}}}};
          else
            models[name]["jobs"] = {{"mixed", {{"share", slot.share.load()},
                                               {"steps", slot.steps.load()},
                                               {"busy_seconds", slot.busy_seconds()}}}};
        }
        nlohmann::json j{{"backend", s.opts.backend},
                         {"simulated", s.opts.backend == "sim"},
                         {"time_scale", s.core->time_scale()},
                         {"steps", steps},
                         {"step_rate", rate},
                         {"steps_in_flight", s.held.size()},
                         {"steps_in_flight_max", s.held_max},
                         {"multiplex", s.opts.temporal ? "temporal" : "spatial"},
                         {"prefill_lane", s.core->prefill_lane()},
                         {"partitions", s.partitions.size()},
                         {"concurrent_steps_max", s.busy->most.load()},
                         {"memory_mib", static_cast<double>(s.opts.memory.cap()) / (1 << 20)},
                         {"memory_awake_mib", static_cast<double>(s.opts.memory.bytes_awake()) / (1 << 20)},
                         {"models", models}};
        if (s.opts.backend == "sim")
          j["gpu"] = s.opts.gpu;  // the GPU type the cost model simulates
        if (s.queue) {
          j["order"] = std::string{policy_name(s.queue->arbiter().kind())};
          j["queued_steps"] = s.queue->queued();
          j["grants"] = s.queue->grants();
          auto grants = nlohmann::json::array();
          for (const auto& g : s.queue->recent())
            grants.push_back({{"model", g.model}, {"job", g.prefill ? "prefill" : "decode"}, {"waited", g.waited}});
          j["recent_grants"] = grants;
          for (const auto& slot : s.queue->arbiter().models()) {
            models[slot.name]["prefill_grants"] = slot.prefill.granted;
            models[slot.name]["decode_grants"] = slot.decode.granted;
            auto w = s.queue->waited_max().find(slot.name);
            models[slot.name]["prefill_waited_max"] = w == s.queue->waited_max().end() ? 0 : w->second.first;
            models[slot.name]["decode_waited_max"] = w == s.queue->waited_max().end() ? 0 : w->second.second;
          }
          j["models"] = models;
        }
        return {s.opts.node, "gpu_unit", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts), std::move(core), partitions);
}

}  // namespace llmux::unit
