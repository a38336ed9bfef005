// The Jinja engine against Python's jinja2: every template in
// tests/data/chat_templates rendered on the conversations of
// make_reference.py, byte for byte (or failing where jinja2 fails); then the
// errors and bounds a template from a model file can run into.

#include <catch2/catch.hpp>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "engine/jinja.hpp"
#include "tests/engine/test_data.hpp"

using namespace llmux::engine;

namespace {

const std::string dir = LLMUX_SOURCE_DIR "/tests/data/chat_templates/";


std::string render(const std::string& src, const nlohmann::ordered_json& ctx = nlohmann::ordered_json::object()) {
  return jinja::template_::parse(src).render(jinja::value::from_json(ctx));
}

}  // namespace

TEST_CASE("chat templates render as jinja2 renders them", "[jinja]") {
  // strftime_now reads local time, as transformers does; the reference was
  // made in UTC.
  setenv("TZ", "UTC", 1);
  tzset();
  auto ref = nlohmann::ordered_json::parse(llmux::test::read_text(dir + "reference.json"));
  auto now = static_cast<std::time_t>(ref["now"].get<int64_t>());
  int outputs = 0, errors = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["template"].get<std::string>() + " / " + c["case"].get<std::string>();
    INFO(name);
    auto tmpl = jinja::template_::parse(llmux::test::read_text(dir + c["template"].get<std::string>()));
    auto ctx = jinja::value::from_json(c["context"]);
    if (c.contains("output")) {
      std::string got;
      REQUIRE_NOTHROW(got = tmpl.render(ctx, now));
      CHECK(got == c["output"].get<std::string>());
      ++outputs;
    } else {
      // jinja2 failed: raise_exception's message must come through as it
      // is; other failures (a type error, runaway recursion) just fail.
      try {
        (void)tmpl.render(ctx, now);
        FAIL("rendered where jinja2 fails");
      } catch (const jinja::error& e) {
        if (c["error"].is_string())
          CHECK(std::string(e.what()) == c["error"].get<std::string>());
      }
      ++errors;
    }
  }
  // The reference holds both kinds (a regenerated file cannot silently drop one).
  CHECK(outputs >= 70);
  CHECK(errors >= 3);
}

TEST_CASE("jinja: values print as Python prints them", "[jinja]") {
  CHECK(render("{{ x }}|{{ y }}|{{ z }}", {{"x", nullptr}, {"y", true}, {"z", 2.0}}) == "None|True|2.0");
  CHECK(render("{{ [1, 'a', none] }}") == "[1, 'a', None]");
  CHECK(render("{{ {'k': 'it\\'s'} }}") == "{'k': \"it's\"}");
  CHECK(render("{{ 1e100 }} {{ 1/3 }} {{ -0.0001 }} {{ 1e16 }}") == "1e+100 0.3333333333333333 -0.0001 1e+16");
  CHECK(render("{{ x | tojson }}", {{"x", {{"a", "é\x01"}}}}) == "{\"a\": \"é\\u0001\"}");
}

TEST_CASE("jinja: bad templates fail at parse with their line", "[jinja]") {
  auto parse_error = [](const std::string& src) {
    try {
      (void)jinja::template_::parse(src);
    } catch (const jinja::error& e) {
      return std::string(e.what());
    }
    return std::string("parsed");
  };
  CHECK(parse_error("a\n{% if x %}\nno end").find("line 3") != std::string::npos);
  CHECK(parse_error("{{ 'open }}").find("not closed") != std::string::npos);
  CHECK(parse_error("{% include 'x' %}").find("not supported") != std::string::npos);
  CHECK(parse_error("{{ a + }}").find("line 1") != std::string::npos);
  CHECK(parse_error("{% endfor %}").find("unexpected") != std::string::npos);
  CHECK(parse_error("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}").find("too deep") != std::string::npos);
  CHECK(parse_error("{{ " + std::string(300, '-') + "1 }}").find("too deep") != std::string::npos);
  std::string ifs;
  for (int i = 0; i < 300; ++i)
    ifs += "{% if x %}";
  CHECK(parse_error(ifs).find("too deep") != std::string::npos);
  CHECK(parse_error("{{ '\\uZZZZ' }}").find("bad escape") != std::string::npos);
}

TEST_CASE("jinja: render errors say what failed", "[jinja]") {
  auto render_error = [](const std::string& src, const nlohmann::ordered_json& ctx) {
    try {
      (void)render(src, ctx);
    } catch (const jinja::error& e) {
      return std::string(e.what());
    }
    return std::string("rendered");
  };
  auto obj = nlohmann::ordered_json::object();
  CHECK(render_error("{{ raise_exception('no tools here') }}", obj) == "no tools here");
  CHECK(render_error("{{ m.a.b }}", {{"m", obj}}).find("'m.a' is undefined") != std::string::npos);
  CHECK(render_error("{{ 'a' + 1 }}", obj).find("unsupported operand") != std::string::npos);
  CHECK(render_error("{{ 2 ** 63 }}", obj).find("integer overflow") != std::string::npos);
  CHECK(render_error("{{ 9223372036854775807 + 1 }}", obj).find("integer overflow") != std::string::npos);
  CHECK(render("{{ 2 ** 62 }} {{ (-1) ** 101 }} {{ -9223372036854775807 // -1 }}")
        == "4611686018427387904 -1 9223372036854775807");
  CHECK(render_error("{{ x | nosuchfilter }}", obj).find("no filter named 'nosuchfilter'") != std::string::npos);
  CHECK(render_error("{{ 1 is nosuchtest }}", obj).find("no test named") != std::string::npos);
  CHECK(render_error("{% set l = [] %}{{ l.append(1) }}", obj).find("unsafe") != std::string::npos);
  // Undefined: prints empty, iterates empty, is false; reading through it fails.
  CHECK(render("[{{ u }}]{% for x in u %}x{% endfor %}{{ u | length }}{{ 'T' if u else 'F' }}") == "[]0F");
}

TEST_CASE("jinja: a template cannot run away with the edge", "[jinja]") {
  jinja::render_limits small;
  small.max_steps = 100000;
  small.max_output = 1000;
  auto run = [&](const std::string& src) {
    try {
      (void)jinja::template_::parse(src).render(jinja::value(jinja::dict{}), std::time(nullptr), small);
    } catch (const jinja::error& e) {
      return std::string(e.what());
    }
    return std::string("rendered");
  };
  CHECK(run("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("deeper") != std::string::npos);
  CHECK(run("{% for i in range(1000000) %}{% endfor %}").find("too long") != std::string::npos);
  CHECK(run("{% for i in range(90000) %}{% for j in range(10) %}{% endfor %}{% endfor %}").find("steps")
        != std::string::npos);
  CHECK(run("{{ 'x' * 100000 }}").find("too large") != std::string::npos);
  CHECK(run("{% for i in range(2000) %}ab{% endfor %}").find("output") != std::string::npos);
}

TEST_CASE("jinja: namespaces carry state out of loops; plain sets do not", "[jinja]") {
  CHECK(render("{% set ns = namespace(n=0) %}{% set x = 0 %}{% for i in range(3) %}"
               "{% set ns.n = ns.n + i %}{% set x = x + 1 %}{% endfor %}{{ ns.n }} {{ x }}")
        == "3 0");
  // A set inside one iteration is gone in the next (jinja2 scopes per iteration).
  CHECK(render("{% for i in range(2) %}{% if i == 0 %}{% set y = 'a' %}{% endif %}[{{ y }}]{% endfor %}") == "[a][]");
}
