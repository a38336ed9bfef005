#include "net/node_tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <stdexcept>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace llmux::net::node_tls {

namespace {

/// OpenSSL's error queue as one line (and emptied).
std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty())
      out += "; ";
    out += buf;
  }
  return out;
}

[[noreturn]] void throw_ssl_error(const std::string& what) {
  auto why = ssl_errors();
  throw std::runtime_error(what + (why.empty() ? "" : ": " + why));
}

std::string common_name(X509* cert) {
  if (cert == nullptr)
    return "";
  X509_NAME* subject = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0)
    return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0)
    return "";
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return cn;
}

/// Admits a peer certificate only if the chain ends at the cluster CA and
/// the leaf names a node of the cluster (the one dialled, when connecting).
int verify_peer(int preverify_ok, X509_STORE_CTX* store) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* sess = ssl ? static_cast<session*>(SSL_get_app_data(ssl)) : nullptr;
  if (sess == nullptr)
    return 0;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (!preverify_ok) {
    int err = X509_STORE_CTX_get_error(store);
    const auto cn = common_name(cert);
    sess->verify_reason = std::string{"certificate "} + (cn.empty() ? "without a name" : "'" + cn + "'")
                          + " not accepted: " + X509_verify_cert_error_string(err);
    return 0;
  }
  if (X509_STORE_CTX_get_error_depth(store) != 0)
    return 1;
  const auto cn = common_name(cert);
  if (!sess->ctx().nodes().count(cn)) {
    sess->verify_reason = "certificate names '" + cn + "', which is no node of this cluster";
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  if (!sess->expected_node().empty() && cn != sess->expected_node()) {
    sess->verify_reason = "certificate names node '" + cn + "', not '" + sess->expected_node() + "' whose address this is";
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

}  // namespace

// -- context ------------------------------------------------------------------

context::context(const credentials& files, std::set<std::string> nodes, refusal_log log)
    : nodes_(std::move(nodes)), log_(std::move(log)) {
  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_method());
  if (ctx_ == nullptr)
    throw_ssl_error("node TLS: cannot create an OpenSSL context");
  // Both ends are llmux built on the same OpenSSL: nothing older is needed.
  SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
  // CAF's stream hands the rest of a buffer to the next write, possibly moved.
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Every connection shows its certificate: no resumed sessions.
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx_, 0);
  SSL_CTX_set_options(ctx_, SSL_OP_NO_TICKET);
  auto must_read = [](const std::string& what, const std::string& path) {
    if (path.empty())
      throw std::runtime_error("node TLS: no " + what + " file given");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw std::runtime_error("node TLS: " + what + " '" + path + "' does not exist (llmux certs CONFIG makes one)");
  };
  try {
    must_read("CA certificate", files.ca_file);
    must_read("certificate", files.cert_file);
    must_read("key", files.key_file);
    if (SSL_CTX_use_certificate_chain_file(ctx_, files.cert_file.c_str()) != 1)
      throw_ssl_error("node TLS: cannot load certificate '" + files.cert_file + "'");
    const auto mismatch = "node TLS: key '" + files.key_file + "' does not belong to certificate '" + files.cert_file + "'";
    if (SSL_CTX_use_PrivateKey_file(ctx_, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        throw std::runtime_error(mismatch);
      }
      throw_ssl_error("node TLS: cannot load key '" + files.key_file + "'");
    }
    if (SSL_CTX_check_private_key(ctx_) != 1)
      throw_ssl_error(mismatch);
    // Only the cluster's CA: not the system's trust store.
    if (SSL_CTX_load_verify_locations(ctx_, files.ca_file.c_str(), nullptr) != 1)
      throw_ssl_error("node TLS: cannot load CA certificate '" + files.ca_file + "'");
    // Our own certificate must pass the check peers will make of it.
    X509_STORE_CTX* check = X509_STORE_CTX_new();
    int ok = check && X509_STORE_CTX_init(check, SSL_CTX_get_cert_store(ctx_), SSL_CTX_get0_certificate(ctx_), nullptr) == 1
             && X509_verify_cert(check) == 1;
    std::string why = check && !ok ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(check)) : "";
    X509_STORE_CTX_free(check);
    if (!ok)
      throw std::runtime_error("node TLS: certificate '" + files.cert_file + "' does not verify against CA '" + files.ca_file
                               + "': " + why);
  } catch (...) {
    SSL_CTX_free(ctx_);
    throw;
  }
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_peer);
}

context::~context() {
  SSL_CTX_free(ctx_);
}

void context::refused(const std::string& line) const {
  if (log_)
    log_(line);
}

// -- session ------------------------------------------------------------------

session::session(std::shared_ptr<const context> ctx, int fd, bool accepting, std::string peer, std::string expected_node)
    : ctx_(std::move(ctx)), peer_(std::move(peer)), expected_node_(std::move(expected_node)), accepting_(accepting) {
  ssl_ = SSL_new(ctx_->native());
  if (ssl_ == nullptr)
    throw_ssl_error("node TLS: cannot create a session");
  SSL_set_fd(ssl_, fd);
  SSL_set_app_data(ssl_, this);
  if (accepting)
    SSL_set_accept_state(ssl_);
  else
    SSL_set_connect_state(ssl_);
}

session::~session() {
  SSL_free(ssl_);
}

session::result session::fail(int ret, const char* during) {
  const int err = SSL_get_error(ssl_, ret);
  failed_ = true;
  if (established_)
    return result::failed;  // a closed connection, not a refusal
  std::string why = verify_reason;
  auto queue = ssl_errors();
  if (why.empty())
    why = !queue.empty() ? queue
          : err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN ? "closed by the peer during the handshake"
                                                                      : "handshake failed";
  ctx_->refused(std::string{"node TLS: "} + (accepting_ ? "refused a connection from " : "connection to ") + peer_
                + (expected_node_.empty() ? "" : " (node " + expected_node_ + ")") + (accepting_ ? " " : " failed ")
                + during + ": " + why);
  return result::failed;
}

bool session::handshake() {
  if (established_)
    return true;
  if (failed_)
    return false;
  want_write_ = false;
  ERR_clear_error();
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    established_ = true;
    X509* cert = SSL_get1_peer_certificate(ssl_);
    peer_node_ = common_name(cert);
    X509_free(cert);
    return true;
  }
  int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_READ)
    return false;
  if (err == SSL_ERROR_WANT_WRITE) {
    want_write_ = true;
    return false;
  }
  fail(ret, "in the handshake");
  return false;
}

session::result session::transfer(int (*op)(SSL*, void*, int), void* buf, size_t len, size_t& n,
                                  const char* during) {
  n = 0;
  if (!handshake())
    return failed_ ? result::failed : result::ok;
  if (len == 0)
    return result::ok;
  ERR_clear_error();
  int ret = op(ssl_, buf, static_cast<int>(std::min<size_t>(len, 1u << 30)));
  if (ret > 0) {
    n = static_cast<size_t>(ret);
    return result::ok;
  }
  int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
    return result::ok;
  return fail(ret, during);
}

session::result session::read(void* buf, size_t len, size_t& n) {
  return transfer(SSL_read, buf, len, n, "reading");
}

session::result session::write(const void* buf, size_t len, size_t& n) {
  auto write = [](SSL* ssl, void* data, int size) { return SSL_write(ssl, data, size); };
  return transfer(write, const_cast<void*>(buf), len, n, "writing");
}

size_t session::pending() const {
  return static_cast<size_t>(SSL_pending(ssl_));
}

// -- certificates -------------------------------------------------------------

namespace {

using pkey_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using x509_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

pkey_ptr new_key() {
  pkey_ptr key{EVP_EC_gen("P-256"), EVP_PKEY_free};
  if (!key)
    throw_ssl_error("cannot generate an EC P-256 key");
  return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
  if (ext == nullptr)
    throw_ssl_error(std::string{"cannot make certificate extension "} + OBJ_nid2sn(nid) + " = " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

x509_ptr new_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, int days) {
  x509_ptr cert{X509_new(), X509_free};
  X509_set_version(cert.get(), 2);
  // A random 127-bit serial, as RFC 5280 asks of a CA (unique, positive).
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1)
    throw_ssl_error("no random bytes for a serial number");
  raw[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(raw, sizeof raw, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  // A minute back, so clocks a little apart accept it at once.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400L);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("llmux"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(cert.get(), key);
  X509* signer = issuer ? issuer : cert.get();
  add_ext(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (issuer)
    add_ext(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  return cert;
}

void sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) == 0)
    throw_ssl_error("cannot sign a certificate");
}

void write_pem(const std::filesystem::path& path, X509* cert, EVP_PKEY* key) {
  // Keys are readable by their owner only, from the moment they exist.
  const bool secret = key != nullptr;
  std::error_code ec;
  std::filesystem::remove(path, ec);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
  if (fd < 0)
    throw std::runtime_error("cannot write '" + path.string() + "'");
  FILE* f = fdopen(fd, "w");
  if (f == nullptr) {
    ::close(fd);
    throw std::runtime_error("cannot write '" + path.string() + "'");
  }
  int ok = secret ? PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) : PEM_write_X509(f, cert);
  if (std::fclose(f) != 0 || ok != 1)
    throw_ssl_error("cannot write '" + path.string() + "'");
}

x509_ptr read_cert(const std::filesystem::path& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    throw std::runtime_error("cannot read '" + path.string() + "'");
  x509_ptr cert{PEM_read_X509(f, nullptr, nullptr, nullptr), X509_free};
  std::fclose(f);
  if (!cert)
    throw_ssl_error("'" + path.string() + "' holds no PEM certificate");
  return cert;
}

pkey_ptr read_key(const std::filesystem::path& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    throw std::runtime_error("cannot read '" + path.string() + "'");
  pkey_ptr key{PEM_read_PrivateKey(f, nullptr, nullptr, nullptr), EVP_PKEY_free};
  std::fclose(f);
  if (!key)
    throw_ssl_error("'" + path.string() + "' holds no unencrypted PEM key");
  return key;
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

certs_written make_cluster_certs(const std::string& dir, const std::string& cluster,
                                 const std::vector<node_identity>& nodes, int days) {
  namespace fs = std::filesystem;
  ERR_clear_error();
  certs_written out;
  fs::create_directories(dir);
  const fs::path ca_pem = fs::path(dir) / "ca.pem", ca_key_path = fs::path(dir) / "ca.key";
  pkey_ptr ca_key{nullptr, EVP_PKEY_free};
  x509_ptr ca{nullptr, X509_free};
  if (fs::exists(ca_pem) && fs::exists(ca_key_path)) {
    ca = read_cert(ca_pem);
    ca_key = read_key(ca_key_path);
    if (X509_check_private_key(ca.get(), ca_key.get()) != 1)
      throw_ssl_error("'" + ca_key_path.string() + "' does not belong to '" + ca_pem.string() + "'");
  } else {
    ca_key = new_key();
    // The CA outlives the node certificates it signs.
    ca = new_cert(ca_key.get(), "llmux cluster " + cluster + " CA", nullptr, nullptr, days * 4);
    add_ext(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_ext(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    sign(ca.get(), ca_key.get());
    write_pem(ca_key_path, nullptr, ca_key.get());
    write_pem(ca_pem, ca.get(), nullptr);
    out.ca_created = true;
    out.files.push_back(ca_pem.string());
    out.files.push_back(ca_key_path.string());
  }
  for (const auto& n : nodes) {
    auto key = new_key();
    auto cert = new_cert(key.get(), n.name, ca.get(), ca_key.get(), days);
    add_ext(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
    add_ext(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth,clientAuth");
    std::string san = "DNS:" + n.name;
    if (!n.host.empty() && n.host != n.name)
      san += (is_ip(n.host) ? ",IP:" : ",DNS:") + n.host;
    add_ext(cert.get(), ca.get(), NID_subject_alt_name, san.c_str());
    sign(cert.get(), ca_key.get());
    const fs::path pem = fs::path(dir) / (n.name + ".pem"), kp = fs::path(dir) / (n.name + ".key");
    write_pem(kp, nullptr, key.get());
    write_pem(pem, cert.get(), nullptr);
    out.files.push_back(pem.string());
    out.files.push_back(kp.string());
  }
  return out;
}

}  // namespace llmux::net::node_tls
