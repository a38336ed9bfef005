#pragma once
/// Jinja, the part of it Hugging Face chat templates use: a model's own
/// `tokenizer.chat_template` rendered in C++ the way transformers renders it
/// (jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks
/// and loop controls; HF's `tojson`, `raise_exception` and `strftime_now`).
///
/// Covered: text with `{{ }}`, `{% %}`, `{# #}` and the `-`/`+` whitespace
/// controls; if/elif/else, for (tuple targets, `if` filter, else, `loop`,
/// break/continue), set (names, `ns.attr`, tuples, blocks), macro, filter
/// blocks, raw, HF's `generation`; Python's literals, operators, slices,
/// calls with keywords, the filters and tests templates use, and the
/// string, dict and list methods they call. Not covered (a parse error
/// naming it): include/extends/import, call blocks.
///
/// Values follow Python's semantics where a template can see them: printing
/// (None, True, lists as their repr), truthiness, `/` and `//`, negative
/// indices, equality of dicts and lists, jinja's Undefined (prints empty,
/// iterates as empty, fails on attribute access and arithmetic).
///
/// Rendering is bounded: at most `render_limits::max_steps` statement and
/// expression steps, `max_output` bytes of output and `max_depth` nested
/// calls, so a template cannot hang or exhaust the edge; going past is an
/// error like any other.
///
/// Thread safety: a parsed template is immutable; render() may be called from
/// any number of threads at once. Errors are `jinja::error` (parse errors name
/// the line; render errors say what failed, `raise_exception` its message).

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace llmux::engine::jinja {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What a template's own `raise_exception(message)` throws: the template
/// refuses its input (say, roles that do not alternate), with `message`.
struct template_error : error {
  using error::error;
};

class value;
using list = std::vector<value>;

/// An ordered dict with string keys (Python dicts keep insertion order).
struct dict {
  std::vector<std::pair<std::string, value>> items;
  bool is_namespace = false;  ///< `namespace()`: attributes may be assigned
  [[nodiscard]] const value* find(std::string_view key) const;
  void set(const std::string& key, value v);
};

struct call_args {
  std::vector<value> positional;
  std::vector<std::pair<std::string, value>> keywords;
};

using function = std::function<value(call_args&)>;

/// A Python-like value. Lists, dicts and callables are shared by reference
/// (as in Python): copying a value copies the handle.
class value {
public:
  struct undefined_t {
    bool operator==(const undefined_t&) const { return true; }
  };
  using storage = std::variant<undefined_t, std::nullptr_t, bool, int64_t, double, std::string,
                               std::shared_ptr<list>, std::shared_ptr<dict>, std::shared_ptr<function>>;

  value() = default;  ///< undefined
  value(std::nullptr_t) : v_(nullptr) {}
  value(bool b) : v_(b) {}
  value(int v) : v_(static_cast<int64_t>(v)) {}
  value(int64_t v) : v_(v) {}
  value(double v) : v_(v) {}
  value(std::string s) : v_(std::move(s)) {}
  value(const char* s) : v_(std::string(s)) {}
  value(list l) : v_(std::make_shared<list>(std::move(l))) {}
  value(dict d) : v_(std::make_shared<dict>(std::move(d))) {}
  value(function f) : v_(std::make_shared<function>(std::move(f))) {}

  /// JSON → value (objects keep their key order).
  static value from_json(const nlohmann::ordered_json& j);

  [[nodiscard]] bool is_undefined() const { return std::holds_alternative<undefined_t>(v_); }
  [[nodiscard]] bool is_none() const { return std::holds_alternative<std::nullptr_t>(v_); }
  [[nodiscard]] bool is_bool() const { return std::holds_alternative<bool>(v_); }
  [[nodiscard]] bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  [[nodiscard]] bool is_float() const { return std::holds_alternative<double>(v_); }
  [[nodiscard]] bool is_number() const { return is_int() || is_float() || is_bool(); }
  [[nodiscard]] bool is_string() const { return std::holds_alternative<std::string>(v_); }
  [[nodiscard]] bool is_list() const { return std::holds_alternative<std::shared_ptr<list>>(v_); }
  [[nodiscard]] bool is_dict() const { return std::holds_alternative<std::shared_ptr<dict>>(v_); }
  [[nodiscard]] bool is_callable() const { return std::holds_alternative<std::shared_ptr<function>>(v_); }

  // Accessors: a value of another kind is a jinja::error naming both.
  [[nodiscard]] bool as_bool() const;
  [[nodiscard]] int64_t as_int() const;  ///< ints and bools
  [[nodiscard]] double as_float() const; ///< any number
  [[nodiscard]] const std::string& as_string() const;
  [[nodiscard]] list& as_list() const;
  [[nodiscard]] dict& as_dict() const;
  [[nodiscard]] function& as_callable() const;
  /// Python's name of the kind ("int", "str", "dict", "undefined", ...).
  [[nodiscard]] std::string type_name() const;

  /// Python's truth value (Undefined is false).
  [[nodiscard]] bool truthy() const;
  /// What `{{ v }}` prints: Python's str() (None, True, repr of containers);
  /// Undefined prints nothing.
  [[nodiscard]] std::string str() const;
  /// Python's repr().
  [[nodiscard]] std::string repr() const;
  /// json.dumps(v, ensure_ascii=False, indent=indent) — HF's tojson; indent
  /// < 0 is none. Throws for Undefined and callables.
  [[nodiscard]] std::string to_json(int indent = -1) const;
  /// Python's ==.
  [[nodiscard]] bool equals(const value& other) const;

private:
  storage v_;
};

struct render_limits {
  int64_t max_steps = 5'000'000;
  size_t max_output = 16u << 20;  ///< bytes
  int max_depth = 500;  ///< nested expressions and macro calls
};

class template_ {
public:
  /// Parses `source`; throws jinja::error (with the line) when it is not
  /// Jinja this engine reads.
  static template_ parse(std::string_view source);

  /// Renders with `context` (a dict: its keys are the template's variables;
  /// `raise_exception`, `strftime_now`, `namespace` and `range` are
  /// provided). `now` is the clock strftime_now reads (local time).
  [[nodiscard]] std::string render(const value& context, std::time_t now = std::time(nullptr),
                                   const render_limits& limits = {}) const;

  struct node;

private:
  std::shared_ptr<const std::vector<std::unique_ptr<node>>> body_;
};

}  // namespace llmux::engine::jinja
