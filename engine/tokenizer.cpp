#include "engine/tokenizer.hpp"

namespace llmux::engine {

std::string tokenizer::decode(const std::vector<token_id>& ids) const {
  std::string out;
  for (auto id : ids)
    out += token_bytes(id);
  return out;
}

size_t complete_utf8_prefix(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the last lead byte and
  // check whether its character is complete.
  size_t n = s.size();
  size_t i = n;
  int cont = 0;
  while (i > 0 && cont < 3 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++cont;
  }
  if (i == 0)
    return n;  // only stray continuation bytes: nothing to wait for
  auto lead = static_cast<unsigned char>(s[i - 1]);
  size_t need;
  if (lead < 0x80)
    return n;  // ASCII lead: trailing continuation bytes are stray, emit them
  else if (lead >= 0xC2 && lead <= 0xDF)
    need = 1;
  else if ((lead & 0xF0) == 0xE0)
    need = 2;
  else if (lead >= 0xF0 && lead <= 0xF4)
    need = 3;
  else
    return n;  // C0, C1, F5..FF never occur in UTF-8: never hold the stream back for them
  if (static_cast<size_t>(cont) >= need)
    return n;
  return i - 1;  // hold back the incomplete character
}

std::string incremental_decoder::push(token_id id) {
  pending_ += specials_ ? tok_->token_text(id) : tok_->token_bytes(id);
  auto k = complete_utf8_prefix(pending_);
  std::string out = pending_.substr(0, k);
  pending_.erase(0, k);
  return out;
}

std::string incremental_decoder::flush() {
  std::string out;
  if (!pending_.empty())
    out = "\xEF\xBF\xBD";  // U+FFFD for a character the model never finished
  pending_.clear();
  return out;
}

}  // namespace llmux::engine
