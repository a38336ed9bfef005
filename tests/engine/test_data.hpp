#pragma once
// Helpers shared by the engine tests that read reference data files.

#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tokenizer.hpp"

namespace llmux::test {

/// A whole file as text.
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// "48656c6c6f" → "Hello" (reference files carry raw bytes as hex).
inline std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

/// What a client streaming the ids would see.
inline std::string stream(const engine::tokenizer& tok, const std::vector<engine::token_id>& ids) {
  engine::incremental_decoder d(tok);
  std::string out;
  for (auto id : ids)
    out += d.push(id);
  return out + d.flush();
}

}  // namespace llmux::test
