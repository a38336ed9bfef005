#include "actors/gpu_unit/gpu_unit_actor.hpp"

#include <atomic>
#include <chrono>
#include <map>
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
  caf::replies_to<set_share_atom, std::string, int32_t, double, double>::with<std::string>>;

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
      // Between two of this partition's steps, never inside one.
      core->engine_of(model).set_job_partition(static_cast<engine::job_kind>(job), offset, share);
      return {};
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
          models[name] = {{"backend", slot.engine->backend()},
                          {"share", slot.total_share()},
                          {"steps", slot.steps.load()},
                          {"tokens_in", slot.tokens_in.load()},
                          {"busy_seconds", slot.busy_seconds()},
                          {"share_moves", slot.share_moves.load()},
                          {"steps_at_once_max", slot.running_max.load()}};
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
