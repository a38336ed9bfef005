#include "actors/kv_manager/kv_manager_actor.hpp"

#include <chrono>

#include <caf/all.hpp>

namespace llmux::kv {

using namespace protocol;

namespace {

struct kv_state {
  static inline const char* name = "llmux.kv_manager";
  std::unique_ptr<kv_manager_core> core;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  [[nodiscard]] double now_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

using kv_ptr = kv_manager_actor::stateful_pointer<kv_state>;

}  // namespace

kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts) {
  auto impl = [](kv_ptr self, kv_manager_options opts) -> kv_manager_actor::behavior_type {
    auto& s = self->state;
    s.core = std::make_unique<kv_manager_core>(std::move(opts));
    if (s.core->planner())
      self->delayed_send(self, std::chrono::milliseconds(s.core->options().quota_period_ms), tick_atom::value);
    return {
      [self](kv_open_atom, const std::string& model, const std::vector<kv_need>& needs) -> kv_grant {
        return self->state.core->open(model, needs);
      },
      [self](kv_grow_atom, const std::string& model, const std::vector<kv_need>& needs) -> kv_grant {
        return self->state.core->grow(model, needs);
      },
      [self](kv_commit_atom, const std::string& model, uint64_t seq,
             const std::vector<int32_t>& tokens) { self->state.core->commit(model, seq, tokens); },
      [self](kv_close_atom, const std::string& model, const std::vector<uint64_t>& seqs) {
        self->state.core->close(model, seqs);
      },
      [self](sleep_atom, const std::string& model) -> int64_t { return self->state.core->forget_cache(model); },
      [self](kv_load_atom, const std::string& model, int32_t arrivals, int64_t backlog_tokens) {
        self->state.core->load(model, arrivals, backlog_tokens, self->state.now_s());
      },
      [self](tick_atom) {
        auto& s = self->state;
        s.core->rebalance(s.now_s());
        self->delayed_send(self, std::chrono::milliseconds(s.core->options().quota_period_ms), tick_atom::value);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        const auto& o = s.core->options();
        return {o.node, "kv_manager", o.name, self->mailbox().size(), s.core->state(s.now_s()).dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::kv
