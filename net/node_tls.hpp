#pragma once
/// Mutual TLS between the nodes of one cluster: the cluster's own CA, one
/// certificate per node, and the handshake that admits a peer only if it
/// presents a certificate that CA signed for a node of the config.
///
/// Why not CAF's OpenSSL module: it cannot say who it turned away (CAF's
/// logging is compiled out in Debian's build), re-reads the key files for
/// every connection, and accepts any certificate the CA signed. The actor
/// glue that plugs this into the middleman is actors/node_tls; this file is
/// plain OpenSSL, unit-tested over socket pairs (tests/net/node_tls_test.cpp).
///
/// Threads: a `context` is immutable after construction and shared by every
/// session; a `session` belongs to the one thread that drives its socket (the
/// middleman's loop).

#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace llmux::net::node_tls {

/// One node's files: the cluster CA it trusts, and its own certificate
/// (PEM, chain allowed) and private key (PEM, unencrypted).
struct credentials {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

/// Called with one line for each connection the handshake turned away (who,
/// and why), and for nothing else. Any thread.
using refusal_log = std::function<void(const std::string&)>;

/// What a node presents and what it admits. Built once per process.
class context {
public:
  /// Loads and checks the files (the key must match the certificate, the
  /// certificate must be signed by the CA); throws std::runtime_error naming
  /// the file and OpenSSL's reason. `nodes` are the names a peer's
  /// certificate may carry (its subject CN).
  context(const credentials& files, std::set<std::string> nodes, refusal_log log);
  ~context();
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  [[nodiscard]] SSL_CTX* native() const { return ctx_; }
  [[nodiscard]] const std::set<std::string>& nodes() const { return nodes_; }
  void refused(const std::string& line) const;

private:
  SSL_CTX* ctx_ = nullptr;
  std::set<std::string> nodes_;
  refusal_log log_;
};

/// One TLS connection over a connected non-blocking socket. The handshake
/// runs inside the first reads and writes.
class session {
public:
  enum class result {
    ok,         ///< `n` bytes moved (0: the socket would block)
    failed,     ///< closed by the peer, or the handshake refused it
  };

  /// `accepting`: this side accepted the TCP connection. `peer`: the address
  /// for log lines. `expected_node`: when connecting, the node the address
  /// belongs to; its certificate must name exactly it ("" = any node).
  session(std::shared_ptr<const context> ctx, int fd, bool accepting, std::string peer,
          std::string expected_node = "");
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  result read(void* buf, size_t len, size_t& n);
  result write(const void* buf, size_t len, size_t& n);
  /// Drives the handshake only; true once it is done. `failed()` tells a
  /// refusal from "not yet".
  bool handshake();
  [[nodiscard]] bool established() const { return established_; }
  [[nodiscard]] bool failed() const { return failed_; }
  /// Decrypted bytes buffered inside OpenSSL (readable without the socket).
  [[nodiscard]] size_t pending() const;
  /// The peer's node name (its certificate's CN), once established.
  [[nodiscard]] const std::string& peer_node() const { return peer_node_; }
  /// The handshake waits for the socket to take more bytes (not to bring some).
  [[nodiscard]] bool wants_write() const { return want_write_; }

  /// Set by the verify callback: why the peer's certificate was turned down.
  std::string verify_reason;
  [[nodiscard]] const std::string& expected_node() const { return expected_node_; }
  [[nodiscard]] const context& ctx() const { return *ctx_; }

private:
  result fail(int ret, const char* during);
  /// One SSL_read or SSL_write, after the handshake.
  result transfer(int (*op)(SSL*, void*, int), void* buf, size_t len, size_t& n, const char* during);

  std::shared_ptr<const context> ctx_;
  SSL* ssl_ = nullptr;
  std::string peer_;
  std::string expected_node_;
  std::string peer_node_;
  bool accepting_;
  bool established_ = false;
  bool failed_ = false;
  bool want_write_ = false;
};

/// What `llmux certs` writes.
struct certs_written {
  bool ca_created = false;     ///< false: an existing ca.pem/ca.key was reused
  std::vector<std::string> files;
};

/// Writes a self-signed cluster CA (`dir`/ca.pem, ca.key; reused when both
/// exist, so adding a node keeps the cluster's trust) and for each node
/// `dir`/NODE.pem and NODE.key: an EC P-256 key and a certificate with
/// CN = NODE and the node's host as subjectAltName, valid `days` days, for
/// both TLS client and server use. Keys are written mode 0600. Throws
/// std::runtime_error on failure.
struct node_identity {
  std::string name;
  std::string host;
};
certs_written make_cluster_certs(const std::string& dir, const std::string& cluster,
                                 const std::vector<node_identity>& nodes, int days = 825);

}  // namespace llmux::net::node_tls
