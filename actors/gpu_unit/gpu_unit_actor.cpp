#include "actors/gpu_unit/gpu_unit_actor.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <unordered_map>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::unit {

using namespace protocol;
using clock_type = std::chrono::steady_clock;

namespace {

struct held_step {
  caf::typed_response_promise<engine::step_output> promise;
  engine::step_output out;
};

/// One model's partition of a unit with a real engine: a detached actor, so
/// its steps compute on their own thread while other models' partitions
/// compute theirs. It sees only its model's slot of the unit_core.
using partition_actor = caf::typed_actor<
  caf::replies_to<step_atom, std::string, engine::step_input>::with<engine::step_output>,
  caf::replies_to<set_share_atom, std::string, double>::with<std::string>>;

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
      const int n = ++busy->now;
      for (int m = busy->most; n > m && !busy->most.compare_exchange_weak(m, n);)
        ;
      try {
        auto out = core->step(model, in);
        --busy->now;
        return out;
      } catch (const std::exception& e) {
        --busy->now;
        return caf::make_error(caf::sec::runtime_error, e.what());
      }
    },
    [core](set_share_atom, const std::string& model, double share) -> std::string {
      // Between two of this partition's steps, never inside one.
      core->engine_of(model).set_share(share);
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
  uint64_t next_job = 1;
  clock_type::time_point rate_t = clock_type::now();
  uint64_t rate_steps = 0;
};

using unit_ptr = gpu_unit_actor::stateful_pointer<unit_state>;

}  // namespace

gpu_unit_actor spawn_gpu_unit(caf::actor_system& sys, gpu_unit_options opts,
                              std::shared_ptr<unit_core> core, bool partitions) {
  auto impl = [](unit_ptr self, gpu_unit_options opts, std::shared_ptr<unit_core> core,
                 bool partitions) -> gpu_unit_actor::behavior_type {
    self->state.opts = std::move(opts);
    self->state.core = std::move(core);
    if (partitions)
      for (const auto& [model, slot] : self->state.core->models())
        self->state.partitions[model] = self->spawn<caf::detached + caf::linked>(
          partition, self->state.core, self->state.busy);
    return {
      [self](step_atom, const std::string& model,
             const engine::step_input& in) -> caf::result<engine::step_output> {
        auto& s = self->state;
        // A real engine steps on its model's partition thread; the reply goes
        // straight back to the scheduler.
        if (auto p = s.partitions.find(model); p != s.partitions.end())
          return self->delegate(p->second, step_atom::value, model, in);
        engine::step_output out;
        try {
          out = s.core->step(model, in);
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::runtime_error, e.what());
        }
        auto hold = s.core->hold_seconds(model, out);
        if (hold <= 0)
          return out;
        auto job = s.next_job++;
        auto promise = self->make_response_promise<engine::step_output>();
        s.held.emplace(job, held_step{promise, std::move(out)});
        self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(
                                   std::chrono::duration<double>(hold)),
                           step_done_atom::value, job);
        return promise;
      },
      [self](step_done_atom, uint64_t job) {
        auto it = self->state.held.find(job);
        if (it == self->state.held.end())
          return;
        it->second.promise.deliver(std::move(it->second.out));
        self->state.held.erase(it);
      },
      [self](set_share_atom, const std::string& model,
             double share) -> caf::result<std::string> {
        auto& s = self->state;
        auto p = s.partitions.find(model);
        if (p == s.partitions.end()) {
          // Sim: the engine is the actor's own; a message runs between steps.
          auto err = s.core->set_share(model, share);
          return err ? *err : std::string{};
        }
        // The unit's books first (so two moves cannot both pass the sum
        // check), then the partition applies it between two of its steps.
        if (auto err = s.core->take_share(model, share))
          return *err;
        return self->delegate(p->second, set_share_atom::value, model, share);
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
        for (const auto& [name, slot] : s.core->models())
          models[name] = {{"backend", slot.engine->backend()},
                          {"share", slot.share.load()},
                          {"steps", slot.steps.load()},
                          {"tokens_in", slot.tokens_in.load()},
                          {"busy_seconds", slot.busy_seconds()},
                          {"share_moves", slot.share_moves.load()}};
        nlohmann::json j{{"backend", s.opts.backend},
                         {"simulated", s.opts.backend == "sim"},
                         {"time_scale", s.core->time_scale()},
                         {"steps", steps},
                         {"step_rate", rate},
                         {"steps_in_flight", s.held.size()},
                         {"partitions", s.partitions.size()},
                         {"concurrent_steps_max", s.busy->most.load()},
                         {"models", models}};
        if (s.opts.backend == "sim")
          j["gpu"] = s.opts.gpu;  // the GPU type the cost model simulates
        return {s.opts.node, "gpu_unit", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts), std::move(core), partitions);
}

}  // namespace llmux::unit
