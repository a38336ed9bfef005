#include "actors/gpu_unit/gpu_unit_actor.hpp"

#include <chrono>
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

struct unit_state {
  static inline const char* name = "llmux.gpu_unit";
  gpu_unit_options opts;
  std::shared_ptr<unit_core> core;
  std::unordered_map<uint64_t, held_step> held;
  uint64_t next_job = 1;
  clock_type::time_point rate_t = clock_type::now();
  uint64_t rate_steps = 0;
};

using unit_ptr = gpu_unit_actor::stateful_pointer<unit_state>;

}  // namespace

gpu_unit_actor spawn_gpu_unit(caf::actor_system& sys, gpu_unit_options opts,
                              std::shared_ptr<unit_core> core, bool own_thread) {
  auto impl = [](unit_ptr self, gpu_unit_options opts,
                 std::shared_ptr<unit_core> core) -> gpu_unit_actor::behavior_type {
    self->state.opts = std::move(opts);
    self->state.core = std::move(core);
    return {
      [self](step_atom, const std::string& model,
             const engine::step_input& in) -> caf::result<engine::step_output> {
        auto& s = self->state;
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
      [self](set_share_atom, const std::string& model, double share) -> std::string {
        // A message like any other: it runs between two steps, never inside one.
        auto err = self->state.core->set_share(model, share);
        return err ? *err : std::string{};
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
                          {"share", slot.share},
                          {"steps", slot.steps},
                          {"tokens_in", slot.tokens_in},
                          {"busy_seconds", slot.busy_seconds},
                          {"share_moves", slot.share_moves}};
        nlohmann::json j{{"backend", s.opts.backend},
                         {"simulated", s.opts.backend == "sim"},
                         {"time_scale", s.core->time_scale()},
                         {"steps", steps},
                         {"step_rate", rate},
                         {"steps_in_flight", s.held.size()},
                         {"models", models}};
        if (s.opts.backend == "sim")
          j["gpu"] = s.opts.gpu;  // the GPU type the cost model simulates
        return {s.opts.node, "gpu_unit", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  if (own_thread)
    return sys.spawn<caf::detached>(impl, std::move(opts), std::move(core));
  return sys.spawn(impl, std::move(opts), std::move(core));
}

}  // namespace llmux::unit
