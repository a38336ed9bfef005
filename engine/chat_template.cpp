#include "engine/chat_template.hpp"

namespace llmux::engine {

std::string apply_chat_template(chat_format format, const std::vector<chat_turn>& turns) {
  std::string out;
  switch (format) {
    case chat_format::chatml:
      for (const auto& t : turns)
        out += "<|im_start|>" + t.role + "\n" + t.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
  }
  return out;
}

}  // namespace llmux::engine
