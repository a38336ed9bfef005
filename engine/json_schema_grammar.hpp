#pragma once
/// Structured outputs as grammars: a JSON Schema (the subset OpenAI's strict
/// mode and vLLM's guided_json users write), "any JSON object"
/// (`response_format: json_object`) and a choice among strings
/// (`guided_choice`), each turned into GBNF text for `engine::grammar`.
///
/// Output is compact-or-lightly-spaced JSON: between tokens of the JSON at
/// most one space, or one newline and up to 8 indent characters (a bound, so
/// a small model cannot loop on whitespace). Numbers have at most 16 digits
/// in each part, for the same reason. Objects get the schema's properties in
/// its order: the required ones always, the optional ones when the model
/// wants them; never properties the schema does not name.
///
/// Supported: type (one or a list), properties, required,
/// additionalProperties (extra properties are never generated), items,
/// minItems, maxItems, enum, const, anyOf, oneOf (as anyOf), allOf of one,
/// $ref to #/$defs/… or #/definitions/… (recursion included), minLength and
/// maxLength of strings, pattern of strings (see regex_grammar; unanchored
/// sides may hold any text, as a validator's search allows; not together
/// with the length bounds), minimum 0 of numbers, and the annotations (title,
/// description, examples, default, $schema, $id, $comment). Anything else is
/// refused with a schema_error naming it and where it sits. Pure functions.

#include <stdexcept>
#include <string>
#include <vector>

namespace llmux::engine {

/// A schema feature the converter does not implement, or a malformed
/// schema: `feature` names the keyword, `path` where it is (JSON pointer).
class schema_error : public std::runtime_error {
public:
  schema_error(std::string feature, std::string path, const std::string& why)
    : std::runtime_error(why), feature_(std::move(feature)), path_(std::move(path)) {}
  [[nodiscard]] const std::string& feature() const { return feature_; }
  [[nodiscard]] const std::string& path() const { return path_; }

private:
  std::string feature_, path_;
};

/// The GBNF of JSON values satisfying `schema_json` (a JSON Schema as text).
/// Throws schema_error.
[[nodiscard]] std::string json_schema_grammar(const std::string& schema_json);
/// The same with the start rule named `root_name`, for a grammar that
/// embeds the schema in more (tool calls).
[[nodiscard]] std::string json_schema_grammar(const std::string& schema_json, const std::string& root_name);

/// Any JSON object (`response_format: {"type": "json_object"}`).
[[nodiscard]] std::string json_object_grammar();

/// Text matching the regular expression `pattern` in full (vLLM's
/// guided_regex). The ECMAScript subset JSON Schema patterns use: literals,
/// `.`, classes ([a-z], [^...], \d \w \s and their negations), groups
/// ((...) and (?:...)), alternation, the quantifiers * + ? {m} {m,} {m,n}
/// (lazy forms match the same text), ^ and $ at the ends. Backreferences,
/// lookaround and other anchors are refused (schema_error, feature "regex").
[[nodiscard]] std::string regex_grammar(const std::string& pattern);

/// Exactly one of `choices`, as plain text (vLLM's guided_choice).
[[nodiscard]] std::string choice_grammar(const std::vector<std::string>& choices);

/// `text` as a GBNF literal ("..." with escapes).
[[nodiscard]] std::string gbnf_literal(const std::string& text);

}  // namespace llmux::engine
