#include "actors/controller/controller_actor.hpp"

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <set>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>

namespace llmux::controller {

using namespace protocol;
using clock_type = std::chrono::steady_clock;

namespace {

struct controller_state {
  static inline const char* name = "llmux.controller";
  controller_options opts;
  std::unique_ptr<node_table> table;
  admin_actor local_admin;
  router_actor router;
  std::map<std::string, admin_actor> admins;  ///< node → its admin actor, while up
  std::map<std::string, size_t> replicas;     ///< node → replicas it advertised
  clock_type::time_point t0 = clock_type::now();
  // Share moves (opts.move_shares).
  std::unique_ptr<share_policy> shares;
  std::map<std::string, gpu_unit_actor> units;          ///< unit → its actor
  std::map<std::string, std::string> replica_unit;      ///< replica → unit
  uint64_t share_moves = 0;
  uint64_t share_move_failures = 0;
  std::deque<nlohmann::json> recent_moves;
  // Units laid out as several replicas.
  layout_policy layouts;
  std::map<std::string, std::map<int, replica_info>> layout_replicas;  ///< unit → index → replica
  std::map<std::string, std::string> layout_unit_of;                   ///< replica → unit
  std::map<std::string, int64_t> handed_back;  ///< unit → sequences its drained replicas handed back
  // Model moves (`move`): every replica the nodes advertised, by name.
  std::map<std::string, replica_info> known;
  std::set<std::string> moving;  ///< models being moved now
  uint64_t model_moves = 0;
  uint64_t failed_model_moves = 0;
  std::deque<nlohmann::json> recent_model_moves;
  // Online re-placement.
  replan_policy replan;
  bool applying = false;     ///< a plan is being applied
  uint64_t plans_applied = 0;
  uint64_t replan_wakes = 0;
  uint64_t replan_moves = 0;        ///< wakes that moved the model from another unit
  uint64_t replan_share_moves = 0;
  uint64_t replan_failures = 0;
  std::deque<nlohmann::json> recent_replans;

  double now() const { return std::chrono::duration<double>(clock_type::now() - t0).count(); }
};

using controller_ptr = controller_actor::stateful_pointer<controller_state>;

/// A node's admin answered: keep it, watch it, and announce its replicas.
void adopt(controller_ptr self, const std::string& node, admin_actor admin) {
  auto& s = self->state;
  s.table->connected(node, s.now());
  s.admins[node] = admin;
  if (node != s.opts.node)
    self->monitor(admin);
  self->request(admin, std::chrono::milliseconds(s.opts.connect_ms), replicas_atom::value)
    .then(
      [self, node](std::vector<replica_info>& reps) {
        auto& s = self->state;
        s.replicas[node] = reps.size();
        for (auto& r : reps) {
          s.known[r.replica] = r;
          auto mem = s.opts.unit_memory.find(r.unit);
          if (mem != s.opts.unit_memory.end() && r.scheduler && r.instances == 1) {
            auto bytes = s.opts.model_bytes.find(r.model);
            auto share = s.opts.planned_shares.find(r.replica);
            s.replan.add_replica(r.unit, r.model, r.replica, bytes == s.opts.model_bytes.end() ? 0 : bytes->second,
                                 share == s.opts.planned_shares.end() ? 0 : share->second);
            // Hear its load (once: share moves subscribe too).
            if (!s.shares)
              self->send(caf::actor_cast<scheduler_actor>(r.scheduler), subscribe_atom::value,
                         caf::actor_cast<caf::actor>(self));
          }
          if (r.instances > 1 && s.layouts.find(r.unit) && r.scheduler) {
            // A replica of a unit laid out as several: hear its load.
            s.layout_replicas[r.unit][r.index] = r;
            s.layout_unit_of[r.replica] = r.unit;
            self->send(caf::actor_cast<scheduler_actor>(r.scheduler), subscribe_atom::value,
                       caf::actor_cast<caf::actor>(self));
          }
          if (s.shares && r.unit_actor) {
            // Learn the unit's shares and hear the scheduler's load.
            s.units[r.unit] = caf::actor_cast<gpu_unit_actor>(r.unit_actor);
            s.replica_unit[r.replica] = r.unit;
            s.shares->set_share(r.unit, r.model, r.share);
            self->send(caf::actor_cast<scheduler_actor>(r.scheduler), subscribe_atom::value,
                       caf::actor_cast<caf::actor>(self));
          }
          self->send(s.router, replica_up_atom::value, std::move(r));
        }
      },
      [self, node](caf::error& err) {
        caf::aout(self) << "controller: node " << node
                        << " did not list its replicas: " << self->system().render(err)
                        << std::endl;
      });
}

void connect(controller_ptr self, const std::string& node) {
  auto& s = self->state;
  if (node == s.opts.node) {
    adopt(self, node, s.local_admin);
    return;
  }
  const auto* row = s.table->find(node);
  auto mm = s.opts.middleman ? s.opts.middleman : self->system().middleman().actor_handle();
  self
    ->request(mm, std::chrono::milliseconds(s.opts.connect_ms), caf::connect_atom::value,
              row->node.host, row->node.port)
    .then(
      [self, node](const caf::node_id&, caf::strong_actor_ptr& ptr,
                   const std::set<std::string>&) {
        if (!ptr) {
          self->state.table->attempt_failed(node, "no actor published", self->state.now());
          return;
        }
        adopt(self, node, caf::actor_cast<admin_actor>(ptr));
      },
      [self, node](caf::error& err) {
        self->state.table->attempt_failed(node, self->system().render(err), self->state.now());
      });
}

/// Sends one share move: the shrinking model first, so the unit's shares
/// never sum above 1; then the growing one.
void send_move(controller_ptr self, const share_move& mv) {
  auto& s = self->state;
  auto unit = s.units.at(mv.unit);
  auto timeout = std::chrono::milliseconds(s.opts.connect_ms * 5);
  self->request(unit, timeout, set_share_atom::value, mv.from, mv.from_share)
    .then(
      [self, unit, mv, timeout](std::string& err) {
        auto& s = self->state;
        if (!err.empty()) {
          ++s.share_move_failures;
          caf::aout(self) << "controller: share move on " << mv.unit << " refused: " << err
                          << std::endl;
          // The unit kept both shares as they were: so do the books.
          s.shares->set_share(mv.unit, mv.from, mv.from_before);
          s.shares->set_share(mv.unit, mv.to, mv.to_before);
          return;
        }
        self->request(unit, timeout, set_share_atom::value, mv.to, mv.to_share)
          .then(
            [self, mv](std::string& err2) {
              auto& s = self->state;
              if (!err2.empty()) {
                // The unit took the donor's share and refused the taker's.
                ++s.share_move_failures;
                s.shares->set_share(mv.unit, mv.to, mv.to_before);
                return;
              }
              ++s.share_moves;
              s.recent_moves.push_back({{"unit", mv.unit},
                                        {"from", mv.from},
                                        {"to", mv.to},
                                        {"from_share", mv.from_share},
                                        {"to_share", mv.to_share},
                                        {"at_s", s.now()}});
              if (s.recent_moves.size() > 8)
                s.recent_moves.pop_front();
            },
            [self](caf::error&) { ++self->state.share_move_failures; });
      },
      [self](caf::error&) { ++self->state.share_move_failures; });
}

/// Calls `done` once `n` parts have answered: with the first error, or ""
/// when every part went through.
std::function<void(std::string)> join(int n, std::function<void(std::string)> done) {
  if (n <= 0) {
    done("");
    return [](std::string) {};
  }
  struct state {
    int left;
    std::string error;
    std::function<void(std::string)> done;
  };
  auto st = std::make_shared<state>(state{n, "", std::move(done)});
  return [st](std::string err) {
    if (!err.empty() && st->error.empty())
      st->error = std::move(err);
    if (--st->left == 0)
      st->done(st->error);
  };
}

/// Moves `model`'s serving from unit `from` to unit `to`, as a message
/// flow, each step after the last one's answer:
///   target scheduler wake (its unit makes room) ─▶ router routable(source, false)
///   ─▶ source scheduler drain(true): its sequences go back to their gateways,
///      which continue them on the target (finish "migrate")
///   ─▶ source scheduler sleep (after its last step returns) ─▶ drain(false),
///      routable(source, true): it stays a replica, asleep, which the router
///      passes over while the target is awake.
/// A failure after the source stopped taking requests undoes that part.
void move_model(controller_ptr self, const std::string& model, const std::string& from, const std::string& to,
                std::function<void(std::string)> done) {
  auto& s = self->state;
  const auto src = s.known.find(from + "/" + model);
  const auto dst = s.known.find(to + "/" + model);
  if (from == to) {
    done("model '" + model + "' is on unit '" + from + "' already");
    return;
  }
  for (const auto* side : {&src, &dst})
    if (*side == s.known.end()) {
      done("no replica of model '" + model + "' on unit '" + (side == &src ? from : to)
           + "' has joined (a move needs the model listed on both units; awake = false on the target)");
      return;
    }
  if (!src->second.scheduler || !dst->second.scheduler || src->second.instances > 1
      || dst->second.instances > 1) {
    done("model '" + model + "': replicas of layout units do not move");
    return;
  }
  if (!s.moving.insert(model).second) {
    done("model '" + model + "' is being moved already");
    return;
  }
  const auto source = caf::actor_cast<scheduler_actor>(src->second.scheduler);
  const auto target = caf::actor_cast<scheduler_actor>(dst->second.scheduler);
  const auto replica = src->second.replica;
  const double t0 = s.now();
  const auto timeout = std::chrono::seconds(120);
  auto finish = [self, model, from, to, t0, done](std::string err, int32_t handed) {
    auto& s = self->state;
    s.moving.erase(model);
    if (err.empty())
      ++s.model_moves;
    else
      ++s.failed_model_moves;
    s.recent_model_moves.push_back({{"model", model},
                                    {"from", from},
                                    {"to", to},
                                    {"handed_over", handed},
                                    {"seconds", s.now() - t0},
                                    {"error", err}});
    if (s.recent_model_moves.size() > 8)
      s.recent_model_moves.pop_front();
    caf::aout(self) << "controller: moved " << model << " from " << from << " to " << to
                    << (err.empty() ? "" : " failed: " + err) << std::endl;
    done(std::move(err));
  };
  // Gives the source back to the router, accepting again.
  auto reopen = [self, source, replica, timeout](std::function<void()> then) {
    self->request(source, timeout, drain_atom::value, false)
      .then([self, replica, timeout, then](int32_t) {
              self->request(self->state.router, timeout, routable_atom::value, replica, true)
                .then([then](bool) { then(); }, [then](caf::error&) { then(); });
            },
            [then](caf::error&) { then(); });
  };
  self->request(target, timeout, wake_atom::value)
    .then(
      [=](std::string& why) {
        if (!why.empty()) {
          finish("the target did not wake: " + why, 0);
          return;
        }
        self->request(self->state.router, timeout, routable_atom::value, replica, false)
          .then(
            [=](bool) {
              self->request(source, timeout, drain_atom::value, true)
                .then(
                  [=](int32_t handed) {
                    self->request(source, timeout, sleep_atom::value)
                      .then(
                        [=](std::string& why2) {
                          auto err = why2.empty() ? std::string{} : "the source did not sleep: " + why2;
                          reopen([finish, err, handed] { finish(err, handed); });
                        },
                        [=](caf::error& e) {
                          auto err = "the source did not answer: " + self->system().render(e);
                          reopen([finish, err, handed] { finish(err, handed); });
                        });
                  },
                  [=](caf::error& e) {
                    auto err = "the source did not drain: " + self->system().render(e);
                    reopen([finish, err] { finish(err, 0); });
                  });
            },
            [=](caf::error& e) { finish("the router did not answer: " + self->system().render(e), 0); });
      },
      [=](caf::error& e) { finish("the target did not answer: " + self->system().render(e), 0); });
}

nlohmann::json plan_json(const controller_state& s, const replan_plan& plan) {
  auto mv = nlohmann::json::array();
  for (const auto& m : plan.moves) {
    nlohmann::json j{{"unit", m.unit},   {"wake", m.model},   {"replica", m.replica},
                     {"rate", m.rate},   {"sleep", m.sleep},  {"sleep_rates", m.sleep_rates}};
    if (!m.from.empty())
      j["from"] = m.from;
    mv.push_back(std::move(j));
  }
  auto shares = nlohmann::json::array();
  for (const auto& sh : plan.shares)
    shares.push_back({{"unit", sh.unit}, {"model", sh.model}, {"replica", sh.replica},
                      {"target", sh.job.empty() ? sh.model : sh.model + "/" + sh.job}, {"share", sh.to},
                      {"from", sh.from}});
  auto reps = nlohmann::json::array();
  for (const auto& [name, r] : s.replan.replicas()) {
    nlohmann::json j{{"replica", name}, {"unit", r.unit}, {"model", r.model}, {"residency", r.residency},
                     {"rate", r.rate}, {"waiting", r.waiting}, {"running", r.running},
                     {"weights_mib", static_cast<double>(r.bytes) / (1 << 20)}};
    if (r.share > 0)
      j["share"] = r.share;
    reps.push_back(std::move(j));
  }
  return {{"moves", mv}, {"shares", shares}, {"replicas", reps},
          {"target", plan.planner ? "placement planner" : "rate rule"}};
}

/// Applies the plan's share moves one after the other (lower shares first,
/// as planned), each to its unit (`MODEL` or `MODEL/decode`); then `done`.
void apply_shares(controller_ptr self, std::shared_ptr<replan_plan> plan, std::shared_ptr<nlohmann::json> report,
                  size_t i, std::function<void(nlohmann::json)> done) {
  auto& s = self->state;
  if (i >= plan->shares.size()) {
    done(*report);
    return;
  }
  const auto& sh = plan->shares[i];
  auto next = [=](std::string result) {
    auto& s = self->state;
    (*report)["shares"][i]["result"] = result;
    if (result.empty()) {
      ++s.replan_share_moves;
      s.replan.set_share(sh.replica, sh.to);
    } else {
      ++s.replan_failures;
    }
    apply_shares(self, plan, report, i + 1, done);
  };
  auto it = s.known.find(sh.replica);
  if (it == s.known.end() || !it->second.unit_actor) {
    next("replica " + sh.replica + " is unknown");
    return;
  }
  self->request(caf::actor_cast<gpu_unit_actor>(it->second.unit_actor), std::chrono::seconds(10),
                set_share_atom::value, sh.job.empty() ? sh.model : sh.model + "/" + sh.job, sh.to)
    .then([=](std::string& err) { next(err.empty() ? std::string{} : "refused: " + err); },
          [=](caf::error& e) { next("did not answer: " + self->system().render(e)); });
}

/// Applies the moves one after the other: each one's sleeps (the replica's
/// scheduler agrees only when idle), then its wake; `done` gets the plan
/// with each move's "result" ("" or why it stopped).
void apply_moves(controller_ptr self, std::shared_ptr<replan_plan> plan, std::shared_ptr<nlohmann::json> report,
                 size_t i, size_t slept, std::function<void(nlohmann::json)> done) {
  auto& s = self->state;
  auto* moves = &plan->moves;
  auto next = [=](std::string result) {
    auto& s = self->state;
    (*report)["moves"][i]["result"] = result;
    if (result.empty())
      ++((*moves)[i].from.empty() ? s.replan_wakes : s.replan_moves);
    else
      ++s.replan_failures;
    apply_moves(self, plan, report, i + 1, 0, done);
  };
  if (i >= moves->size()) {
    apply_shares(self, plan, report, 0, done);
    return;
  }
  const auto& mv = (*moves)[i];
  const auto timeout = std::chrono::seconds(120);
  auto handle = [&s](const std::string& replica) -> scheduler_actor {
    auto it = s.known.find(replica);
    return it == s.known.end() ? scheduler_actor{} : caf::actor_cast<scheduler_actor>(it->second.scheduler);
  };
  if (slept < mv.sleep.size()) {
    auto victim = handle(mv.sleep[slept]);
    if (!victim) {
      next("replica " + mv.sleep[slept] + " is unknown");
      return;
    }
    self->request(victim, timeout, sleep_atom::value)
      .then(
        [=](std::string& why) {
          if (!why.empty()) {
            next("did not sleep: " + why);
            return;
          }
          apply_moves(self, plan, report, i, slept + 1, done);
        },
        [=](caf::error& e) { next("did not answer: " + self->system().render(e)); });
    return;
  }
  if (!mv.from.empty()) {
    // Awake on another unit where the plan no longer wants it: moved here
    // as `admin move` does (its sequences handed over, then it sleeps).
    auto src = s.known.find(mv.from);
    if (src == s.known.end()) {
      next("replica " + mv.from + " is unknown");
      return;
    }
    move_model(self, mv.model, src->second.unit, mv.unit,
               [next](std::string err) { next(err.empty() ? std::string{} : "did not move: " + err); });
    return;
  }
  auto target = handle(mv.replica);
  if (!target) {
    next("replica " + mv.replica + " is unknown");
    return;
  }
  self->request(target, timeout, wake_atom::value)
    .then([=](std::string& why) { next(why.empty() ? std::string{} : "did not wake: " + why); },
          [=](caf::error& e) { next("did not answer: " + self->system().render(e)); });
}

/// Plans now and applies it; `done` gets what was done (or why nothing).
void apply_plan(controller_ptr self, std::function<void(nlohmann::json)> done) {
  auto& s = self->state;
  if (s.applying) {
    done({{"error", "a plan is being applied already"}});
    return;
  }
  auto plan = std::make_shared<replan_plan>(s.replan.plan());
  auto report = std::make_shared<nlohmann::json>(plan_json(s, *plan));
  if (plan->empty()) {
    done(*report);
    return;
  }
  s.applying = true;
  apply_moves(self, plan, report, 0, 0, [self, done](nlohmann::json out) {
    auto& s = self->state;
    s.applying = false;
    ++s.plans_applied;
    out["at_s"] = s.now();
    auto keep = [&s](nlohmann::json m) {
      s.recent_replans.push_back(std::move(m));
      if (s.recent_replans.size() > 8)
        s.recent_replans.pop_front();
    };
    for (const auto& m : out["moves"]) {
      caf::aout(self) << "controller: re-placement on " << m.value("unit", "") << ": "
                      << (m.contains("from") ? "move " : "wake ") << m.value("wake", "") << " ("
                      << m.value("rate", 0.0) << " req/s)";
      if (m.contains("from"))
        caf::aout(self) << " from " << m.value("from", "");
      for (const auto& v : m["sleep"])
        caf::aout(self) << ", sleep " << v.get<std::string>();
      const auto result = m.value("result", "");
      caf::aout(self) << (result.empty() ? "" : ": " + result) << std::endl;
      keep(m);
    }
    for (const auto& m : out["shares"]) {
      const auto result = m.value("result", "");
      caf::aout(self) << "controller: re-placement on " << m.value("unit", "") << ": " << m.value("target", "")
                      << " share " << m.value("from", 0.0) << " -> " << m.value("share", 0.0)
                      << (result.empty() ? "" : ": " + result) << std::endl;
      keep(m);
    }
    done(std::move(out));
  });
}

/// Lays `unit` out as `to`, as a message flow (see controller_actor.hpp);
/// `done` gets "" or why it could not.
void switch_layout(controller_ptr self, const std::string& unit, layout_kind to,
                   std::function<void(std::string)> done) {
  auto& s = self->state;
  const auto* st = s.layouts.find(unit);
  if (st == nullptr) {
    done("unit '" + unit + "' is not laid out as several replicas (its layout is \"single\"; "
         "\"replicas\" or \"dynamic\" make it switchable)");
    return;
  }
  const int k = st->opts.k;
  const auto& reps = s.layout_replicas[unit];
  if (static_cast<int>(reps.size()) != k) {
    done("unit '" + unit + "': " + std::to_string(reps.size()) + " of its " + std::to_string(k)
         + " replicas have joined so far");
    return;
  }
  if (st->layout == to) {
    done("");
    return;
  }
  if (!s.layouts.begin(unit, s.now())) {
    done("unit '" + unit + "' is already switching layout");
    return;
  }
  auto finish = [self, unit, to, done](std::string err) {
    auto& s = self->state;
    s.layouts.end(unit, to, err.empty(), s.now());
    if (!err.empty())
      caf::aout(self) << "controller: layout switch of " << unit << " to " << to_string(to)
                      << " failed: " << err << std::endl;
    done(err);
  };
  auto gpu = caf::actor_cast<gpu_unit_actor>(reps.at(0).unit_actor);
  const auto timeout = std::chrono::milliseconds(s.opts.connect_ms * 5);
  auto render = [self](caf::error& e) { return self->system().render(e); };
  const double each = 1.0 / k;
  if (to == layout_kind::replicas) {
    // The whole unit's share is split: instance 0 shrinks first (the
    // shares never sum above 1), then each parked one takes its part,
    // accepts requests again and is routed to.
    self->request(gpu, timeout, set_share_atom::value, reps.at(0).instance, each)
      .then(
        [self, unit, k, each, timeout, gpu, finish, render](std::string& err) {
          if (!err.empty()) {
            finish("unit refused a share of " + std::to_string(each) + ": " + err);
            return;
          }
          // Once every new replica is routed to, instance 0 hands (k-1)/k
          // of its sequences back, so the joined replicas start with their
          // part of the load instead of waiting for new arrivals.
          auto part = join(k - 1, [self, unit, k, timeout, finish, render](std::string err2) {
            if (!err2.empty()) {
              finish(err2);
              return;
            }
            auto first = caf::actor_cast<scheduler_actor>(self->state.layout_replicas[unit].at(0).scheduler);
            self->request(first, timeout, hand_back_atom::value, static_cast<double>(k - 1) / k)
              .then(
                [self, unit, finish](int32_t n) {
                  self->state.handed_back[unit] += n;
                  finish("");
                },
                [finish, render](caf::error& e) mutable { finish(render(e)); });
          });
          for (int i = 1; i < k; ++i) {
            const auto r = self->state.layout_replicas[unit].at(i);
            auto sched = caf::actor_cast<scheduler_actor>(r.scheduler);
            self->request(gpu, timeout, set_share_atom::value, r.instance, each)
              .then(
                [self, r, sched, timeout, part, render](std::string& err2) {
                  if (!err2.empty()) {
                    part("unit refused " + r.instance + " a share: " + err2);
                    return;
                  }
                  self->request(sched, timeout, drain_atom::value, false)
                    .then(
                      [self, r, timeout, part, render](int32_t) {
                        self->request(self->state.router, timeout, routable_atom::value, r.replica, true)
                          .then([part, r](bool known) { part(known ? "" : "the router does not know " + r.replica); },
                                [part, render](caf::error& e) mutable { part(render(e)); });
                      },
                      [part, render](caf::error& e) mutable { part(render(e)); });
                },
                [part, render](caf::error& e) mutable { part(render(e)); });
          }
        },
        [finish, render](caf::error& e) mutable { finish(render(e)); });
    return;
  }
  // To one replica: the others stop being routed to (answered before any
  // of them hands a sequence back, so none is routed back to them), hand
  // their sequences back to continue on instance 0, and lend it their share.
  auto routed_off = join(k - 1, [self, unit, k, timeout, gpu, finish, render](std::string err) {
    if (!err.empty()) {
      finish(err);
      return;
    }
    auto drained = join(k - 1, [self, unit, k, timeout, gpu, finish, render](std::string err2) {
      if (!err2.empty()) {
        finish(err2);
        return;
      }
      auto parked = join(k - 1, [self, unit, timeout, gpu, finish, render](std::string err3) {
        if (!err3.empty()) {
          finish(err3);
          return;
        }
        self->request(gpu, timeout, set_share_atom::value, self->state.layout_replicas[unit].at(0).instance, 1.0)
          .then([finish](std::string& err4) { finish(err4.empty() ? "" : "unit refused the whole share: " + err4); },
                [finish, render](caf::error& e) mutable { finish(render(e)); });
      });
      for (int i = 1; i < k; ++i)
        self->request(gpu, timeout, set_share_atom::value, self->state.layout_replicas[unit].at(i).instance, 0.0)
          .then([parked](std::string& e) { parked(e); },
                [parked, render](caf::error& e) mutable { parked(render(e)); });
    });
    for (int i = 1; i < k; ++i) {
      auto sched = caf::actor_cast<scheduler_actor>(self->state.layout_replicas[unit].at(i).scheduler);
      self->request(sched, timeout, drain_atom::value, true)
        .then(
          [self, unit, drained](int32_t n) {
            self->state.handed_back[unit] += n;
            drained("");
          },
          [drained, render](caf::error& e) mutable { drained(render(e)); });
    }
  });
  for (int i = 1; i < k; ++i) {
    const auto replica = reps.at(i).replica;
    self->request(s.router, timeout, routable_atom::value, replica, false)
      .then([routed_off, replica](bool known) { routed_off(known ? "" : "the router does not know " + replica); },
            [routed_off, render](caf::error& e) mutable { routed_off(render(e)); });
  }
}

}  // namespace

controller_actor spawn_controller(caf::actor_system& sys, controller_options opts,
                                  admin_actor local_admin, router_actor router) {
  auto impl = [](controller_ptr self, controller_options opts, admin_actor local_admin,
                 router_actor router) -> controller_actor::behavior_type {
    auto& s = self->state;
    s.table = std::make_unique<node_table>(opts.nodes, opts.node);
    s.opts = std::move(opts);
    s.local_admin = std::move(local_admin);
    s.router = std::move(router);
    for (const auto& [unit, lo] : s.opts.layouts) {
      auto init = s.opts.initial_layouts.count(unit) ? s.opts.initial_layouts.at(unit) : layout_kind::single;
      s.layouts.add_unit(unit, lo, init);
    }
    if (!s.opts.layouts.empty())
      self->delayed_send(self, std::chrono::milliseconds(s.opts.layout_tick_ms), layout_tick_atom::value);
    if (s.opts.move_shares) {
      s.shares = std::make_unique<share_policy>(s.opts.shares);
      self->delayed_send(self, std::chrono::milliseconds(s.opts.share_tick_ms), share_tick_atom::value);
    }
    s.replan = replan_policy(s.opts.replan);
    if (s.opts.planner)
      s.replan.use_planner(s.opts.planner);
    for (const auto& [unit, bytes] : s.opts.unit_memory)
      s.replan.add_unit(unit, bytes);
    if (s.opts.replan_s > 0 && !s.opts.unit_memory.empty())
      self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(s.opts.replan_s)),
                         replan_tick_atom::value);
    self->set_down_handler([self](caf::down_msg& dm) {
      auto& s = self->state;
      for (auto it = s.admins.begin(); it != s.admins.end(); ++it) {
        if (it->second.address() != dm.source)
          continue;
        auto node = it->first;
        s.admins.erase(it);
        if (s.table->lost(node, self->system().render(dm.reason), s.now())) {
          caf::aout(self) << "controller: node " << node << " is down ("
                          << self->system().render(dm.reason) << ")" << std::endl;
          self->send(s.router, replica_dn_atom::value, node);
        }
        return;
      }
    });
    self->send(self, tick_atom::value);
    return {
      [self](tick_atom) {
        for (const auto& node : self->state.table->start_attempts(self->state.now()))
          connect(self, node);
        self->delayed_send(self, std::chrono::milliseconds(self->state.opts.reconnect_ms),
                           tick_atom::value);
      },
      [self](share_tick_atom) {
        auto& s = self->state;
        for (const auto& mv : s.shares->decide(s.now()))
          send_move(self, mv);
        self->delayed_send(self, std::chrono::milliseconds(s.opts.share_tick_ms),
                           share_tick_atom::value);
      },
      [self](layout_tick_atom) {
        auto& s = self->state;
        for (const auto& mv : s.layouts.decide(s.now())) {
          caf::aout(self) << "controller: unit " << mv.unit << " to " << to_string(mv.to)
                          << " at concurrency " << mv.concurrency << std::endl;
          switch_layout(self, mv.unit, mv.to, [](std::string) {});
        }
        self->delayed_send(self, std::chrono::milliseconds(s.opts.layout_tick_ms), layout_tick_atom::value);
      },
      [self](set_layout_atom, const std::string& unit, const std::string& layout) -> caf::result<std::string> {
        auto to = parse_layout(layout);
        if (!to)
          return "unknown layout '" + layout + "' (known: single, replicas)";
        auto rp = self->make_response_promise<std::string>();
        switch_layout(self, unit, *to, [rp](std::string err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [self](move_atom, const std::string& model, const std::string& from,
             const std::string& to) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        move_model(self, model, from, to, [rp](std::string err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [self](plan_atom) -> std::string {
        auto& s = self->state;
        return plan_json(s, s.replan.plan()).dump();
      },
      [self](apply_plan_atom) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        apply_plan(self, [rp](nlohmann::json out) mutable { rp.deliver(out.dump()); });
        return rp;
      },
      [self](replan_tick_atom) {
        auto& s = self->state;
        apply_plan(self, [](nlohmann::json) {});
        self->delayed_send(self, std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(s.opts.replan_s)),
                           replan_tick_atom::value);
      },
      [self](const load_report& rep) {
        auto& s = self->state;
        s.replan.observe(rep.replica, rep.arrived, rep.residency, rep.waiting, rep.running, s.now());
        auto lu = s.layout_unit_of.find(rep.replica);
        if (lu != s.layout_unit_of.end())
          s.layouts.observe(lu->second, rep.replica, rep.waiting + rep.running);
        auto it = s.replica_unit.find(rep.replica);
        if (s.shares && it != s.replica_unit.end())
          s.shares->observe(it->second, rep.model, rep.waiting);
      },
      [self](nodes_atom) -> std::vector<node_entry> {
        std::vector<node_entry> out;
        for (const auto& r : self->state.table->rows()) {
          node_entry e;
          e.name = r.node.name;
          e.status = to_string(r.status);
          auto it = self->state.admins.find(r.node.name);
          if (it != self->state.admins.end())
            e.admin = caf::actor_cast<caf::actor>(it->second);
          out.push_back(std::move(e));
        }
        return out;
      },
      [self](get_state_atom) -> actor_state {
        auto& s = self->state;
        auto nodes = nlohmann::json::array();
        for (const auto& r : s.table->rows())
          nodes.push_back({{"node", r.node.name},
                           {"address", r.node.host + ":" + std::to_string(r.node.port)},
                           {"status", to_string(r.status)},
                           {"attempts", r.attempts},
                           {"failures", r.failures},
                           {"replicas", s.replicas.count(r.node.name) ? s.replicas.at(r.node.name) : 0},
                           {"since_s", r.since_s},
                           {"last_error", r.last_error}});
        nlohmann::json j{{"nodes_up", s.table->up_count()},
                         {"nodes_total", s.table->rows().size()},
                         {"nodes", nodes},
                         {"move_shares", s.shares != nullptr},
                         {"share_moves", s.share_moves},
                         {"share_move_failures", s.share_move_failures},
                         {"model_moves", s.model_moves},
                         {"failed_model_moves", s.failed_model_moves}};
        if (!s.opts.unit_memory.empty()) {
          auto recent = nlohmann::json::array();
          for (const auto& m : s.recent_replans)
            recent.push_back(m);
          j["replan"] = {{"period_s", s.opts.replan_s},
                         {"target", s.replan.has_planner() ? "placement planner" : "rate rule"},
                         {"plans_applied", s.plans_applied},
                         {"wakes", s.replan_wakes},
                         {"moves", s.replan_moves},
                         {"share_moves", s.replan_share_moves},
                         {"failures", s.replan_failures},
                         {"recent", recent}};
        }
        if (!s.recent_model_moves.empty()) {
          auto mv = nlohmann::json::array();
          for (const auto& m : s.recent_model_moves)
            mv.push_back(m);
          j["recent_model_moves"] = mv;
        }
        if (!s.layouts.units().empty()) {
          auto lay = nlohmann::json::object();
          for (const auto& [unit, u] : s.layouts.units())
            lay[unit] = {{"layout", to_string(u.layout)},
                         {"dynamic", u.opts.automatic},
                         {"replicas", u.layout == layout_kind::single ? 1 : u.opts.k},
                         {"k", u.opts.k},
                         {"switch_at", u.opts.switch_at},
                         {"hysteresis", u.opts.hysteresis},
                         {"concurrency", u.concurrency},
                         {"switching", u.switching},
                         {"switches", u.switches},
                         {"failed_switches", u.failed},
                         {"switching_s", u.switching_s},
                         {"handed_back", s.handed_back.count(unit) ? s.handed_back.at(unit) : 0},
                         {"joined", s.layout_replicas.count(unit) ? s.layout_replicas.at(unit).size() : 0}};
          j["layouts"] = lay;
        }
        if (s.shares) {
          auto moves = nlohmann::json::array();
          for (const auto& m : s.recent_moves)
            moves.push_back(m);
          j["recent_share_moves"] = moves;
          auto units = nlohmann::json::object();
          for (const auto& [unit, u] : s.shares->units())
            for (const auto& [model, m] : u.models)
              units[unit][model] = m.share;
          j["shares"] = units;
        }
        return {s.opts.node, "controller", s.opts.name, self->mailbox().size(), j.dump()};
      },
    };
  };
  return sys.spawn(impl, std::move(opts), std::move(local_admin), std::move(router));
}

}  // namespace llmux::controller
