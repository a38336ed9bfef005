#include "net/http_server.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

using namespace llmux::net;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// A blocking loopback client socket.
struct client {
  int fd = -1;
  explicit client(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~client() { close(); }
  void close() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
  void send(const std::string& s) const { REQUIRE(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size())); }
  /// Reads until `pred(received)` holds, the peer closes, or 5 s pass.
  template <class Pred>
  std::string read_until(Pred pred, bool* closed = nullptr) const {
    std::string got;
    auto deadline = steady::now() + 5s;
    while (!pred(got) && steady::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0)
        continue;
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        if (closed)
          *closed = true;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  std::string read_containing(const std::string& s, bool* closed = nullptr) const {
    return read_until([&](const std::string& g) { return g.find(s) != std::string::npos; }, closed);
  }
};

template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  auto deadline = steady::now() + limit;
  while (!pred()) {
    if (steady::now() > deadline)
      return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

http_server_options local_options() {
  http_server_options o;
  o.host = "127.0.0.1";
  o.port = 0;
  return o;
}

}  // namespace

TEST_CASE("answers on a keep-alive connection, pipelined requests in order, and 404 / 405") {
  http_server srv{local_options()};
  srv.route("GET", "/health", [](auto ex) { ex->respond(200, "application/json", R"({"status":"ok"})"); });
  srv.route("POST", "/echo", [](auto ex) { ex->respond(200, "text/plain", ex->request().body); });
  srv.route("GET", "/v1/models/", [](auto ex) { ex->respond(200, "text/plain", ex->request().path); }, true);
  srv.start();
  client c{srv.port()};
  c.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  auto a = c.read_containing("ok\"}");
  CHECK(a.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(a.find("Content-Length: 15\r\n") != std::string::npos);
  // Two pipelined requests, answered in order on the same connection.
  c.send("POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /v1/models/m1 HTTP/1.1\r\n\r\n");
  auto b = c.read_containing("/v1/models/m1");
  CHECK(b.find("abc") < b.find("/v1/models/m1"));
  c.send("GET /nowhere HTTP/1.1\r\n\r\n");
  CHECK(c.read_containing("\r\n\r\n").rfind("HTTP/1.1 404", 0) == 0);
  c.send("DELETE /health HTTP/1.1\r\n\r\n");
  CHECK(c.read_containing("\r\n\r\n").rfind("HTTP/1.1 405", 0) == 0);
  CHECK(srv.stats().requests == 5);
  CHECK(srv.stats().connections == 1);
}

TEST_CASE("a handler answers later from another thread, streamed in chunks") {
  http_server srv{local_options()};
  std::vector<std::thread> workers;
  srv.route("GET", "/stream", [&workers](std::shared_ptr<http_exchange> ex) {
    workers.emplace_back([ex] {
      REQUIRE(ex->start_stream(200, "text/event-stream"));
      for (int i = 0; i < 3; ++i) {
        std::this_thread::sleep_for(10ms);
        CHECK(ex->write("data: " + std::to_string(i) + "\n\n"));
      }
      ex->end();
    });
  });
  srv.start();
  client c{srv.port()};
  c.send("GET /stream HTTP/1.1\r\n\r\n");
  auto got = c.read_containing("0\r\n\r\n");
  CHECK(got.find("Transfer-Encoding: chunked") != std::string::npos);
  CHECK(got.find("9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n") != std::string::npos);
  // The connection stays usable after a stream.
  c.send("GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n");
  bool closed = false;
  c.read_until([](const std::string&) { return false; }, &closed);
  CHECK(closed);
  srv.stop();  // joins the loop thread, the only writer of `workers`
  for (auto& t : workers)
    t.join();
}

TEST_CASE("a client that goes away before its answer is told to the handler, once") {
  http_server srv{local_options()};
  std::atomic<int> fired{0};
  std::shared_ptr<http_exchange> held;
  std::mutex mtx;
  srv.route("GET", "/wait", [&](std::shared_ptr<http_exchange> ex) {
    ex->on_close([&fired] { ++fired; });
    std::lock_guard<std::mutex> g{mtx};
    held = ex;
  });
  srv.start();
  {
    client c{srv.port()};
    c.send("GET /wait HTTP/1.1\r\n\r\n");
    REQUIRE(wait_for([&] {
      std::lock_guard<std::mutex> g{mtx};
      return held != nullptr;
    }));
    CHECK(fired == 0);
  }  // the client closes
  REQUIRE(wait_for([&] { return fired == 1; }));
  std::lock_guard<std::mutex> g{mtx};
  CHECK(held->closed());
  CHECK_FALSE(held->write("late"));
  // A callback set after the close runs at once.
  int late = 0;
  held->on_close([&late] { ++late; });
  CHECK(late == 1);
  CHECK(srv.stats().client_gone == 1);
  CHECK(srv.stats().in_request == 0);
}

TEST_CASE("100-continue is sent for a body the client holds back") {
  http_server srv{local_options()};
  srv.route("POST", "/echo", [](auto ex) { ex->respond(200, "text/plain", ex->request().body); });
  srv.start();
  client c{srv.port()};
  c.send("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  CHECK(c.read_containing("\r\n\r\n") == "HTTP/1.1 100 Continue\r\n\r\n");
  c.send("body");
  CHECK(c.read_containing("body").find("HTTP/1.1 200 OK") != std::string::npos);
}

TEST_CASE("malformed requests get their status and the connection is closed") {
  http_server srv{local_options()};
  srv.set_error_renderer([](int status, const std::string& msg) {
    return std::make_pair("{\"status\":" + std::to_string(status) + ",\"message\":\"" + msg + "\"}",
                          std::string{"application/json"});
  });
  srv.start();
  client c{srv.port()};
  c.send("GET / HTTP/3.0\r\n\r\n");
  bool closed = false;
  auto got = c.read_until([](const std::string&) { return false; }, &closed);
  CHECK(got.rfind("HTTP/1.1 505", 0) == 0);
  CHECK(got.find("\"status\":505") != std::string::npos);
  CHECK(closed);
  CHECK(srv.stats().bad_requests == 1);
}

TEST_CASE("connections beyond the limit get a 503 and are closed; idle ones time out") {
  auto o = local_options();
  o.max_connections = 2;
  o.keep_alive_s = 1;
  http_server srv{o};
  srv.route("GET", "/health", [](auto ex) { ex->respond(200, "text/plain", "ok"); });
  srv.start();
  client a{srv.port()}, b{srv.port()};
  REQUIRE(wait_for([&] { return srv.stats().connections == 2; }));
  client c{srv.port()};
  bool closed = false;
  auto got = c.read_until([](const std::string&) { return false; }, &closed);
  CHECK(got.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(got.find("Retry-After: 1") != std::string::npos);
  CHECK(closed);
  CHECK(srv.stats().refused == 1);
  // Idle keep-alive connections close after keep_alive_s (1 s; the sweep runs every second).
  REQUIRE(wait_for([&] { return srv.stats().connections == 0; }, 4000ms));
  CHECK(srv.stats().idle_closed == 2);
}

TEST_CASE("a request that does not finish arriving gets 408") {
  auto o = local_options();
  o.request_read_s = 1;
  http_server srv{o};
  srv.route("POST", "/echo", [](auto ex) { ex->respond(200, "text/plain", ex->request().body); });
  srv.start();
  client c{srv.port()};
  c.send("POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  bool closed = false;
  auto got = c.read_until([](const std::string&) { return false; }, &closed);
  CHECK(got.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(closed);
}

TEST_CASE("stopping the server tells open exchanges, and an exchange outliving it is harmless") {
  std::shared_ptr<http_exchange> held;
  std::atomic<bool> told{false};
  {
    http_server srv{local_options()};
    srv.route("GET", "/wait", [&](std::shared_ptr<http_exchange> ex) {
      ex->on_close([&told] { told = true; });
      held = ex;
    });
    srv.start();
    client c{srv.port()};
    c.send("GET /wait HTTP/1.1\r\n\r\n");
    REQUIRE(wait_for([&] { return srv.stats().in_request == 1; }));
    srv.stop();
    CHECK(told);
  }
  REQUIRE(held);
  CHECK_FALSE(held->start_stream(200, "text/plain"));
  held->end();
}

TEST_CASE("a busy port is an error naming it") {
  http_server a{local_options()};
  a.start();
  auto o = local_options();
  o.port = a.port();
  http_server b{o};
  try {
    b.start();
    FAIL("bound a busy port");
  } catch (const std::runtime_error& e) {
    CHECK(std::string{e.what()}.find(std::to_string(a.port())) != std::string::npos);
  }
}
