#include "actors/gateway/choice_text.hpp"

#include <algorithm>

namespace llmux::gateway {

choice_text::choice_text(const engine::tokenizer& tok, std::vector<std::string> stop, bool logprobs,
                         text_options opts)
  : tok_(&tok), decoder_(tok, opts.specials), logprobs_(logprobs), opts_(opts) {
  for (auto& s : stop)
    if (!s.empty())
      stop_.push_back(std::move(s));
}

choice_text::delta choice_text::push(const sink_event& ev) {
  delta out;
  for (size_t i = 0; i < ev.tokens.size() && !stopped_; ++i) {
    ++tokens_;
    if (logprobs_ && i < ev.logprobs.size()) {
      const auto& lp = ev.logprobs[i];
      net::logprob_entry e;
      e.token = tok_->token_bytes(ev.tokens[i]);
      e.logprob = lp.logprob;
      for (size_t k = 0; k < lp.top_ids.size() && k < lp.top_logprobs.size(); ++k)
        e.top.emplace_back(tok_->token_bytes(lp.top_ids[k]), lp.top_logprobs[k]);
      e.text_offset = text_offset_;
      text_offset_ += static_cast<int64_t>(e.token.size());
      out.logprobs.push_back(std::move(e));
    }
    held_ += decoder_.push(ev.tokens[i]);
    if (stop_.empty())
      continue;
    // The earliest complete stop string ends the choice; its text and
    // everything after it are dropped.
    size_t cut = std::string::npos;
    for (const auto& s : stop_) {
      auto at = held_.find(s);
      // With include_stop_str, the text ends after the earliest match instead.
      if (at != std::string::npos && opts_.include_stop_str)
        at += s.size();
      cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      held_.resize(cut);
      stopped_ = true;
    }
  }
  out.text = release(stopped_);
  return out;
}

std::string choice_text::finish() {
  if (!stopped_)
    held_ += decoder_.flush();
  return release(true);
}

std::string choice_text::release(bool all) {
  size_t keep = 0;
  if (!all) {
    // Hold back the longest tail of held_ that is a proper prefix of a stop
    // string: the next token may complete it.
    for (const auto& s : stop_) {
      size_t max_len = std::min(held_.size(), s.size() - 1);
      for (size_t len = max_len; len > keep; --len)
        if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
          keep = len;
          break;
        }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

}  // namespace llmux::gateway
