// Chat templates: formats and the default system prompt read from a GGUF
// Jinja template.

#include <catch2/catch.hpp>

#include "tests/skip.hpp"

#include <filesystem>

#include "engine/chat_template.hpp"
#include "engine/gguf.hpp"

using namespace llmux::engine;

TEST_CASE("ChatML renders turns and opens the assistant turn", "[chat]") {
  auto s = apply_chat_template(chat_format::chatml, {{"user", "hi"}});
  CHECK(s == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("Llama 3 and Llama 2 formats", "[chat]") {
  CHECK(apply_chat_template(chat_format::llama3, {{"user", "hi"}})
        == "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(apply_chat_template(chat_format::llama2, {{"system", "be brief"}, {"user", "hi"}})
        == "[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nhi [/INST]");
  CHECK(detect_chat_format("...<|start_header_id|>...") == chat_format::llama3);
  CHECK(detect_chat_format("...[INST]...") == chat_format::llama2);
  CHECK(detect_chat_format("") == chat_format::chatml);
}

TEST_CASE("a template's default system prompt is used when the conversation has none",
          "[chat]") {
  // SmolLM2-135M-Instruct's template (its newline is a real one).
  const std::string tmpl =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  auto style = detect_chat_style(tmpl);
  CHECK(style.format == chat_format::chatml);
  CHECK(style.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  CHECK(apply_chat_template(style, {{"user", "hi"}})
        == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
           "Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // A conversation with its own system turn keeps it, and only it.
  CHECK(apply_chat_template(style, {{"system", "S"}, {"user", "hi"}})
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
           "<|im_start|>assistant\n");
  // The same with a Jinja "\n" escape instead of a real newline.
  auto escaped = detect_chat_style("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe kind<|im_end|>' }}");
  CHECK(escaped.default_system == "Be kind");
  // No default when the system text is itself templated.
  CHECK(detect_chat_style("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n' + x + '<|im_end|>' }}")
          .default_system.empty());
}

TEST_CASE("SmolLM2's shipped template gives its default system prompt", "[chat]") {
  const std::string path = LLMUX_MODEL_CACHE "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path))
    llmux::test::skip_test(path + " is missing (scripts/setup fetches it)");
  auto f = gguf::gguf_file::open(path);
  auto style = detect_chat_style(f->get_string("tokenizer.chat_template").value_or(""));
  CHECK(style.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}
