#pragma once
/// Idle keep-alive connections held open beside a benchmark: each asks
/// `GET /health` once and then holds its connection, as a client pool of an
/// idle application does. At the end each asks again, which shows whether
/// the server kept it. Raw sockets: ten thousand cost no threads.

#include <string>
#include <vector>

namespace llmux::loadgen {

class idle_connections {
public:
  /// Opens `n` connections to `url` (http://host:port) and has each answered
  /// once; throws std::runtime_error when one cannot connect or is not answered.
  idle_connections(const std::string& url, int n);
  ~idle_connections();
  idle_connections(const idle_connections&) = delete;
  idle_connections& operator=(const idle_connections&) = delete;

  /// Asks on every connection again; returns how many the server answered.
  int still_answered();
  [[nodiscard]] int size() const { return static_cast<int>(fds_.size()); }

private:
  int ask_all(double timeout_s);
  std::vector<int> fds_;
};

}  // namespace llmux::loadgen
