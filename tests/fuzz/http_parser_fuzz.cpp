// libFuzzer target for the edge's HTTP/1.1 request parser (net/http_parser):
// the first code that reads what any client sends. On any bytes it must
// return need_more, complete or an error with a 4xx/5xx status — never
// crash, read out of bounds or hit undefined behaviour — and what it says
// must be consistent:
//   * complete: 0 < consumed <= size, the body within the limit, and the
//     same request parsed from exactly its own bytes (no peeking past it);
//     every strict prefix of those bytes is incomplete or an error;
//   * error: a status the server answers with (400 408 413 431 501 505).
// Seeds: tests/fuzz/http_corpus/ (requests the edge takes and refuses).

#include "net/http_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmux::net;
  parse_limits lim;
  lim.max_head_bytes = 4096;
  lim.max_body_bytes = 8192;
  const std::string_view in{reinterpret_cast<const char*>(data), size};
  http_request req;
  const auto r = parse_request(in, lim, req);
  switch (r.st) {
    case parse_result::state::need_more:
      break;
    case parse_result::state::error:
      if (r.status != 400 && r.status != 408 && r.status != 413 && r.status != 431 && r.status != 501
          && r.status != 505)
        __builtin_trap();
      if (r.message.empty())
        __builtin_trap();
      break;
    case parse_result::state::complete: {
      if (r.consumed == 0 || r.consumed > size || req.body.size() > lim.max_body_bytes)
        __builtin_trap();
      if (req.path.empty() || req.method.empty())
        __builtin_trap();
      // Its own bytes alone give the same request.
      http_request again;
      const auto own = parse_request(in.substr(0, r.consumed), lim, again);
      if (own.st != parse_result::state::complete || own.consumed != r.consumed || again.body != req.body
          || again.path != req.path || again.method != req.method || again.keep_alive != req.keep_alive)
        __builtin_trap();
      // A strict prefix never completes (checked at a few cut points).
      for (size_t cut : {r.consumed - 1, r.consumed / 2, size_t{1}}) {
        if (cut >= r.consumed)
          continue;
        http_request part;
        if (parse_request(in.substr(0, cut), lim, part).st == parse_result::state::complete)
          __builtin_trap();
      }
      break;
    }
  }
  return 0;
}
