#include "engine/chat_template.hpp"

namespace llmux::engine {

chat_format detect_chat_format(const std::string& t) {
  if (t.find("<|start_header_id|>") != std::string::npos)
    return chat_format::llama3;
  if (t.find("[INST]") != std::string::npos)
    return chat_format::llama2;
  return chat_format::chatml;
}

std::string apply_chat_template(chat_format format, const std::vector<chat_turn>& turns) {
  std::string out;
  switch (format) {
    case chat_format::chatml:
      for (const auto& t : turns)
        out += "<|im_start|>" + t.role + "\n" + t.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case chat_format::llama3:
      for (const auto& t : turns)
        out += "<|start_header_id|>" + t.role + "<|end_header_id|>\n\n" + t.content + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case chat_format::llama2: {
      // [INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ...
      std::string system;
      bool first_user = true;
      for (const auto& t : turns) {
        if (t.role == "system") {
          system = t.content;
        } else if (t.role == "user") {
          out += out.empty() ? "[INST] " : "<s>[INST] ";
          if (first_user && !system.empty())
            out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
          first_user = false;
          out += t.content + " [/INST]";
        } else if (t.role == "assistant") {
          out += " " + t.content + " </s>";
        }
      }
      break;
    }
  }
  return out;
}

}  // namespace llmux::engine
