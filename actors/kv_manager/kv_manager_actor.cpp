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
      [self](kv_open_atom, const std::string& model,
             const std::vector<kv_need>& needs) -> std::vector<int32_t> {
        auto& s = self->state;
        std::vector<int32_t> cached;
        for (const auto& n : needs) {
          auto got = s.pool->open(model, n.seq, n.lookup, n.tokens);
          if (!got)
            break;
          cached.push_back(*got);
          ++s.allocations;
        }
        if (cached.empty() && !needs.empty()) {
          ++s.refusals;
          // Distinguish "not now" (empty) from "never" ({-1}): the sequence
          // is larger than the model's whole quota or the whole pool.
          auto per = s.pool->blocks_per_token_block(model);
          auto it = s.pool->models().find(model);
          const int64_t bt = s.pool->block_tokens();
          const int64_t need = (needs.front().tokens + bt - 1) / bt * per;
          if (per == 0 || it == s.pool->models().end()
              || need > std::min(it->second.quota, s.pool->total()))
            return {-1};
        }
        return cached;
      },
      [self](kv_grow_atom, const std::string& model, const std::vector<kv_need>& needs) -> int32_t {
        auto& s = self->state;
        int32_t granted = 0;
        for (const auto& n : needs) {
          if (!s.pool->grow(model, n.seq, n.tokens))
            break;
          ++granted;
        }
        if (granted < static_cast<int32_t>(needs.size()))
          ++s.refusals;
        return granted;
      },
      [self](kv_commit_atom, const std::string& model, uint64_t seq,
             const std::vector<int32_t>& tokens) { self->state.pool->commit(model, seq, tokens); },
      [self](kv_close_atom, const std::string& model, const std::vector<uint64_t>& seqs) {
        for (auto seq : seqs)
          self->state.pool->close(model, seq);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto models = nlohmann::json::object();
        for (const auto& [name, m] : s.pool->models())
          models[name] = {{"used", m.used},
                          {"quota", m.quota},
                          {"cached", m.cached},
                          {"sequences", m.sequences},
                          {"prefix_queries", m.prefix_queries},
                          {"prefix_hits", m.prefix_hits},
                          {"blocks_per_token_block", int64_t{m.layers} * m.kv_heads}};
        nlohmann::json j{{"blocks_total", s.pool->total()},
                         {"blocks_used", s.pool->used()},
                         {"blocks_free", s.pool->free()},
                         {"blocks_evictable", s.pool->evictable()},
                         {"evicted_blocks", s.pool->evicted_blocks()},
                         {"block_tokens", s.pool->block_tokens()},
                         {"allocations", s.allocations},
                         {"refusals", s.refusals},
                         {"models", models}};
        return {s.opts.node, "kv_manager", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::kv
