#include "actors/router/router_actor.hpp"

#include <unordered_map>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::router {

using namespace protocol;

namespace {

/// A request waiting for its model's first replica to join.
struct parked_request {
  caf::typed_response_promise<enqueue_reply> rp;
  gen_request req;
  gateway_actor gw;
  std::chrono::steady_clock::time_point until;
};

struct router_state {
  static inline const char* name = "llmux.router";
  router_options opts;
  router_policy policy{policy_kind::least_loaded};
  uint64_t over_deadline = 0;  ///< slo_aware: refused as unable to meet the TTFT budget
  std::unordered_map<std::string, replica_info> replicas;
  std::unordered_map<caf::actor_addr, std::string> by_addr;
  uint64_t routed = 0;
  uint64_t refused = 0;
  uint64_t retried = 0;  ///< submits sent on after a replica refused them
  std::unordered_map<std::string, std::vector<parked_request>> parked;  ///< by model
  bool ticking = false;  ///< a tick is on its way (expiring parked requests)
  uint64_t waited = 0;   ///< requests that waited for a first replica
};

using router_ptr = router_actor::stateful_pointer<router_state>;

/// Offers `req` to a live replica not in `tried`; one that refuses with 429
/// (queue full) or cannot be reached is skipped and the next is tried, so a
/// client sees 429 only when every replica of its model is full.
void offer(router_ptr self, caf::typed_response_promise<enqueue_reply> rp, gen_request req,
           gateway_actor gw, std::vector<std::string> tried, enqueue_reply last) {
  auto& s = self->state;
  route_request rr;
  rr.model = req.model;
  rr.prompt = &req.prompt;
  rr.max_tokens = req.params.max_tokens;
  rr.session = req.session;
  rr.ttft_budget_ms = req.ttft_budget_ms;
  auto choice = s.policy.choose(rr, tried);
  if (choice.over_deadline) {
    ++s.refused;
    ++s.over_deadline;
    enqueue_reply rep;
    rep.status = 429;
    rep.message = "model '" + req.model + "' cannot start this request in time: the fastest of its "
                  "replicas is predicted to reach the first token in "
                  + std::to_string(static_cast<int64_t>(choice.predicted_ttft_ms)) + " ms, over its "
                  + std::to_string(req.ttft_budget_ms) + " ms budget; retry later";
    rp.deliver(std::move(rep));
    return;
  }
  const auto& pick = choice.replica;
  if (!pick && tried.empty() && !s.policy.has_model(req.model) && s.opts.join_wait_ms > 0) {
    // The cluster is starting: wait for the model's first replica.
    ++s.waited;
    s.parked[req.model].push_back({std::move(rp), std::move(req), std::move(gw),
                                   std::chrono::steady_clock::now()
                                     + std::chrono::milliseconds(s.opts.join_wait_ms)});
    if (!s.ticking) {
      s.ticking = true;
      self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value);
    }
    return;
  }
  if (!pick) {
    if (tried.empty() || last.status == 0) {
      ++s.refused;
      enqueue_reply rep;
      rep.status = 503;
      rep.message = s.policy.has_model(req.model)
                      ? "no live replica for model '" + req.model + "': every replica is down"
                      : "no live replica for model '" + req.model + "' (none has joined yet)";
      rp.deliver(std::move(rep));
    } else {
      if (tried.size() > 1)
        last.message += " (all " + std::to_string(tried.size()) + " replicas are full)";
      rp.deliver(std::move(last));
    }
    return;
  }
  ++s.routed;
  const std::string replica = *pick;
  auto sched = caf::actor_cast<scheduler_actor>(s.replicas.at(replica).scheduler);
  auto retry = [self, rp, req, gw, tried, replica, choice](enqueue_reply last) mutable {
    self->state.policy.refused(replica, choice);
    ++self->state.retried;
    tried.push_back(replica);
    offer(self, std::move(rp), std::move(req), std::move(gw), std::move(tried), std::move(last));
  };
  self->request(sched, std::chrono::seconds(30), enqueue_atom::value, req, gw)
    .then(
      [rp, retry](enqueue_reply& rep) mutable {
        if (!rep.ok && rep.status == 429) {
          retry(std::move(rep));
          return;
        }
        rp.deliver(std::move(rep));
      },
      [retry](caf::error&) mutable { retry(enqueue_reply{}); });
}

}  // namespace

router_actor spawn_router(caf::actor_system& sys, router_options opts) {
  auto impl = [](router_ptr self, router_options opts) -> router_actor::behavior_type {
    self->state.opts = opts;
    self->state.policy = router_policy{opts.routing};
    self->set_down_handler([self](caf::down_msg& dm) {
      auto it = self->state.by_addr.find(dm.source);
      if (it == self->state.by_addr.end())
        return;
      self->state.policy.replica_down(it->second);
      self->state.by_addr.erase(it);
    });
    return {
      [self](submit_atom, gen_request& req,
             gateway_actor& gw) -> caf::result<enqueue_reply> {
        auto rp = self->make_response_promise<enqueue_reply>();
        offer(self, rp, std::move(req), std::move(gw), {}, {});
        return rp;
      },
      [self](replica_up_atom, replica_info& info) {
        auto& s = self->state;
        if (!info.scheduler)
          return;
        s.policy.replica_up(info.replica, info.model, info.node, info.prefill_tok_s);
        if (info.parked)
          s.policy.set_routable(info.replica, false);
        if (info.asleep) {
          router::load_sample asleep;
          asleep.residency = "sleeping";
          s.policy.report(info.replica, asleep);
        }
        s.by_addr[info.scheduler.address()] = info.replica;
        self->monitor(info.scheduler);
        // Ask for load reports (sent to whoever subscribes).
        self->send(caf::actor_cast<scheduler_actor>(info.scheduler), subscribe_atom::value,
                   caf::actor_cast<caf::actor>(self));
        const std::string model = info.model;
        s.replicas[info.replica] = std::move(info);
        // Requests that waited for this model's first replica go now.
        auto waiting = s.parked.find(model);
        if (waiting != s.parked.end()) {
          auto reqs = std::move(waiting->second);
          s.parked.erase(waiting);
          for (auto& p : reqs)
            offer(self, std::move(p.rp), std::move(p.req), std::move(p.gw), {}, {});
        }
      },
      [self](replica_dn_atom, const std::string& node) { self->state.policy.node_down(node); },
      [self](lost_atom, const std::string& replica) {
        // The edge saw this replica's scheduler go down (its own monitor can
        // fire later): stop routing there before the edge re-submits.
        self->state.policy.replica_down(replica);
      },
      [self](routable_atom, const std::string& replica, bool on) -> bool {
        return self->state.policy.set_routable(replica, on);
      },
      [self](load_report& rep) {
        load_sample ls;
        ls.waiting = rep.waiting;
        ls.running = rep.running;
        ls.tokens_per_s = rep.tokens_per_s;
        ls.outstanding_tokens = rep.outstanding_tokens;
        ls.queued_prefill = rep.queued_prefill;
        ls.prefill_tok_s = rep.prefill_tok_s;
        ls.residency = rep.residency;
        self->state.policy.report(rep.replica, ls);
      },
      [self](tick_atom) {
        // Requests that waited for a first replica longer than join_wait_ms: 503.
        auto& s = self->state;
        const auto now = std::chrono::steady_clock::now();
        for (auto it = s.parked.begin(); it != s.parked.end();) {
          auto& reqs = it->second;
          for (auto p = reqs.begin(); p != reqs.end();) {
            if (now < p->until) {
              ++p;
              continue;
            }
            ++s.refused;
            enqueue_reply rep;
            rep.status = 503;
            rep.message = "no live replica for model '" + it->first + "': none joined within "
                          + std::to_string(s.opts.join_wait_ms) + " ms";
            p->rp.deliver(std::move(rep));
            p = reqs.erase(p);
          }
          it = reqs.empty() ? s.parked.erase(it) : std::next(it);
        }
        s.ticking = !s.parked.empty();
        if (s.ticking)
          self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto reps = nlohmann::json::array();
        for (const auto& [name, r] : s.policy.replicas()) {
          auto info = s.replicas.find(name);
          reps.push_back({{"replica", name},
                          {"model", r.model},
                          {"node", r.node},
                          {"backend", info != s.replicas.end() ? info->second.backend : ""},
                          {"up", r.up},
                          {"routable", r.routable},
                          {"residency", r.residency},
                          {"waiting", r.waiting},
                          {"running", r.running},
                          {"outstanding_tokens", r.tokens()},
                          {"queued_prefill_tokens", r.queued_prefill + r.prefill_since_report},
                          {"prefill_tokens_per_s", r.prefill_tok_s},
                          {"tokens_per_s", r.tokens_per_s},
                          {"dispatched", r.dispatched},
                          {"affinity_hits", r.affinity_hits},
                          {"prefix_blocks_matched", r.prefix_blocks_matched},
                          {"prefix_blocks_known", s.policy.prefix_entries(name)}});
        }
        auto models = nlohmann::json::object();
        for (const auto& [name, r] : s.policy.replicas())
          models[r.model] = to_string(s.policy.kind_of(r.model));
        nlohmann::json j{
          {"policy", to_string(s.policy.kind())},
          {"model_policies", models},
          {"sessions", s.policy.sessions()},
          {"routed", s.routed},
          {"refused", s.refused},
          {"refused_over_deadline", s.over_deadline},
          {"retried", s.retried},
          {"waited_for_replica", s.waited},
          {"waiting_for_replica", [&s] {
             size_t n = 0;
             for (const auto& [m, v] : s.parked)
               n += v.size();
             return n;
           }()},
          {"replicas", reps}};
        return {s.opts.node, "router", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::router
