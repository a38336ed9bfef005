#pragma once
/// Chat templates: a list of turns → the prompt text a model was trained on.
/// The CPU-engine issue adds Llama 2/3 templates chosen from model metadata;
/// the sim backend uses ChatML.

#include <string>
#include <vector>

namespace llmux::engine {

struct chat_turn {
  std::string role;
  std::string content;
};

enum class chat_format { chatml };

/// Renders the turns and opens the assistant turn (generation prompt).
[[nodiscard]] std::string apply_chat_template(chat_format format,
                                              const std::vector<chat_turn>& turns);

}  // namespace llmux::engine
