#pragma once
/// HTTP/1.1 request parsing and response heads — pure core of the edge's
/// server (no sockets, no threads): what arrived on a connection goes in,
/// one request or a verdict comes out. Request bodies by Content-Length or
/// chunked transfer coding; limits on the head and the body; every refusal
/// names its HTTP status (400, 413, 431, 501, 505) and why.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmux::net {

struct http_request {
  std::string method;
  std::string target;  ///< as sent: path and query
  std::string path;    ///< percent-decoded path, without the query
  std::string query;
  int minor_version = 1;  ///< HTTP/1.x
  /// Header names in lower case, values trimmed, in the order sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = true;        ///< after this request (1.1 default, 1.0 on request)
  bool expect_continue = false;  ///< "Expect: 100-continue"

  /// The first value of header `lower_name`, or "".
  [[nodiscard]] std::string header(std::string_view lower_name) const;
  [[nodiscard]] bool has_header(std::string_view lower_name) const;
};

struct parse_limits {
  size_t max_head_bytes = 64 * 1024;  ///< request line and headers
  size_t max_body_bytes = 1 << 20;
};

struct parse_result {
  enum class state { need_more, complete, error };
  state st = state::need_more;
  size_t consumed = 0;        ///< complete: bytes of this request (the rest is the next one)
  bool head_complete = false; ///< need_more: the head is in, the body is not (100-continue)
  int status = 0;             ///< error: the HTTP status to answer with
  std::string message;        ///< error: why
};

/// Parses the request at the start of `buf` into `out` (overwritten).
[[nodiscard]] parse_result parse_request(std::string_view buf, const parse_limits& limits,
                                         http_request& out);

/// The standard reason phrase of `status` ("Unknown" when not listed).
[[nodiscard]] const char* reason_phrase(int status);

/// A response head: status line, Date-less headers, `Content-Length` (when
/// `content_length` >= 0) or `Transfer-Encoding: chunked` (when `chunked`),
/// `Connection: close` when `!keep_alive`, and the blank line.
[[nodiscard]] std::string response_head(int status, int minor_version, std::string_view content_type,
                                        const std::vector<std::pair<std::string, std::string>>& headers,
                                        long long content_length, bool chunked, bool keep_alive);

/// One chunk of the chunked transfer coding (nothing for empty data: the
/// terminating chunk is `last_chunk()`).
[[nodiscard]] std::string chunk(std::string_view data);
[[nodiscard]] inline std::string_view last_chunk() { return "0\r\n\r\n"; }

}  // namespace llmux::net
