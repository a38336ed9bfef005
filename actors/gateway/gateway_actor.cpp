#include "actors/gateway/gateway_actor.hpp"

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::gateway {

using namespace protocol;

namespace {

struct inflight {
  gen_request req;             ///< as first submitted
  std::vector<int32_t> output; ///< tokens streamed so far
  caf::actor_addr scheduler;   ///< where it runs (invalid while routing)
  std::string replica;
  int migrations = 0;
  bool routing = false;        ///< a submit is outstanding
  bool cancelled = false;      ///< client left while routing
};

struct gateway_state {
  static inline const char* name = "llmux.gateway";
  gateway_options opts;
  std::shared_ptr<request_registry> registry;
  router_actor router;
  std::unordered_map<uint64_t, inflight> requests;
  std::unordered_map<caf::actor_addr, scheduler_actor> schedulers;  ///< monitored
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t migrated = 0;
  uint64_t handed_off = 0;  ///< continued elsewhere when their replica drained
  uint64_t batches = 0;
};

using gateway_ptr = gateway_actor::stateful_pointer<gateway_state>;

void push_error(gateway_ptr self, uint64_t id, int status, std::string message) {
  if (auto sink = self->state.registry->find(id)) {
    sink_event ev;
    ev.id = id;
    ev.finish = finish_reason::error;
    ev.status = status;
    ev.message = std::move(message);
    sink->push(std::move(ev));
  }
  self->state.requests.erase(id);
  ++self->state.failed;
}

/// Sends the request (or its continuation after a migration) to the router.
void route(gateway_ptr self, uint64_t id) {
  auto it = self->state.requests.find(id);
  if (it == self->state.requests.end())
    return;
  auto& r = it->second;
  gen_request req = r.req;
  if (!r.output.empty()) {
    // Migration: the new replica continues after the tokens already streamed.
    req.prompt.insert(req.prompt.end(), r.output.begin(), r.output.end());
    req.params.max_tokens -= static_cast<int32_t>(r.output.size());
    req.params.min_tokens = std::max<int32_t>(0, req.params.min_tokens - static_cast<int32_t>(r.output.size()));
  }
  r.routing = true;
  r.scheduler = caf::actor_addr{};
  self
    ->request(self->state.router, std::chrono::milliseconds(self->state.opts.request_timeout_ms),
              submit_atom::value, std::move(req), self)
    .then(
      [self, id](enqueue_reply& rep) {
        auto it = self->state.requests.find(id);
        if (it == self->state.requests.end())
          return;
        auto& r = it->second;
        r.routing = false;
        if (!rep.ok) {
          push_error(self, id, rep.status, rep.message);
          return;
        }
        auto sched = caf::actor_cast<scheduler_actor>(rep.scheduler);
        r.scheduler = sched.address();
        r.replica = rep.replica;
        if (r.cancelled) {
          self->send(sched, cancel_atom::value, id);
          self->state.requests.erase(it);
          return;
        }
        if (self->state.schedulers.emplace(sched.address(), sched).second)
          self->monitor(sched);
      },
      [self, id](caf::error& err) {
        auto it = self->state.requests.find(id);
        if (it == self->state.requests.end())
          return;
        bool timeout = err == caf::sec::request_timeout;
        push_error(self, id, timeout ? 504 : 503,
                   timeout ? "no replica accepted the request within the deadline"
                           : "routing failed: " + self->system().render(err));
      });
}

}  // namespace

gateway_actor spawn_gateway(caf::actor_system& sys, gateway_options opts,
                            std::shared_ptr<request_registry> registry, router_actor router) {
  auto impl = [](gateway_ptr self, gateway_options opts, std::shared_ptr<request_registry> registry,
                 router_actor router) -> gateway_actor::behavior_type {
    self->state.opts = std::move(opts);
    self->state.registry = std::move(registry);
    self->state.router = std::move(router);
    self->set_down_handler([self](caf::down_msg& dm) {
      self->state.schedulers.erase(dm.source);
      // Every request on the dead replica migrates, or fails once it has
      // migrated too often. Nothing is left waiting.
      std::vector<uint64_t> lost;
      std::set<std::string> replicas;
      for (auto& [id, r] : self->state.requests)
        if (!r.routing && r.scheduler == dm.source) {
          lost.push_back(id);
          replicas.insert(r.replica);
        }
      // Tell the router first (messages between two actors keep their
      // order): its own monitor may fire after our re-submissions arrive,
      // and it must not route them back to the dead replica.
      for (const auto& rep : replicas)
        self->send(self->state.router, lost_atom::value, rep);
      for (auto id : lost) {
        auto& r = self->state.requests.at(id);
        if (r.migrations >= self->state.opts.max_migrations) {
          push_error(self, id, 503, "replica " + r.replica + " went down and the request "
                                    "could not be migrated");
          continue;
        }
        ++r.migrations;
        ++self->state.migrated;
        route(self, id);
      }
    });
    self->send(self, tick_atom::value);
    return {
      [self](token_batch& batch) {
        ++self->state.batches;
        for (auto& d : batch.deltas) {
          auto it = self->state.requests.find(d.id);
          if (it == self->state.requests.end())
            continue;  // cancelled or already failed
          auto& r = it->second;
          r.output.insert(r.output.end(), d.tokens.begin(), d.tokens.end());
          if (d.finish == finish_reason::migrate) {
            // Its replica gave it up (a layout switch): continue it on
            // another after the tokens it has, as for a lost replica.
            if (!d.tokens.empty())
              if (auto sink = self->state.registry->find(d.id)) {
                sink_event ev;
                ev.id = d.id;
                ev.tokens = std::move(d.tokens);
                ev.logprobs = std::move(d.logprobs);
                sink->push(std::move(ev));
              }
            // An orderly hand-off, not a failure: it does not count
            // against max_migrations (the controller's cooldown bounds how
            // often a unit switches).
            ++self->state.handed_off;
            route(self, d.id);
            continue;
          }
          sink_event ev;
          ev.id = d.id;
          ev.tokens = std::move(d.tokens);
          ev.logprobs = std::move(d.logprobs);
          ev.finish = d.finish;
          if (d.finish == finish_reason::error) {
            ev.status = d.status != 0 ? d.status : 500;
            ev.message = d.error;
          }
          bool done = d.finish != finish_reason::none;
          if (auto sink = self->state.registry->find(d.id))
            sink->push(std::move(ev));
          if (done) {
            self->state.requests.erase(it);
            ++self->state.completed;
          }
        }
      },
      [self](submit_atom, gen_request& req) {
        auto id = req.id;
        ++self->state.submitted;
        inflight r;
        r.req = std::move(req);
        self->state.requests.emplace(id, std::move(r));
        route(self, id);
      },
      [self](cancel_atom, uint64_t id) {
        auto it = self->state.requests.find(id);
        if (it == self->state.requests.end())
          return;
        if (it->second.routing) {
          it->second.cancelled = true;
          return;
        }
        auto s = self->state.schedulers.find(it->second.scheduler);
        if (s != self->state.schedulers.end())
          self->send(s->second, cancel_atom::value, id);
        self->state.requests.erase(it);
      },
      [self](tick_atom) {
        // Refresh live replicas per model for /v1/models.
        self->request(self->state.router, std::chrono::seconds(2), get_state_atom::value)
          .then(
            [self](actor_state& st) {
              std::map<std::string, int> live;
              std::map<std::string, std::string> states;
              // The model's best residency: ready, else loading, else sleeping.
              auto rank = [](const std::string& r) { return r == "ready" ? 0 : r == "loading" ? 1 : 2; };
              auto j = nlohmann::json::parse(st.state_json, nullptr, false);
              if (j.is_object() && j.contains("replicas"))
                for (auto& r : j["replicas"])
                  if (r.value("up", false) && r.value("routable", true)) {
                    const auto model = r.value("model", "");
                    ++live[model];
                    auto res = r.value("residency", std::string{"ready"});
                    if (res == "unloading")
                      res = "sleeping";
                    auto [it, fresh] = states.emplace(model, res);
                    if (!fresh && rank(res) < rank(it->second))
                      it->second = res;
                  }
              self->state.registry->set_live_replicas(std::move(live), std::move(states));
            },
            [](caf::error&) {});
        self->delayed_send(self, std::chrono::milliseconds(self->state.opts.replica_poll_ms),
                           tick_atom::value);
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        nlohmann::json j{{"in_flight", s.requests.size()},
                         {"open_streams", s.registry->open_count()},
                         {"submitted", s.submitted},
                         {"completed", s.completed},
                         {"failed", s.failed},
                         {"migrated", s.migrated},
                         {"handed_off", s.handed_off},
                         {"token_batches", s.batches},
                         {"schedulers_watched", s.schedulers.size()}};
        auto edge = nlohmann::json::parse(s.registry->edge_state(), nullptr, false);
        if (edge.is_object() && !edge.empty())
          j["edge"] = std::move(edge);
        return {s.opts.node, "gateway", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts), std::move(registry), std::move(router));
}

}  // namespace llmux::gateway
