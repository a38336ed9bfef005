#include "actors/gateway/request_registry.hpp"

namespace llmux::gateway {

void request_sink::push(sink_event ev) {
  std::function<void()> notify;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (queue_.empty())
      notify = notify_;
    queue_.push_back(std::move(ev));
  }
  cv_.notify_one();
  if (notify)
    notify();
}

void request_sink::set_notify(std::function<void()> fn) {
  bool pending = false;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    notify_ = fn;
    pending = !queue_.empty();
  }
  // Events that came before the notifier are told now.
  if (pending && fn)
    fn();
}

void request_sink::try_pop(std::vector<sink_event>& out) {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& ev : queue_)
    out.push_back(std::move(ev));
  queue_.clear();
}

bool request_sink::wait_pop(std::vector<sink_event>& out,
                            std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> guard{mtx_};
  ++waiters_;
  const bool woke = cv_.wait_until(guard, deadline, [this] { return !queue_.empty(); });
  --waiters_;
  if (!woke)
    return false;
  for (auto& ev : queue_)
    out.push_back(std::move(ev));
  queue_.clear();
  return true;
}

size_t request_sink::waiters() {
  std::lock_guard<std::mutex> guard{mtx_};
  return waiters_;
}

uint64_t request_registry::next_id() {
  std::lock_guard<std::mutex> guard{mtx_};
  return next_++;
}

std::shared_ptr<request_sink> request_registry::open(uint64_t id) {
  auto sink = std::make_shared<request_sink>();
  std::lock_guard<std::mutex> guard{mtx_};
  sinks_[id] = sink;
  return sink;
}

void request_registry::attach(uint64_t id, std::shared_ptr<request_sink> sink) {
  std::lock_guard<std::mutex> guard{mtx_};
  sinks_[id] = std::move(sink);
}

void request_registry::close(uint64_t id) {
  std::lock_guard<std::mutex> guard{mtx_};
  sinks_.erase(id);
}

std::shared_ptr<request_sink> request_registry::find(uint64_t id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = sinks_.find(id);
  return it == sinks_.end() ? nullptr : it->second;
}

size_t request_registry::open_count() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return sinks_.size();
}

void request_registry::fail_all(int status, const std::string& message) {
  std::vector<std::pair<uint64_t, std::shared_ptr<request_sink>>> sinks;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& [id, sink] : sinks_)
      sinks.emplace_back(id, sink);
  }
  for (auto& [id, sink] : sinks) {
    sink_event ev;
    ev.id = id;
    ev.finish = protocol::finish_reason::error;
    ev.status = status;
    ev.message = message;
    sink->push(std::move(ev));
  }
}

void request_registry::set_edge_probe(std::function<std::string()> probe) {
  std::lock_guard<std::mutex> guard{mtx_};
  edge_probe_ = std::move(probe);
}

std::string request_registry::edge_state() const {
  std::function<std::string()> probe;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    probe = edge_probe_;
  }
  return probe ? probe() : std::string{"{}"};
}

void request_registry::set_live_replicas(std::map<std::string, int> live, std::map<std::string, std::string> states) {
  std::lock_guard<std::mutex> guard{mtx_};
  live_ = std::move(live);
  states_ = std::move(states);
}

std::map<std::string, std::string> request_registry::model_states() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return states_;
}

std::map<std::string, int> request_registry::live_replicas() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return live_;
}

}  // namespace llmux::gateway
