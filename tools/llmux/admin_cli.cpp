#include "tools/llmux/admin_cli.hpp"

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

int run_admin(const config::cluster_config& cfg, const admin_cli_options& opts) {
  if (opts.command != "state") {
    std::cerr << "llmux admin: unknown command '" << opts.command << "' (known: state)\n";
    return 2;
  }
  auto node_name = opts.node.empty() ? cfg.controller.node : opts.node;
  const auto* node = cfg.find_node(node_name);
  if (node == nullptr) {
    std::cerr << "llmux admin: " << cfg.source << ": no node named '" << node_name << "'\n";
    return 2;
  }
  nlohmann::json req{{"cmd", "state"}, {"token", cfg.gateway.admin_token}};
  nlohmann::json rep;
  try {
    rep = net::admin_call(node->host, node->admin_port, req,
                          std::chrono::milliseconds(opts.timeout_ms));
  } catch (const std::exception& e) {
    std::cerr << "llmux admin: node " << node_name << ": " << e.what() << "\n";
    return 1;
  }
  if (!rep.value("ok", false)) {
    std::cerr << "llmux admin: node " << node_name << " refused: " << rep.value("error", "?")
              << "\n";
    return 1;
  }
  nlohmann::json states = nlohmann::json::array();
  for (const auto& st : rep["state"])
    if (matches(st, opts.actor))
      states.push_back(st);
  if (!opts.actor.empty() && states.empty()) {
    std::cerr << "llmux admin: no actor matches '" << opts.actor << "'\n";
    return 1;
  }
  if (opts.json)
    std::cout << states.dump(2) << std::endl;
  else
    std::cout << render_state_table(states);
  return 0;
}

}  // namespace llmux::tools
