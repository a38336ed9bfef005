#pragma once
/// Admission at the edge — pure core (no CAF, no HTTP): a bound on the
/// generation requests in flight at the edge and per model. A request takes
/// its slots when it arrives and gives them back when its answer ends or its
/// client goes away; one that finds no slot is refused at once (429), so no
/// queue grows without bound in front of the cluster. Thread-safe.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace llmux::gateway {

class admission {
public:
  /// `edge_limit` > 0; a model's limit of 0 (or none given) is no limit of its own.
  admission(int edge_limit, std::map<std::string, int> model_limits);

  /// One more request at the edge; false (and counted) when it is full.
  bool try_edge();
  void release_edge();
  /// One more request of `model`; false (and counted) when it is full.
  bool try_model(const std::string& model);
  void release_model(const std::string& model);

  [[nodiscard]] int edge_limit() const { return edge_limit_; }
  [[nodiscard]] int model_limit(const std::string& model) const;
  [[nodiscard]] int in_flight() const;
  [[nodiscard]] int in_flight(const std::string& model) const;
  [[nodiscard]] uint64_t edge_rejections() const;
  [[nodiscard]] uint64_t model_rejections(const std::string& model) const;

private:
  const int edge_limit_;
  const std::map<std::string, int> model_limits_;
  mutable std::mutex mtx_;
  int edge_ = 0;
  uint64_t edge_rejected_ = 0;
  std::map<std::string, int> models_;
  std::map<std::string, uint64_t> model_rejected_;
};

/// The slots one request holds; gives back what it holds when released or destroyed.
class admission_slot {
public:
  admission_slot() = default;
  explicit admission_slot(admission* a) : a_(a), edge_(true) {}
  admission_slot(const admission_slot&) = delete;
  admission_slot& operator=(const admission_slot&) = delete;
  admission_slot(admission_slot&& o) noexcept { *this = std::move(o); }
  admission_slot& operator=(admission_slot&& o) noexcept;
  ~admission_slot() { release(); }

  /// Takes `model`'s slot too; false when its limit is reached.
  bool take_model(const std::string& model);
  void release();
  [[nodiscard]] bool held() const { return edge_; }

private:
  admission* a_ = nullptr;
  bool edge_ = false;
  std::string model_;  ///< non-empty: a model slot is held
};

}  // namespace llmux::gateway
