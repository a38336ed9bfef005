#include "actors/gateway/admission.hpp"

#include <stdexcept>

namespace llmux::gateway {

admission::admission(int edge_limit, std::map<std::string, int> model_limits)
  : edge_limit_(edge_limit), model_limits_(std::move(model_limits)) {
  if (edge_limit_ <= 0)
    throw std::invalid_argument("admission: the edge limit must be > 0");
}

bool admission::try_edge() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (edge_ >= edge_limit_) {
    ++edge_rejected_;
    return false;
  }
  ++edge_;
  return true;
}

void admission::release_edge() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (edge_ > 0)
    --edge_;
}

int admission::model_limit(const std::string& model) const {
  auto it = model_limits_.find(model);
  return it == model_limits_.end() ? 0 : it->second;
}

bool admission::try_model(const std::string& model) {
  const int limit = model_limit(model);
  std::lock_guard<std::mutex> guard{mtx_};
  auto& n = models_[model];
  if (limit > 0 && n >= limit) {
    ++model_rejected_[model];
    return false;
  }
  ++n;
  return true;
}

void admission::release_model(const std::string& model) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = models_.find(model);
  if (it != models_.end() && it->second > 0)
    --it->second;
}

int admission::in_flight() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return edge_;
}

int admission::in_flight(const std::string& model) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = models_.find(model);
  return it == models_.end() ? 0 : it->second;
}

uint64_t admission::edge_rejections() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return edge_rejected_;
}

uint64_t admission::model_rejections(const std::string& model) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = model_rejected_.find(model);
  return it == model_rejected_.end() ? 0 : it->second;
}

admission_slot& admission_slot::operator=(admission_slot&& o) noexcept {
  if (this != &o) {
    release();
    a_ = o.a_;
    edge_ = o.edge_;
    model_ = std::move(o.model_);
    o.edge_ = false;
    o.model_.clear();
  }
  return *this;
}

bool admission_slot::take_model(const std::string& model) {
  if (!a_ || !edge_ || !model_.empty())
    return false;
  if (!a_->try_model(model))
    return false;
  model_ = model;
  return true;
}

void admission_slot::release() {
  if (!a_)
    return;
  if (!model_.empty())
    a_->release_model(model_);
  if (edge_)
    a_->release_edge();
  model_.clear();
  edge_ = false;
}

}  // namespace llmux::gateway
