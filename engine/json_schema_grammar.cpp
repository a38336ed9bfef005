#include "engine/json_schema_grammar.hpp"

#include "engine/unicode_categories.hpp"

#include <cctype>
#include <cstdio>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

namespace llmux::engine {
namespace {

using ojson = nlohmann::ordered_json;

/// The rules every JSON grammar shares.
const char* const json_primitives = R"(space ::= | " " | "\n" [ \t]{0,8}
json-char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
json-string ::= "\"" json-char* "\"" space
json-int-part ::= [0] | [1-9] [0-9]{0,15}
json-number ::= "-"? json-int-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space
json-nonneg-number ::= json-int-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? space
json-integer ::= "-"? json-int-part space
json-nonneg-integer ::= json-int-part space
json-boolean ::= ("true" | "false") space
json-null ::= "null" space
json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null
json-object ::= "{" space (json-string ":" space json-value ("," space json-string ":" space json-value)*)? "}" space
json-array ::= "[" space (json-value ("," space json-value)*)? "]" space
)";

using unicode::append_utf8;

/// A code point as a GBNF class member (\uXXXX: never a character the
/// class syntax reads specially).
std::string class_char(uint32_t cp) {
  char buf[16];
  if (cp < 0x10000)
    std::snprintf(buf, sizeof(buf), "\\u%04X", cp);
  else
    std::snprintf(buf, sizeof(buf), "\\U%08X", cp);
  return buf;
}

/// A regular expression as one GBNF expression. In `json` mode the text is
/// the inside of a JSON string: what JSON escapes comes out escaped, and
/// `.` and negated classes never produce it raw (so they cannot produce a
/// quote at all: sound, if not complete).
class regex_translator {
public:
  regex_translator(const std::string& re, bool json, std::string where)
    : re_(re), json_(json), where_(std::move(where)) {}

  std::string run() {
    end_ = re_.size();
    if (!re_.empty() && re_[0] == '^') {
      anchored_start = true;
      ++pos_;
    }
    // A final '$' is an anchor unless escaped (an odd run of backslashes before it).
    size_t slashes = 0;
    while (re_.size() >= slashes + 2 && re_[re_.size() - 2 - slashes] == '\\')
      ++slashes;
    if (re_.size() > pos_ && re_.back() == '$' && slashes % 2 == 0) {
      anchored_end = true;
      end_ = re_.size() - 1;
    }
    std::string out = alternatives();
    if (pos_ != end_)
      fail("unexpected ')'");
    return out;
  }
  bool anchored_start = false;
  bool anchored_end = false;

private:
  using ranges = std::vector<std::pair<uint32_t, uint32_t>>;

  [[noreturn]] void fail(const std::string& why) const {
    throw schema_error("regex", where_, "regular expression /" + re_ + "/: " + why + " (at offset " +
                                            std::to_string(pos_) + ")");
  }
  [[nodiscard]] bool more() const { return pos_ < end_; }
  [[nodiscard]] char peek() const { return pos_ < end_ ? re_[pos_] : '\0'; }

  uint32_t read_cp() {
    const auto b = static_cast<uint8_t>(re_[pos_]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || b == 0xC0 || b == 0xC1 || b > 0xF4 || pos_ + static_cast<size_t>(n) > end_)
      fail("invalid UTF-8");
    uint32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k < n; ++k) {
      const auto c = static_cast<uint8_t>(re_[pos_ + static_cast<size_t>(k)]);
      if ((c & 0xC0) != 0x80)
        fail("invalid UTF-8");
      cp = (cp << 6) | (c & 0x3F);
    }
    // The shortest form only, and nothing past U+10FFFF (the grammar reader's rules).
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      fail("invalid UTF-8");
    pos_ += static_cast<size_t>(n);
    return cp;
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      if (!more() || std::isxdigit(static_cast<unsigned char>(peek())) == 0)
        fail("bad hex escape");
      const char h = re_[pos_++];
      v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) != 0 ? h - '0'
                                                                                          : (h | 0x20) - 'a' + 10);
    }
    return v;
  }

  /// After a backslash: a class shorthand into `set` (true), or one code point in `cp`.
  bool escape(uint32_t& cp, ranges& set, bool& negated_shorthand) {
    if (!more())
      fail("a pattern cannot end with a backslash");
    const char e = re_[pos_++];
    negated_shorthand = e == 'D' || e == 'W' || e == 'S';
    switch (e) {
      case 'd': case 'D': set = {{'0', '9'}}; return true;
      case 'w': case 'W': set = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; return true;
      case 's': case 'S': set = {{'\t', '\r'}, {' ', ' '}}; return true;
      case 'n': cp = '\n'; return false;
      case 't': cp = '\t'; return false;
      case 'r': cp = '\r'; return false;
      case 'f': cp = '\f'; return false;
      case 'v': cp = '\v'; return false;
      case '0': cp = 0; return false;
      case 'x': cp = hex(2); return false;
      case 'u': cp = hex(4); return false;
      default: break;
    }
    if (std::isalnum(static_cast<unsigned char>(e)) != 0)
      fail(std::string("\\") + e + " (backreferences, word boundaries and other escapes) is not supported");
    cp = static_cast<uint8_t>(e);
    return false;
  }

  std::string alternatives() {
    std::string out = sequence();
    bool alt = false;
    while (peek() == '|') {
      ++pos_;
      out += " | " + sequence();
      alt = true;
    }
    return alt ? "(" + out + ")" : out;
  }

  std::string sequence() {
    std::string out;
    while (more() && peek() != '|' && peek() != ')') {
      std::string a = atom();
      a = quantified(a);
      out += (out.empty() ? "" : " ") + a;
    }
    return out.empty() ? "\"\"" : out;
  }

  std::string quantified(const std::string& a) {
    if (!more())
      return a;
    std::string q;
    const char c = peek();
    if (c == '*' || c == '+' || c == '?') {
      q = c;
      ++pos_;
    } else if (c == '{') {
      const size_t save = pos_;
      ++pos_;
      std::string body;
      while (more() && (std::isdigit(static_cast<unsigned char>(peek())) != 0 || peek() == ','))
        body += re_[pos_++];
      if (peek() != '}' || body.empty() || body[0] == ',') {
        pos_ = save;  // a literal '{', as ECMAScript reads one that starts no quantifier
        return a;
      }
      const auto comma = body.find(',');
      if (comma != std::string::npos && body.find(',', comma + 1) != std::string::npos) {
        pos_ = save;  // {1,2,3} is no quantifier: a literal '{'
        return a;
      }
      ++pos_;
      auto number = [&](const std::string& digits) {
        long v = 0;
        for (char d : digits) {
          v = v * 10 + (d - '0');
          if (v > 1000)
            fail("a repetition bound above 1000");
        }
        return v;
      };
      const long lo = number(body.substr(0, comma));
      const long hi = comma == std::string::npos ? lo : comma + 1 == body.size() ? -1 : number(body.substr(comma + 1));
      if (hi >= 0 && hi < lo)
        fail("{m,n} with n < m");
      q = "{" + body + "}";
    } else {
      return a;
    }
    if (peek() == '?')
      ++pos_;  // lazy: the same text matches
    else if (peek() == '+')
      fail("possessive quantifiers are not supported");
    return "(" + a + ")" + q;
  }

  std::string atom() {
    const char c = peek();
    if (c == '(') {
      ++pos_;
      if (peek() == '?') {
        ++pos_;
        if (peek() == ':') {
          ++pos_;
        } else if (peek() == '<' && pos_ + 1 < end_ && re_[pos_ + 1] != '=' && re_[pos_ + 1] != '!') {
          while (more() && peek() != '>')  // a named group: the name does not matter here
            ++pos_;
          ++pos_;
        } else {
          fail("lookaround and other (?...) groups are not supported");
        }
      }
      std::string inner = alternatives();
      if (peek() != ')')
        fail("missing ')'");
      ++pos_;
      return "(" + inner + ")";
    }
    if (c == '[')
      return char_class();
    if (c == '.') {
      ++pos_;
      return json_ ? "[^\"\\\\\\x00-\\x1F]" : "[^\\n]";
    }
    if (c == '^' || c == '$')
      fail("anchors are supported only at the ends of the pattern");
    if (c == '*' || c == '+' || c == '?')
      fail("a quantifier with nothing to repeat");
    uint32_t cp = 0;
    if (c == '\\') {
      ++pos_;
      ranges set;
      bool negated = false;
      if (escape(cp, set, negated))
        return emit_class(set, negated);
    } else {
      cp = read_cp();
    }
    return literal(cp);
  }

  std::string char_class() {
    ++pos_;  // '['
    bool negated = false;
    if (peek() == '^') {
      negated = true;
      ++pos_;
    }
    ranges set;
    bool first = true;
    while (more() && (peek() != ']' || first)) {
      first = false;
      uint32_t lo = 0;
      if (peek() == '\\') {
        ++pos_;
        ranges shorthand;
        bool neg = false;
        if (escape(lo, shorthand, neg)) {
          if (neg)
            fail("\\D, \\W and \\S inside a class are not supported");
          set.insert(set.end(), shorthand.begin(), shorthand.end());
          continue;
        }
      } else {
        lo = read_cp();
      }
      uint32_t hi = lo;
      if (peek() == '-' && pos_ + 1 < end_ && re_[pos_ + 1] != ']') {
        ++pos_;
        if (peek() == '\\') {
          ++pos_;
          ranges shorthand;
          bool neg = false;
          if (escape(hi, shorthand, neg))
            fail("a class shorthand cannot end a range");
        } else {
          hi = read_cp();
        }
        if (hi < lo)
          fail("a range out of order");
      }
      set.emplace_back(lo, hi);
    }
    if (peek() != ']')
      fail("missing ']'");
    ++pos_;
    if (set.empty())
      fail("an empty class");
    return emit_class(set, negated);
  }

  std::string emit_class(ranges set, bool negated) {
    auto members = [](const ranges& rs) {
      std::string m;
      for (const auto& [lo, hi] : rs)
        m += lo == hi ? class_char(lo) : class_char(lo) + "-" + class_char(hi);
      return m;
    };
    if (!json_)
      return std::string("[") + (negated ? "^" : "") + members(set) + "]";
    if (negated) {
      set.emplace_back(0, 0x1F);
      set.emplace_back('"', '"');
      set.emplace_back('\\', '\\');
      return "[^" + members(set) + "]";
    }
    // JSON: members JSON escapes come out escaped, as alternatives.
    ranges plain;
    std::vector<std::string> escaped;
    for (auto [lo, hi] : set) {
      for (uint32_t c = lo; c <= std::min<uint32_t>(hi, 0x1F); ++c)
        escaped.push_back(literal(c));
      if (hi < 0x20)
        continue;
      lo = std::max<uint32_t>(lo, 0x20);
      for (uint32_t special : {static_cast<uint32_t>('"'), static_cast<uint32_t>('\\')}) {
        if (lo <= special && special <= hi) {
          escaped.push_back(literal(special));
          if (lo < special)
            plain.emplace_back(lo, special - 1);
          lo = special + 1;
        }
      }
      if (lo <= hi)
        plain.emplace_back(lo, hi);
    }
    std::string out;
    if (!plain.empty())
      out = "[" + members(plain) + "]";
    for (const auto& e : escaped)
      out += (out.empty() ? "" : " | ") + e;
    return "(" + out + ")";
  }

  /// One character as text (escaped as JSON writes it, in json mode).
  std::string literal(uint32_t cp) const {
    std::string text;
    if (json_ && (cp < 0x20 || cp == '"' || cp == '\\')) {
      switch (cp) {
        case '"': text = "\\\""; break;
        case '\\': text = "\\\\"; break;
        case '\n': text = "\\n"; break;
        case '\t': text = "\\t"; break;
        case '\r': text = "\\r"; break;
        case '\b': text = "\\b"; break;
        case '\f': text = "\\f"; break;
        default: {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
          text = buf;
        }
      }
    } else {
      append_utf8(text, cp);
    }
    return gbnf_literal(text);
  }

  std::string re_;
  bool json_;
  std::string where_;
  size_t pos_ = 0;
  size_t end_ = std::string::npos;
};

const std::set<std::string> annotations = {"title", "description", "examples", "default", "$schema",
                                           "$id", "$comment", "format_hint", "strict", "readOnly",
                                           "writeOnly", "deprecated"};

class converter {
public:
  converter(const ojson& root, std::string root_name) : root_(root), root_name_(std::move(root_name)) {}

  std::string run() {
    const std::string top = visit(root_, "#");
    std::string out = root_name_ + " ::= " + top + "\n";
    for (const auto& [name, body] : rules_)
      out += name + " ::= " + body + "\n";
    return out + json_primitives;
  }

private:
  [[noreturn]] static void refuse(const std::string& feature, const std::string& path, const std::string& why) {
    throw schema_error(feature, path, "JSON schema at " + path + ": " + why);
  }

  /// A rule holding `body`, reusing an identical one.
  std::string rule(const std::string& hint, const std::string& body) {
    auto it = by_body_.find(body);
    if (it != by_body_.end())
      return it->second;
    std::string name;
    for (char c : hint)
      name += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '-';
    if (name.empty() || name.size() > 40)
      name = "s";
    name = "s-" + name;
    std::string unique = name;
    for (int k = 2; rules_.count(unique) != 0 || reserved_.count(unique) != 0; ++k)
      unique = name + "-" + std::to_string(k);
    rules_[unique] = body;
    by_body_[body] = unique;
    return unique;
  }

  std::string visit(const ojson& s, const std::string& path) {
    // Schemas nest by recursion here; users write them.
    struct depth_guard {
      int& d;
      explicit depth_guard(int& depth) : d(++depth) {}
      ~depth_guard() { --d; }
    } guard{depth_};
    if (depth_ > 64)
      refuse("depth", path, "the schema nests deeper than 64 levels");
    if (s.is_boolean()) {
      if (!s.get<bool>())
        refuse("false", path, "the schema 'false' admits no value");
      return "json-value";
    }
    if (!s.is_object())
      refuse("schema", path, "a schema must be an object or a boolean");
    for (auto it = s.begin(); it != s.end(); ++it) {
      static const std::set<std::string> known = {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "minLength",
        "maxLength", "minimum", "exclusiveMinimum", "pattern"};
      if (known.count(it.key()) == 0 && annotations.count(it.key()) == 0)
        refuse(it.key().empty() ? "\"\"" : it.key(), path, "'" + it.key() + "' is not supported");
    }
    if (s.contains("$ref"))
      return ref(s["$ref"], path);
    if (s.contains("const"))
      return literal_value(s["const"]);
    if (s.contains("enum")) {
      const auto& e = s["enum"];
      if (!e.is_array() || e.empty())
        refuse("enum", path, "'enum' must be a non-empty array");
      std::string body;
      for (const auto& v : e)
        body += (body.empty() ? "" : " | ") + literal_value(v);
      return rule(path_hint(path) + "-enum", body);
    }
    for (const char* key : {"anyOf", "oneOf"})
      if (s.contains(key)) {
        const auto& alts = s[key];
        if (!alts.is_array() || alts.empty())
          refuse(key, path, std::string("'") + key + "' must be a non-empty array");
        std::string body;
        for (size_t i = 0; i < alts.size(); ++i)
          body += (body.empty() ? "" : " | ") + visit(alts[i], path + "/" + key + "/" + std::to_string(i));
        return rule(path_hint(path) + "-alt", body);
      }
    if (s.contains("allOf")) {
      const auto& all = s["allOf"];
      if (!all.is_array() || all.size() != 1)
        refuse("allOf", path, "'allOf' is supported with one schema only");
      return visit(all[0], path + "/allOf/0");
    }
    if (!s.contains("type")) {
      if (s.contains("properties"))
        return object(s, path);
      if (s.contains("items"))
        return array(s, path);
      return "json-value";
    }
    const auto& t = s["type"];
    if (t.is_array()) {
      std::string body;
      for (const auto& one : t) {
        ojson single = s;
        single["type"] = one;
        body += (body.empty() ? "" : " | ") + typed(single, one, path);
      }
      if (body.empty())
        refuse("type", path, "'type' must not be empty");
      return rule(path_hint(path) + "-types", body);
    }
    return typed(s, t, path);
  }

  std::string typed(const ojson& s, const ojson& t, const std::string& path) {
    if (!t.is_string())
      refuse("type", path, "'type' must be a string or an array of strings");
    const std::string type = t.get<std::string>();
    const bool nonneg = minimum_zero(s, path);
    if (type == "object")
      return object(s, path);
    if (type == "array")
      return array(s, path);
    if (type == "string")
      return string(s, path);
    if (type == "number")
      return nonneg ? "json-nonneg-number" : "json-number";
    if (type == "integer")
      return nonneg ? "json-nonneg-integer" : "json-integer";
    if (type == "boolean")
      return "json-boolean";
    if (type == "null")
      return "json-null";
    refuse("type", path, "unknown type '" + type + "'");
  }

  /// `minimum: 0` (or `exclusiveMinimum: -1` for integers is not checked):
  /// only the non-negative bound is expressible here.
  static bool minimum_zero(const ojson& s, const std::string& path) {
    if (s.contains("exclusiveMinimum"))
      refuse("exclusiveMinimum", path, "'exclusiveMinimum' is not supported");
    if (!s.contains("minimum"))
      return false;
    const auto& m = s["minimum"];
    if (!m.is_number() || m.get<double>() != 0.0)
      refuse("minimum", path, "'minimum' is supported only as 0");
    return true;
  }

  std::string string(const ojson& s, const std::string& path) {
    const bool bounded = s.contains("minLength") || s.contains("maxLength");
    if (s.contains("pattern")) {
      if (bounded)
        refuse("pattern", path, "'pattern' together with 'minLength' or 'maxLength' is not supported");
      if (!s["pattern"].is_string())
        refuse("pattern", path, "'pattern' must be a string");
      regex_translator re{s["pattern"].get<std::string>(), true, path};
      const std::string body = re.run();
      // A validator searches for the pattern: an unanchored side may hold any text.
      return rule(path_hint(path) + "-pattern", "\"\\\"\" " + std::string(re.anchored_start ? "" : "json-char* ") +
                                                  "(" + body + ")" + (re.anchored_end ? "" : " json-char*") +
                                                  " \"\\\"\" space");
    }
    if (!bounded)
      return "json-string";
    const auto [lo, hi] = bounds(s, path, "minLength", "maxLength", 10000);
    const std::string rep = "{" + std::to_string(lo) + "," + (hi >= 0 ? std::to_string(hi) : "") + "}";
    return rule(path_hint(path) + "-string", "\"\\\"\" json-char" + rep + " \"\\\"\" space");
  }

  /// A count's bounds (minLength/maxLength, minItems/maxItems): integers
  /// from 0 to `most`; hi -1 when absent.
  static std::pair<int64_t, int64_t> bounds(const ojson& s, const std::string& path, const char* lo_key,
                                            const char* hi_key, int64_t most) {
    auto bound = [&](const char* key, int64_t dflt) {
      if (!s.contains(key))
        return dflt;
      const auto& v = s[key];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > most)
        refuse(key, path, std::string("'") + key + "' must be an integer from 0 to " + std::to_string(most));
      return v.get<int64_t>();
    };
    const int64_t lo = bound(lo_key, 0), hi = bound(hi_key, -1);
    if (hi >= 0 && hi < lo)
      refuse(hi_key, path, std::string("'") + hi_key + "' is below '" + lo_key + "'");
    return {lo, hi};
  }

  std::string array(const ojson& s, const std::string& path) {
    const std::string item = s.contains("items") ? visit(s["items"], path + "/items") : "json-value";
    const auto [lo, hi] = bounds(s, path, "minItems", "maxItems", 1000);
    std::string body;
    if (hi == 0) {
      body = "\"[\" space \"]\" space";
    } else {
      const int64_t more_lo = lo > 0 ? lo - 1 : 0;
      const std::string more_hi = hi >= 0 ? std::to_string(hi - 1) : "";
      std::string list = item + " (\",\" space " + item + "){" + std::to_string(more_lo) + "," + more_hi + "}";
      body = "\"[\" space " + (lo == 0 ? "(" + list + ")?" : list) + " \"]\" space";
    }
    return rule(path_hint(path) + "-array", body);
  }

  std::string object(const ojson& s, const std::string& path) {
    if (!s.contains("properties")) {
      if (s.contains("required") && !s["required"].empty())
        refuse("required", path, "'required' names properties but 'properties' is missing");
      if (!s.contains("additionalProperties") || s["additionalProperties"] == true)
        return "json-object";
      const auto& extra = s["additionalProperties"];
      if (extra == false)
        return rule(path_hint(path) + "-empty", "\"{\" space \"}\" space");
      // A map: any keys, each value of the given schema.
      const std::string value = visit(extra, path + "/additionalProperties");
      const std::string kv = "json-string \":\" space " + value;
      return rule(path_hint(path) + "-map", "\"{\" space (" + kv + " (\",\" space " + kv + ")*)? \"}\" space");
    }
    const auto& props = s["properties"];
    if (!props.is_object())
      refuse("properties", path, "'properties' must be an object");
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array())
        refuse("required", path, "'required' must be an array of names");
      for (const auto& r : s["required"]) {
        if (!r.is_string() || !props.contains(r.get<std::string>()))
          refuse("required", path, "'required' names a property 'properties' does not have");
        required.insert(r.get<std::string>());
      }
    }
    std::vector<std::string> req, opt;
    for (auto it = props.begin(); it != props.end(); ++it) {
      const std::string kv = gbnf_literal(ojson(it.key()).dump()) + " space \":\" space " +
                             visit(it.value(), path + "/properties/" + it.key());
      (required.count(it.key()) ? req : opt).push_back(kv);
    }
    std::string body = "\"{\" space ";
    for (size_t i = 0; i < req.size(); ++i)
      body += (i ? "\",\" space " : "") + req[i] + " ";
    if (!req.empty()) {
      for (const auto& kv : opt)
        body += "(\",\" space " + kv + ")? ";
    } else if (!opt.empty()) {
      // No required property: the first one present, then the later ones, each optional.
      std::string alts;
      for (size_t i = 0; i < opt.size(); ++i) {
        std::string alt = opt[i];
        for (size_t j = i + 1; j < opt.size(); ++j)
          alt += " (\",\" space " + opt[j] + ")?";
        alts += (alts.empty() ? "" : " | ") + alt;
      }
      body += "(" + alts + ")? ";
    }
    body += "\"}\" space";
    return rule(path_hint(path) + "-object", body);
  }

  std::string ref(const ojson& r, const std::string& path) {
    if (!r.is_string())
      refuse("$ref", path, "'$ref' must be a string");
    const std::string target = r.get<std::string>();
    std::string section, name;
    for (const char* prefix : {"#/$defs/", "#/definitions/"})
      if (target.rfind(prefix, 0) == 0) {
        section = std::string(prefix).substr(2, std::string(prefix).size() - 3);
        name = target.substr(std::string(prefix).size());
      }
    if (section.empty() || !root_.contains(section) || !root_[section].contains(name))
      refuse("$ref", path, "'$ref' " + target + " is not a definition in this schema (#/$defs/NAME)");
    auto it = refs_.find(target);
    if (it != refs_.end())
      return it->second;
    // Name the rule first, so a recursive reference finds it.
    std::string rname = "ref-";
    for (char c : name)
      rname += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '-';
    rname += "-" + std::to_string(refs_.size());
    refs_[target] = rname;
    reserved_.insert(rname);
    const std::string body = visit(root_[section][name], target);
    rules_[rname] = body;
    return rname;
  }

  /// A JSON value as literal text.
  static std::string literal_value(const ojson& v) { return gbnf_literal(v.dump()) + " space"; }

  static std::string path_hint(const std::string& path) {
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? "root" : path.substr(slash + 1);
  }

  const ojson& root_;
  std::string root_name_;
  int depth_ = 0;
  std::map<std::string, std::string> rules_;
  std::map<std::string, std::string> by_body_;
  std::map<std::string, std::string> refs_;
  std::set<std::string> reserved_;
};

}  // namespace

std::string gbnf_literal(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string json_schema_grammar(const std::string& schema_json) { return json_schema_grammar(schema_json, "root"); }

std::string json_schema_grammar(const std::string& schema_json, const std::string& root_name) {
  ojson schema;
  try {
    schema = ojson::parse(schema_json);
  } catch (const std::exception& e) {
    throw schema_error("schema", "#", std::string("the JSON schema is not valid JSON: ") + e.what());
  }
  return converter{schema, root_name}.run();
}

std::string json_object_grammar() { return std::string("root ::= json-object\n") + json_primitives; }

std::string regex_grammar(const std::string& pattern) {
  regex_translator re{pattern, false, "regex"};
  return "root ::= " + re.run() + "\n";
}

std::string choice_grammar(const std::vector<std::string>& choices) {
  std::string out = "root ::= ";
  for (size_t i = 0; i < choices.size(); ++i)
    out += (i ? " | " : "") + gbnf_literal(choices[i]);
  return out + "\n";
}

}  // namespace llmux::engine
