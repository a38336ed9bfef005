#include "engine/jinja.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "engine/unicode_categories.hpp"

namespace llmux::engine::jinja {

namespace {

[[noreturn]] void fail(const std::string& what) { throw error(what); }

// Python's ints do not overflow; these do, and say so rather than wrap.
[[noreturn]] void overflow() { fail("integer overflow (past 64 bits)"); }
int64_t add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r))
    overflow();
  return r;
}
int64_t sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r))
    overflow();
  return r;
}
int64_t mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    overflow();
  return r;
}

// ---------------------------------------------------------------- UTF-8 --

using code_points = std::vector<uint32_t>;

code_points decode(const std::string& s) { return unicode::decode_utf8(s); }

std::string encode(const code_points& cps) {
  std::string out;
  for (uint32_t c : cps)
    unicode::append_utf8(out, c);
  return out;
}

std::string encode(uint32_t c) { return encode(code_points{c}); }

bool ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's repr of a float: the shortest round-trip digits, fixed notation
// for exponents in [-4, 16), else d.ddde+XX.
std::string float_repr(double d) {
  if (std::isnan(d))
    return "nan";
  if (std::isinf(d))
    return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  auto e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  bool neg = mant[0] == '-';
  if (neg)
    mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.')
      digits += c;
  std::string out;
  if (exp >= -5 + 1 && exp < 16) {
    if (exp >= 0) {
      if (static_cast<int>(digits.size()) <= exp + 1) {
        out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1)
      out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return neg ? "-" + out : out;
}

std::string string_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", u);
      out += b;
    } else {
      out += c;
    }
  }
  return out + q;
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", u);
          out += b;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace

// ---------------------------------------------------------------- value --

const value* dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key)
      return &v;
  return nullptr;
}

void dict::set(const std::string& key, value v) {
  for (auto& [k, old] : items)
    if (k == key) {
      old = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

value value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return nullptr;
    case nlohmann::ordered_json::value_t::boolean: return j.get<bool>();
    case nlohmann::ordered_json::value_t::number_integer: return j.get<int64_t>();
    case nlohmann::ordered_json::value_t::number_unsigned: return static_cast<int64_t>(j.get<uint64_t>());
    case nlohmann::ordered_json::value_t::number_float: return j.get<double>();
    case nlohmann::ordered_json::value_t::string: return j.get<std::string>();
    case nlohmann::ordered_json::value_t::array: {
      list l;
      for (const auto& e : j)
        l.push_back(from_json(e));
      return l;
    }
    case nlohmann::ordered_json::value_t::object: {
      dict d;
      for (auto it = j.begin(); it != j.end(); ++it)
        d.items.emplace_back(it.key(), from_json(it.value()));
      return d;
    }
    default: return {};
  }
}

std::string value::type_name() const {
  if (is_undefined())
    return "undefined";
  if (is_none())
    return "NoneType";
  if (is_bool())
    return "bool";
  if (is_int())
    return "int";
  if (is_float())
    return "float";
  if (is_string())
    return "str";
  if (is_list())
    return "list";
  if (is_dict())
    return as_dict().is_namespace ? "Namespace" : "dict";
  return "function";
}

namespace {
template <class T>
const T& get_as(const value::storage& v, const value& self, const char* want) {
  if (const T* p = std::get_if<T>(&v))
    return *p;
  fail(std::string("expected ") + want + ", got '" + self.type_name() + "'");
}
}  // namespace

bool value::as_bool() const { return get_as<bool>(v_, *this, "a boolean"); }

int64_t value::as_int() const {
  if (is_bool())
    return std::get<bool>(v_) ? 1 : 0;
  return get_as<int64_t>(v_, *this, "an integer");
}

double value::as_float() const { return is_float() ? std::get<double>(v_) : static_cast<double>(is_number() ? as_int() : get_as<int64_t>(v_, *this, "a number")); }

const std::string& value::as_string() const { return get_as<std::string>(v_, *this, "a string"); }
list& value::as_list() const { return *get_as<std::shared_ptr<list>>(v_, *this, "a list"); }
dict& value::as_dict() const { return *get_as<std::shared_ptr<dict>>(v_, *this, "a dict"); }
function& value::as_callable() const { return *get_as<std::shared_ptr<function>>(v_, *this, "a function"); }

bool value::truthy() const {
  if (is_undefined() || is_none())
    return false;
  if (is_bool())
    return as_bool();
  if (is_int())
    return as_int() != 0;
  if (is_float())
    return as_float() != 0.0;
  if (is_string())
    return !as_string().empty();
  if (is_list())
    return !as_list().empty();
  if (is_dict())
    return !as_dict().items.empty();
  return true;
}

std::string value::str() const {
  if (is_undefined())
    return "";
  if (is_string())
    return as_string();
  return repr();
}

std::string value::repr() const {
  if (is_undefined())
    return "";
  if (is_none())
    return "None";
  if (is_bool())
    return as_bool() ? "True" : "False";
  if (is_int())
    return std::to_string(as_int());
  if (is_float())
    return float_repr(as_float());
  if (is_string())
    return string_repr(as_string());
  if (is_list()) {
    std::string out = "[";
    for (const auto& e : as_list())
      out += (out.size() > 1 ? ", " : "") + e.repr();
    return out + "]";
  }
  if (is_dict()) {
    const auto& d = as_dict();
    if (d.is_namespace)
      return "<Namespace>";
    std::string out = "{";
    for (const auto& [k, v] : d.items)
      out += (out.size() > 1 ? ", " : "") + string_repr(k) + ": " + v.repr();
    return out + "}";
  }
  return "<function>";
}

namespace {
void to_json_into(std::string& out, const value& v, int indent, int level) {
  auto newline = [&](int lv) {
    out += '\n';
    out.append(static_cast<size_t>(indent * lv), ' ');
  };
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    double d = v.as_float();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : float_repr(d);
  } else if (v.is_string()) {
    json_string(out, v.as_string());
  } else if (v.is_list()) {
    const auto& l = v.as_list();
    if (l.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < l.size(); ++i) {
      if (i)
        out += indent >= 0 ? "," : ", ";
      if (indent >= 0)
        newline(level + 1);
      to_json_into(out, l[i], indent, level + 1);
    }
    if (indent >= 0)
      newline(level);
    out += ']';
  } else if (v.is_dict()) {
    const auto& d = v.as_dict();
    if (d.items.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    for (size_t i = 0; i < d.items.size(); ++i) {
      if (i)
        out += indent >= 0 ? "," : ", ";
      if (indent >= 0)
        newline(level + 1);
      json_string(out, d.items[i].first);
      out += ": ";
      to_json_into(out, d.items[i].second, indent, level + 1);
    }
    if (indent >= 0)
      newline(level);
    out += '}';
  } else {
    fail(v.is_undefined() ? "tojson: the value is undefined" : "tojson: a function is not JSON");
  }
}
}  // namespace

std::string value::to_json(int indent) const {
  std::string out;
  to_json_into(out, *this, indent, 0);
  return out;
}

bool value::equals(const value& o) const {
  if (is_number() && o.is_number()) {
    if ((is_float() || o.is_float()))
      return as_float() == o.as_float();
    return as_int() == o.as_int();
  }
  if (v_.index() != o.v_.index())
    return false;
  if (is_undefined() || is_none())
    return true;
  if (is_string())
    return as_string() == o.as_string();
  if (is_list()) {
    const auto &a = as_list(), &b = o.as_list();
    if (a.size() != b.size())
      return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!a[i].equals(b[i]))
        return false;
    return true;
  }
  if (is_dict()) {
    const auto &a = as_dict(), &b = o.as_dict();
    if (a.items.size() != b.items.size())
      return false;
    for (const auto& [k, v] : a.items) {
      const value* w = b.find(k);
      if (!w || !v.equals(*w))
        return false;
    }
    return true;
  }
  return std::get<std::shared_ptr<function>>(v_) == std::get<std::shared_ptr<function>>(o.v_);
}

// ---------------------------------------------------------------- lexer --

namespace {

struct token {
  enum kind { text, var_begin, var_end, block_begin, block_end, name, string, integer, number, op, eof };
  kind k;
  std::string s;
  int64_t i = 0;
  double d = 0;
  int line = 1;
};

class lexer {
public:
  explicit lexer(std::string_view src) : src_(src) {}

  std::vector<token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t q = next_tag(pos_);
      std::string text(src_.substr(pos_, q - pos_));
      if (q < src_.size()) {
        char kind = src_[q + 1];
        char mod = q + 2 < src_.size() ? src_[q + 2] : 0;
        if (mod == '-') {
          while (!text.empty() && is_space(text.back()))
            text.pop_back();
        } else if ((kind == '%' || kind == '#') && mod != '+') {
          // lstrip_blocks: the spaces before a block tag that opens its line.
          size_t nl = text.rfind('\n');
          size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
          if ((l_pos > 0 || line_starting)
              && std::all_of(text.begin() + static_cast<long>(l_pos), text.end(), is_space))
            text.resize(l_pos);
        }
      }
      if (!text.empty())
        push(token::text, text);
      line_ += static_cast<int>(std::count(src_.begin() + static_cast<long>(pos_),
                                           src_.begin() + static_cast<long>(q), '\n'));
      if (q >= src_.size())
        break;
      char kind = src_[q + 1];
      size_t p = q + 2;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+'))
        ++p;
      bool strip_after = false;
      if (kind == '#') {
        size_t e = src_.find("#}", p);
        if (e == std::string_view::npos)
          fail("line " + std::to_string(line_) + ": a comment is not closed");
        strip_after = e > p && src_[e - 1] == '-';
        line_ += static_cast<int>(std::count(src_.begin() + static_cast<long>(q),
                                             src_.begin() + static_cast<long>(e), '\n'));
        pos_ = e + 2;
      } else {
        push(kind == '{' ? token::var_begin : token::block_begin, "");
        size_t first = toks_.size();
        pos_ = p;
        strip_after = expression(kind == '{' ? '}' : '%');
        push(kind == '{' ? token::var_end : token::block_end, "");
        if (kind == '%' && toks_.size() == first + 2 && toks_[first].k == token::name && toks_[first].s == "raw") {
          // {% raw %}: the text up to {% endraw %} as it is.
          toks_.resize(first - 1);
          if (!strip_after && pos_ < src_.size() && src_[pos_] == '\n')
            ++pos_;
          raw();
          strip_after = false;
          kind = '%';
        }
      }
      if (strip_after) {
        while (pos_ < src_.size() && is_space(src_[pos_]))
          line_ += src_[pos_++] == '\n';
      } else if (kind != '{' && pos_ < src_.size() && src_[pos_] == '\n') {
        ++pos_;  // trim_blocks
        ++line_;
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    push(token::eof, "");
    return std::move(toks_);
  }

private:
  size_t next_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    return src_.size();
  }

  void push(token::kind k, std::string s) {
    token t{k, std::move(s)};
    t.line = line_;
    toks_.push_back(std::move(t));
  }

  void raw() {
    for (size_t i = pos_; i + 1 < src_.size(); ++i) {
      if (src_[i] != '{' || src_[i + 1] != '%')
        continue;
      size_t j = i + 2;
      bool strip_before = j < src_.size() && src_[j] == '-';
      if (strip_before)
        ++j;
      while (j < src_.size() && is_space(src_[j]))
        ++j;
      if (src_.substr(j, 6) != "endraw")
        continue;
      j += 6;
      while (j < src_.size() && is_space(src_[j]))
        ++j;
      bool strip_after = j < src_.size() && src_[j] == '-';
      if (strip_after)
        ++j;
      if (src_.substr(j, 2) != "%}")
        continue;
      std::string text(src_.substr(pos_, i - pos_));
      if (strip_before)
        while (!text.empty() && is_space(text.back()))
          text.pop_back();
      if (!text.empty())
        push(token::text, text);
      line_ += static_cast<int>(std::count(src_.begin() + static_cast<long>(pos_),
                                           src_.begin() + static_cast<long>(j), '\n'));
      pos_ = j + 2;
      if (strip_after)
        while (pos_ < src_.size() && is_space(src_[pos_]))
          ++pos_;
      else if (pos_ < src_.size() && src_[pos_] == '\n')
        ++pos_;
      return;
    }
    fail("line " + std::to_string(line_) + ": {% raw %} is not closed");
  }

  // Tokens up to the tag's end ("}}" or "%}", outside brackets); returns
  // whether it was "-}}"/"-%}".
  bool expression(char closer) {
    int depth = 0;
    for (;;) {
      while (pos_ < src_.size() && is_space(src_[pos_]))
        line_ += src_[pos_++] == '\n';
      if (pos_ >= src_.size())
        fail("line " + std::to_string(line_) + ": a tag is not closed");
      std::string_view rest = src_.substr(pos_);
      if (depth == 0) {
        if (rest.size() >= 3 && rest[0] == '-' && rest[1] == closer && rest[2] == '}') {
          pos_ += 3;
          return true;
        }
        if (rest.size() >= 2 && rest[0] == closer && rest[1] == '}') {
          pos_ += 2;
          return false;
        }
      }
      char c = rest[0];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t n = 1;
        while (n < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_'))
          ++n;
        push(token::name, std::string(rest.substr(0, n)));
        pos_ += n;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t n = 0;
        std::string digits;
        bool is_float = false;
        while (n < rest.size() && (std::isdigit(static_cast<unsigned char>(rest[n])) || rest[n] == '_'))
          if (rest[n++] != '_')
            digits += rest[n - 1];
        if (n + 1 < rest.size() && rest[n] == '.' && std::isdigit(static_cast<unsigned char>(rest[n + 1]))) {
          is_float = true;
          digits += rest[n++];
          while (n < rest.size() && (std::isdigit(static_cast<unsigned char>(rest[n])) || rest[n] == '_'))
            if (rest[n++] != '_')
              digits += rest[n - 1];
        }
        if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
          size_t m = n + 1;
          if (m < rest.size() && (rest[m] == '+' || rest[m] == '-'))
            ++m;
          if (m < rest.size() && std::isdigit(static_cast<unsigned char>(rest[m]))) {
            is_float = true;
            digits += 'e';
            digits += rest.substr(n + 1, m - n - 1);
            n = m;
            while (n < rest.size() && std::isdigit(static_cast<unsigned char>(rest[n])))
              digits += rest[n++];
          }
        }
        token t{is_float ? token::number : token::integer, digits};
        t.line = line_;
        if (is_float)
          t.d = std::strtod(digits.c_str(), nullptr);
        else
          t.i = std::strtoll(digits.c_str(), nullptr, 10);
        toks_.push_back(t);
        pos_ += n;
      } else if (c == '\'' || c == '"') {
        std::string s;
        size_t n = 1;
        for (;; ++n) {
          if (n >= rest.size())
            fail("line " + std::to_string(line_) + ": a string is not closed");
          char d = rest[n];
          if (d == c)
            break;
          if (d == '\n')
            ++line_;
          if (d != '\\' || n + 1 >= rest.size()) {
            s += d;
            continue;
          }
          char e = rest[++n];
          switch (e) {
            case 'n': s += '\n'; break;
            case 't': s += '\t'; break;
            case 'r': s += '\r'; break;
            case '0': s += '\0'; break;
            case 'b': s += '\b'; break;
            case 'f': s += '\f'; break;
            case '\\': s += '\\'; break;
            case '\'': s += '\''; break;
            case '"': s += '"'; break;
            case '\n': break;
            case 'u':
            case 'x':
            case 'U': {
              size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
              if (n + len >= rest.size())
                fail("line " + std::to_string(line_) + ": a bad escape in a string");
              std::string hex(rest.substr(n + 1, len));
              if (!std::all_of(hex.begin(), hex.end(), ::isxdigit))
                fail("line " + std::to_string(line_) + ": a bad escape in a string");
              char32_t cp = static_cast<char32_t>(std::strtoul(hex.c_str(), nullptr, 16));
              s += encode(static_cast<uint32_t>(cp));
              n += len;
              break;
            }
            default: s += '\\'; s += e;
          }
        }
        push(token::string, s);
        pos_ += n + 1;
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ":",
                                    ".", "|", "+", "-", "*", "/", "%", "~", "<", ">", "="};
        const char* hit = nullptr;
        for (const char* o : ops)
          if (rest.substr(0, std::strlen(o)) == o) {
            hit = o;
            break;
          }
        if (!hit)
          fail("line " + std::to_string(line_) + ": unexpected character '" + std::string(1, c) + "'");
        std::string o(hit);
        if (o == "(" || o == "[" || o == "{")
          ++depth;
        else if (o == ")" || o == "]" || o == "}")
          --depth;
        push(token::op, o);
        pos_ += o.size();
      }
    }
  }

  std::string_view src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<token> toks_;
};

// ------------------------------------------------------------------ AST --

struct expr {
  enum kind { literal, name, attr, item, slice, call, filter, test, unary, binary, ternary, list_lit, dict_lit };
  kind k;
  value lit;
  std::string s;  ///< name, attribute, operator, filter or test name
  std::vector<std::unique_ptr<expr>> kids;
  std::vector<std::string> keywords;  ///< names of the trailing keyword arguments
  bool negated = false;              ///< `is not`
  int line = 0;
};
using expr_ptr = std::unique_ptr<expr>;

}  // namespace

struct template_::node {
  enum kind { text_, output, if_, for_, set, set_block, macro, filter_block, break_, continue_, block };
  kind k;
  int line = 0;
  std::string text;  ///< text; macro name; set_block name
  std::vector<expr_ptr> exprs;
  std::vector<std::vector<std::unique_ptr<node>>> bodies;
  std::vector<std::string> targets;  ///< for/set names; macro parameters
  bool attr_target = false;          ///< set ns.attr: targets = {ns, attr}
};

namespace {

using node = template_::node;
using node_ptr = std::unique_ptr<node>;
using body = std::vector<node_ptr>;

// ---------------------------------------------------------------- parser --

class parser {
public:
  explicit parser(std::vector<token> toks) : t_(std::move(toks)) {}

  body run() {
    std::string end;
    auto b = parse_body({}, end);
    if (!end.empty())
      err("unexpected '{% " + end + " %}'");
    return b;
  }

private:
  [[noreturn]] void err(const std::string& what) const {
    fail("line " + std::to_string(cur().line) + ": " + what);
  }
  const token& cur() const { return t_[i_]; }
  const token& peek(size_t n = 1) const { return t_[std::min(i_ + n, t_.size() - 1)]; }
  bool is_op(const char* o) const { return cur().k == token::op && cur().s == o; }
  bool is_name(const char* n) const { return cur().k == token::name && cur().s == n; }
  bool skip_op(const char* o) {
    if (!is_op(o))
      return false;
    ++i_;
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n))
      return false;
    ++i_;
    return true;
  }
  void expect_op(const char* o) {
    if (!skip_op(o))
      err(std::string("expected '") + o + "'" + (cur().s.empty() ? "" : ", found '" + cur().s + "'"));
  }
  std::string expect_name() {
    if (cur().k != token::name)
      err("expected a name");
    return t_[i_++].s;
  }
  void expect_block_end() {
    if (cur().k != token::block_end)
      err("expected the end of the tag, found '" + cur().s + "'");
    ++i_;
  }

  // Statements until a block tag named in `ends` (its name is left in
  // `end`, the tag's name token consumed).
  body parse_body(const std::vector<std::string>& ends, std::string& end) {
    body out;
    end.clear();
    while (cur().k != token::eof) {
      const auto& t = cur();
      if (t.k == token::text) {
        auto n = std::make_unique<node>();
        n->k = node::text_;
        n->text = t.s;
        out.push_back(std::move(n));
        ++i_;
      } else if (t.k == token::var_begin) {
        ++i_;
        auto n = std::make_unique<node>();
        n->k = node::output;
        n->line = t.line;
        n->exprs.push_back(parse_tuple());
        if (cur().k != token::var_end)
          err("expected '}}', found '" + cur().s + "'");
        ++i_;
        out.push_back(std::move(n));
      } else if (t.k == token::block_begin) {
        ++i_;
        if (cur().k != token::name)
          err("expected a statement");
        std::string word = cur().s;
        if (std::find(ends.begin(), ends.end(), word) != ends.end()) {
          ++i_;
          end = word;
          return out;
        }
        out.push_back(statement());
      } else {
        err("unexpected token");
      }
    }
    if (!ends.empty())
      err("the template ends inside a block: expected '{% " + ends.back() + " %}'");
    return out;
  }

  node_ptr statement() {
    nesting guard(*this);
    auto n = std::make_unique<node>();
    n->line = cur().line;
    std::string word = expect_name();
    std::string end;
    if (word == "if") {
      n->k = node::if_;
      n->exprs.push_back(parse_tuple());
      expect_block_end();
      for (;;) {
        n->bodies.push_back(parse_body({"elif", "else", "endif"}, end));
        if (end == "elif") {
          n->exprs.push_back(parse_tuple());
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          n->bodies.push_back(parse_body({"endif"}, end));
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (word == "for") {
      n->k = node::for_;
      bool paren = skip_op("(");
      do
        n->targets.push_back(expect_name());
      while (skip_op(","));
      if (paren)
        expect_op(")");
      if (!skip_name("in"))
        err("expected 'in'");
      n->exprs.push_back(parse_tuple(/*no_condexpr=*/true));
      n->exprs.emplace_back();
      if (skip_name("if"))
        n->exprs.back() = parse_expression();
      if (skip_name("recursive"))
        err("recursive loops are not supported");
      expect_block_end();
      n->bodies.push_back(parse_body({"else", "endfor"}, end));
      expect_block_end();
      if (end == "else") {
        n->bodies.push_back(parse_body({"endfor"}, end));
        expect_block_end();
      }
    } else if (word == "set") {
      std::string first = expect_name();
      if (skip_op(".")) {
        n->k = node::set;
        n->attr_target = true;
        n->targets = {first, expect_name()};
        expect_op("=");
        n->exprs.push_back(parse_tuple());
        expect_block_end();
      } else if (is_op("=") || is_op(",")) {
        n->k = node::set;
        n->targets.push_back(first);
        while (skip_op(","))
          n->targets.push_back(expect_name());
        expect_op("=");
        n->exprs.push_back(parse_tuple());
        expect_block_end();
      } else {
        n->k = node::set_block;
        n->text = first;
        n->exprs.emplace_back();
        if (skip_op("|"))
          n->exprs.back() = parse_filter_chain(nullptr);
        expect_block_end();
        n->bodies.push_back(parse_body({"endset"}, end));
        expect_block_end();
      }
    } else if (word == "macro") {
      n->k = node::macro;
      n->text = expect_name();
      expect_op("(");
      while (!skip_op(")")) {
        n->targets.push_back(expect_name());
        n->exprs.emplace_back();
        if (skip_op("="))
          n->exprs.back() = parse_expression();
        if (!is_op(")"))
          expect_op(",");
      }
      expect_block_end();
      n->bodies.push_back(parse_body({"endmacro"}, end));
      expect_block_end();
    } else if (word == "filter") {
      n->k = node::filter_block;
      n->exprs.push_back(parse_filter_chain(nullptr));
      expect_block_end();
      n->bodies.push_back(parse_body({"endfilter"}, end));
      expect_block_end();
    } else if (word == "break" || word == "continue") {
      n->k = word == "break" ? node::break_ : node::continue_;
      expect_block_end();
    } else if (word == "generation") {
      n->k = node::block;
      expect_block_end();
      n->bodies.push_back(parse_body({"endgeneration"}, end));
      expect_block_end();
    } else {
      i_--;
      if (word.rfind("end", 0) == 0 || word == "else" || word == "elif")
        err("unexpected '{% " + word + " %}'");
      err("'{% " + word + " %}' is not supported");
    }
    return n;
  }

  expr_ptr make(expr::kind k, int line) {
    auto e = std::make_unique<expr>();
    e->k = k;
    e->line = line;
    return e;
  }

  // A bare `a, b` is a tuple (a list here).
  expr_ptr parse_tuple(bool no_condexpr = false) {
    int line = cur().line;
    auto first = no_condexpr ? parse_or() : parse_expression();
    if (!is_op(","))
      return first;
    auto l = make(expr::list_lit, line);
    l->kids.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().k == token::block_end || cur().k == token::var_end || is_name("if"))
        break;
      l->kids.push_back(no_condexpr ? parse_or() : parse_expression());
    }
    return l;
  }

  // Recursive descent stays within a bounded stack: blocks and expressions
  // nest at most 200 deep.
  struct nesting {
    parser& p;
    explicit nesting(parser& pp) : p(pp) {
      if (++p.depth_ > 200)
        p.err("blocks or expressions nest too deep");
    }
    ~nesting() { --p.depth_; }
  };

  expr_ptr parse_expression() {
    nesting guard(*this);
    int line = cur().line;
    auto e = parse_or();
    while (skip_name("if")) {
      auto t = make(expr::ternary, line);
      auto cond = parse_or();
      expr_ptr other;
      if (skip_name("else"))
        other = parse_expression();
      t->kids.push_back(std::move(e));
      t->kids.push_back(std::move(cond));
      t->kids.push_back(std::move(other));
      e = std::move(t);
    }
    return e;
  }

  expr_ptr binary(std::string op, expr_ptr a, expr_ptr b, int line) {
    auto e = make(expr::binary, line);
    e->s = std::move(op);
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }

  // `or` over `and` over `not`: left-associative.
  expr_ptr parse_or() { return parse_logic(true); }
  expr_ptr parse_logic(bool is_or) {
    const char* word = is_or ? "or" : "and";
    auto operand = [&] { return is_or ? parse_logic(false) : parse_not(); };
    int line = cur().line;
    auto e = operand();
    while (skip_name(word))
      e = binary(word, std::move(e), operand(), line);
    return e;
  }
  expr_ptr parse_not() {
    nesting guard(*this);
    int line = cur().line;
    if (skip_name("not")) {
      auto e = make(expr::unary, line);
      e->s = "not";
      e->kids.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  expr_ptr parse_compare() {
    int line = cur().line;
    auto e = parse_math1();
    for (;;) {
      std::string op;
      if (cur().k == token::op
          && (cur().s == "==" || cur().s == "!=" || cur().s == "<" || cur().s == "<=" || cur().s == ">"
              || cur().s == ">=")) {
        op = t_[i_++].s;
      } else if (is_name("in")) {
        ++i_;
        op = "in";
      } else if (is_name("not") && peek().k == token::name && peek().s == "in") {
        i_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1(), line);
    }
  }
  // The arithmetic levels below comparison, loosest first, as jinja2's
  // parser has them (`~` between + and *): each left-associative.
  expr_ptr parse_math1(size_t level = 0) {
    static const std::vector<std::vector<std::string>> levels = {{"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    auto operand = [&] { return level + 1 < levels.size() ? parse_math1(level + 1) : parse_unary(true); };
    int line = cur().line;
    auto e = operand();
    for (;;) {
      const auto& ops = levels[level];
      if (cur().k != token::op || std::find(ops.begin(), ops.end(), cur().s) == ops.end())
        return e;
      std::string op = t_[i_++].s;
      e = binary(op, std::move(e), operand(), line);
    }
  }
  expr_ptr parse_unary(bool with_filter) {
    nesting guard(*this);
    int line = cur().line;
    expr_ptr e;
    if (is_op("-") || is_op("+")) {
      e = make(expr::unary, line);
      e->s = t_[i_++].s;
      e->kids.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter)
      e = parse_filter_expr(std::move(e));
    return e;
  }

  expr_ptr parse_primary() {
    const auto& t = cur();
    int line = t.line;
    if (t.k == token::name) {
      ++i_;
      auto lit = [&](value v) {
        auto e = make(expr::literal, line);
        e->lit = std::move(v);
        return e;
      };
      if (t.s == "true" || t.s == "True")
        return lit(true);
      if (t.s == "false" || t.s == "False")
        return lit(false);
      if (t.s == "none" || t.s == "None")
        return lit(nullptr);
      auto e = make(expr::name, line);
      e->s = t.s;
      return e;
    }
    if (t.k == token::string) {
      std::string s;
      while (cur().k == token::string)
        s += t_[i_++].s;
      auto e = make(expr::literal, line);
      e->lit = std::move(s);
      return e;
    }
    if (t.k == token::integer || t.k == token::number) {
      ++i_;
      auto e = make(expr::literal, line);
      e->lit = t.k == token::integer ? value(t.i) : value(t.d);
      return e;
    }
    if (skip_op("(")) {
      if (skip_op(")"))
        return make(expr::list_lit, line);
      auto e = parse_expression();
      if (is_op(",")) {
        auto l = make(expr::list_lit, line);
        l->kids.push_back(std::move(e));
        while (skip_op(",") && !is_op(")"))
          l->kids.push_back(parse_expression());
        e = std::move(l);
      }
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto l = make(expr::list_lit, line);
      while (!skip_op("]")) {
        l->kids.push_back(parse_expression());
        if (!is_op("]"))
          expect_op(",");
      }
      return l;
    }
    if (skip_op("{")) {
      auto d = make(expr::dict_lit, line);
      while (!skip_op("}")) {
        d->kids.push_back(parse_expression());
        expect_op(":");
        d->kids.push_back(parse_expression());
        if (!is_op("}"))
          expect_op(",");
      }
      return d;
    }
    err(t.k == token::var_end || t.k == token::block_end ? "an expression is missing"
                                                         : "unexpected '" + t.s + "'");
  }

  void parse_args(expr& e) {
    // after '('
    while (!skip_op(")")) {
      if (cur().k == token::name && peek().k == token::op && peek().s == "=") {
        e.keywords.push_back(t_[i_].s);
        i_ += 2;
        e.kids.push_back(parse_expression());
      } else {
        if (!e.keywords.empty())
          err("a positional argument follows a keyword argument");
        if (is_op("*") || is_op("**"))
          err("*args and **kwargs are not supported");
        e.kids.push_back(parse_expression());
      }
      if (!is_op(")"))
        expect_op(",");
    }
  }

  expr_ptr call(expr_ptr callee, int line) {
    auto c = make(expr::call, line);
    c->kids.push_back(std::move(callee));
    parse_args(*c);
    return c;
  }

  // A filter's or test's name (dotted names are allowed and unknown).
  std::string dotted_name() {
    std::string n = expect_name();
    while (skip_op("."))
      n += "." + expect_name();
    return n;
  }

  expr_ptr parse_postfix(expr_ptr e) {
    for (;;) {
      int line = cur().line;
      if (skip_op(".")) {
        auto a = make(expr::attr, line);
        if (cur().k == token::integer) {
          auto it = make(expr::item, line);
          it->kids.push_back(std::move(e));
          auto lit = make(expr::literal, line);
          lit->lit = t_[i_++].i;
          it->kids.push_back(std::move(lit));
          e = std::move(it);
          continue;
        }
        a->s = expect_name();
        a->kids.push_back(std::move(e));
        e = std::move(a);
      } else if (skip_op("[")) {
        // item or slice
        expr_ptr parts[3];
        int colons = 0;
        if (!is_op(":"))
          parts[0] = parse_expression();
        while (skip_op(":")) {
          ++colons;
          if (colons > 2)
            err("a slice has at most two ':'");
          if (!is_op(":") && !is_op("]"))
            parts[colons] = parse_expression();
        }
        expect_op("]");
        if (colons == 0) {
          auto it = make(expr::item, line);
          it->kids.push_back(std::move(e));
          it->kids.push_back(std::move(parts[0]));
          e = std::move(it);
        } else {
          auto sl = make(expr::slice, line);
          sl->kids.push_back(std::move(e));
          for (auto& p : parts)
            sl->kids.push_back(std::move(p));
          e = std::move(sl);
        }
      } else if (skip_op("(")) {
        e = call(std::move(e), line);
      } else {
        return e;
      }
    }
  }

  // `| name(args) | name ...` applied to `subject` (null: a filter block's).
  expr_ptr parse_filter_chain(expr_ptr subject) {
    do {
      int line = cur().line;
      auto f = make(expr::filter, line);
      f->s = dotted_name();
      f->kids.push_back(std::move(subject));
      if (skip_op("("))
        parse_args(*f);
      subject = std::move(f);
    } while (skip_op("|"));
    return subject;
  }

  expr_ptr parse_filter_expr(expr_ptr e) {
    for (;;) {
      int line = cur().line;
      if (skip_op("|")) {
        e = parse_filter_chain(std::move(e));
      } else if (skip_name("is")) {
        auto t = make(expr::test, line);
        t->negated = skip_name("not");
        t->s = dotted_name();
        t->kids.push_back(std::move(e));
        if (skip_op("(")) {
          parse_args(*t);
        } else if ((cur().k == token::name && cur().s != "else" && cur().s != "or" && cur().s != "and"
                    && cur().s != "if" && cur().s != "not" && cur().s != "in" && cur().s != "is")
                   || cur().k == token::string || cur().k == token::integer || cur().k == token::number
                   || is_op("[") || is_op("{")) {
          t->kids.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (skip_op("(")) {
        e = call(std::move(e), line);
      } else {
        return e;
      }
    }
  }

  std::vector<token> t_;
  size_t i_ = 0;
  int depth_ = 0;
};

// -------------------------------------------------------------- renderer --

struct scope {
  std::vector<std::pair<std::string, value>> vars;
  std::shared_ptr<scope> parent;
  value* find(const std::string& n) {
    for (scope* s = this; s; s = s->parent.get())
      for (auto& [k, v] : s->vars)
        if (k == n)
          return &v;
    return nullptr;
  }
  void set(const std::string& n, value v) {
    for (auto& [k, old] : vars)
      if (k == n) {
        old = std::move(v);
        return;
      }
    vars.emplace_back(n, std::move(v));
  }
};
using scope_ptr = std::shared_ptr<scope>;

const value* keyword(const call_args& a, const char* name) {
  for (const auto& [k, v] : a.keywords)
    if (k == name)
      return &v;
  return nullptr;
}

// Positional argument i, else keyword `name`, else `def`.
value arg(const call_args& a, size_t i, const char* name, value def = {}) {
  if (i < a.positional.size())
    return a.positional[i];
  if (const value* v = keyword(a, name))
    return *v;
  return def;
}

std::vector<value> iterate(const value& v) {
  if (v.is_undefined())
    return {};
  if (v.is_list())
    return v.as_list();
  if (v.is_dict()) {
    std::vector<value> keys;
    for (const auto& [k, _] : v.as_dict().items)
      keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    std::vector<value> chars;
    for (uint32_t c : decode(v.as_string()))
      chars.emplace_back(encode(c));
    return chars;
  }
  fail("'" + v.type_name() + "' object is not iterable");
}

int64_t length(const value& v) {
  if (v.is_undefined())
    return 0;
  if (v.is_string())
    return ascii(v.as_string()) ? static_cast<int64_t>(v.as_string().size())
                                : static_cast<int64_t>(decode(v.as_string()).size());
  if (v.is_list())
    return static_cast<int64_t>(v.as_list().size());
  if (v.is_dict())
    return static_cast<int64_t>(v.as_dict().items.size());
  fail("object of type '" + v.type_name() + "' has no len()");
}

bool less(const value& a, const value& b) {
  if (a.is_number() && b.is_number())
    return a.as_float() < b.as_float();
  if (a.is_string() && b.is_string())
    return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const auto &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      if (less(x[i], y[i]))
        return true;
      if (less(y[i], x[i]))
        return false;
    }
    return x.size() < y.size();
  }
  fail("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool contains(const value& hay, const value& needle) {
  if (hay.is_string()) {
    if (!needle.is_string())
      fail("'in <string>' requires string as left operand, not " + needle.type_name());
    return hay.as_string().find(needle.as_string()) != std::string::npos;
  }
  if (hay.is_list())
    return std::any_of(hay.as_list().begin(), hay.as_list().end(), [&](const value& v) { return v.equals(needle); });
  if (hay.is_dict())
    return needle.is_string() && hay.as_dict().find(needle.as_string());
  if (hay.is_undefined())
    return false;
  fail("argument of type '" + hay.type_name() + "' is not iterable");
}

std::string strip_chars(const std::string& s, const value& chars, bool left, bool right) {
  std::string set = chars.is_string() ? chars.as_string() : " \t\n\r\f\v";
  auto in = [&](char c) { return set.find(c) != std::string::npos; };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && in(s[b]))
      ++b;
  if (right)
    while (e > b && in(s[e - 1]))
      --e;
  return s.substr(b, e - b);
}

value slice_of(const value& v, const value& start, const value& stop, const value& step) {
  int64_t st = step.is_undefined() || step.is_none() ? 1 : step.as_int();
  if (st == 0)
    fail("slice step cannot be zero");
  bool str = v.is_string();
  if (!str && !v.is_list())
    fail("'" + v.type_name() + "' object is not subscriptable");
  code_points chars;
  if (str)
    chars = decode(v.as_string());
  auto n = static_cast<int64_t>(str ? chars.size() : v.as_list().size());
  auto norm = [&](const value& x, int64_t def) {
    if (x.is_undefined() || x.is_none())
      return def;
    int64_t i = x.as_int();
    if (i < 0)
      i += n;
    if (st > 0)
      return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t b = norm(start, st > 0 ? 0 : n - 1), e = norm(stop, st > 0 ? n : -1);
  code_points cs;
  list out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    if (str)
      cs.push_back(chars[static_cast<size_t>(i)]);
    else
      out.push_back(v.as_list()[static_cast<size_t>(i)]);
  }
  return str ? value(encode(cs)) : value(std::move(out));
}

std::string python_format(const std::string& fmt, const std::vector<value>& args) {
  std::string out;
  size_t ai = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    if (++i >= fmt.size())
      fail("format: incomplete format");
    if (fmt[i] == '%') {
      out += '%';
      continue;
    }
    if (ai >= args.size())
      fail("format: not enough arguments for format string");
    const value& a = args[ai++];
    switch (fmt[i]) {
      case 's': out += a.str(); break;
      case 'r': out += a.repr(); break;
      case 'd':
      case 'i': out += std::to_string(a.is_float() ? static_cast<int64_t>(a.as_float()) : a.as_int()); break;
      case 'f': {
        char b[64];
        std::snprintf(b, sizeof b, "%f", a.as_float());
        out += b;
        break;
      }
      default: fail(std::string("format: unsupported conversion '%") + fmt[i] + "'");
    }
  }
  return out;
}

class renderer {
public:
  renderer(std::time_t now, const render_limits& limits) : now_(now), limits_(limits) {}

  enum class flow { normal, break_, continue_ };

  flow exec(const body& b, const scope_ptr& sc, std::string& out) {
    for (const auto& n : b) {
      auto f = exec(*n, sc, out);
      if (f != flow::normal)
        return f;
    }
    return flow::normal;
  }

  scope_ptr globals(const value& context) {
    auto root = std::make_shared<scope>();
    root->set("raise_exception", function([](call_args& a) -> value {
                throw template_error(arg(a, 0, "message", "").str());
              }));
    std::time_t now = now_;
    root->set("strftime_now", function([now](call_args& a) -> value {
                std::tm tm{};
                localtime_r(&now, &tm);
                char buf[256];
                auto n = std::strftime(buf, sizeof buf, arg(a, 0, "format", "").str().c_str(), &tm);
                return std::string(buf, n);
              }));
    root->set("namespace", function([](call_args& a) -> value {
                dict d;
                d.is_namespace = true;
                if (!a.positional.empty() && a.positional[0].is_dict())
                  d.items = a.positional[0].as_dict().items;
                for (auto& [k, v] : a.keywords)
                  d.set(k, v);
                return d;
              }));
    root->set("dict", function([](call_args& a) -> value {
                dict d;
                for (auto& [k, v] : a.keywords)
                  d.set(k, v);
                return d;
              }));
    int64_t max_range = limits_.max_steps;
    root->set("range", function([max_range](call_args& a) -> value {
                int64_t start = 0, stop = 0, step = 1;
                if (a.positional.size() == 1) {
                  stop = a.positional[0].as_int();
                } else if (a.positional.size() >= 2) {
                  start = a.positional[0].as_int();
                  stop = a.positional[1].as_int();
                  if (a.positional.size() > 2)
                    step = a.positional[2].as_int();
                }
                if (step == 0)
                  fail("range() arg 3 must not be zero");
                list l;
                for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
                  if (static_cast<int64_t>(l.size()) >= max_range)
                    fail("range() is too long for a template");
                  l.emplace_back(i);
                  if (__builtin_add_overflow(i, step, &i))
                    break;
                }
                return l;
              }));
    auto top = std::make_shared<scope>();
    top->parent = root;
    if (context.is_dict())
      for (const auto& [k, v] : context.as_dict().items)
        top->set(k, v);
    return top;
  }

private:
  void step() {
    if (++steps_ > limits_.max_steps)
      fail("the template takes more than " + std::to_string(limits_.max_steps) + " steps");
  }

  void emit(std::string& out, const std::string& s) {
    if (out.size() + s.size() > limits_.max_output)
      fail("the template's output is over " + std::to_string(limits_.max_output) + " bytes");
    out += s;
  }

  struct depth_guard {
    renderer& r;
    explicit depth_guard(renderer& rr) : r(rr) {
      if (++r.depth_ > r.limits_.max_depth)
        fail("the template nests calls deeper than " + std::to_string(r.limits_.max_depth));
    }
    ~depth_guard() { --r.depth_; }
  };

  flow exec(const node& n, const scope_ptr& sc, std::string& out) {
    step();
    switch (n.k) {
      case node::text_: emit(out, n.text); break;
      case node::output: emit(out, eval(*n.exprs[0], sc).str()); break;
      case node::if_:
        for (size_t i = 0; i < n.bodies.size(); ++i)
          if (i >= n.exprs.size() || eval(*n.exprs[i], sc).truthy())
            return exec(n.bodies[i], sc, out);
        break;
      case node::for_: return exec_for(n, sc, out);
      case node::set: {
        value v = eval(*n.exprs[0], sc);
        if (n.attr_target) {
          value* ns = sc->find(n.targets[0]);
          if (!ns || !ns->is_dict() || !ns->as_dict().is_namespace)
            fail("line " + std::to_string(n.line) + ": cannot assign attribute on non-namespace object");
          ns->as_dict().set(n.targets[1], std::move(v));
        } else if (n.targets.size() == 1) {
          sc->set(n.targets[0], std::move(v));
        } else {
          auto items = iterate(v);
          if (items.size() != n.targets.size())
            fail("line " + std::to_string(n.line) + ": cannot unpack " + std::to_string(items.size())
                 + " values into " + std::to_string(n.targets.size()));
          for (size_t i = 0; i < items.size(); ++i)
            sc->set(n.targets[i], items[i]);
        }
        break;
      }
      case node::set_block: {
        std::string s;
        exec(n.bodies[0], sc, s);
        value v = s;
        if (n.exprs[0])
          v = apply_filters(*n.exprs[0], std::move(v), sc);
        sc->set(n.text, std::move(v));
        break;
      }
      case node::macro: {
        const node* m = &n;
        // The macro lives in the scope it captures: a weak handle, or the
        // two would keep each other alive past the render.
        std::weak_ptr<scope> weak_def = sc;
        sc->set(n.text, function([this, m, weak_def](call_args& a) -> value {
                  depth_guard g(*this);
                  scope_ptr def = weak_def.lock();
                  if (!def)
                    fail("a macro was called after its scope ended");
                  auto local = std::make_shared<scope>();
                  local->parent = def;
                  for (size_t i = 0; i < m->targets.size(); ++i) {
                    const value* kw = keyword(a, m->targets[i].c_str());
                    if (i < a.positional.size())
                      local->set(m->targets[i], a.positional[i]);
                    else if (kw)
                      local->set(m->targets[i], *kw);
                    else if (m->exprs[i])
                      local->set(m->targets[i], eval(*m->exprs[i], def));
                    else
                      local->set(m->targets[i], value());
                  }
                  std::string s;
                  exec(m->bodies[0], local, s);
                  return s;
                }));
        break;
      }
      case node::filter_block: {
        std::string s;
        exec(n.bodies[0], sc, s);
        emit(out, apply_filters(*n.exprs[0], s, sc).str());
        break;
      }
      case node::break_: return flow::break_;
      case node::continue_: return flow::continue_;
      case node::block: return exec(n.bodies[0], sc, out);
    }
    return flow::normal;
  }

  flow exec_for(const node& n, const scope_ptr& sc, std::string& out) {
    auto items = iterate(eval(*n.exprs[0], sc));
    auto bind = [&](const scope_ptr& s, const value& item) {
      if (n.targets.size() == 1) {
        s->set(n.targets[0], item);
        return;
      }
      auto parts = iterate(item);
      if (parts.size() != n.targets.size())
        fail("line " + std::to_string(n.line) + ": cannot unpack " + std::to_string(parts.size())
             + " values into " + std::to_string(n.targets.size()));
      for (size_t i = 0; i < parts.size(); ++i)
        s->set(n.targets[i], parts[i]);
    };
    if (n.exprs[1]) {  // {% for x in xs if cond %}: the loop sees only those
      std::vector<value> kept;
      for (auto& item : items) {
        auto s = std::make_shared<scope>();
        s->parent = sc;
        bind(s, item);
        if (eval(*n.exprs[1], s).truthy())
          kept.push_back(item);
      }
      items = std::move(kept);
    }
    // jinja2 runs a loop's else unless an iteration reached the end of the
    // body: a loop whose iterations all `continue` (or that breaks in its
    // first) runs it too. Kept, as templates are written against jinja2.
    bool completed = false;
    auto len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      auto s = std::make_shared<scope>();
      s->parent = sc;
      dict loop;
      loop.is_namespace = true;  // attributes only, as jinja's LoopContext
      loop.items = {{"index", i + 1},
                    {"index0", i},
                    {"revindex", len - i},
                    {"revindex0", len - i - 1},
                    {"first", i == 0},
                    {"last", i == len - 1},
                    {"length", len},
                    {"depth", 1},
                    {"depth0", 0}};
      if (i > 0)
        loop.items.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < len)
        loop.items.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
      loop.items.emplace_back("cycle", function([i](call_args& a) -> value {
                                if (a.positional.empty())
                                  fail("no items for cycling given");
                                return a.positional[static_cast<size_t>(i) % a.positional.size()];
                              }));
      s->set("loop", std::move(loop));
      bind(s, items[static_cast<size_t>(i)]);
      auto f = exec(n.bodies[0], s, out);
      if (f == flow::break_)
        break;
      completed = completed || f == flow::normal;
    }
    if (!completed && n.bodies.size() > 1)
      return exec(n.bodies[1], sc, out);
    return flow::normal;
  }

  call_args eval_args(const expr& e, size_t first, const scope_ptr& sc) {
    call_args a;
    size_t n_kw = e.keywords.size();
    size_t n_pos = e.kids.size() - first - n_kw;
    for (size_t i = 0; i < n_pos; ++i)
      a.positional.push_back(eval(*e.kids[first + i], sc));
    for (size_t i = 0; i < n_kw; ++i)
      a.keywords.emplace_back(e.keywords[i], eval(*e.kids[first + n_pos + i], sc));
    return a;
  }

  value apply_filters(const expr& chain, value subject, const scope_ptr& sc) {
    // A filter chain parsed with a null subject: innermost first.
    std::vector<const expr*> fs;
    for (const expr* f = &chain; f; f = f->kids[0] ? f->kids[0].get() : nullptr)
      fs.push_back(f);
    for (auto it = fs.rbegin(); it != fs.rend(); ++it) {
      auto a = eval_args(**it, 1, sc);
      subject = filter((*it)->s, std::move(subject), a, sc);
    }
    return subject;
  }

public:
  value eval(const expr& e, const scope_ptr& sc) {
    step();
    depth_guard g(*this);
    switch (e.k) {
      case expr::literal: return e.lit;
      case expr::name: {
        value* v = sc->find(e.s);
        return v ? *v : value();
      }
      case expr::attr: {
        value obj = eval(*e.kids[0], sc);
        if (obj.is_undefined())
          fail("line " + std::to_string(e.line) + ": '" + describe(*e.kids[0]) + "' is undefined (reading ."
               + e.s + ")");
        return get_attr(obj, e.s);
      }
      case expr::item: {
        value obj = eval(*e.kids[0], sc);
        value key = eval(*e.kids[1], sc);
        if (obj.is_undefined())
          fail("line " + std::to_string(e.line) + ": '" + describe(*e.kids[0]) + "' is undefined (reading ["
               + key.repr() + "])");
        return get_item(obj, key);
      }
      case expr::slice: {
        value obj = eval(*e.kids[0], sc);
        auto part = [&](size_t i) { return e.kids[i] ? eval(*e.kids[i], sc) : value(); };
        return slice_of(obj, part(1), part(2), part(3));
      }
      case expr::call: {
        value f = eval(*e.kids[0], sc);
        if (!f.is_callable())
          fail("line " + std::to_string(e.line) + ": '" + describe(*e.kids[0]) + "' is not callable");
        auto a = eval_args(e, 1, sc);
        return f.as_callable()(a);
      }
      case expr::filter: {
        value subject = eval(*e.kids[0], sc);
        auto a = eval_args(e, 1, sc);
        return filter(e.s, std::move(subject), a, sc);
      }
      case expr::test: {
        value subject = eval(*e.kids[0], sc);
        auto a = eval_args(e, 1, sc);
        bool r = test(e.s, subject, a);
        return e.negated ? !r : r;
      }
      case expr::unary: {
        value v = eval(*e.kids[0], sc);
        if (e.s == "not")
          return !v.truthy();
        if (!v.is_number())
          fail("line " + std::to_string(e.line) + ": bad operand type for unary " + e.s + ": '" + v.type_name()
               + "'");
        if (e.s == "+")
          return v;
        return v.is_float() ? value(-v.as_float()) : value(sub(0, v.as_int()));
      }
      case expr::binary: return binary(e, sc);
      case expr::ternary:
        if (eval(*e.kids[1], sc).truthy())
          return eval(*e.kids[0], sc);
        return e.kids[2] ? eval(*e.kids[2], sc) : value();
      case expr::list_lit: {
        list l;
        for (const auto& k : e.kids)
          l.push_back(eval(*k, sc));
        return l;
      }
      case expr::dict_lit: {
        dict d;
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2)
          d.set(eval(*e.kids[i], sc).str(), eval(*e.kids[i + 1], sc));
        return d;
      }
    }
    return {};
  }

private:
  static std::string describe(const expr& e) {
    switch (e.k) {
      case expr::name: return e.s;
      case expr::attr: return describe(*e.kids[0]) + "." + e.s;
      case expr::item: return describe(*e.kids[0]) + "[...]";
      default: return "value";
    }
  }

  value binary(const expr& e, const scope_ptr& sc) {
    const std::string& op = e.s;
    if (op == "and") {
      value a = eval(*e.kids[0], sc);
      return a.truthy() ? eval(*e.kids[1], sc) : a;
    }
    if (op == "or") {
      value a = eval(*e.kids[0], sc);
      return a.truthy() ? a : eval(*e.kids[1], sc);
    }
    value a = eval(*e.kids[0], sc);
    value b = eval(*e.kids[1], sc);
    auto where = [&] { return "line " + std::to_string(e.line) + ": "; };
    if (op == "~")
      return a.str() + b.str();
    if (op == "==")
      return a.equals(b);
    if (op == "!=")
      return !a.equals(b);
    if (op == "in")
      return contains(b, a);
    if (op == "not in")
      return !contains(b, a);
    if (op == "<")
      return less(a, b);
    if (op == ">")
      return less(b, a);
    if (op == "<=")
      return !less(b, a);
    if (op == ">=")
      return !less(a, b);
    auto unsupported = [&]() -> value {
      fail(where() + "unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name()
           + "'");
    };
    if (op == "+") {
      if (a.is_string() && b.is_string())
        return a.as_string() + b.as_string();
      if (a.is_list() && b.is_list()) {
        list l = a.as_list();
        l.insert(l.end(), b.as_list().begin(), b.as_list().end());
        return l;
      }
    }
    if (op == "*") {
      const value* s = a.is_string() || a.is_list() ? &a : b.is_string() || b.is_list() ? &b : nullptr;
      const value* n = s == &a ? &b : &a;
      if (s && (n->is_int() || n->is_bool())) {
        int64_t k = n->as_int();
        int64_t total = 0;
        if (__builtin_mul_overflow(k, std::max<int64_t>(1, length(*s)), &total)
            || total > static_cast<int64_t>(limits_.max_output))
          fail(where() + "a repetition too large for a template");
        if (s->is_string()) {
          std::string r;
          for (int64_t i = 0; i < k; ++i)
            r += s->as_string();
          return r;
        }
        list l;
        for (int64_t i = 0; i < k; ++i)
          l.insert(l.end(), s->as_list().begin(), s->as_list().end());
        return l;
      }
    }
    if (!a.is_number() || !b.is_number())
      return unsupported();
    bool ints = !a.is_float() && !b.is_float();
    if (op == "+")
      return ints ? value(add(a.as_int(), b.as_int())) : value(a.as_float() + b.as_float());
    if (op == "-")
      return ints ? value(sub(a.as_int(), b.as_int())) : value(a.as_float() - b.as_float());
    if (op == "*")
      return ints ? value(mul(a.as_int(), b.as_int())) : value(a.as_float() * b.as_float());
    if (op == "/") {
      if (b.as_float() == 0)
        fail(where() + "division by zero");
      return a.as_float() / b.as_float();
    }
    if (op == "//" || op == "%") {
      if (b.as_float() == 0)
        fail(where() + (op == "//" ? "integer division or modulo by zero" : "modulo by zero"));
      if (ints) {
        int64_t x = a.as_int(), y = b.as_int();
        if (y == -1)  // x / -1 overflows for the smallest x; x % -1 is 0
          return op == "//" ? value(sub(0, x)) : value(int64_t{0});
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0)))
          --q, r += y;
        return op == "//" ? value(q) : value(r);
      }
      double x = a.as_float(), y = b.as_float();
      double q = std::floor(x / y);
      return op == "//" ? value(q) : value(x - q * y);
    }
    if (op == "**") {
      if (ints && b.as_int() >= 0) {
        int64_t r = 1, base = a.as_int();
        for (int64_t e = b.as_int(); e > 0; e >>= 1) {  // by squaring
          if (e & 1)
            r = mul(r, base);
          if (e > 1)
            base = mul(base, base);
        }
        return r;
      }
      return std::pow(a.as_float(), b.as_float());
    }
    return unsupported();
  }

  value bound(const value& self, std::string name) {
    return function([this, self, name](call_args& a) { return method(self, name, a); });
  }

  value get_attr(const value& obj, const std::string& name) {
    if (obj.is_dict()) {
      const auto& d = obj.as_dict();
      if (!d.is_namespace && (name == "items" || name == "keys" || name == "values" || name == "get"))
        return bound(obj, name);
      const value* v = d.find(name);
      return v ? *v : value();
    }
    if (obj.is_string() || obj.is_list())
      return has_method(obj, name) ? bound(obj, name) : value();
    return {};
  }

  value get_item(const value& obj, const value& key) {
    if (obj.is_dict()) {
      if (key.is_string()) {
        if (const value* v = obj.as_dict().find(key.as_string()))
          return *v;
        return get_attr(obj, key.as_string());
      }
      return {};
    }
    if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      int64_t i = key.as_int();
      if (obj.is_list()) {
        auto n = static_cast<int64_t>(obj.as_list().size());
        if (i < 0)
          i += n;
        return i >= 0 && i < n ? obj.as_list()[static_cast<size_t>(i)] : value();
      }
      auto cs = decode(obj.as_string());
      auto n = static_cast<int64_t>(cs.size());
      if (i < 0)
        i += n;
      return i >= 0 && i < n ? value(encode(cs[static_cast<size_t>(i)])) : value();
    }
    if (key.is_string())
      return get_attr(obj, key.as_string());
    return {};
  }

  static bool has_method(const value& v, const std::string& n) {
    static const char* str_methods[] = {"strip",  "lstrip",     "rstrip",     "split",   "rsplit", "startswith",
                                        "endswith", "upper",    "lower",      "title",   "capitalize",
                                        "replace", "find",      "rfind",      "count",   "join",   "splitlines",
                                        "isdigit", "isalpha",   "isalnum",    "isspace", "islower", "isupper",
                                        "format"};
    if (v.is_string())
      return std::any_of(std::begin(str_methods), std::end(str_methods), [&](const char* m) { return n == m; });
    if (v.is_list())
      return n == "index" || n == "count" || n == "append" || n == "pop" || n == "insert" || n == "extend";
    return false;
  }

  static std::vector<std::string> split(const std::string& s, const value& sep, int64_t maxsplit) {
    std::vector<std::string> out;
    if (sep.is_undefined() || sep.is_none()) {
      size_t i = 0;
      while (i < s.size()) {
        while (i < s.size() && is_space(s[i]))
          ++i;
        if (i >= s.size())
          break;
        if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
          size_t e = s.size();
          while (e > i && is_space(s[e - 1]))
            --e;
          out.push_back(s.substr(i, e - i));
          break;
        }
        size_t j = i;
        while (j < s.size() && !is_space(s[j]))
          ++j;
        out.push_back(s.substr(i, j - i));
        i = j;
      }
      return out;
    }
    const std::string& d = sep.str();
    if (d.empty())
      fail("empty separator");
    size_t i = 0;
    for (;;) {
      size_t j = s.find(d, i);
      if (j == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
        out.push_back(s.substr(i));
        return out;
      }
      out.push_back(s.substr(i, j - i));
      i = j + d.size();
    }
  }

  static std::string title(const std::string& s) {
    std::string out = s;
    bool prev_letter = false;
    for (auto& c : out) {
      bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
      if (letter)
        c = static_cast<char>(prev_letter ? std::tolower(static_cast<unsigned char>(c))
                                          : std::toupper(static_cast<unsigned char>(c)));
      prev_letter = letter;
    }
    return out;
  }

  static std::string lower(std::string s) {
    for (auto& c : s)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  static std::string upper(std::string s) {
    for (auto& c : s)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }

  static std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
    if (from.empty())
      fail("replace: an empty pattern is not supported");
    std::string out;
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
      size_t j = s.find(from, i);
      if (j == std::string::npos || (count >= 0 && done == count)) {
        out += s.substr(i);
        return out;
      }
      out += s.substr(i, j - i) + to;
      i = j + from.size();
      ++done;
    }
  }

  value method(const value& self, const std::string& n, call_args& a) {
    if (self.is_dict()) {
      const auto& d = self.as_dict();
      if (n == "get") {
        const value* v = d.find(arg(a, 0, "key").str());
        return v ? *v : arg(a, 1, "default", nullptr);
      }
      list l;
      for (const auto& [k, v] : d.items) {
        if (n == "items")
          l.emplace_back(list{k, v});
        else if (n == "keys")
          l.emplace_back(k);
        else
          l.push_back(v);
      }
      return l;
    }
    if (self.is_list()) {
      if (n == "index" || n == "count") {
        value x = arg(a, 0, "value");
        const auto& l = self.as_list();
        int64_t c = 0;
        for (size_t i = 0; i < l.size(); ++i)
          if (l[i].equals(x)) {
            if (n == "index")
              return static_cast<int64_t>(i);
            ++c;
          }
        if (n == "index")
          fail(x.repr() + " is not in list");
        return c;
      }
      // ImmutableSandboxedEnvironment refuses to modify lists, as HF renders.
      fail("access to attribute '" + n + "' of 'list' object is unsafe");
    }
    const std::string& s = self.as_string();
    if (n == "strip" || n == "lstrip" || n == "rstrip")
      return strip_chars(s, arg(a, 0, "chars"), n != "rstrip", n != "lstrip");
    if (n == "split" || n == "rsplit") {
      int64_t maxsplit = arg(a, 1, "maxsplit", int64_t{-1}).as_int();
      if (n == "rsplit" && maxsplit >= 0)
        fail("rsplit with maxsplit is not supported");
      list l;
      for (auto& p : split(s, arg(a, 0, "sep"), maxsplit))
        l.emplace_back(p);
      return l;
    }
    if (n == "startswith" || n == "endswith") {
      value p = arg(a, 0, "prefix");
      std::vector<value> ps = p.is_list() ? p.as_list() : std::vector<value>{p};
      for (const auto& x : ps) {
        const std::string& t = x.str();
        bool hit = n == "startswith" ? s.compare(0, t.size(), t) == 0
                                     : s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
        if (hit)
          return true;
      }
      return false;
    }
    if (n == "upper")
      return upper(s);
    if (n == "lower")
      return lower(s);
    if (n == "title")
      return title(s);
    if (n == "capitalize")
      return s.empty() ? s : upper(s.substr(0, 1)) + lower(s.substr(1));
    if (n == "replace")
      return replace(s, arg(a, 0, "old").str(), arg(a, 1, "new").str(), arg(a, 2, "count", int64_t{-1}).as_int());
    if (n == "find" || n == "rfind") {
      std::string t = arg(a, 0, "sub").str();
      size_t p = n == "find" ? s.find(t) : s.rfind(t);
      return p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(decode(s.substr(0, p)).size());
    }
    if (n == "count") {
      std::string t = arg(a, 0, "sub").str();
      if (t.empty())
        return length(self) + 1;
      int64_t c = 0;
      for (size_t p = s.find(t); p != std::string::npos; p = s.find(t, p + t.size()))
        ++c;
      return c;
    }
    if (n == "join") {
      std::string out;
      bool first = true;
      for (const auto& x : iterate(arg(a, 0, "iterable"))) {
        if (!first)
          out += s;
        first = false;
        out += x.str();
      }
      return out;
    }
    if (n == "splitlines") {
      list l;
      for (auto& p : split(s, "\n", -1))
        l.emplace_back(p);
      if (!s.empty() && s.back() == '\n')
        l.pop_back();
      if (s.empty())
        l.clear();
      return l;
    }
    auto all = [&](auto pred) {
      return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) { return pred(static_cast<unsigned char>(c)) != 0; });
    };
    if (n == "isdigit")
      return all(::isdigit);
    if (n == "isalpha")
      return all(::isalpha);
    if (n == "isalnum")
      return all(::isalnum);
    if (n == "isspace")
      return all(::isspace);
    if (n == "islower")
      return std::any_of(s.begin(), s.end(), ::islower) && !std::any_of(s.begin(), s.end(), ::isupper);
    if (n == "isupper")
      return std::any_of(s.begin(), s.end(), ::isupper) && !std::any_of(s.begin(), s.end(), ::islower);
    if (n == "format") {
      // str.format with {} and {0}/{name} fields.
      std::string out;
      size_t auto_i = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
          out += '{';
          ++i;
        } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
          out += '}';
          ++i;
        } else if (s[i] == '{') {
          size_t e = s.find('}', i);
          if (e == std::string::npos)
            fail("format: a '{' is not closed");
          std::string field = s.substr(i + 1, e - i - 1);
          value v;
          if (field.empty())
            v = arg(a, auto_i++, "");
          else if (std::all_of(field.begin(), field.end(), ::isdigit))
            v = arg(a, static_cast<size_t>(std::strtoull(field.c_str(), nullptr, 10)), "");
          else if (const value* kw = keyword(a, field.c_str()))
            v = *kw;
          else
            fail("format: no argument '" + field + "'");
          out += v.str();
          i = e;
        } else {
          out += s[i];
        }
      }
      return out;
    }
    fail("'str' object has no method '" + n + "'");
  }

  // attribute= for map/sort/sum/join/selectattr: dotted paths allowed.
  value path(const value& v, const std::string& p) {
    value cur = v;
    size_t i = 0;
    while (i <= p.size()) {
      size_t j = p.find('.', i);
      if (j == std::string::npos)
        j = p.size();
      std::string part = p.substr(i, j - i);
      if (cur.is_undefined())
        return cur;
      if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit))
        cur = get_item(cur, value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10))));
      else
        cur = get_item(cur, value(part));
      i = j + 1;
    }
    return cur;
  }

  value filter(const std::string& name, value v, call_args& a, const scope_ptr& sc) {
    if (name == "trim")
      return strip_chars(v.str(), arg(a, 0, "chars"), true, true);
    if (name == "tojson") {
      value ind = arg(a, 0, "indent");
      return v.to_json(ind.is_int() ? static_cast<int>(ind.as_int()) : -1);
    }
    if (name == "length" || name == "count")
      return length(v);
    if (name == "string")
      return v.str();
    if (name == "safe")
      return v;
    if (name == "upper")
      return upper(v.str());
    if (name == "lower")
      return lower(v.str());
    if (name == "capitalize") {
      std::string s = v.str();
      return s.empty() ? s : upper(s.substr(0, 1)) + lower(s.substr(1));
    }
    if (name == "title")
      return title(v.str());
    if (name == "default" || name == "d") {
      bool boolean = arg(a, 1, "boolean", false).truthy();
      if (v.is_undefined() || (boolean && !v.truthy()))
        return arg(a, 0, "default_value", "");
      return v;
    }
    if (name == "first" || name == "last") {
      auto items = iterate(v);
      if (items.empty())
        return {};
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list")
      return list(iterate(v));
    if (name == "items") {
      if (v.is_undefined())
        return list{};
      if (!v.is_dict())
        fail("items: can only get item pairs from a mapping");
      return method(v, "items", a);
    }
    if (name == "dictsort") {
      if (!v.is_dict())
        fail("dictsort: a mapping is required");
      auto items = v.as_dict().items;
      bool by_value = arg(a, 1, "by", "key").str() == "value";
      bool reverse = arg(a, 2, "reverse", false).truthy();
      std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
        return by_value ? less(x.second, y.second) : lower(x.first) < lower(y.first);
      });
      if (reverse)
        std::reverse(items.begin(), items.end());
      list l;
      for (auto& [k, val] : items)
        l.emplace_back(list{k, val});
      return l;
    }
    if (name == "join") {
      std::string sep = arg(a, 0, "d", "").str();
      value attr = arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (auto& x : iterate(v)) {
        if (!first)
          out += sep;
        first = false;
        out += (attr.is_undefined() ? x : path(x, attr.str())).str();
      }
      return out;
    }
    if (name == "replace")
      return replace(v.str(), arg(a, 0, "old").str(), arg(a, 1, "new").str(), arg(a, 2, "count", int64_t{-1}).as_int());
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      bool attr = name.size() > 6;
      bool keep_when = name[0] == 's';
      list out;
      for (auto& x : iterate(v)) {
        value subject = attr ? path(x, arg(a, 0, "attribute").str()) : x;
        size_t ti = attr ? 1 : 0;
        bool r;
        if (a.positional.size() <= ti) {
          r = subject.truthy();
        } else {
          call_args targs;
          targs.positional.assign(a.positional.begin() + static_cast<long>(ti) + 1, a.positional.end());
          r = test(a.positional[ti].str(), subject, targs);
        }
        if (r == keep_when)
          out.push_back(x);
      }
      return out;
    }
    if (name == "map") {
      list out;
      if (const value* attr = keyword(a, "attribute")) {
        value def = keyword(a, "default") ? *keyword(a, "default") : value();
        for (auto& x : iterate(v)) {
          value r = path(x, attr->str());
          out.push_back(r.is_undefined() ? def : r);
        }
        return out;
      }
      if (a.positional.empty())
        fail("map: a filter name or attribute= is required");
      std::string f = a.positional[0].str();
      call_args fargs;
      fargs.positional.assign(a.positional.begin() + 1, a.positional.end());
      fargs.keywords = a.keywords;
      for (auto& x : iterate(v))
        out.push_back(filter(f, x, fargs, sc));
      return out;
    }
    if (name == "unique") {
      list out;
      for (auto& x : iterate(v))
        if (std::none_of(out.begin(), out.end(), [&](const value& y) { return y.equals(x); }))
          out.push_back(x);
      return out;
    }
    if (name == "reverse") {
      if (v.is_string()) {
        auto cs = decode(v.as_string());
        std::reverse(cs.begin(), cs.end());
        return encode(cs);
      }
      auto items = iterate(v);
      std::reverse(items.begin(), items.end());
      return list(std::move(items));
    }
    if (name == "sort") {
      auto items = iterate(v);
      bool reverse = arg(a, 0, "reverse", false).truthy();
      value attr = arg(a, 2, "attribute");
      std::stable_sort(items.begin(), items.end(), [&](const value& x, const value& y) {
        value kx = attr.is_undefined() ? x : path(x, attr.str());
        value ky = attr.is_undefined() ? y : path(y, attr.str());
        if (kx.is_string() && ky.is_string())
          return lower(kx.as_string()) < lower(ky.as_string());
        return less(kx, ky);
      });
      if (reverse)
        std::reverse(items.begin(), items.end());
      return list(std::move(items));
    }
    if (name == "sum") {
      value attr = arg(a, 0, "attribute");
      value total = arg(a, 1, "start", int64_t{0});
      for (auto& x : iterate(v)) {
        value y = attr.is_undefined() ? x : path(x, attr.str());
        if (!y.is_number())
          fail("sum: unsupported operand type '" + y.type_name() + "'");
        total = total.is_float() || y.is_float() ? value(total.as_float() + y.as_float())
                                                 : value(add(total.as_int(), y.as_int()));
      }
      return total;
    }
    if (name == "min" || name == "max") {
      auto items = iterate(v);
      if (items.empty())
        return {};
      value best = items[0];
      for (auto& x : items)
        if (name == "min" ? less(x, best) : less(best, x))
          best = x;
      return best;
    }
    if (name == "int") {
      if (v.is_int() || v.is_bool())
        return v.as_int();
      if (v.is_float())
        return static_cast<int64_t>(v.as_float());
      const std::string s = v.str();
      char* end = nullptr;
      long long r = std::strtoll(s.c_str(), &end, 10);
      if (end != s.c_str() && *end == 0)
        return static_cast<int64_t>(r);
      double d = std::strtod(s.c_str(), &end);
      if (end != s.c_str() && *end == 0)
        return static_cast<int64_t>(d);
      return arg(a, 0, "default", int64_t{0});
    }
    if (name == "float") {
      if (v.is_number())
        return v.as_float();
      const std::string s = v.str();
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      return end != s.c_str() && *end == 0 ? value(d) : arg(a, 0, "default", 0.0);
    }
    if (name == "abs") {
      if (!v.is_number())
        fail("abs: bad operand type '" + v.type_name() + "'");
      return v.is_float() ? value(std::fabs(v.as_float())) : value(v.as_int() < 0 ? sub(0, v.as_int()) : v.as_int());
    }
    if (name == "round") {
      int64_t prec = arg(a, 0, "precision", int64_t{0}).as_int();
      std::string method = arg(a, 1, "method", "common").str();
      double scale = std::pow(10.0, static_cast<double>(prec));
      double x = v.as_float() * scale;
      x = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
      return x / scale;
    }
    if (name == "indent") {
      value w = arg(a, 0, "width", int64_t{4});
      std::string ind = w.is_string() ? w.as_string() : std::string(static_cast<size_t>(std::max<int64_t>(0, w.as_int())), ' ');
      bool first = arg(a, 1, "first", false).truthy();
      bool blank = arg(a, 2, "blank", false).truthy();
      std::string s = v.str() + "\n";
      auto lines = split(s, "\n", -1);
      lines.pop_back();  // splitlines: the piece after the last newline
      std::string rv;
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i > 0) {
          rv += "\n";
          if (blank || !lines[i].empty())
            rv += ind;
        }
        rv += lines[i];
      }
      if (first)
        rv = ind + rv;
      return rv;
    }
    if (name == "wordcount") {
      int64_t n = 0;
      bool in = false;
      for (char c : v.str()) {
        bool w = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
        n += w && !in;
        in = w;
      }
      return n;
    }
    if (name == "escape" || name == "e" || name == "forceescape") {
      std::string out;
      for (char c : v.str()) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out += c;
        }
      }
      return out;
    }
    if (name == "format")
      return python_format(v.str(), a.positional);
    if (name == "attr")
      return get_attr(v, arg(a, 0, "name").str());
    (void)sc;
    fail("no filter named '" + name + "'");
  }

  bool test(const std::string& name, const value& v, const call_args& a) {
    if (name == "defined")
      return !v.is_undefined();
    if (name == "undefined")
      return v.is_undefined();
    if (name == "none")
      return v.is_none();
    if (name == "boolean")
      return v.is_bool();
    if (name == "true")
      return v.is_bool() && v.as_bool();
    if (name == "false")
      return v.is_bool() && !v.as_bool();
    if (name == "integer")
      return v.is_int();
    if (name == "float")
      return v.is_float();
    if (name == "number")
      return v.is_number();
    if (name == "string")
      return v.is_string();
    if (name == "mapping")
      return v.is_dict() && !v.as_dict().is_namespace;
    if (name == "iterable")  // Undefined iterates (as empty) in jinja2
      return v.is_undefined() || v.is_string() || v.is_list() || (v.is_dict() && !v.as_dict().is_namespace);
    if (name == "sequence")
      return v.is_string() || v.is_list() || (v.is_dict() && !v.as_dict().is_namespace);
    if (name == "callable")
      return v.is_callable();
    value other = arg(a, 0, "other");
    if (name == "sameas") {
      if (v.is_list() && other.is_list())
        return &v.as_list() == &other.as_list();
      if (v.is_dict() && other.is_dict())
        return &v.as_dict() == &other.as_dict();
      return (v.is_none() && other.is_none()) || (v.is_bool() && other.is_bool() && v.as_bool() == other.as_bool());
    }
    if (name == "eq" || name == "equalto" || name == "==")
      return v.equals(other);
    if (name == "ne" || name == "!=")
      return !v.equals(other);
    if (name == "lt" || name == "lessthan" || name == "<")
      return less(v, other);
    if (name == "le" || name == "<=")
      return !less(other, v);
    if (name == "gt" || name == "greaterthan" || name == ">")
      return less(other, v);
    if (name == "ge" || name == ">=")
      return !less(v, other);
    if (name == "in")
      return contains(other, v);
    if (name == "odd" || name == "even") {
      int64_t x = v.as_int();
      return (x % 2 != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      int64_t d = other.as_int();
      if (d == 0)
        fail("divisibleby: division by zero");
      return v.as_int() % d == 0;
    }
    if (name == "lower")
      return v.is_string() && lower(v.as_string()) == v.as_string();
    if (name == "upper")
      return v.is_string() && upper(v.as_string()) == v.as_string();
    if (name == "escaped")
      return false;
    fail("no test named '" + name + "'");
  }

  std::time_t now_;
  render_limits limits_;
  int64_t steps_ = 0;
  int depth_ = 0;
};

}  // namespace

template_ template_::parse(std::string_view source) {
  template_ t;
  t.body_ = std::make_shared<const body>(parser(lexer(source).run()).run());
  return t;
}

std::string template_::render(const value& context, std::time_t now, const render_limits& limits) const {
  renderer r(now, limits);
  auto sc = r.globals(context);
  std::string out;
  r.exec(*body_, sc, out);
  return out;
}

}  // namespace llmux::engine::jinja
