#include "actors/controller/node_table.hpp"

namespace llmux::controller {

const char* to_string(node_status s) {
  switch (s) {
    case node_status::connecting: return "connecting";
    case node_status::up: return "up";
    case node_status::down: return "down";
  }
  return "?";
}

node_table::node_table(const std::vector<config::node_config>& nodes, std::string self)
  : self_(std::move(self)) {
  for (const auto& n : nodes) {
    node_row r;
    r.node = n;
    rows_.push_back(std::move(r));
  }
}

node_row* node_table::find_mut(const std::string& name) {
  for (auto& r : rows_)
    if (r.node.name == name)
      return &r;
  return nullptr;
}

const node_row* node_table::find(const std::string& name) const {
  for (const auto& r : rows_)
    if (r.node.name == name)
      return &r;
  return nullptr;
}

std::vector<std::string> node_table::start_attempts(double now_s) {
  std::vector<std::string> out;
  for (auto& r : rows_)
    if (r.status != node_status::up && !r.attempt_in_flight) {
      r.attempt_in_flight = true;
      ++r.attempts;
      out.push_back(r.node.name);
    }
  return out;
}

void node_table::connected(const std::string& name, double now_s) {
  if (auto* r = find_mut(name)) {
    r->attempt_in_flight = false;
    r->status = node_status::up;
    r->since_s = now_s;
    r->last_error.clear();
  }
}

void node_table::attempt_failed(const std::string& name, const std::string& why, double now_s) {
  if (auto* r = find_mut(name)) {
    r->attempt_in_flight = false;
    if (r->status == node_status::up)
      return;
    // The status does not change (connecting stays connecting until the node
    // has been up once; afterwards it stays down), so neither does since_s.
    r->last_error = why;
  }
}

bool node_table::lost(const std::string& name, const std::string& why, double now_s) {
  auto* r = find_mut(name);
  if (r == nullptr || r->status != node_status::up)
    return false;
  r->status = node_status::down;
  r->since_s = now_s;
  r->last_error = why;
  ++r->failures;
  return true;
}

size_t node_table::up_count() const {
  size_t n = 0;
  for (const auto& r : rows_)
    n += r.status == node_status::up ? 1 : 0;
  return n;
}

}  // namespace llmux::controller
