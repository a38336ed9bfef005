#include "tools/loadgen/idle_connections.hpp"

#include <chrono>
#include <cstring>
#include <stdexcept>

#include <netdb.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace llmux::loadgen {

namespace {

const char health[] = "GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";

/// host and port of "http://host:port[/...]".
std::pair<std::string, std::string> host_port(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0)
    rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos)
    throw std::runtime_error("idle connections: only http:// URLs, not " + url);
  rest = rest.substr(0, rest.find('/'));
  auto colon = rest.rfind(':');
  if (colon == std::string::npos)
    return {rest, "80"};
  return {rest.substr(0, colon), rest.substr(colon + 1)};
}

}  // namespace

idle_connections::idle_connections(const std::string& url, int n) {
  // Ten thousand sockets need the descriptor limit raised to its maximum.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  auto [host, port] = host_port(url);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("idle connections: cannot resolve " + host);
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
      const std::string why = std::strerror(errno);
      if (fd >= 0)
        ::close(fd);
      freeaddrinfo(res);
      throw std::runtime_error("idle connections: connection " + std::to_string(i + 1) + " of "
                               + std::to_string(n) + " failed: " + why);
    }
    fds_.push_back(fd);
  }
  freeaddrinfo(res);
  int answered = ask_all(30);
  if (answered != n)
    throw std::runtime_error("idle connections: " + std::to_string(answered) + " of " + std::to_string(n)
                             + " were answered");
}

idle_connections::~idle_connections() {
  for (int fd : fds_)
    ::close(fd);
}

int idle_connections::still_answered() {
  return ask_all(30);
}

int idle_connections::ask_all(double timeout_s) {
  std::vector<pollfd> waiting;
  for (int fd : fds_) {
    if (::send(fd, health, sizeof health - 1, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof health - 1))
      waiting.push_back({fd, POLLIN, 0});
  }
  // An answer is small: its first bytes say 200, and the rest fits one read.
  int answered = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!waiting.empty() && std::chrono::steady_clock::now() < deadline) {
    if (::poll(waiting.data(), waiting.size(), 200) <= 0)
      continue;
    std::vector<pollfd> rest;
    for (auto& p : waiting) {
      if (p.revents == 0) {
        rest.push_back(p);
        continue;
      }
      char buf[1024];
      ssize_t got = ::recv(p.fd, buf, sizeof buf, 0);
      if (got > 12 && std::memcmp(buf, "HTTP/1.1 200", 12) == 0)
        ++answered;
      p.revents = 0;
    }
    waiting.swap(rest);
  }
  return answered;
}

}  // namespace llmux::loadgen
