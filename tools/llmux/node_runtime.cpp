#include "tools/llmux/node_runtime.hpp"

#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <set>
#include <stdexcept>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/admin/admin_actor.hpp"
#include "actors/controller/controller_actor.hpp"
#include "actors/gateway/gateway_actor.hpp"
#include "actors/gateway/http_edge.hpp"
#include "actors/gpu_unit/gpu_unit_actor.hpp"
#include "actors/kv_manager/kv_manager_actor.hpp"
#include "actors/node_tls/tls_middleman.hpp"
#include "actors/router/router_actor.hpp"
#include "actors/scheduler/scheduler_actor.hpp"
#include "actors/unit_setup.hpp"
#include "engine/engine_factory.hpp"
#include "net/admin_wire.hpp"
#include "net/node_tls.hpp"
#include "plan/online.hpp"

namespace llmux::tools {

using namespace protocol;

namespace {

/// Fetches the cluster-wide state from the local admin actor as JSON.
nlohmann::json cluster_state(caf::actor_system& sys, const admin_actor& admin, int timeout_ms) {
  caf::scoped_actor self{sys};
  nlohmann::json out = nlohmann::json::array();
  std::string failure;
  self->request(admin, std::chrono::milliseconds(timeout_ms), cluster_atom::value)
    .receive(
      [&](std::vector<actor_state>& states) {
        for (auto& st : states) {
          auto state = nlohmann::json::parse(st.state_json, nullptr, false);
          out.push_back({{"node", st.node},
                         {"kind", st.kind},
                         {"name", st.name},
                         {"mailbox", st.mailbox},
                         {"state", state.is_discarded() ? nlohmann::json{} : state}});
        }
      },
      [&](caf::error& err) { failure = sys.render(err); });
  if (!failure.empty())
    throw std::runtime_error("admin actor did not answer: " + failure);
  return out;
}

/// One request whose answer is "" (done) or why not, as the admin port's
/// JSON answer; `who` names the actor when it does not answer.
template <class Handle, class... Ts>
nlohmann::json ask(caf::actor_system& sys, const Handle& dest, caf::timespan timeout, const std::string& who,
                   Ts&&... xs) {
  caf::scoped_actor self{sys};
  std::string answer;
  std::string failure;
  self->request(dest, timeout, std::forward<Ts>(xs)...)
    .receive([&](std::string& err) { answer = std::move(err); },
             [&](caf::error& err) { failure = sys.render(err); });
  if (!failure.empty())
    return {{"ok", false}, {"error", who + " did not answer: " + failure}};
  if (!answer.empty())
    return {{"ok", false}, {"error", answer}};
  return {{"ok", true}};
}

/// `llmux admin ... set-share UNIT MODEL SHARE`: one `set_share` message to
/// the unit, which moves the model's jobs between two steps.
nlohmann::json set_share(caf::actor_system& sys, const std::map<std::string, gpu_unit_actor>& units,
                         const nlohmann::json& req) {
  const auto unit = req.value("unit", std::string{});
  auto it = units.find(unit);
  if (it == units.end())
    return {{"ok", false}, {"error", "no unit '" + unit + "' on this node"}};
  if (!req.contains("share") || !req["share"].is_number())
    return {{"ok", false}, {"error", "share must be a number"}};
  return ask(sys, it->second, std::chrono::seconds(30), "unit '" + unit + "'", set_share_atom::value,
             req.value("model", std::string{}), req["share"].get<double>());
}

/// `llmux admin ... set-layout UNIT LAYOUT`: the controller carries the
/// switch out (a message flow) and answers when it is done.
nlohmann::json set_layout(caf::actor_system& sys, const controller_actor& ctrl, const nlohmann::json& req) {
  if (!ctrl)
    return {{"ok", false}, {"error", "the controller does not run on this node"}};
  return ask(sys, ctrl, std::chrono::seconds(120), "the controller", set_layout_atom::value,
             req.value("unit", std::string{}), req.value("layout", std::string{}));
}

/// `llmux admin ... sleep|wake MODEL [UNIT]`: to the model's scheduler on
/// the unit, which answers once the engine is freed or built again.
nlohmann::json residency_cmd(caf::actor_system& sys, const std::map<std::string, scheduler_actor>& schedulers,
                             const nlohmann::json& req) {
  const auto cmd = req.value("cmd", std::string{});
  const auto replica = req.value("unit", std::string{}) + "/" + req.value("model", std::string{});
  auto it = schedulers.find(replica);
  if (it == schedulers.end())
    return {{"ok", false}, {"error", "no replica '" + replica + "' on this node"}};
  const auto who = "replica '" + replica + "'";
  if (cmd == "sleep")
    return ask(sys, it->second, std::chrono::seconds(120), who, sleep_atom::value);
  return ask(sys, it->second, std::chrono::seconds(120), who, wake_atom::value);
}

/// `llmux admin ... move MODEL FROM_UNIT TO_UNIT`: the controller carries
/// the move out (a message flow) and answers when it is done.
nlohmann::json move_cmd(caf::actor_system& sys, const controller_actor& ctrl, const nlohmann::json& req) {
  if (!ctrl)
    return {{"ok", false}, {"error", "the controller does not run on this node"}};
  return ask(sys, ctrl, std::chrono::seconds(300), "the controller", move_atom::value,
             req.value("model", std::string{}), req.value("from", std::string{}), req.value("to", std::string{}));
}

/// `llmux admin ... plan | apply-plan`: the controller's re-placement plan
/// (or what applying it did), as JSON.
nlohmann::json plan_cmd(caf::actor_system& sys, const controller_actor& ctrl, bool apply) {
  if (!ctrl)
    return {{"ok", false}, {"error", "the controller does not run on this node"}};
  caf::scoped_actor self{sys};
  std::string answer;
  std::string failure;
  auto on_reply = [&](std::string& text) { answer = std::move(text); };
  auto on_error = [&](caf::error& err) { failure = sys.render(err); };
  if (apply)
    self->request(ctrl, std::chrono::seconds(300), apply_plan_atom::value).receive(on_reply, on_error);
  else
    self->request(ctrl, std::chrono::seconds(10), plan_atom::value).receive(on_reply, on_error);
  if (!failure.empty())
    return {{"ok", false}, {"error", "the controller did not answer: " + failure}};
  auto plan = nlohmann::json::parse(answer, nullptr, false);
  if (plan.is_discarded() || plan.contains("error"))
    return {{"ok", false}, {"error", plan.is_discarded() ? answer : plan.value("error", "")}};
  return {{"ok", true}, {"plan", plan}};
}

int wait_for_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace

struct node_runtime::impl {
  config::cluster_config cfg;
  std::string node;
  node_run_options opts;
  // Declared in this order on purpose: the actor system keeps a reference to
  // its config, and it must outlive the servers and actor handles below.
  caf::actor_system_config sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<caf::actor> spawned;
  admin_actor admin;
  std::shared_ptr<gateway::request_registry> registry;
  gateway::edge_hooks hooks;
  std::unique_ptr<gateway::http_edge> edge;
  std::unique_ptr<net::admin_server> admin_srv;
  std::map<std::string, gpu_unit_actor> units;  ///< this node's units, by name
  std::map<std::string, scheduler_actor> schedulers;  ///< this node's replicas, by "unit/model"
  caf::io::middleman_actor tls_middleman;        ///< node links over TLS ([tls]); else invalid

  void boot();
  ~impl() {
    if (registry)
      registry->fail_all(503, "server is shutting down");
    if (edge)
      edge->stop();
    if (admin_srv)
      admin_srv->stop();
    // Stop the actors before the system's destructor, which waits for all of
    // them: a live one (timers keep it busy) would hang the exit forever.
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

node_runtime::node_runtime(const config::cluster_config& cfg, const std::string& node_name,
                           const node_run_options& opts)
    : impl_{std::make_unique<impl>()} {
  impl_->cfg = cfg;
  impl_->node = node_name;
  impl_->opts = opts;
  impl_->boot();
}

node_runtime::~node_runtime() = default;

const gateway::edge_hooks& node_runtime::hooks() const {
  return impl_->hooks;
}

std::shared_ptr<gateway::request_registry> node_runtime::registry() const {
  return impl_->registry;
}

void node_runtime::print_banner() const {
  const auto& cfg = impl_->cfg;
  const auto* me = cfg.find_node(impl_->node);
  std::cout << "llmux: node " << impl_->node << " up";
  if (impl_->opts.publish)
    std::cout << ", cluster port " << me->host << ":" << me->port << (cfg.tls.enabled ? " (mutual TLS)" : "");
  if (impl_->opts.admin_port)
    std::cout << ", admin port " << me->host << ":" << me->admin_port;
  std::cout << std::endl;
  if (impl_->edge)
    std::cout << "llmux: edge listening on http://" << cfg.gateway.host << ":"
              << impl_->edge->port() << std::endl;
}

void node_runtime::impl::boot() {
  const std::string& node_name = node;
  const auto* me = cfg.find_node(node_name);
  if (me == nullptr)
    throw std::runtime_error(cfg.source + ": no node named '" + node_name + "'");
  const auto& to = cfg.timeouts;

  // -- the actor system: middleman with heartbeats on every node -------------
  sys_cfg.load<caf::io::middleman>();
  register_types(sys_cfg);
  sys_cfg.set("scheduler.max-threads", cfg.scheduler_threads);
  sys_cfg.set("scheduler.policy", caf::atom("sharing"));
  sys_cfg.set("middleman.workers", 0);
  sys_cfg.set("middleman.heartbeat-interval",
              caf::timespan{std::chrono::milliseconds(to.heartbeat_ms)});
  sys_cfg.set("middleman.connection-timeout",
              caf::timespan{std::chrono::milliseconds(to.connection_timeout_ms)});
  sys_cfg.set("logger.console-verbosity", caf::atom("quiet"));
  sys_cfg.set("logger.file-verbosity", caf::atom("quiet"));
  sys = std::make_unique<caf::actor_system>(sys_cfg);
  caf::actor_system& sys = *this->sys;
  auto add = [&](admin_actor& admin, const char* kind, const std::string& name, caf::actor a) {
    caf::anon_send(admin, add_actor_atom::value, std::string{kind}, name, a);
    spawned.push_back(std::move(a));
  };

  // -- 0. node links: mutual TLS with the cluster's certificates ([tls]) ----
  if (cfg.tls.enabled) {
    std::set<std::string> names;
    node_tls::node_addresses where;
    for (const auto& n : cfg.nodes) {
      names.insert(n.name);
      where[{n.host, n.port}] = n.name;
    }
    // Throws, naming the file, when this node's credentials are missing or
    // do not fit together: the node does not start without them.
    auto ctx = std::make_shared<const net::node_tls::context>(
      net::node_tls::credentials{cfg.tls.ca, cfg.tls.cert_of(node_name), cfg.tls.key_of(node_name)}, std::move(names),
      [](const std::string& line) { spdlog::warn("{}", line); });
    tls_middleman = node_tls::spawn_tls_middleman(sys, std::move(ctx), std::move(where));
    spawned.push_back(caf::actor_cast<caf::actor>(tls_middleman));
  }

  // -- 1. admin: the node's agent, first so everything can register --------
  admin = admin::spawn_admin(sys, {node_name});
  spawned.push_back(caf::actor_cast<caf::actor>(admin));
  // -- 2. units: kv_manager, gpu_unit, one scheduler per hosted model --------
  for (const auto& u : cfg.units) {
    if (u.node != node_name)
      continue;
    // The unit's cores are configured by actors/unit_setup (as `llmux
    // simulate` configures them); the actors below are their shells.
    auto kvo = setup::kv_options(cfg, u);
    kvo.node = node_name;
    auto core = std::make_shared<unit::unit_core>(u.time_scale);
    setup::configure_core(*core, u);
    // One KV memory for the unit's engines that read the kv_manager's
    // blocks, so its models share one pool in fact, not only in accounting.
    std::vector<const config::model_config*> hosted;
    for (const auto& um : u.models)
      hosted.push_back(cfg.find_model(um.model));
    auto arena = engine::make_kv_arena(hosted, kvo.total_blocks, u.block_tokens);
    auto device_kv = engine::make_device_kv_slot(hosted, kvo.total_blocks, u.block_tokens);
    const auto insts = setup::instances(u);
    // Which models start awake: those not configured asleep, while their
    // weights fit the unit's memory_mib (in config order). A layout unit's
    // instances share one mapping of the weights and do not sleep.
    const bool sleepable = u.layout == "single";
    unit::residency memory(int64_t{u.memory_mib} << 20);
    std::map<std::string, double> sim_wake;
    std::set<std::string> asleep;
    auto unit_model_of = [&u](const std::string& model) -> const config::unit_model& {
      for (const auto& um : u.models)
        if (um.model == model)
          return um;
      throw std::logic_error("unit " + u.name + " has no model " + model);
    };
    for (const auto& in : insts) {
      const auto* m = cfg.find_model(in.model);
      const auto& um = unit_model_of(in.model);
      try {
        auto ctx = setup::engine_context(cfg, u, um, kvo.total_blocks);
        ctx.arena = arena;
        ctx.device_kv = device_kv;
        if (in.count > 1)
          ctx.share = in.share;  // a replica of a layout unit (0: parked)
        unit::unit_core::engine_maker make;
        if (sleepable) {
          const auto bytes = setup::weight_bytes(*m);
          if (u.memory_mib > 0 && bytes > (int64_t{u.memory_mib} << 20))
            throw std::runtime_error("model '" + m->name + "' needs " + std::to_string((bytes >> 20) + 1)
                                     + " MiB of weights, more than the unit's memory_mib (" +
                                     std::to_string(u.memory_mib) + ")");
          if (memory.add(in.key, bytes, um.awake) != unit::residency_state::ready)
            asleep.insert(in.key);
          sim_wake[in.key] = setup::sim_wake_seconds(cfg, u, *m);
          make = [mc = *m, ctx] { return engine::make_engine(mc, ctx); };
        }
        if (asleep.count(in.key)) {
          std::cout << "llmux: node " << node_name << ": " << m->name << " starts asleep on unit " << u.name
                    << (um.awake ? " (memory_mib is taken by the models before it)" : " (awake = false)")
                    << "; its first request wakes it" << std::endl;
          core->add_model(in.key, nullptr, ctx.share, um.decode_share, make, m->backend);
          continue;
        }
        // Further instances map the same weights (engine_factory shares them).
        if (in.index > 0)
          std::cout << "llmux: node " << node_name << ": " << in.key << " shares " << m->name
                    << "'s weights" << std::endl;
        else if (m->load_format == "dummy")
          std::cout << "llmux: node " << node_name << ": building random " << m->dtype
                    << " weights for " << m->name << " (load_format = dummy)" << std::endl;
        else if (m->backend != "sim")
          std::cout << "llmux: node " << node_name << ": loading " << m->name << " from "
                    << m->file << " (" << m->backend << ")" << std::endl;
        core->add_model(in.key, engine::make_engine(*m, ctx), ctx.share, um.decode_share, make);
      } catch (const std::exception& e) {
        throw std::runtime_error("unit " + u.name + ": " + e.what());
      }
    }
    auto kv = kv::spawn_kv_manager(sys, kvo);
    add(admin, "kv_manager", kvo.name, caf::actor_cast<caf::actor>(kv));
    // A real engine computes inside the step handler: each of its models
    // gets a partition actor with its own thread, so steps never block the
    // CAF workers that carry messages, and co-located models compute at once.
    unit::gpu_unit_options uo{node_name, u.name, u.backend, u.gpu};
    const auto sharing = setup::sharing(u);
    uo.temporal = sharing.temporal;
    uo.shared_prefill = sharing.shared_prefill;
    uo.policy = sharing.policy;
    uo.max_prefill_streak = sharing.max_prefill_streak;
    uo.memory = std::move(memory);
    uo.sim_wake_s = std::move(sim_wake);
    auto unit = unit::spawn_gpu_unit(sys, uo, core, /*partitions=*/u.backend != "sim");
    add(admin, "gpu_unit", u.name, caf::actor_cast<caf::actor>(unit));
    units[u.name] = unit;
    for (const auto& in : insts) {
      const auto* m = cfg.find_model(in.model);
      const auto& um = unit_model_of(in.model);
      scheduler::scheduler_actor_options so;
      so.node = node_name;
      so.unit = u.name;
      so.model = in.key;
      so.served = m->name;
      so.replica = u.name + "/" + in.key;
      const bool awake = !asleep.count(in.key);
      so.core = setup::scheduler_options(u, *m, awake ? core->models().at(in.key).engine->vocab().eos_id()
                                                      : engine::make_frontend(*m).tok->eos_id());
      so.load_report_ms = to.load_report_ms;
      so.step_timeout_ms = to.request_ms;
      so.can_sleep = sleepable;
      so.start_asleep = !awake;
      so.idle_sleep_s = m->idle_sleep_s;
      auto sched = scheduler::spawn_scheduler(sys, so, unit, kv);
      schedulers[so.replica] = sched;
      add(admin, "scheduler", so.replica, caf::actor_cast<caf::actor>(sched));
      replica_info info{so.replica, m->name, u.name, node_name, m->backend,
                        caf::actor_cast<caf::actor>(sched), caf::actor_cast<caf::actor>(unit),
                        in.count > 1 ? in.share : um.share, setup::prefill_rate(cfg, u, um),
                        in.key, in.index, in.count, in.parked()};
      info.asleep = !awake;
      caf::anon_send(admin, replica_up_atom::value, std::move(info));
    }
  }

  // -- 3. router, gateway + HTTP edge, controller (the edge node) ------------
  router_actor router;
  if (cfg.router.node == node_name) {
    router::router_options ro;
    ro.node = node_name;
    ro.routing = setup::routing(cfg);
    // While the cluster starts, a request waits for its model's first
    // replica (within its deadline) rather than failing.
    ro.join_wait_ms = cfg.timeouts.request_ms;
    router = router::spawn_router(sys, ro);
    add(admin, "router", ro.name, caf::actor_cast<caf::actor>(router));
  }
  controller_actor ctrl_handle;
  if (cfg.controller.node == node_name) {
    controller::controller_options co;
    co.node = node_name;
    co.nodes = cfg.nodes;
    co.connect_ms = to.connect_ms;
    co.reconnect_ms = to.reconnect_ms;
    co.middleman = tls_middleman;
    co.move_shares = cfg.controller.move_shares;
    co.shares.step = cfg.controller.share_step;
    co.shares.cooldown_s = cfg.controller.share_cooldown_ms / 1e3;
    co.share_tick_ms = cfg.controller.share_tick_ms;
    for (const auto& u : cfg.units)
      if (u.layout != "single") {
        co.layouts[u.name] = setup::layout_options(cfg, u);
        co.initial_layouts[u.name] =
          u.layout == "replicas" ? controller::layout_kind::replicas : controller::layout_kind::single;
        std::cout << "llmux: unit " << u.name << " lays " << u.models[0].model << " out as "
                  << (u.layout == "replicas" ? std::to_string(co.layouts[u.name].k) + " replicas" : "one replica")
                  << (u.layout == "dynamic"
                        ? co.layouts[u.name].switch_at > 0
                            ? ", " + std::to_string(co.layouts[u.name].k) + " replicas above "
                                + std::to_string(co.layouts[u.name].switch_at) + " concurrent requests"
                            : " (the cost model finds one replica faster at every concurrency)"
                        : "")
                  << std::endl;
      }
    for (const auto& u : cfg.units)
      if (u.memory_mib > 0 && u.layout == "single") {
        co.unit_memory[u.name] = int64_t{u.memory_mib} << 20;
        for (const auto& um : u.models) {
          co.model_bytes[um.model] = setup::weight_bytes(*cfg.find_model(um.model));
          const bool lane = u.jobs == "split" && u.prefill == "shared";
          co.planned_shares[u.name + "/" + um.model] = lane ? um.decode_share : um.share;
        }
      }
    if (!co.unit_memory.empty()) {
      std::string why;
      if (auto planner = plan::online_planner(cfg, &why)) {
        co.planner = std::move(*planner);
        std::cout << "llmux: re-placement plans with the placement planner (MuxServe's, on the units that exist)"
                  << std::endl;
      } else {
        std::cout << "llmux: re-placement plans by the rate rule: " << why << std::endl;
      }
    }
    co.replan.budget = cfg.controller.replan_budget;
    co.replan.ratio = cfg.controller.replan_ratio;
    co.replan.min_rate = cfg.controller.replan_min_rate;
    co.replan_s = cfg.controller.replan_s;
    auto ctrl = controller::spawn_controller(sys, co, admin, router);
    add(admin, "controller", co.name, caf::actor_cast<caf::actor>(ctrl));
    ctrl_handle = ctrl;
  }
  if (cfg.gateway.node == node_name) {
    registry = std::make_shared<gateway::request_registry>();
    gateway::gateway_options go;
    go.node = node_name;
    go.request_timeout_ms = to.request_ms;
    auto gw = gateway::spawn_gateway(sys, go, registry, router);
    add(admin, "gateway", go.name, caf::actor_cast<caf::actor>(gw));
    hooks.submit = [gw](gen_request req) { caf::anon_send(gw, submit_atom::value, std::move(req)); };
    hooks.cancel = [gw](uint64_t id) { caf::anon_send(gw, cancel_atom::value, id); };
    hooks.admin_state = [&sys, admin = admin] { return cluster_state(sys, admin, 5000).dump(); };
    if (opts.http) {
      // Keys may also come from the environment (LLMUX_API_KEY), so they
      // need not sit in a config file.
      auto edge_cfg = cfg;
      config::add_environment_keys(edge_cfg);
      edge = std::make_unique<gateway::http_edge>(edge_cfg, registry, hooks);
      edge->start();  // throws std::runtime_error when the port cannot be bound
    }
  }

  // -- 4. open the node to the cluster and to the admin CLI -------------------
  if (opts.publish) {
    auto port = tls_middleman
                  ? node_tls::publish(sys, tls_middleman, caf::actor_cast<caf::strong_actor_ptr>(admin),
                                      sys.message_types(caf::detail::type_list<admin_actor>{}), me->port, me->host)
                  : sys.middleman().publish(admin, me->port, me->host.c_str(), true);
    if (!port)
      throw std::runtime_error("cannot publish on " + me->host + ":" + std::to_string(me->port)
                               + ": " + sys.render(port.error()));
  }
  if (opts.admin_port) {
    // The server checks the token before the handler sees a request, bounds
    // connections and request size, and closes idle connections.
    net::admin_server_options aopts;
    aopts.token = cfg.gateway.admin_token;
    aopts.log = [](const std::string& why) { spdlog::warn("{}", why); };
    admin_srv = std::make_unique<net::admin_server>(
      me->host, me->admin_port,
      [&sys, admin = admin, units = units, schedulers = schedulers, ctrl_handle](const nlohmann::json& req) {
        auto cmd = req.value("cmd", "");
        if (cmd == "set-share")
          return set_share(sys, units, req);
        if (cmd == "sleep" || cmd == "wake")
          return residency_cmd(sys, schedulers, req);
        if (cmd == "move")
          return move_cmd(sys, ctrl_handle, req);
        if (cmd == "plan" || cmd == "apply-plan")
          return plan_cmd(sys, ctrl_handle, cmd == "apply-plan");
        if (cmd == "set-layout")
          return set_layout(sys, ctrl_handle, req);
        if (cmd != "state")
          return nlohmann::json{{"ok", false}, {"error", "unknown command '" + cmd + "'"}};
        return nlohmann::json{{"ok", true}, {"state", cluster_state(sys, admin, 5000)}};
      }, aopts);
    try {
      admin_srv->start();
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string{"admin port: "} + e.what());
    }
  }
}

int run_node(const config::cluster_config& cfg, const std::string& node_name,
             const node_run_options& opts) {
  if (cfg.find_node(node_name) == nullptr) {
    std::cerr << "llmux: " << cfg.source << ": no node named '" << node_name << "'\n";
    return 2;
  }
  std::unique_ptr<node_runtime> rt;
  try {
    rt = std::make_unique<node_runtime>(cfg, node_name, opts);
  } catch (const std::exception& e) {
    std::cerr << "llmux: node " << node_name << ": " << e.what() << "\n";
    return 1;
  }
  rt->print_banner();
  int sig = wait_for_signal();
  std::cout << "llmux: node " << node_name << " stopping (" << strsignal(sig) << ")" << std::endl;
  return 0;
}

}  // namespace llmux::tools
