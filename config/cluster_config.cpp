#include "config/cluster_config.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include <toml++/toml.h>

namespace llmux::config {

// ---------------------------------------------------------------------------
// Plain data helpers
// ---------------------------------------------------------------------------

double model_arch::params() const {
  // Doubles throughout: llama-70b overflows 32-bit products.
  const double h = hidden;
  const double head_dim = head_size();
  const double q_dim = head_dim * heads;
  const double kv_dim = head_dim * kv_heads;
  const double embeddings = 2.0 * vocab * h;  // input table + untied output head
  const double attention = 2.0 * h * q_dim + 2.0 * h * kv_dim;  // q,o + k,v
  const double mlp = 3.0 * h * intermediate;                // gate, up, down
  const double norms = 2.0 * h;
  return embeddings + layers * (attention + mlp + norms);
}

double model_arch::kv_bytes_per_token() const {
  return 2.0 * layers * kv_heads * static_cast<double>(head_size()) * dtype_bytes;
}

namespace {

struct named_preset {
  std::string_view name;
  int layers, hidden, heads, kv_heads, intermediate, vocab, context_length;
};

constexpr named_preset presets[] = {
  {"tiny", 2, 256, 4, 4, 768, 512, 2048},
  {"llama-1b", 16, 2048, 32, 8, 8192, 128256, 8192},
  {"llama-3b", 28, 3072, 24, 8, 8192, 128256, 8192},
  {"llama-7b", 32, 4096, 32, 32, 11008, 32000, 4096},
  {"llama-8b", 32, 4096, 32, 8, 14336, 128256, 8192},
  {"llama-13b", 40, 5120, 40, 40, 13824, 32000, 4096},
  {"llama-30b", 60, 6656, 52, 52, 17920, 32000, 2048},
  {"llama-65b", 80, 8192, 64, 64, 22016, 32000, 2048},
  {"llama-70b", 80, 8192, 64, 8, 28672, 128256, 8192},
};

std::string preset_names() {
  std::string out;
  for (const auto& p : presets) {
    if (!out.empty())
      out += ", ";
    out += p.name;
  }
  return out;
}

}  // namespace

std::optional<model_arch> arch_preset(const std::string& name) {
  for (const auto& p : presets) {
    if (p.name != name)
      continue;
    model_arch a;
    a.preset = name;
    a.layers = p.layers;
    a.hidden = p.hidden;
    a.heads = p.heads;
    a.kv_heads = p.kv_heads;
    a.intermediate = p.intermediate;
    a.vocab = p.vocab;
    a.context_length = p.context_length;
    a.dtype_bytes = 2;
    return a;
  }
  return std::nullopt;
}

const node_config* cluster_config::find_node(const std::string& node_name) const {
  for (const auto& n : nodes)
    if (n.name == node_name)
      return &n;
  return nullptr;
}

const model_config* cluster_config::find_model(const std::string& model_name) const {
  for (const auto& m : models)
    if (m.name == model_name)
      return &m;
  return nullptr;
}

const unit_config* cluster_config::find_unit(const std::string& unit_name) const {
  for (const auto& u : units)
    if (u.name == unit_name)
      return &u;
  return nullptr;
}

namespace {

std::string format_error(const std::string& file, int line, const std::string& key,
                         const std::string& reason) {
  std::string out = file;
  if (line > 0)
    out += ":" + std::to_string(line);
  out += ": key '" + key + "': " + reason;
  // Callers print what() as one log line; a stray newline would split it.
  std::replace(out.begin(), out.end(), '\n', ' ');
  return out;
}

}  // namespace

config_error::config_error(std::string file_name, int line_no, std::string key_path,
                           std::string why)
  : std::runtime_error(format_error(file_name, line_no, key_path, why)),
    file(std::move(file_name)),
    line(line_no),
    key(std::move(key_path)),
    reason(std::move(why)) {
}

// ---------------------------------------------------------------------------
// TOML reading
// ---------------------------------------------------------------------------

namespace {

int line_of(const toml::node& n) {
  return static_cast<int>(n.source().begin.line);
}

std::string_view type_phrase(toml::node_type t) {
  switch (t) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string type_error(std::string_view expected, const toml::node& got) {
  return "expected " + std::string(expected) + ", got " + std::string(type_phrase(got.type()));
}

std::string format_number(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

/// A TOML table plus its dotted path, so every error names the exact key and
/// the line it sits on.
class section {
public:
  section(const toml::table& table, std::string path, const std::string& file)
    : table_(&table), path_(std::move(path)), file_(&file) {
  }

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const std::string& file() const { return *file_; }
  [[nodiscard]] int line() const { return line_of(*table_); }

  [[nodiscard]] std::string key(std::string_view name) const {
    return path_.empty() ? std::string(name) : path_ + "." + std::string(name);
  }

  [[nodiscard]] const toml::node* find(std::string_view name) const {
    return table_->get(name);
  }

  /// Error at `name`'s value, or at this table when the key is absent.
  [[noreturn]] void fail(std::string_view name, const std::string& reason) const {
    const auto* n = find(name);
    throw config_error(*file_, n ? line_of(*n) : line(), key(name), reason);
  }

  /// Error about the table itself.
  [[noreturn]] void fail_here(const std::string& reason) const {
    throw config_error(*file_, line(), path_, reason);
  }

  /// A typo must not silently fall back to a default, so unknown keys fail.
  void allow_only(std::initializer_list<std::string_view> known) const {
    for (auto&& [k, v] : *table_) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end())
        continue;
      std::string list;
      for (auto name : known) {
        if (!list.empty())
          list += ", ";
        list += name;
      }
      throw config_error(*file_, static_cast<int>(k.source().begin.line), key(k.str()),
                         "unknown key (expected one of: " + list + ")");
    }
  }

  const toml::node& require(std::string_view name) const {
    if (const auto* n = find(name))
      return *n;
    throw config_error(*file_, line(), key(name), "required key missing");
  }

  [[nodiscard]] std::optional<int64_t> integer(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return std::nullopt;
    if (const auto* v = n->as_integer())
      return v->get();
    fail(name, type_error("an integer", *n));
  }

  /// Floats also accept integers: `time_scale = 1` means 1.0.
  [[nodiscard]] std::optional<double> number(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return std::nullopt;
    if (const auto* v = n->as_floating_point())
      return v->get();
    if (const auto* v = n->as_integer())
      return static_cast<double>(v->get());
    fail(name, type_error("a number", *n));
  }

  [[nodiscard]] std::optional<bool> boolean(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return std::nullopt;
    if (const auto* v = n->as_boolean())
      return v->get();
    fail(name, type_error("a boolean", *n));
  }

  [[nodiscard]] std::optional<std::string> string(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return std::nullopt;
    if (const auto* v = n->as_string())
      return v->get();
    fail(name, type_error("a string", *n));
  }

  [[nodiscard]] std::optional<section> table(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return std::nullopt;
    if (const auto* t = n->as_table())
      return section(*t, key(name), *file_);
    fail(name, type_error("a table", *n));
  }

  [[nodiscard]] const toml::array* array(std::string_view name) const {
    const auto* n = find(name);
    if (!n)
      return nullptr;
    if (const auto* a = n->as_array())
      return a;
    fail(name, type_error("an array", *n));
  }

  /// Element `i` of array `name`, which must be a table.
  [[nodiscard]] section element(std::string_view name, const toml::array& a, size_t i) const {
    const auto path = key(name) + "[" + std::to_string(i) + "]";
    const auto& n = a[i];
    if (const auto* t = n.as_table())
      return section(*t, path, *file_);
    throw config_error(*file_, line_of(n), path, type_error("a table", n));
  }

private:
  const toml::table* table_;
  std::string path_;
  const std::string* file_;
};

// Typed field readers: each leaves `out` (the default) alone when the key is
// absent, and validates the range when present.

void read_int(const section& s, std::string_view name, int& out, int64_t min,
              const char* rule) {
  auto v = s.integer(name);
  if (!v)
    return;
  if (*v < min)
    s.fail(name, std::string("must be ") + rule + ", got " + std::to_string(*v));
  if (*v > INT_MAX)
    s.fail(name, "must be at most " + std::to_string(INT_MAX) + ", got " + std::to_string(*v));
  out = static_cast<int>(*v);
}

void read_positive(const section& s, std::string_view name, int& out) {
  read_int(s, name, out, 1, "> 0");
}

void read_port(const section& s, std::string_view name, uint16_t& out) {
  auto v = s.integer(name);
  if (!v)
    return;
  if (*v < 1 || *v > 65535)
    s.fail(name, "port must be in 1..65535, got " + std::to_string(*v));
  out = static_cast<uint16_t>(*v);
}

void read_positive_number(const section& s, std::string_view name, double& out) {
  auto v = s.number(name);
  if (!v)
    return;
  if (!(*v > 0) || !std::isfinite(*v))
    s.fail(name, "must be a finite number > 0, got " + format_number(*v));
  out = *v;
}

void read_string(const section& s, std::string_view name, std::string& out) {
  if (auto v = s.string(name))
    out = std::move(*v);
}

/// A name that other keys refer to: required and non-empty.
std::string read_name(const section& s, std::string_view name) {
  const auto& n = s.require(name);
  auto v = s.string(name);
  if (v->empty())
    throw config_error(s.file(), line_of(n), s.key(name), "must not be empty");
  return *v;
}

void read_choice(const section& s, std::string_view name, std::string& out,
                 std::initializer_list<std::string_view> choices) {
  auto v = s.string(name);
  if (!v)
    return;
  if (std::find(choices.begin(), choices.end(), *v) == choices.end()) {
    std::string list;
    for (auto c : choices) {
      if (!list.empty())
        list += ", ";
      list += "'" + std::string(c) + "'";
    }
    s.fail(name, "unknown value '" + *v + "' (expected one of: " + list + ")");
  }
  out = std::move(*v);
}

/// A node reference: must name a [[nodes]] entry.
void check_node_ref(const cluster_config& cfg, const section& s, std::string_view name,
                    const std::string& value) {
  if (!cfg.find_node(value))
    s.fail(name, "unknown node '" + value + "' (not in [[nodes]])");
}

/// An array of tables that must hold at least one entry.
const toml::array& require_array(const section& s, std::string_view name) {
  const auto* a = s.array(name);
  if (!a)
    throw config_error(s.file(), s.line(), s.key(name),
                       "required key missing (at least one [[" + std::string(name) +
                         "]] entry)");
  if (a->empty())
    s.fail(name, "must have at least one entry");
  return *a;
}

// --- sections --------------------------------------------------------------

void read_cluster(const section& top, cluster_config& cfg) {
  auto s = top.table("cluster");
  if (!s)
    return;
  s->allow_only({"name", "scheduler_threads"});
  read_string(*s, "name", cfg.name);
  read_positive(*s, "scheduler_threads", cfg.scheduler_threads);
}

void read_timeouts(const section& top, cluster_config& cfg) {
  auto s = top.table("timeouts");
  if (!s)
    return;
  s->allow_only({"request_ms", "connect_ms", "reconnect_ms", "heartbeat_ms",
                 "connection_timeout_ms", "load_report_ms"});
  auto& t = cfg.timeouts;
  read_positive(*s, "request_ms", t.request_ms);
  read_positive(*s, "connect_ms", t.connect_ms);
  read_positive(*s, "reconnect_ms", t.reconnect_ms);
  read_positive(*s, "heartbeat_ms", t.heartbeat_ms);
  read_positive(*s, "connection_timeout_ms", t.connection_timeout_ms);
  read_positive(*s, "load_report_ms", t.load_report_ms);
}

/// One listening socket, remembered with where it was configured so a clash
/// can point at the second one and name the first.
struct endpoint {
  std::string host;
  uint16_t port;
  std::string owner;  ///< e.g. "admin_port of node 'gpu0'"
  std::string key;
  int line;
};

/// Hosts that are the same address for the purpose of port clashes.
std::string canonical_host(std::string host) {
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (host == "localhost")
    return "127.0.0.1";
  return host;
}

void read_nodes(const section& top, cluster_config& cfg, std::vector<endpoint>& ports,
                std::vector<endpoint>& admin_ports) {
  const auto& arr = require_array(top, "nodes");
  for (size_t i = 0; i < arr.size(); ++i) {
    auto s = top.element("nodes", arr, i);
    s.allow_only({"name", "host", "port", "admin_port"});
    node_config n;
    n.name = read_name(s, "name");
    if (cfg.find_node(n.name))
      s.fail("name", "duplicate node name '" + n.name + "'");
    read_string(s, "host", n.host);
    if (n.host.empty())
      s.fail("host", "must not be empty");
    s.require("port");
    read_port(s, "port", n.port);
    if (s.find("admin_port")) {
      read_port(s, "admin_port", n.admin_port);
    } else if (n.port + 100 > 65535) {
      s.fail("admin_port", "defaults to port + 100 = " + std::to_string(n.port + 100) +
                             ", above 65535; set admin_port");
    } else {
      n.admin_port = static_cast<uint16_t>(n.port + 100);
    }
    const int port_line = line_of(*s.find("port"));
    const auto* admin_node = s.find("admin_port");
    ports.push_back({canonical_host(n.host), n.port, "port of node '" + n.name + "'",
                     s.key("port"), port_line});
    admin_ports.push_back({canonical_host(n.host), n.admin_port,
                           "admin_port of node '" + n.name + "'", s.key("admin_port"),
                           admin_node ? line_of(*admin_node) : s.line()});
    cfg.nodes.push_back(std::move(n));
  }
}

void read_gateway(const section& top, const std::string& base_dir, cluster_config& cfg,
                  std::vector<endpoint>& http) {
  auto s = top.table("gateway");
  if (!s)
    throw config_error(top.file(), top.line(), "gateway",
                       "required table missing ([gateway] with node = ...)");
  s->allow_only({"node", "host", "port", "api_keys", "api_key_file", "admin_token", "http_threads",
                 "max_body_bytes", "max_in_flight", "max_connections", "keep_alive_s", "ops_host",
                 "ops_port"});
  auto& g = cfg.gateway;
  g.node = read_name(*s, "node");
  check_node_ref(cfg, *s, "node", g.node);
  read_string(*s, "host", g.host);
  if (g.host.empty())
    s->fail("host", "must not be empty");
  read_port(*s, "port", g.port);
  if (const auto* keys = s->array("api_keys")) {
    for (size_t i = 0; i < keys->size(); ++i) {
      const auto& n = (*keys)[i];
      const auto path = s->key("api_keys") + "[" + std::to_string(i) + "]";
      const auto* v = n.as_string();
      if (!v)
        throw config_error(s->file(), line_of(n), path, type_error("a string", n));
      if (v->get().empty())
        throw config_error(s->file(), line_of(n), path, "must not be empty");
      g.api_keys.push_back(v->get());
    }
  }
  // Keys in a file of their own (one a line; blank lines and # comments
  // skipped), so the config can be shared without them.
  std::string key_file;
  read_string(*s, "api_key_file", key_file);
  if (!key_file.empty()) {
    std::filesystem::path p{key_file};
    if (p.is_relative())
      p = std::filesystem::path(base_dir) / p;
    std::ifstream keys(p);
    if (!keys)
      s->fail("api_key_file", "cannot read '" + p.string() + "'");
    size_t found = 0;
    for (std::string line; std::getline(keys, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
        line.pop_back();
      size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#')
        continue;
      g.api_keys.push_back(line.substr(start));
      ++found;
    }
    if (found == 0)
      s->fail("api_key_file", "'" + p.string() + "' holds no key");
  }
  read_string(*s, "admin_token", g.admin_token);
  read_int(*s, "http_threads", g.http_threads, 0, ">= 0 (0: one per core)");
  read_positive(*s, "max_in_flight", g.max_in_flight);
  read_positive(*s, "max_connections", g.max_connections);
  if (auto v = s->number("keep_alive_s")) {
    if (!(*v > 0) || *v > 86400)
      s->fail("keep_alive_s", "must be in (0, 86400] seconds, got " + std::to_string(*v));
    g.keep_alive_s = *v;
  }
  if (auto v = s->integer("max_body_bytes")) {
    if (*v <= 0)
      s->fail("max_body_bytes", "must be > 0, got " + std::to_string(*v));
    g.max_body_bytes = static_cast<size_t>(*v);
  }
  // A wildcard listen address binds every interface of the gateway's machine.
  std::string host = canonical_host(g.host);
  if (host == "0.0.0.0" || host == "::" || host == "[::]")
    host = canonical_host(cfg.find_node(g.node)->host);
  const auto* port_node = s->find("port");
  http.push_back({host, g.port, "the gateway's http port", s->key("port"),
                  port_node ? line_of(*port_node) : s->line()});
  read_port(*s, "ops_port", g.ops_port);
  read_string(*s, "ops_host", g.ops_host);
  if (!g.ops_host.empty() && g.ops_port == 0)
    s->fail("ops_host", "needs ops_port (the port /metrics and /admin/* move to)");
  if (g.ops_port != 0) {
    std::string ops = canonical_host(g.ops_host.empty() ? g.host : g.ops_host);
    if (ops == "0.0.0.0" || ops == "::" || ops == "[::]")
      ops = canonical_host(cfg.find_node(g.node)->host);
    const auto* ops_node = s->find("ops_port");
    http.push_back({ops, g.ops_port, "the gateway's ops port", s->key("ops_port"),
                    ops_node ? line_of(*ops_node) : s->line()});
  }
}

/// The router's policies (actors/router/router_policy.hpp).
const std::initializer_list<std::string_view> kRouterPolicies = {
  "least_loaded", "round_robin", "power_of_two", "least_tokens", "prefix_aware", "session", "slo_aware"};

void read_router(const section& top, cluster_config& cfg) {
  cfg.router.node = cfg.gateway.node;
  auto s = top.table("router");
  if (!s)
    return;
  s->allow_only({"node", "policy", "session_header", "affinity_slack", "affinity_ratio",
                 "prefix_cache_blocks", "max_sessions"});
  read_string(*s, "node", cfg.router.node);
  check_node_ref(cfg, *s, "node", cfg.router.node);
  // The edge hands requests to the router by local message; a remote router
  // would need its own discovery path, which nothing needs yet.
  if (cfg.router.node != cfg.gateway.node)
    s->fail("node", "the router must run on the gateway's node '" + cfg.gateway.node + "'");
  read_choice(*s, "policy", cfg.router.policy, kRouterPolicies);
  read_string(*s, "session_header", cfg.router.session_header);
  for (auto& c : cfg.router.session_header)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  read_int(*s, "affinity_slack", cfg.router.affinity_slack, 0, ">= 0");
  if (auto v = s->number("affinity_ratio")) {
    if (!(*v >= 1) || !std::isfinite(*v))
      s->fail("affinity_ratio", "must be a finite number >= 1, got " + format_number(*v));
    cfg.router.affinity_ratio = *v;
  }
  read_int(*s, "prefix_cache_blocks", cfg.router.prefix_cache_blocks, 0, ">= 0 (0: no prefix estimate)");
  read_int(*s, "max_sessions", cfg.router.max_sessions, 0, ">= 0");
}

void read_controller(const section& top, cluster_config& cfg) {
  cfg.controller.node = cfg.gateway.node;
  auto s = top.table("controller");
  if (!s)
    return;
  s->allow_only({"node", "move_shares", "share_step", "share_cooldown_ms", "share_tick_ms", "replan_s",
                 "replan_budget", "replan_ratio", "replan_min_rate", "replan_planner"});
  read_string(*s, "node", cfg.controller.node);
  check_node_ref(cfg, *s, "node", cfg.controller.node);
  if (auto v = s->boolean("move_shares"))
    cfg.controller.move_shares = *v;
  if (auto v = s->boolean("replan_planner"))
    cfg.controller.replan_planner = *v;
  if (auto v = s->number("share_step")) {
    if (!(*v > 0 && *v < 1))
      s->fail("share_step", "must be in (0, 1), got " + format_number(*v));
    cfg.controller.share_step = *v;
  }
  read_positive(*s, "share_cooldown_ms", cfg.controller.share_cooldown_ms);
  read_positive(*s, "share_tick_ms", cfg.controller.share_tick_ms);
  if (auto v = s->number("replan_s")) {
    if (!(*v >= 0) || !std::isfinite(*v))
      s->fail("replan_s", "must be a finite number >= 0 (seconds; 0: only llmux admin apply-plan), got "
                            + format_number(*v));
    cfg.controller.replan_s = *v;
  }
  read_positive(*s, "replan_budget", cfg.controller.replan_budget);
  if (auto v = s->number("replan_ratio")) {
    if (!(*v >= 1) || !std::isfinite(*v))
      s->fail("replan_ratio", "must be a finite number >= 1, got " + format_number(*v));
    cfg.controller.replan_ratio = *v;
  }
  if (auto v = s->number("replan_min_rate")) {
    if (!(*v >= 0) || !std::isfinite(*v))
      s->fail("replan_min_rate", "must be a finite number >= 0 (req/s), got " + format_number(*v));
    cfg.controller.replan_min_rate = *v;
  }
  if (cfg.controller.node != cfg.router.node)
    s->fail("node", "the controller must run on the router's node '" + cfg.router.node + "'");
}

void read_tls(const section& top, const std::string& base_dir, cluster_config& cfg) {
  auto s = top.table("tls");
  if (!s)
    return;
  s->allow_only({"enabled", "dir", "ca", "cert", "key"});
  auto& t = cfg.tls;
  t.enabled = true;
  if (auto v = s->boolean("enabled"))
    t.enabled = *v;
  auto path = [&](const char* key, std::string& out) {
    read_string(*s, key, out);
    if (s->find(key) && out.empty())
      s->fail(key, "must not be empty");
    if (!out.empty() && std::filesystem::path(out).is_relative())
      out = (std::filesystem::path(base_dir) / out).lexically_normal().string();
  };
  path("dir", t.dir);
  path("ca", t.ca);
  path("cert", t.cert);
  path("key", t.key);
  const auto dir = std::filesystem::path(t.dir);
  if (t.dir.empty() && (t.ca.empty() || t.cert.empty() || t.key.empty()))
    s->fail(t.ca.empty() ? "ca" : t.cert.empty() ? "cert" : "key",
            "needs a value, or set dir (llmux certs writes ca.pem, NODE.pem and NODE.key there)");
  if (t.ca.empty())
    t.ca = (dir / "ca.pem").string();
  if (t.cert.empty())
    t.cert = (dir / "{node}.pem").string();
  if (t.key.empty())
    t.key = (dir / "{node}.key").string();
  // One certificate shared by every node would let any host that holds it
  // pass for each of them.
  const std::pair<const char*, const std::string*> per_node[] = {{"cert", &t.cert}, {"key", &t.key}};
  for (const auto& [key, value] : per_node)
    if (cfg.nodes.size() > 1 && value->find("{node}") == std::string::npos)
      s->fail(key, "names one file for every node; put {node} in it, as each node has its own");
}

/// Two processes on one host cannot bind the same port; catch it here rather
/// than as an EADDRINUSE on some remote node at launch.
void check_ports(const std::string& file, const std::vector<endpoint>& all) {
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (all[i].host != all[j].host || all[i].port != all[j].port)
        continue;
      throw config_error(file, all[i].line, all[i].key,
                         all[i].host + ":" + std::to_string(all[i].port) +
                           " is used twice: " + all[j].owner + " and " + all[i].owner);
    }
  }
}

std::map<std::string, gpu_spec> builtin_gpus() {
  std::map<std::string, gpu_spec> out;
  // load_gbs: pinned host memory to the device over PCIe (Gen5 x16 for
  // H100/H200 SXM, Gen4 for A100), as a wake copies the weights.
  out["h100"] = gpu_spec{"h100", 3350, 989, 40, 80, 50, ""};
  out["h200"] = gpu_spec{"h200", 4800, 989, 40, 141, 50, ""};
  out["a100"] = gpu_spec{"a100", 2039, 312, 40, 80, 25, ""};
  return out;
}

void read_gpus(const section& top, const std::string& base_dir, cluster_config& cfg) {
  auto s = top.table("gpus");
  if (!s)
    return;
  const auto* tbl = top.find("gpus")->as_table();
  for (auto&& [k, v] : *tbl) {
    const std::string name(k.str());
    auto g = s->table(name);
    g->allow_only({"mem_bandwidth_gbs", "peak_tflops", "step_overhead_us", "memory_gib", "load_gbs", "profile"});
    auto [it, added] = cfg.gpus.try_emplace(name);
    if (added)
      it->second.name = name;
    read_positive_number(*g, "mem_bandwidth_gbs", it->second.mem_bandwidth_gbs);
    read_positive_number(*g, "peak_tflops", it->second.peak_tflops);
    read_positive_number(*g, "step_overhead_us", it->second.step_overhead_us);
    read_positive_number(*g, "memory_gib", it->second.memory_gib);
    read_positive_number(*g, "load_gbs", it->second.load_gbs);
    if (auto p = g->string("profile")) {
      if (p->empty())
        g->fail("profile", "must not be empty (leave it out for the roofline model)");
      if (p->rfind("builtin:", 0) == 0) {
        if (*p != "builtin:a100")
          g->fail("profile", "unknown built-in profile '" + *p + "' (known: builtin:a100)");
        it->second.profile = *p;
      } else {
        std::filesystem::path path(*p);
        if (path.is_relative())
          path = std::filesystem::path(base_dir) / path;
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec))
          g->fail("profile", "profile file '" + path.lexically_normal().string() + "': no such file");
        it->second.profile = path.lexically_normal().string();
      }
    }
  }
}

model_arch read_arch(const section& model, std::string_view name) {
  const auto& n = *model.find(name);
  if (const auto* v = n.as_string()) {
    if (auto a = arch_preset(v->get()))
      return *a;
    model.fail(name, "unknown architecture preset '" + v->get() + "' (known: " +
                       preset_names() + ")");
  }
  if (!n.is_table())
    model.fail(name, type_error("a preset name or a table", n));
  auto s = *model.table(name);
  s.allow_only({"layers", "hidden", "heads", "kv_heads", "intermediate", "vocab",
                "context_length", "dtype_bytes"});
  model_arch a;
  a.preset = "custom";
  for (auto [field, out] : {std::pair{"layers", &a.layers}, std::pair{"hidden", &a.hidden},
                            std::pair{"heads", &a.heads}, std::pair{"kv_heads", &a.kv_heads},
                            std::pair{"intermediate", &a.intermediate},
                            std::pair{"vocab", &a.vocab},
                            std::pair{"context_length", &a.context_length}}) {
    s.require(field);
    read_positive(s, field, *out);
  }
  read_positive(s, "dtype_bytes", a.dtype_bytes);
  // Both divisions define head_dim and the GQA group size; a remainder means a typo.
  if (a.hidden % a.heads != 0)
    s.fail("heads", "hidden (" + std::to_string(a.hidden) + ") must be divisible by heads (" +
                      std::to_string(a.heads) + ")");
  if (a.heads % a.kv_heads != 0)
    s.fail("kv_heads", "heads (" + std::to_string(a.heads) +
                         ") must be divisible by kv_heads (" + std::to_string(a.kv_heads) + ")");
  return a;
}

}  // namespace

std::string read_chat_template(const std::string& value, const std::string& base_dir) {
  std::filesystem::path p(value);
  if (p.is_relative())
    p = std::filesystem::path(base_dir) / p;
  std::error_code ec;
  if (value.size() < 4096 && std::filesystem::is_regular_file(p, ec)) {
    std::ifstream in(p);
    if (!in)
      throw std::runtime_error("cannot read '" + p.string() + "'");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  if (value.find("{{") != std::string::npos || value.find("{%") != std::string::npos)
    return value;
  throw std::runtime_error("'" + value + "' is neither a file nor a Jinja template");
}

namespace {

void read_models(const section& top, const std::string& base_dir, cluster_config& cfg) {
  const auto& arr = require_array(top, "models");
  for (size_t i = 0; i < arr.size(); ++i) {
    auto s = top.element("models", arr, i);
    s.allow_only({"name", "backend", "architecture", "file", "max_tokens_default", "load_format",
                  "dtype", "enforce_eager", "quantization", "profile_key", "max_in_flight",
                  "router_policy", "ttft_slo_ms", "chat_template", "idle_sleep_s"});
    model_config m;
    m.name = read_name(s, "name");
    if (cfg.find_model(m.name))
      s.fail("name", "duplicate model name '" + m.name + "'");
    // "MODEL/prefill" and "MODEL/decode" name a split model's jobs (set-share).
    for (const char* job : {"/prefill", "/decode"}) {
      const std::string suffix = job;
      if (m.name.size() >= suffix.size()
          && m.name.compare(m.name.size() - suffix.size(), suffix.size(), suffix) == 0)
        s.fail("name", "model name '" + m.name + "' ends in '" + suffix
                         + "', which names a job of a model with split jobs");
    }
    read_choice(s, "backend", m.backend, {"sim", "cpu", "cuda"});
    read_choice(s, "load_format", m.load_format, {"auto", "dummy"});
    read_choice(s, "dtype", m.dtype, {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"});
    bool dummy = m.load_format == "dummy";
    if (dummy && m.backend == "sim")
      s.fail("load_format", "'dummy' builds random weights for a real backend; sim has no weights");
    if (m.backend == "sim" || dummy) {
      // The sim cost model and dummy weights have nothing else to go on.
      s.require("architecture");
    }
    if (s.find("architecture"))
      m.arch = read_arch(s, "architecture");
    if (m.backend != "sim" && !dummy)
      s.require("file");
    if (auto file = s.string("file")) {
      if (file->empty())
        s.fail("file", "must not be empty");
      std::filesystem::path p(*file);
      // "~/..." is the user's home, as a shell would read it (model caches
      // such as ~/.cache/llmux/models live there).
      if (file->rfind("~/", 0) == 0) {
        const char* home = std::getenv("HOME");
        if (home == nullptr)
          s.fail("file", "'" + *file + "' starts with ~ but HOME is not set");
        p = std::filesystem::path(home) / file->substr(2);
      }
      if (p.is_relative())
        p = std::filesystem::path(base_dir) / p;
      m.file = p.lexically_normal().string();
      std::error_code ec;
      if (m.backend != "sim" && !std::filesystem::exists(m.file, ec))
        s.fail("file", "model file '" + m.file + "': no such file");
    }
    read_positive(s, "max_tokens_default", m.max_tokens_default);
    read_int(s, "max_in_flight", m.max_in_flight, 0, ">= 0 (0: only the edge's limit)");
    read_choice(s, "router_policy", m.router_policy, kRouterPolicies);
    read_int(s, "ttft_slo_ms", m.ttft_slo_ms, 0, ">= 0 (0: none)");
    if (auto v = s.number("idle_sleep_s")) {
      if (!(*v >= 0) || !std::isfinite(*v))
        s.fail("idle_sleep_s", "must be a finite number >= 0 (seconds; 0: never sleep), got " + format_number(*v));
      m.idle_sleep_s = *v;
    }
    read_string(s, "profile_key", m.profile_key);
    if (auto v = s.boolean("enforce_eager"))
      m.enforce_eager = *v;
    if (auto t = s.string("chat_template")) {
      try {
        m.chat_template = read_chat_template(*t, base_dir);
      } catch (const std::runtime_error& e) {
        s.fail("chat_template", e.what());
      }
    }
    read_choice(s, "quantization", m.quantization, {"none", "int8"});
    if (m.quantization != "none" && m.backend != "cuda")
      s.fail("quantization", "'" + m.quantization + "' weights are the cuda backend's; model '" + m.name +
                               "' has backend '" + m.backend + "' (its GGUF types are its quantization)");
    cfg.models.push_back(std::move(m));
  }
}

/// A unit's parallel layout: its one model as one replica on all of its
/// threads, or as one replica per thread, or switched between the two.
void read_layout(const section& s, unit_config& u) {
  read_choice(s, "layout", u.layout, {"single", "replicas", "dynamic"});
  const bool multi = u.layout != "single";
  for (const char* key : {"layout_switch_at", "layout_hysteresis", "layout_cooldown_ms"})
    if (s.find(key) && u.layout != "dynamic")
      s.fail(key, "tunes layout = \"dynamic\"; unit '" + u.name + "' has layout = \"" + u.layout + "\"");
  if (!multi)
    return;
  if (u.backend != "cpu")
    s.fail("layout", "\"" + u.layout + "\" runs on cpu units for now (unit '" + u.name + "' has backend '"
                       + u.backend + "'; GPU units need tensor-parallel shards as views of weights each "
                       "device holds, not built yet)");
  if (u.models.size() != 1)
    s.fail("layout", "\"" + u.layout + "\" lays out one model over the unit's threads; unit '" + u.name
                       + "' hosts " + std::to_string(u.models.size()));
  if (u.jobs != "mixed" || u.multiplex != "spatial")
    s.fail("layout", "\"" + u.layout + "\" needs jobs = \"mixed\" and multiplex = \"spatial\"");
  if (u.threads < 2)
    s.fail("layout", "\"" + u.layout + "\" needs threads >= 2 set on unit '" + u.name
                       + "' (one replica per thread)");
  if (u.models[0].share != 1.0)
    s.fail("layout", "\"" + u.layout + "\" gives the model the whole unit: drop its share");
  if (auto v = s.number("layout_switch_at")) {
    if (!(*v >= 0) || !std::isfinite(*v))
      s.fail("layout_switch_at", "must be a number >= 0 (concurrent requests; 0: from the cost model)");
    u.layout_switch_at = *v;
  }
  if (auto v = s.number("layout_hysteresis")) {
    if (!(*v >= 0 && *v < 1))
      s.fail("layout_hysteresis", "must be in [0, 1), got " + format_number(*v));
    u.layout_hysteresis = *v;
  }
  read_positive(s, "layout_cooldown_ms", u.layout_cooldown_ms);
}

void read_units(const section& top, cluster_config& cfg) {
  const auto& arr = require_array(top, "units");
  std::set<std::string> unit_names;
  for (size_t i = 0; i < arr.size(); ++i) {
    auto s = top.element("units", arr, i);
    s.allow_only({"name", "node", "backend", "gpu", "kv_blocks", "block_tokens", "max_running",
                  "max_batch_tokens", "max_waiting", "time_scale", "threads", "kv_cache_mib",
                  "kv_growth", "policy", "multiplex", "jobs", "prefill", "prefill_share", "oversubscribe", "quota_period_ms",
                  "kv_floor_tokens", "devices", "models", "layout", "layout_switch_at",
                  "layout_hysteresis", "layout_cooldown_ms", "memory_mib"});
    unit_config u;
    u.name = read_name(s, "name");
    if (!unit_names.insert(u.name).second)
      s.fail("name", "duplicate unit name '" + u.name + "'");
    u.node = read_name(s, "node");
    check_node_ref(cfg, s, "node", u.node);
    read_choice(s, "backend", u.backend, {"sim", "cpu", "cuda"});
    read_string(s, "gpu", u.gpu);
    if (cfg.gpus.count(u.gpu) == 0) {
      std::string known;
      for (const auto& [name, spec] : cfg.gpus)
        known += (known.empty() ? "" : ", ") + name;
      s.fail("gpu", "unknown gpu '" + u.gpu + "' (known: " + known + ")");
    }
    read_int(s, "kv_blocks", u.kv_blocks, 0, ">= 0 (0 = size from GPU memory)");
    read_positive(s, "block_tokens", u.block_tokens);
    read_positive(s, "max_running", u.max_running);
    read_positive(s, "max_batch_tokens", u.max_batch_tokens);
    read_positive(s, "max_waiting", u.max_waiting);
    read_choice(s, "kv_growth", u.kv_growth, {"on_demand", "reserve"});
    read_choice(s, "policy", u.policy, {"adbs", "fcfs", "round_robin"});
    read_choice(s, "multiplex", u.multiplex, {"spatial", "temporal"});
    read_choice(s, "jobs", u.jobs, {"mixed", "split"});
    if (u.jobs == "split" && u.multiplex == "temporal")
      s.fail("jobs", "\"split\" runs a model's prefill and decode jobs at once in two partitions; unit '"
                       + u.name + "' has multiplex = \"temporal\" (one step at a time on the whole unit)");
    read_choice(s, "prefill", u.prefill, {"own", "shared"});
    const bool shared_prefill = u.prefill == "shared";
    if (shared_prefill && u.jobs != "split")
      s.fail("prefill", "\"shared\" is where split jobs' prefill steps run; unit '" + u.name
                          + "' needs jobs = \"split\"");
    if (shared_prefill && u.backend != "sim")
      s.fail("prefill", "\"shared\" runs on sim units only, for now (unit '" + u.name + "' has backend '"
                          + u.backend + "': its engine lays each job's partition out back to back)");
    if (auto v = s.number("prefill_share")) {
      if (!shared_prefill)
        s.fail("prefill_share", "is the shared prefill lane's share: needs prefill = \"shared\"");
      // Oversubscribed (MPS caps), the lane may hold the whole unit.
      const bool caps = s.boolean("oversubscribe").value_or(false);
      if (!(*v > 0 && (*v < 1 || (caps && *v <= 1))))
        s.fail("prefill_share", std::string{"must be in (0, "} + (caps ? "1]" : "1)") + ", got " + format_number(*v));
      u.prefill_share = *v;
    }
    if (auto v = s.boolean("oversubscribe")) {
      if (*v && u.backend != "sim")
        s.fail("oversubscribe", "simulates CUDA MPS caps (MuxServe's runtime) on sim units; unit '" + u.name
                                  + "' has backend '" + u.backend + "', whose partitions never overlap");
      u.oversubscribe = *v;
    }
    read_positive(s, "quota_period_ms", u.quota_period_ms);
    read_int(s, "kv_floor_tokens", u.kv_floor_tokens, 0, ">= 0");
    read_int(s, "threads", u.threads, 0, ">= 0 (0 = every core)");
    read_positive(s, "kv_cache_mib", u.kv_cache_mib);
    read_int(s, "memory_mib", u.memory_mib, 0, ">= 0 (0: no limit)");
    if (const auto* devs = s.array("devices")) {
      if (u.backend == "cpu")
        s.fail("devices", "lists GPUs (cuda, or the GPUs a sim unit models); unit '" + u.name
                            + "' has backend 'cpu' (its threads are `threads`)");
      if (devs->empty())
        s.fail("devices", "must list at least one device ordinal");
      u.devices.clear();
      for (const auto& d : *devs) {
        const auto* v = d.as_integer();
        if (v == nullptr || v->get() < 0 || v->get() > 1023)
          s.fail("devices", "must hold device ordinals (integers 0..1023)");
        const int ord = static_cast<int>(v->get());
        if (std::find(u.devices.begin(), u.devices.end(), ord) != u.devices.end())
          s.fail("devices", "lists device " + std::to_string(ord) + " twice");
        u.devices.push_back(ord);
      }
    }
    if (auto v = s.number("time_scale")) {
      if (!(*v >= 0) || !std::isfinite(*v))
        s.fail("time_scale", "must be a finite number >= 0, got " + format_number(*v));
      u.time_scale = *v;
    }
    s.require("models");
    const auto& models = *s.array("models");
    if (models.empty())
      s.fail("models", "must list at least one model");
    double share_sum = 0;
    for (size_t j = 0; j < models.size(); ++j) {
      auto ms = s.element("models", models, j);
      ms.allow_only({"name", "share", "rate", "decode_share", "awake"});
      unit_model um;
      um.model = read_name(ms, "name");
      const auto* model = cfg.find_model(um.model);
      if (!model)
        ms.fail("name", "unknown model '" + um.model + "' (not in [[models]])");
      for (const auto& prev : u.models)
        if (prev.model == um.model)
          ms.fail("name", "model '" + um.model + "' is listed twice in unit '" + u.name + "'");
      if (model->backend != u.backend)
        s.fail("backend", "unit '" + u.name + "' has backend '" + u.backend + "' but model '" +
                            model->name + "' has backend '" + model->backend + "'");
      if (shared_prefill && ms.find("share"))
        ms.fail("share", "with prefill = \"shared\" a model's own partition is its decode job's: give "
                         "decode_share (the lane is the unit's prefill_share)");
      if (auto v = ms.number("share")) {
        if (!(*v > 0 && *v <= 1))
          ms.fail("share", "must be in (0, 1], got " + format_number(*v));
        um.share = *v;
      }
      if (auto v = ms.number("rate")) {
        if (!(*v >= 0) || !std::isfinite(*v))
          ms.fail("rate", "must be a finite number >= 0 (requests/s), got " + format_number(*v));
        um.rate = *v;
      }
      if (auto v = ms.number("decode_share"); v && shared_prefill) {
        if (!(*v > 0 && *v < 1))
          ms.fail("decode_share", "must be in (0, 1), got " + format_number(*v));
        um.decode_share = *v;
      } else if (shared_prefill) {
        um.decode_share = 0;  // filled below, once every model is read
      } else if (v) {
        if (u.jobs != "split")
          ms.fail("decode_share", "needs jobs = \"split\" on unit '" + u.name
                                    + "' (with mixed jobs a model has one share)");
        if (!(*v > 0 && *v < um.share))
          ms.fail("decode_share", "must be in (0, share = " + format_number(um.share)
                                    + "): the prefill job gets the rest, got " + format_number(*v));
        um.decode_share = *v;
      } else if (u.jobs == "split") {
        um.decode_share = um.share / 2;
      }
      if (auto v = ms.boolean("awake"))
        um.awake = *v;
      share_sum += um.share;
      u.models.push_back(std::move(um));
    }
    if (shared_prefill) {
      // The lane once, plus every decode job's own partition.
      double given = 0;
      int unset = 0;
      for (const auto& um : u.models) {
        given += um.decode_share;
        unset += um.decode_share > 0 ? 0 : 1;
      }
      const double n = static_cast<double>(u.models.size());
      const double each = u.prefill_share > 0 ? (1.0 - u.prefill_share - given) / std::max(1, unset) : 1.0 / (n + 1);
      // A sliver left by rounding (1 - 0.7 - 0.3) is nothing too.
      if (unset > 0 && !(each > 1e-6))
        s.fail("prefill_share", "leaves nothing for the decode jobs without a decode_share");
      for (auto& um : u.models)
        if (um.decode_share <= 0)
          um.decode_share = each;
      double decode = 0;
      for (const auto& um : u.models)
        decode += um.decode_share;
      if (u.prefill_share <= 0)
        u.prefill_share = 1.0 - decode;
      if (!(u.prefill_share > 1e-6))
        s.fail("models", "the decode shares sum to " + format_number(decode)
                           + ", which leaves the prefill lane nothing");
      if (!u.oversubscribe && u.prefill_share + decode > 1.0 + 1e-9)
        s.fail("models", "the prefill lane (" + format_number(u.prefill_share) + ") and the decode shares ("
                           + format_number(decode) + ") sum to more than 1.0");
      for (auto& um : u.models)
        um.share = u.prefill_share + um.decode_share;
      share_sum = 0;
    }
    // Shares are fractions of one GPU's SMs; the slack absorbs 0.1 + 0.2 style rounding.
    if (share_sum > 1.0 + 1e-9 && !u.oversubscribe)
      s.fail("models", "shares sum to " + format_number(share_sum) + ", more than 1.0");
    read_layout(s, u);
    if (u.layout != "single") {
      // A layout unit's instances share one mapping of the weights; they
      // sleep and wake as one model, which is not built.
      if (u.memory_mib > 0)
        s.fail("memory_mib", "puts models to sleep; unit '" + u.name + "' has layout = \"" + u.layout
                               + "\", whose replicas do not sleep (yet)");
      if (!u.models[0].awake)
        s.fail("models", "awake = false: unit '" + u.name + "' has layout = \"" + u.layout
                           + "\", whose replicas do not sleep (yet)");
    }
    cfg.units.push_back(std::move(u));
  }
}

/// A model no unit hosts would accept requests that can never be served.
void check_hosting(const section& top, const cluster_config& cfg) {
  const auto& arr = *top.array("models");
  for (size_t i = 0; i < cfg.models.size(); ++i) {
    const auto& name = cfg.models[i].name;
    bool hosted = false;
    for (const auto& u : cfg.units)
      for (const auto& um : u.models)
        hosted = hosted || um.model == name;
    if (!hosted)
      top.element("models", arr, i).fail("name", "model '" + name + "' is not hosted by any unit");
  }
}

}  // namespace

cluster_config parse_cluster_config(const std::string& toml_text, const std::string& source_name,
                                    const std::string& base_dir) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    throw config_error(source_name, static_cast<int>(e.source().begin.line), "",
                       "syntax error: " + std::string(e.description()));
  }

  cluster_config cfg;
  cfg.source = source_name;
  cfg.gpus = builtin_gpus();

  section top(root, "", source_name);
  top.allow_only({"cluster", "timeouts", "nodes", "gateway", "router", "controller", "gpus",
                  "models", "units", "tls"});
  read_cluster(top, cfg);
  read_timeouts(top, cfg);

  std::vector<endpoint> ports, admin_ports, http;
  read_nodes(top, cfg, ports, admin_ports);
  read_gateway(top, base_dir, cfg, http);
  read_router(top, cfg);
  read_controller(top, cfg);
  read_tls(top, base_dir, cfg);
  // Node ports first, so that an admin or HTTP port is the one blamed for a
  // clash with a node's main port.
  ports.insert(ports.end(), admin_ports.begin(), admin_ports.end());
  ports.insert(ports.end(), http.begin(), http.end());
  check_ports(source_name, ports);

  read_gpus(top, base_dir, cfg);
  read_models(top, base_dir, cfg);
  read_units(top, cfg);
  check_hosting(top, cfg);
  return cfg;
}

cluster_config load_cluster_config(const std::string& path) {
  std::error_code ec;
  // An ifstream opens a directory and then reads nothing, which would surface
  // as a confusing "nodes missing" error.
  if (std::filesystem::is_directory(path, ec))
    throw config_error(path, 0, "", "is a directory, not a config file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw config_error(path, 0, "", "cannot open config file: no such file or not readable");
  std::ostringstream text;
  text << in.rdbuf();
  // Absolute, so model paths stay valid whatever the working directory later.
  auto dir = std::filesystem::absolute(path, ec).parent_path();
  if (ec)
    dir = std::filesystem::path(path).parent_path();
  return parse_cluster_config(text.str(), path, dir.empty() ? "." : dir.string());
}

namespace {
std::string with_node(std::string pattern, const std::string& node) {
  for (size_t at = pattern.find("{node}"); at != std::string::npos; at = pattern.find("{node}", at + node.size()))
    pattern.replace(at, 6, node);
  return pattern;
}
}  // namespace

std::string tls_config::cert_of(const std::string& node) const {
  return with_node(cert, node);
}

std::string tls_config::key_of(const std::string& node) const {
  return with_node(key, node);
}

bool add_environment_keys(cluster_config& cfg) {
  const char* key = std::getenv("LLMUX_API_KEY");
  if (key == nullptr || *key == '\0')
    return false;
  cfg.gateway.api_keys.emplace_back(key);
  return true;
}

cluster_config default_single_node(const std::string& host, uint16_t http_port) {
  cluster_config cfg;
  cfg.source = "<embedded>";
  cfg.name = "llmux-serve";
  cfg.nodes.push_back(node_config{"local", "127.0.0.1", 7100, 7200});
  cfg.gateway.node = "local";
  cfg.gateway.host = host;
  cfg.gateway.port = http_port;
  cfg.router.node = "local";
  cfg.controller.node = "local";
  cfg.gpus = builtin_gpus();

  model_config m;
  m.name = "tiny";
  m.backend = "sim";
  m.arch = *arch_preset("tiny");
  cfg.models.push_back(std::move(m));

  unit_config u;
  u.name = "local-sim";
  u.node = "local";
  u.backend = "sim";
  u.gpu = "h100";
  u.models.push_back(unit_model{"tiny", 1.0});
  cfg.units.push_back(std::move(u));
  return cfg;
}

}  // namespace llmux::config

namespace llmux::config {

int64_t auto_kv_blocks(const cluster_config& cfg, const unit_config& unit) {
  auto gpu = cfg.gpus.find(unit.gpu);
  if (gpu == cfg.gpus.end())
    return 0;
  // CPU units: a fixed memory budget for the cache (weights stay mmap'ed).
  bool cpu = unit.backend == "cpu";
  // A sim unit of several GPUs models a tensor-parallel group: weights and
  // KV spread over all of them.
  const double gpus = unit.backend == "sim" ? static_cast<double>(std::max<size_t>(1, unit.devices.size())) : 1.0;
  double bytes = cpu ? unit.kv_cache_mib * 1024.0 * 1024.0
                     : gpus * gpu->second.memory_gib * 1024.0 * 1024.0 * 1024.0 * 0.9;
  double head_bytes = 0;
  double weights = 0;
  for (const auto& um : unit.models) {
    const auto* m = cfg.find_model(um.model);
    if (!m)
      continue;
    if (!cpu)
      weights += m->arch.params() * m->arch.dtype_bytes;
    if (m->arch.head_size() > 0) {
      double hb = static_cast<double>(m->arch.head_size()) * m->arch.dtype_bytes;
      head_bytes = std::max(head_bytes, hb);
    }
  }
  // Weights awake at once are at most the unit's memory_mib (the rest sleep).
  if (unit.memory_mib > 0)
    weights = std::min(weights, unit.memory_mib * 1024.0 * 1024.0);
  bytes -= weights;
  if (bytes <= 0 || head_bytes <= 0)
    return 0;
  // K and V of one head of one layer for block_tokens tokens.
  return static_cast<int64_t>(bytes / (2.0 * head_bytes * unit.block_tokens));
}

}  // namespace llmux::config
