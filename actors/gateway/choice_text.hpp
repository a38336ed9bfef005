#pragma once
/// One choice's text as its tokens arrive — pure core of the edge (no CAF,
/// no HTTP): UTF-8-safe incremental detokenization, stop strings matched on
/// the text across token boundaries and never emitted, and the log-prob
/// entries of the tokens consumed.
///
/// Text that could be the start of a stop string is held back until the
/// next token shows it is not (or the choice ends), so nothing past a stop
/// string ever reaches the client, streaming or not.

#include <cstdint>
#include <string>
#include <vector>

#include "actors/gateway/request_registry.hpp"
#include "engine/tokenizer.hpp"
#include "net/openai_schema.hpp"

namespace llmux::gateway {

/// vLLM's output options of a choice.
struct text_options {
  bool include_stop_str = false;  ///< include_stop_str_in_output: a stop string ends the text
  bool specials = false;          ///< !skip_special_tokens: control tokens show as their text
};

class choice_text {
public:
  /// `stop`: the request's stop strings (empty ones are ignored).
  /// `logprobs`: build log-prob entries for each consumed token.
  choice_text(const engine::tokenizer& tok, std::vector<std::string> stop, bool logprobs,
              text_options opts = {});

  struct delta {
    std::string text;                           ///< safe to send now
    std::vector<net::logprob_entry> logprobs;  ///< of the tokens consumed by this push
  };

  /// Consumes an event's tokens, up to the one that completes a stop string
  /// (the rest are dropped; the stop string too, unless `include_stop_str`). Returns the text that became safe to send.
  delta push(const sink_event& ev);
  /// The choice ended without a stop string (length, EOS, stop token): the
  /// held-back text, with an incomplete UTF-8 tail as U+FFFD.
  std::string finish();

  /// A stop string was seen: the caller cancels the request, and the choice
  /// ends with finish_reason "stop".
  [[nodiscard]] bool stopped() const { return stopped_; }
  /// Tokens consumed (for usage: the ones after a stop string don't count).
  [[nodiscard]] int64_t tokens() const { return tokens_; }

private:
  std::string release(bool all);

  const engine::tokenizer* tok_;
  engine::incremental_decoder decoder_;
  std::vector<std::string> stop_;
  bool logprobs_;
  text_options opts_;
  std::string held_;        ///< decoded, not yet sent (may start a stop string)
  int64_t text_offset_ = 0;  ///< completions' text_offset of the next token
  int64_t tokens_ = 0;
  bool stopped_ = false;
};

}  // namespace llmux::gateway
