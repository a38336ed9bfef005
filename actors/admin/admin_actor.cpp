#include "actors/admin/admin_actor.hpp"

#include <chrono>
#include <memory>
#include <random>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::admin {

using namespace protocol;

namespace {

struct local_actor_entry {
  std::string kind;
  std::string name;
  caf::actor handle;
};

struct admin_state {
  static inline const char* name = "llmux.admin";
  admin_options opts;
  std::vector<local_actor_entry> locals;
  std::vector<replica_info> replicas;
  caf::actor controller;
  /// Drawn at start: tells a restarted node from the same node answering
  /// again (the edge keeps counters monotonic across restarts with it).
  uint64_t incarnation = 0;
};

using admin_ptr = admin_actor::stateful_pointer<admin_state>;
using states = std::vector<actor_state>;

/// Collects answers from several requests; calls `done` once all answered
/// or failed (each failure becomes an entry saying so).
struct fan_in {
  size_t pending = 0;
  states out;
  std::function<void(states&)> done;

  void arrive() {
    if (--pending == 0)
      done(out);
  }
};

actor_state unreachable(const std::string& node, const std::string& kind,
                        const std::string& name, const std::string& why) {
  nlohmann::json j{{"status", "unreachable"}, {"error", why}};
  return {node, kind, name, 0, j.dump()};
}

/// This node's actors, plus the admin actor itself.
void local_states(admin_ptr self, std::function<void(states&)> done) {
  auto& s = self->state;
  auto f = std::make_shared<fan_in>();
  nlohmann::json me{{"local_actors", s.locals.size()}, {"replicas", s.replicas.size()},
                     {"incarnation", std::to_string(s.incarnation)}};
  f->out.push_back({s.opts.node, "admin", "admin", self->mailbox().size(), me.dump()});
  f->done = std::move(done);
  f->pending = s.locals.size() + 1;
  auto timeout = std::chrono::milliseconds(s.opts.state_timeout_ms);
  for (const auto& l : s.locals) {
    self->request(l.handle, timeout, get_state_atom::value)
      .then([f](actor_state& st) {
              f->out.push_back(std::move(st));
              f->arrive();
            },
            [self, f, l](caf::error& err) {
              f->out.push_back(unreachable(self->state.opts.node, l.kind, l.name,
                                           self->system().render(err)));
              f->arrive();
            });
  }
  f->arrive();
}

}  // namespace

admin_actor spawn_admin(caf::actor_system& sys, admin_options opts) {
  auto impl = [](admin_ptr self, admin_options opts) -> admin_actor::behavior_type {
    self->state.opts = std::move(opts);
    std::random_device rd;
    self->state.incarnation = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    return {
      [self](add_actor_atom, std::string& kind, std::string& name, caf::actor& handle) {
        if (kind == "controller")
          self->state.controller = handle;
        self->state.locals.push_back({std::move(kind), std::move(name), std::move(handle)});
      },
      [self](replica_up_atom, replica_info& info) {
        self->state.replicas.push_back(std::move(info));
      },
      [self](replicas_atom) -> std::vector<replica_info> { return self->state.replicas; },
      [self](get_state_atom) -> caf::result<states> {
        auto rp = self->make_response_promise<states>();
        local_states(self, [rp](states& out) mutable { rp.deliver(std::move(out)); });
        return rp;
      },
      [self](cluster_atom) -> caf::result<states> {
        auto rp = self->make_response_promise<states>();
        auto& s = self->state;
        if (!s.controller) {
          local_states(self, [rp](states& out) mutable { rp.deliver(std::move(out)); });
          return rp;
        }
        auto timeout = std::chrono::milliseconds(s.opts.state_timeout_ms);
        self->request(s.controller, timeout, nodes_atom::value)
          .then(
            [self, rp, timeout](std::vector<node_entry>& nodes) mutable {
              auto f = std::make_shared<fan_in>();
              f->done = [rp](states& out) mutable { rp.deliver(std::move(out)); };
              f->pending = nodes.size() + 1;
              for (auto& n : nodes) {
                nlohmann::json j{{"status", n.status}};
                f->out.push_back({n.name, "node", n.name, 0, j.dump()});
                if (n.name == self->state.opts.node) {
                  local_states(self, [f](states& out) {
                    for (auto& st : out)
                      f->out.push_back(std::move(st));
                    f->arrive();
                  });
                } else if (n.admin) {
                  self->request(n.admin, timeout, get_state_atom::value)
                    .then(
                      [f](states& out) {
                        for (auto& st : out)
                          f->out.push_back(std::move(st));
                        f->arrive();
                      },
                      [self, f, name = n.name](caf::error& err) {
                        f->out.push_back(
                          unreachable(name, "admin", "admin", self->system().render(err)));
                        f->arrive();
                      });
                } else {
                  f->arrive();  // down or connecting: its node entry says so
                }
              }
              f->arrive();
            },
            [self, rp](caf::error& err) mutable {
              local_states(self, [rp](states& out) mutable { rp.deliver(std::move(out)); });
            });
        return rp;
      },
    };
  };
  return sys.spawn(impl, std::move(opts));
}

}  // namespace llmux::admin
