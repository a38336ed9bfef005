#include <algorithm>
#include <cstdio>
#include "tools/llmux/admin_cli.hpp"

#include <optional>
#include <stdexcept>

#include <iostream>
#include <sstream>

#include "net/admin_wire.hpp"

namespace llmux::tools {

namespace {

std::string scalar(const nlohmann::json& v) {
  if (v.is_string())
    return v.get<std::string>();
  if (v.is_number_float()) {
    std::ostringstream os;
    os.precision(4);
    os << v.get<double>();
    return os.str();
  }
  return v.dump();
}

/// "k=v k=v" for the scalar members of an object.
std::string scalars(const nlohmann::json& obj) {
  std::string out;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!it->is_structured()) {
      if (it->is_string() && it->get<std::string>().empty())
        continue;
      out += (out.empty() ? "" : " ") + it.key() + "=" + scalar(*it);
    }
  return out;
}

bool matches(const nlohmann::json& st, const std::string& filter) {
  return filter.empty() || st.value("kind", "") == filter || st.value("name", "") == filter
         || st.value("node", "") == filter;
}

}  // namespace

std::string render_state_table(const nlohmann::json& states) {
  std::ostringstream os;
  os << "NODE      KIND        NAME                  MAILBOX  STATE\n";
  for (const auto& st : states) {
    char head[160];
    std::snprintf(head, sizeof(head), "%-9s %-11s %-21s %7llu  ", st.value("node", "").c_str(),
                  st.value("kind", "").c_str(), st.value("name", "").c_str(),
                  static_cast<unsigned long long>(st.value("mailbox", uint64_t{0})));
    const auto& s = st.contains("state") ? st["state"] : nlohmann::json::object();
    os << head << (s.is_object() ? scalars(s) : scalar(s)) << "\n";
    if (!s.is_object())
      continue;
    // Nested tables (replicas, nodes, models) get one indented line per entry.
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it->is_array()) {
        for (const auto& e : *it)
          os << "            " << it.key() << ": " << (e.is_object() ? scalars(e) : scalar(e))
             << "\n";
      } else if (it->is_object()) {
        for (auto e = it->begin(); e != it->end(); ++e)
          os << "            " << it.key() << "." << e.key() << ": "
             << (e->is_object() ? scalars(*e) : scalar(*e)) << "\n";
      }
    }
  }
  return os.str();
}

namespace {

/// One admin call to `node_name`; prints why it failed and returns nullopt.
std::optional<nlohmann::json> call_node(const config::cluster_config& cfg,
                                        const std::string& node_name, nlohmann::json req,
                                        const admin_cli_options& opts) {
  const auto* node = cfg.find_node(node_name);
  if (node == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no node named '" << node_name << "'\n";
    return std::nullopt;
  }
  req["token"] = cfg.gateway.admin_token;
  nlohmann::json rep;
  try {
    rep = net::admin_call(node->host, node->admin_port, req,
                          std::chrono::milliseconds(opts.timeout_ms));
  } catch (const std::exception& e) {
    std::cerr << "llmux admin: node " << node_name << ": " << e.what() << "\n";
    return std::nullopt;
  }
  if (!rep.value("ok", false)) {
    std::cerr << "llmux admin: node " << node_name << " refused: " << rep.value("error", "?")
              << "\n";
    return std::nullopt;
  }
  return rep;
}

/// set-share UNIT MODEL SHARE: asks the unit's own node.
int run_set_share(const config::cluster_config& cfg, const admin_cli_options& opts) {
  if (opts.args.size() != 3) {
    std::cerr << "llmux admin: set-share needs UNIT MODEL SHARE\n";
    return 2;
  }
  const auto* unit = cfg.find_unit(opts.args[0]);
  if (unit == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no unit named '" << opts.args[0] << "'\n";
    return 2;
  }
  double share = 0;
  try {
    size_t used = 0;
    share = std::stod(opts.args[2], &used);
    if (used != opts.args[2].size())
      throw std::invalid_argument("trailing text");
  } catch (const std::exception&) {
    std::cerr << "llmux admin: share '" << opts.args[2] << "' is not a number\n";
    return 2;
  }
  auto rep = call_node(cfg, unit->node,
                       {{"cmd", "set-share"}, {"unit", unit->name}, {"model", opts.args[1]},
                        {"share", share}},
                       opts);
  if (!rep)
    return 1;
  std::cout << "unit " << unit->name << ": " << opts.args[1] << " now runs on a share of " << share
            << std::endl;
  return 0;
}

/// set-layout UNIT LAYOUT: asks the controller's node (the controller
/// carries the switch out and answers when it is done).
int run_set_layout(const config::cluster_config& cfg, const admin_cli_options& opts) {
  if (opts.args.size() != 2) {
    std::cerr << "llmux admin: set-layout needs UNIT LAYOUT (single | replicas)\n";
    return 2;
  }
  const auto* unit = cfg.find_unit(opts.args[0]);
  if (unit == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no unit named '" << opts.args[0] << "'\n";
    return 2;
  }
  if (opts.args[1] != "single" && opts.args[1] != "replicas") {
    std::cerr << "llmux admin: unknown layout '" << opts.args[1] << "' (single | replicas)\n";
    return 2;
  }
  auto rep = call_node(cfg, cfg.controller.node,
                       {{"cmd", "set-layout"}, {"unit", unit->name}, {"layout", opts.args[1]}}, opts);
  if (!rep)
    return 1;
  std::cout << "unit " << unit->name << ": laid out as " << opts.args[1] << std::endl;
  return 0;
}

/// sleep|wake MODEL [UNIT]: asks the node of every unit that hosts MODEL
/// (or of UNIT alone); the model's scheduler there answers once its engine
/// is freed or built again.
int run_residency(const config::cluster_config& cfg, const admin_cli_options& opts) {
  const bool sleep = opts.command == "sleep";
  if (opts.args.empty() || opts.args.size() > 2) {
    std::cerr << "llmux admin: " << opts.command << " needs MODEL [UNIT]\n";
    return 2;
  }
  const auto& model = opts.args[0];
  if (cfg.find_model(model) == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no model named '" << model << "'\n";
    return 2;
  }
  std::vector<const config::unit_config*> units;
  for (const auto& u : cfg.units)
    if ((opts.args.size() < 2 || u.name == opts.args[1])
        && std::any_of(u.models.begin(), u.models.end(), [&](const auto& um) { return um.model == model; }))
      units.push_back(&u);
  if (units.empty()) {
    std::cerr << "llmux admin: " << cfg.source << ": no unit "
              << (opts.args.size() < 2 ? "" : "named '" + opts.args[1] + "' ") << "hosts model '" << model << "'\n";
    return 2;
  }
  int rc = 0;
  for (const auto* u : units) {
    auto rep = call_node(cfg, u->node, {{"cmd", opts.command}, {"unit", u->name}, {"model", model}}, opts);
    if (!rep) {
      rc = 1;
      continue;
    }
    std::cout << "unit " << u->name << ": " << model << (sleep ? " is asleep" : " is awake") << std::endl;
  }
  return rc;
}

/// move MODEL FROM_UNIT TO_UNIT: asks the controller's node.
int run_move(const config::cluster_config& cfg, const admin_cli_options& opts) {
  if (opts.args.size() != 3) {
    std::cerr << "llmux admin: move needs MODEL FROM_UNIT TO_UNIT\n";
    return 2;
  }
  const auto& model = opts.args[0];
  if (cfg.find_model(model) == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no model named '" << model << "'\n";
    return 2;
  }
  for (size_t i : {size_t{1}, size_t{2}}) {
    const auto* u = cfg.find_unit(opts.args[i]);
    if (u == nullptr) {
      std::cerr << "llmux admin: " << cfg.source << ": no unit named '" << opts.args[i] << "'\n";
      return 2;
    }
    if (std::none_of(u->models.begin(), u->models.end(), [&](const auto& um) { return um.model == model; })) {
      std::cerr << "llmux admin: " << cfg.source << ": unit '" << u->name << "' does not list model '" << model
                << "' (list it there, with awake = false, to move it there)\n";
      return 2;
    }
  }
  auto rep = call_node(cfg, cfg.controller.node,
                       {{"cmd", "move"}, {"model", model}, {"from", opts.args[1]}, {"to", opts.args[2]}}, opts);
  if (!rep)
    return 1;
  std::cout << model << ": moved from unit " << opts.args[1] << " to unit " << opts.args[2] << std::endl;
  return 0;
}

/// plan | apply-plan: the controller's online re-placement, shown or done.
int run_plan(const config::cluster_config& cfg, const admin_cli_options& opts) {
  const bool apply = opts.command == "apply-plan";
  if (!opts.args.empty()) {
    std::cerr << "llmux admin: " << opts.command << " takes no arguments\n";
    return 2;
  }
  auto rep = call_node(cfg, cfg.controller.node, {{"cmd", opts.command}}, opts);
  if (!rep)
    return 1;
  const auto& plan = (*rep)["plan"];
  if (opts.json) {
    std::cout << plan.dump(2) << std::endl;
    return 0;
  }
  std::cout << "target: " << plan.value("target", "rate rule") << "\n";
  std::printf("%-24s %-20s %-10s %9s %7s %7s %7s\n", "replica", "model", "state", "req/s", "waiting", "running",
              "share");
  for (const auto& r : plan["replicas"]) {
    const auto decode = r.contains("share") ? std::to_string(r.value("share", 0.0)).substr(0, 5) : "-";
    std::printf("%-24s %-20s %-10s %9.3f %7d %7d %7s\n", r.value("replica", "").c_str(), r.value("model", "").c_str(),
                r.value("residency", "").c_str(), r.value("rate", 0.0), r.value("waiting", 0), r.value("running", 0),
                decode.c_str());
  }
  const auto& shares = plan.contains("shares") ? plan["shares"] : nlohmann::json::array();
  if (plan["moves"].empty() && shares.empty())
    std::cout << (apply ? "nothing to do: " : "") << "every unit holds the models it should awake\n";
  int rc = 0;
  auto outcome = [&](const nlohmann::json& m) {
    if (apply) {
      const auto result = m.value("result", "");
      std::cout << (result.empty() ? ": done" : ": " + result);
      rc = result.empty() ? rc : 1;
    }
    std::cout << "\n";
  };
  for (const auto& m : plan["moves"]) {
    std::string sleeps;
    for (const auto& v : m["sleep"])
      sleeps += (sleeps.empty() ? "" : ", ") + v.get<std::string>();
    std::cout << "unit " << m.value("unit", "") << ": " << (m.contains("from") ? "move " : "wake ")
              << m.value("wake", "") << " (" << m.value("rate", 0.0) << " req/s)"
              << (m.contains("from") ? " from " + m.value("from", "") : "")
              << (sleeps.empty() ? "" : ", putting to sleep " + sleeps);
    outcome(m);
  }
  for (const auto& m : shares) {
    std::cout << "unit " << m.value("unit", "") << ": " << m.value("target", "") << " share " << m.value("from", 0.0)
              << " -> " << m.value("share", 0.0);
    outcome(m);
  }
  return rc;
}

}  // namespace

int run_admin(const config::cluster_config& cfg, const admin_cli_options& opts) {
  if (opts.command == "set-share")
    return run_set_share(cfg, opts);
  if (opts.command == "set-layout")
    return run_set_layout(cfg, opts);
  // A wake or a move waits for models to load: minutes for a large one.
  auto slow = opts;
  slow.timeout_ms = std::max(opts.timeout_ms, 300000);
  if (opts.command == "sleep" || opts.command == "wake")
    return run_residency(cfg, slow);
  if (opts.command == "move")
    return run_move(cfg, slow);
  if (opts.command == "plan" || opts.command == "apply-plan")
    return run_plan(cfg, slow);
  if (opts.command != "state") {
    std::cerr << "llmux admin: unknown command '" << opts.command
              << "' (known: state, set-share, set-layout, sleep, wake, move, plan, apply-plan)\n";
    return 2;
  }
  if (opts.args.size() > 1) {
    std::cerr << "llmux admin: state takes at most one filter (a kind, name or node)\n";
    return 2;
  }
  const std::string filter = opts.args.empty() ? "" : opts.args[0];
  auto node_name = opts.node.empty() ? cfg.controller.node : opts.node;
  auto rep = call_node(cfg, node_name, {{"cmd", "state"}}, opts);
  if (!rep)
    return cfg.find_node(node_name) == nullptr ? 2 : 1;
  nlohmann::json states = nlohmann::json::array();
  for (const auto& st : (*rep)["state"])
    if (matches(st, filter))
      states.push_back(st);
  if (!filter.empty() && states.empty()) {
    std::cerr << "llmux admin: no actor matches '" << filter << "'\n";
    return 1;
  }
  if (opts.json)
    std::cout << states.dump(2) << std::endl;
  else
    std::cout << render_state_table(states);
  return 0;
}

}  // namespace llmux::tools
