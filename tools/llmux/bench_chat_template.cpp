#include "tools/llmux/bench_chat_template.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/jinja.hpp"

namespace llmux::tools {

int run_bench_chat_template(const chat_template_bench_options& opts) {
  auto slurp = [](const std::string& path, std::string& out) {
    std::ifstream in(path);
    if (!in)
      return false;
    out.assign(std::istreambuf_iterator<char>(in), {});
    return true;
  };
  std::string src, ctx_text;
  if (!slurp(opts.template_file, src) || !slurp(opts.context_file, ctx_text)) {
    std::cerr << "llmux bench chat-template: cannot read --template or --context\n";
    return 2;
  }
  auto ctx_json = nlohmann::ordered_json::parse(ctx_text, nullptr, false);
  if (!ctx_json.is_object()) {
    std::cerr << "llmux bench chat-template: --context must hold a JSON object\n";
    return 2;
  }
  using clock_type = std::chrono::steady_clock;
  auto us = [](clock_type::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
  try {
    auto t0 = clock_type::now();
    auto t = engine::jinja::template_::parse(src);
    const double parse_us = us(clock_type::now() - t0);
    // The context is converted per request in the edge (render_chat): part of the cost.
    std::vector<double> times;
    size_t bytes = 0;
    for (int i = 0; i < std::max(1, opts.reps); ++i) {
      t0 = clock_type::now();
      auto out = t.render(engine::jinja::value::from_json(ctx_json));
      times.push_back(us(clock_type::now() - t0));
      bytes = out.size();
    }
    std::sort(times.begin(), times.end());
    std::printf("{\"parse_us\": %.1f, \"render_us_median\": %.2f, \"render_us_min\": %.2f, \"renders\": %zu, "
                "\"output_bytes\": %zu}\n",
                parse_us, times[times.size() / 2], times.front(), times.size(), bytes);
  } catch (const engine::jinja::error& e) {
    std::cerr << "llmux bench chat-template: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace llmux::tools
