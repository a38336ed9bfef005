#include "actors/node_tls/tls_middleman.hpp"

#include <caf/io/basp_broker.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor_impl.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/io/network/doorman_impl.hpp>
#include <caf/io/network/interfaces.hpp>
#include <caf/io/network/stream_impl.hpp>
#include <caf/scoped_actor.hpp>

namespace llmux::node_tls {

namespace {

namespace io = caf::io;
namespace nw = caf::io::network;
using tls_session = net::node_tls::session;

std::string peer_of(nw::native_socket fd) {
  auto addr = nw::remote_addr_of_fd(fd);
  auto port = nw::remote_port_of_fd(fd);
  return (addr ? *addr : std::string{"?"}) + ":" + (port ? std::to_string(*port) : std::string{"?"});
}

/// How CAF's stream reads and writes: through the TLS session. A session
/// that fails reports failure, and the stream closes the connection.
struct tls_policy {
  explicit tls_policy(std::shared_ptr<tls_session> s) : session(std::move(s)) {}

  nw::rw_state read_some(size_t& n, nw::native_socket, void* buf, size_t len) {
    return session->read(buf, len, n) == tls_session::result::ok ? nw::rw_state::success : nw::rw_state::failure;
  }

  nw::rw_state write_some(size_t& n, nw::native_socket, const void* buf, size_t len) {
    n = 0;
    if (len == 0) {
      // The empty write the scribe forces at launch drives the handshake
      // until it waits for the peer; reads carry it on from there.
      if (session->handshake())
        return nw::rw_state::indeterminate;
      if (session->failed())
        return nw::rw_state::failure;
      return session->wants_write() ? nw::rw_state::success : nw::rw_state::indeterminate;
    }
    return session->write(buf, len, n) == tls_session::result::ok ? nw::rw_state::success : nw::rw_state::failure;
  }

  /// Bytes OpenSSL decrypted ahead sit in its buffer, not in the socket.
  bool must_read_more(nw::native_socket, size_t threshold) { return session->pending() >= threshold; }

  std::shared_ptr<tls_session> session;
};

class tls_scribe : public io::scribe {
public:
  tls_scribe(nw::default_multiplexer& mpx, nw::native_socket fd, std::shared_ptr<tls_session> s)
      : io::scribe(nw::conn_hdl_from_socket(fd)), stream_(mpx, fd, std::move(s)) {}

  void configure_read(io::receive_policy::config config) override {
    stream_.configure_read(config);
    if (!launched_)
      launch();
  }
  void ack_writes(bool enable) override { stream_.ack_writes(enable); }
  std::vector<char>& wr_buf() override { return stream_.wr_buf(); }
  std::vector<char>& rd_buf() override { return stream_.rd_buf(); }
  void graceful_shutdown() override {
    stream_.graceful_shutdown();
    detach(&stream_.backend(), false);
  }
  void flush() override { stream_.flush(this); }
  std::string addr() const override {
    auto x = nw::remote_addr_of_fd(stream_.fd());
    return x ? *x : std::string{};
  }
  uint16_t port() const override {
    auto x = nw::remote_port_of_fd(stream_.fd());
    return x ? *x : 0;
  }
  void add_to_loop() override { stream_.activate(this); }
  void remove_from_loop() override { stream_.passivate(); }

private:
  void launch() {
    launched_ = true;
    stream_.start(this);
    // Schedules a first (empty) write so the handshake starts at once.
    stream_.force_empty_write(this);
  }

  bool launched_ = false;
  nw::stream_impl<tls_policy> stream_;
};

class tls_doorman : public nw::doorman_impl {
public:
  tls_doorman(nw::default_multiplexer& mpx, nw::native_socket fd, std::shared_ptr<const net::node_tls::context> ctx)
      : nw::doorman_impl(mpx, fd), ctx_(std::move(ctx)) {}

  bool new_connection() override {
    if (detached())
      return false;
    auto& mpx = acceptor_.backend();
    auto fd = acceptor_.accepted_socket();
    nw::nonblocking(fd, true);
    auto s = std::make_shared<tls_session>(ctx_, static_cast<int>(fd), /*accepting=*/true, peer_of(fd));
    auto scribe = caf::make_counted<tls_scribe>(mpx, fd, std::move(s));
    auto hdl = scribe->hdl();
    parent()->add_scribe(std::move(scribe));
    return doorman::new_connection(&mpx, hdl);
  }

private:
  std::shared_ptr<const net::node_tls::context> ctx_;
};

class tls_middleman : public io::middleman_actor_impl {
public:
  tls_middleman(caf::actor_config& cfg, caf::actor broker, std::shared_ptr<const net::node_tls::context> ctx,
                node_addresses nodes)
      : io::middleman_actor_impl(cfg, std::move(broker)), ctx_(std::move(ctx)), nodes_(std::move(nodes)) {}

  const char* name() const override { return "llmux.tls_middleman"; }

protected:
  caf::expected<io::scribe_ptr> connect(const std::string& host, uint16_t port) override {
    auto fd = nw::new_tcp_connection(host, port);
    if (!fd)
      return std::move(fd.error());
    nw::nonblocking(*fd, true);
    auto it = nodes_.find({host, port});
    auto s = std::make_shared<tls_session>(ctx_, static_cast<int>(*fd), /*accepting=*/false,
                                           host + ":" + std::to_string(port),
                                           it == nodes_.end() ? std::string{} : it->second);
    return caf::make_counted<tls_scribe>(mpx(), *fd, std::move(s));
  }

  caf::expected<io::doorman_ptr> open(uint16_t port, const char* addr, bool reuse) override {
    auto fd = nw::new_tcp_acceptor_impl(port, addr, reuse);
    if (!fd)
      return std::move(fd.error());
    return caf::make_counted<tls_doorman>(mpx(), *fd, ctx_);
  }

private:
  nw::default_multiplexer& mpx() { return static_cast<nw::default_multiplexer&>(system().middleman().backend()); }

  std::shared_ptr<const net::node_tls::context> ctx_;
  node_addresses nodes_;
};

}  // namespace

caf::io::middleman_actor spawn_tls_middleman(caf::actor_system& sys, std::shared_ptr<const net::node_tls::context> ctx,
                                             node_addresses nodes) {
  auto broker = sys.middleman().named_broker<io::basp_broker>(caf::atom("BASP"));
  return sys.spawn<tls_middleman, caf::hidden>(std::move(broker), std::move(ctx), std::move(nodes));
}

caf::expected<uint16_t> publish(caf::actor_system& sys, const caf::io::middleman_actor& mm,
                                const caf::strong_actor_ptr& whom, std::set<std::string> sigs, uint16_t port,
                                const std::string& host) {
  caf::scoped_actor self{sys};
  caf::expected<uint16_t> result{caf::sec::runtime_error};
  self->request(mm, caf::infinite, caf::publish_atom::value, port, whom, std::move(sigs), host, true)
    .receive([&](uint16_t bound) { result = bound; }, [&](caf::error& err) { result = std::move(err); });
  return result;
}

}  // namespace llmux::node_tls
