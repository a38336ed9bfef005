#include <catch2/catch.hpp>

#include "net/http_parser.hpp"

using namespace llmux::net;
using st = parse_result::state;

namespace {

parse_result parse(const std::string& text, http_request& req, parse_limits lim = {}) {
  return parse_request(text, lim, req);
}

}  // namespace

TEST_CASE("a complete request with a body is parsed, and the next one is left alone") {
  const std::string one =
    "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    "Content-Length: 7\r\nAuthorization:  Bearer k \r\n\r\n{\"a\":1}";
  http_request req;
  auto r = parse(one + "GET /health HTTP/1.1\r\n\r\n", req);
  REQUIRE(r.st == st::complete);
  CHECK(r.consumed == one.size());
  CHECK(req.method == "POST");
  CHECK(req.path == "/v1/completions");
  CHECK(req.query == "x=1");
  CHECK(req.body == "{\"a\":1}");
  CHECK(req.header("authorization") == "Bearer k");
  CHECK(req.header("content-type") == "application/json");
  CHECK(req.keep_alive);
}

TEST_CASE("a request arriving in pieces needs more until its last byte") {
  const std::string full = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
  http_request req;
  for (size_t n = 0; n < full.size(); ++n) {
    auto r = parse(full.substr(0, n), req);
    INFO(n);
    REQUIRE(r.st == st::need_more);
    // The head is complete exactly once its blank line is in.
    CHECK(r.head_complete == (n >= full.size() - 5));
  }
  REQUIRE(parse(full, req).st == st::complete);
  CHECK(req.body == "hello");
}

TEST_CASE("chunked request bodies are decoded, with extensions and trailers") {
  const std::string text =
    "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
  http_request req;
  auto r = parse(text, req);
  REQUIRE(r.st == st::complete);
  CHECK(req.body == "Wikipedia");
  CHECK(text.substr(r.consumed) == "NEXT");
  // Every prefix is incomplete, not an error.
  for (size_t n = 0; n + 4 < text.size(); ++n) {
    INFO(n);
    CHECK(parse(text.substr(0, n), req).st == st::need_more);
  }
}

TEST_CASE("keep-alive follows the version and the Connection header") {
  http_request req;
  REQUIRE(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", req).st == st::complete);
  CHECK_FALSE(req.keep_alive);
  REQUIRE(parse("GET / HTTP/1.0\r\n\r\n", req).st == st::complete);
  CHECK_FALSE(req.keep_alive);
  CHECK(req.minor_version == 0);
  REQUIRE(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", req).st == st::complete);
  CHECK(req.keep_alive);
  REQUIRE(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n", req).st == st::complete);
  CHECK_FALSE(req.keep_alive);
}

TEST_CASE("Expect: 100-continue is reported once the head is in") {
  http_request req;
  auto r = parse("POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", req);
  CHECK(r.st == st::need_more);
  CHECK(r.head_complete);
  CHECK(req.expect_continue);
}

TEST_CASE("bare LF line ends and leading empty lines are tolerated; the path is percent-decoded") {
  http_request req;
  auto r = parse("\r\nGET /v1/models/a%2Fb%20c HTTP/1.1\nHost: x\n\n", req);
  REQUIRE(r.st == st::complete);
  CHECK(req.path == "/v1/models/a/b c");
  REQUIRE(parse("GET http://host:1/health?q HTTP/1.1\r\n\r\n", req).st == st::complete);
  CHECK(req.path == "/health");
  CHECK(req.query == "q");
}

TEST_CASE("malformed requests are refused with the status that says why") {
  struct bad {
    std::string text;
    int status;
  };
  const std::vector<bad> cases = {
    {"GET /\r\n\r\n", 400},
    {"GET  / HTTP/1.1\r\n\r\n", 400},
    {"G(T / HTTP/1.1\r\n\r\n", 400},
    {"GET / HTTP/2.0\r\n\r\n", 505},
    {"GET / HTTX/1.1\r\n\r\n", 400},
    {"GET /%zz HTTP/1.1\r\n\r\n", 400},
    {"GET /%2 HTTP/1.1\r\n\r\n", 400},
    {"POST ?v1/completions HTTP/1.1\r\n\r\n", 400},  // found by http_parser_fuzz
    {"GET example.com:443 HTTP/1.1\r\n\r\n", 400},
    {"GET http://host HTTP/1.1\r\n\r\n", 0},  // absolute form without a path: "/" (checked below)
    {"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400},
    {"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    http_request req;
    auto r = parse(c.text, req);
    if (c.status == 0) {
      CHECK(r.st == st::complete);
      CHECK(req.path == "/");
      continue;
    }
    REQUIRE(r.st == st::error);
    CHECK(r.status == c.status);
    CHECK_FALSE(r.message.empty());
  }
}

TEST_CASE("limits on the head and the body are 431 and 413") {
  parse_limits lim;
  lim.max_head_bytes = 100;
  lim.max_body_bytes = 10;
  http_request req;
  auto r = parse("GET / HTTP/1.1\r\nX: " + std::string(200, 'a'), req, lim);
  CHECK(r.st == st::error);
  CHECK(r.status == 431);
  r = parse("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", req, lim);
  CHECK(r.status == 413);
  r = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n", req, lim);
  CHECK(r.status == 413);
  // Exactly at the limits is fine.
  r = parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", req, lim);
  CHECK(r.st == st::complete);
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i)
    many += "A" + std::to_string(i) + ": 1\r\n";
  CHECK(parse(many + "\r\n", req).status == 431);
}

TEST_CASE("response heads and chunks are framed as HTTP/1.1 says") {
  CHECK(response_head(200, 1, "text/plain", {{"Retry-After", "1"}}, 2, false, true)
        == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n");
  CHECK(response_head(429, 1, "", {}, -1, true, false)
        == "HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
  CHECK(response_head(200, 0, "", {}, 0, false, true)
        == "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
  CHECK(chunk("hello, world!!!!!") == "11\r\nhello, world!!!!!\r\n");
  CHECK(chunk("").empty());
  CHECK(last_chunk() == "0\r\n\r\n");
}
