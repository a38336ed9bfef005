#include "actors/kv_manager/kv_manager_actor.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::kv {

using namespace protocol;

namespace {

struct kv_state {
  static inline const char* name = "llmux.kv_manager";
  kv_manager_options opts;
  std::unique_ptr<kv_block_pool> pool;
  uint64_t allocations = 0;
  uint64_t refusals = 0;
};

using kv_ptr = kv_manager_actor::stateful_pointer<kv_state>;

}  // namespace

kv_manager_actor spawn_kv_manager(caf::actor_system& sys, kv_manager_options opts) {
  auto impl = [](kv_ptr self, kv_manager_options opts) -> kv_manager_actor::behavior_type {
    auto& s = self->state;
    s.pool = std::make_unique<kv_block_pool>(opts.total_blocks, opts.block_tokens);
    for (const auto& m : opts.models)
      s.pool->add_model(m.model, m.layers, m.kv_heads);
    s.opts = std::move(opts);
    return {
      [self](kv_alloc_atom, const std::string& model, const std::vector<int64_t>& needs) -> int32_t {
        auto& s = self->state;
        int32_t granted = 0;
        for (auto n : needs) {
          if (!s.pool->try_allocate(model, n))
            break;
          ++granted;
          ++s.allocations;
        }
        if (granted == 0 && !needs.empty()) {
          ++s.refusals;
          // Distinguish "not now" (0) from "never" (-1): the request is larger
          // than the model's whole quota or the whole pool.
          auto per = s.pool->blocks_per_token_block(model);
          auto it = s.pool->models().find(model);
          if (per == 0 || it == s.pool->models().end()
              || needs.front() * per > std::min(it->second.quota, s.pool->total()))
            return -1;
        }
        return granted;
      },
      [self](kv_free_atom, const std::string& model, int64_t token_blocks) {
        self->state.pool->release(model, token_blocks);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto models = nlohmann::json::object();
        for (const auto& [name, m] : s.pool->models())
          models[name] = {{"used", m.used},
                          {"quota", m.quota},
                          {"blocks_per_token_block", int64_t{m.layers} * m.kv_heads}};
        nlohmann::json j{{"blocks_total", s.pool->total()},
                         {"blocks_used", s.pool->used()},
                         {"blocks_free", s.pool->free()},
                         {"block_tokens", s.pool->block_tokens()},
                         {"allocations", s.allocations},
                         {"refusals", s.refusals},
                         {"release_errors", s.pool->release_errors()},
                         {"models", models}};
        return {s.opts.node, "kv_manager", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::kv
