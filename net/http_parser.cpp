#include "net/http_parser.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace llmux::net {

namespace {

constexpr size_t max_headers = 100;

bool is_tchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c)))
    return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

/// The line at `pos` (without its CRLF or LF) and the position after it;
/// npos when no line end is in `buf` yet.
size_t next_line(std::string_view buf, size_t pos, std::string_view& line) {
  size_t nl = buf.find('\n', pos);
  if (nl == std::string_view::npos)
    return std::string_view::npos;
  size_t end = nl;
  if (end > pos && buf[end - 1] == '\r')
    --end;
  line = buf.substr(pos, end - pos);
  return nl + 1;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size())
      return false;
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0)
      return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

parse_result fail(int status, std::string message) {
  parse_result r;
  r.st = parse_result::state::error;
  r.status = status;
  r.message = std::move(message);
  return r;
}

bool has_token(std::string_view list, std::string_view token) {
  // Comma-separated, case-insensitive.
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    auto item = trim(list.substr(pos, comma == std::string_view::npos ? std::string_view::npos
                                                                      : comma - pos));
    if (lower(item) == token)
      return true;
    if (comma == std::string_view::npos)
      break;
    pos = comma + 1;
  }
  return false;
}

/// Decodes a chunked body starting at `pos`. Returns need_more, complete
/// (with `consumed` the position after the trailers) or an error.
parse_result decode_chunked(std::string_view buf, size_t pos, size_t max_body, std::string& body) {
  body.clear();
  while (true) {
    std::string_view line;
    size_t next = next_line(buf, pos, line);
    if (next == std::string_view::npos) {
      if (buf.size() - pos > 64)
        return fail(400, "malformed chunk size line");
      return {};
    }
    auto semi = line.find(';');
    auto size_text = trim(line.substr(0, semi));
    if (size_text.empty() || size_text.size() > 15)
      return fail(400, "malformed chunk size line");
    size_t size = 0;
    for (char c : size_text) {
      int v = hex_value(c);
      if (v < 0)
        return fail(400, "malformed chunk size line");
      size = size * 16 + static_cast<size_t>(v);
    }
    if (size > max_body || body.size() + size > max_body)
      return fail(413, "request body too large (more than " + std::to_string(max_body) + " bytes)");
    pos = next;
    if (size == 0) {
      // Trailers (ignored) up to an empty line.
      while (true) {
        std::string_view t;
        size_t after = next_line(buf, pos, t);
        if (after == std::string_view::npos) {
          if (buf.size() - pos > 8192)
            return fail(431, "chunked trailers are too large");
          return {};
        }
        pos = after;
        if (t.empty())
          break;
      }
      parse_result r;
      r.st = parse_result::state::complete;
      r.consumed = pos;
      return r;
    }
    if (buf.size() < pos + size + 1)
      return {};
    body.append(buf.substr(pos, size));
    pos += size;
    // CRLF (or LF) after the data.
    if (buf[pos] == '\r') {
      if (buf.size() < pos + 2)
        return {};
      if (buf[pos + 1] != '\n')
        return fail(400, "chunk data is not followed by CRLF");
      pos += 2;
    } else if (buf[pos] == '\n') {
      pos += 1;
    } else {
      return fail(400, "chunk data is not followed by CRLF");
    }
  }
}

}  // namespace

std::string http_request::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name)
      return v;
  return {};
}

bool http_request::has_header(std::string_view lower_name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return h.first == lower_name; });
}

parse_result parse_request(std::string_view buf, const parse_limits& limits, http_request& out) {
  out = http_request{};
  size_t pos = 0;
  // Empty lines before the request line are ignored (RFC 9112 2.2).
  while (pos < buf.size() && (buf[pos] == '\r' || buf[pos] == '\n'))
    ++pos;
  if (pos == buf.size())
    return {};

  // The head ends at the first empty line.
  size_t head_end = std::string_view::npos;
  for (size_t i = buf.find('\n', pos); i != std::string_view::npos; i = buf.find('\n', i + 1)) {
    if (i + 1 < buf.size() && buf[i + 1] == '\n') {
      head_end = i + 2;
      break;
    }
    if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
      head_end = i + 3;
      break;
    }
    if (i - pos > limits.max_head_bytes)
      break;
  }
  if (head_end == std::string_view::npos) {
    if (buf.size() - pos > limits.max_head_bytes)
      return fail(431, "request head is larger than " + std::to_string(limits.max_head_bytes)
                         + " bytes");
    return {};
  }
  if (head_end - pos > limits.max_head_bytes)
    return fail(431, "request head is larger than " + std::to_string(limits.max_head_bytes) + " bytes");

  // Request line.
  std::string_view line;
  size_t cur = next_line(buf, pos, line);
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos
      || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line");
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto version = line.substr(sp2 + 1);
  if (!is_token(method))
    return fail(400, "malformed request method");
  if (target.empty()
      || std::any_of(target.begin(), target.end(),
                     [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
    return fail(400, "malformed request target");
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !std::isdigit(static_cast<unsigned char>(version[5]))
      || version[6] != '.' || !std::isdigit(static_cast<unsigned char>(version[7])))
    return fail(400, "malformed HTTP version");
  if (version[5] != '1')
    return fail(505, "HTTP version " + std::string{version.substr(5)} + " is not supported (HTTP/1.0 and 1.1 are)");
  out.method = std::string{method};
  out.target = std::string{target};
  out.minor_version = version[7] - '0';

  // Absolute form: drop scheme and authority.
  std::string_view path_query = target;
  if (auto scheme = path_query.find("://"); scheme != std::string_view::npos && path_query[0] != '/') {
    auto slash = path_query.find('/', scheme + 3);
    path_query = slash == std::string_view::npos ? std::string_view{"/"} : path_query.substr(slash);
  }
  // Origin form ("/path?query"), absolute form (above) or "*" (OPTIONS);
  // anything else (authority form, a bare word) is not a target we serve.
  if (path_query == "*") {
    out.path = "*";
  } else if (path_query.empty() || path_query[0] != '/') {
    return fail(400, "malformed request target (a path must start with '/')");
  }
  auto q = path_query.find('?');
  if (path_query != "*" && !percent_decode(path_query.substr(0, q), out.path))
    return fail(400, "malformed percent-encoding in the request path");
  if (q != std::string_view::npos)
    out.query = std::string{path_query.substr(q + 1)};

  // Headers.
  while (true) {
    size_t after = next_line(buf, cur, line);
    cur = after;
    if (line.empty())
      break;
    if (line[0] == ' ' || line[0] == '\t')
      return fail(400, "obsolete header line folding is not accepted");
    auto colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
      return fail(400, "malformed header line");
    if (out.headers.size() >= max_headers)
      return fail(431, "more than " + std::to_string(max_headers) + " header lines");
    auto value = trim(line.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(),
                    [](char c) { return c == '\0' || c == '\r' || c == '\n'; }))
      return fail(400, "malformed header value");
    out.headers.emplace_back(lower(line.substr(0, colon)), std::string{value});
  }

  // Framing and connection options.
  bool chunked = false;
  bool have_length = false;
  size_t length = 0;
  bool close = false, keep = false;
  for (const auto& [k, v] : out.headers) {
    if (k == "content-length") {
      if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(400, "malformed Content-Length");
      size_t n = std::stoull(v);
      if (have_length && n != length)
        return fail(400, "conflicting Content-Length headers");
      have_length = true;
      length = n;
    } else if (k == "transfer-encoding") {
      auto codings = lower(v);
      if (!codings.empty() && codings != "identity") {
        // Only "chunked" (last, and alone): anything else cannot be framed.
        if (trim(codings) != "chunked")
          return fail(501, "Transfer-Encoding '" + v + "' is not supported (only chunked)");
        chunked = true;
      }
    } else if (k == "connection") {
      close = close || has_token(v, "close");
      keep = keep || has_token(v, "keep-alive");
    } else if (k == "expect") {
      out.expect_continue = lower(trim(v)) == "100-continue";
    }
  }
  if (chunked && have_length)
    return fail(400, "both Content-Length and Transfer-Encoding are set");
  out.keep_alive = out.minor_version >= 1 ? !close : (keep && !close);

  if (chunked) {
    auto r = decode_chunked(buf, cur, limits.max_body_bytes, out.body);
    if (r.st == parse_result::state::need_more)
      r.head_complete = true;
    return r;
  }
  if (length > limits.max_body_bytes)
    return fail(413, "request body too large (more than " + std::to_string(limits.max_body_bytes) + " bytes)");
  if (buf.size() - cur < length) {
    parse_result r;
    r.head_complete = true;
    return r;
  }
  out.body = std::string{buf.substr(cur, length)};
  parse_result r;
  r.st = parse_result::state::complete;
  r.consumed = cur + length;
  return r;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string response_head(int status, int minor_version, std::string_view content_type,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          long long content_length, bool chunked, bool keep_alive) {
  std::string h;
  h.reserve(160);
  h += minor_version >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ";
  h += std::to_string(status);
  h += ' ';
  h += reason_phrase(status);
  h += "\r\n";
  if (!content_type.empty()) {
    h += "Content-Type: ";
    h += content_type;
    h += "\r\n";
  }
  for (const auto& [k, v] : headers) {
    h += k;
    h += ": ";
    h += v;
    h += "\r\n";
  }
  if (content_length >= 0) {
    h += "Content-Length: ";
    h += std::to_string(content_length);
    h += "\r\n";
  } else if (chunked) {
    h += "Transfer-Encoding: chunked\r\n";
  }
  if (!keep_alive)
    h += "Connection: close\r\n";
  else if (minor_version == 0)
    h += "Connection: keep-alive\r\n";
  h += "\r\n";
  return h;
}

std::string chunk(std::string_view data) {
  if (data.empty())
    return {};
  char size[24];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out;
  out.reserve(static_cast<size_t>(n) + data.size() + 2);
  out.append(size, static_cast<size_t>(n));
  out.append(data);
  out += "\r\n";
  return out;
}

}  // namespace llmux::net
