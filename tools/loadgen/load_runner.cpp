#include "tools/loadgen/load_runner.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace llmux::loadgen {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

httplib::Headers headers_for(const target& t) {
  httplib::Headers h;
  if (!t.api_key.empty())
    h.emplace("Authorization", "Bearer " + t.api_key);
  return h;
}

void configure(httplib::Client& cli, const target& t) {
  cli.set_keep_alive(true);
  cli.set_tcp_nodelay(true);
  const auto secs = static_cast<time_t>(t.timeout_s);
  cli.set_read_timeout(secs, 0);
  cli.set_write_timeout(secs, 0);
  cli.set_connection_timeout(10, 0);
}

// A stock text for /tokenize: varied words, so prompts are not one token repeated.
constexpr const char* stock_text =
  "The history of computing is a story of ideas that were tried, measured and kept when they "
  "worked. Early machines filled rooms; later ones fit in a pocket. Along the way people "
  "learned to share processors between many programs, to cache what is used often, and to "
  "move work to where the data lives. Serving language models repeats that story: many "
  "models, one pool of memory, and schedulers that decide who runs next. ";

request_result run_one(httplib::Client& cli, const target& t, const std::vector<int32_t>& source,
                       const planned_request& p, size_t index) {
  request_result r;
  nlohmann::json prompt = nlohmann::json::array();
  // Distinct prompts open with the request's index spelt in two digits of
  // base (distinct source ids): no two requests share a first block.
  std::vector<int32_t> digits;
  if (t.distinct_prompts) {
    digits = source;
    std::sort(digits.begin(), digits.end());
    digits.erase(std::unique(digits.begin(), digits.end()), digits.end());
  }
  for (int i = 0; i < p.prompt_tokens && !source.empty(); ++i) {
    if (!digits.empty() && i < 2) {
      prompt.push_back(digits[(i == 0 ? index : index / digits.size()) % digits.size()]);
      continue;
    }
    prompt.push_back(source[(index * 7 + static_cast<size_t>(i)) % source.size()]);
  }
  if (source.empty())
    prompt = t.text_prompt;
  nlohmann::json body{{"model", p.model.empty() ? t.model : p.model},
                      {"prompt", std::move(prompt)},
                      {"max_tokens", p.output_tokens},
                      {"temperature", t.temperature},
                      {"seed", index},
                      {"stream", t.stream}};
  if (t.stream)
    body["stream_options"] = {{"include_usage", true}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = headers_for(t);
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.dump();
  std::string buf;
  const auto t0 = clock_type::now();
  double last = -1;
  bool saw_done = false;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    buf.append(data, len);
    if (!t.stream)
      return true;
    for (size_t end; (end = buf.find("\n\n")) != std::string::npos; buf.erase(0, end + 2)) {
      const std::string ev = buf.substr(0, end);
      if (ev.compare(0, 6, "data: ") != 0)
        continue;
      const std::string payload = ev.substr(6);
      if (payload == "[DONE]") {
        saw_done = true;
        continue;
      }
      auto j = nlohmann::json::parse(payload, nullptr, false);
      if (j.is_discarded()) {
        r.error = "unparsable event: " + payload.substr(0, 200);
        return false;
      }
      if (j.contains("error")) {
        r.error = "error event: " + j["error"].value("message", std::string{});
        return false;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        r.output_tokens = j["usage"].value("completion_tokens", 0);
        r.prompt_tokens = j["usage"].value("prompt_tokens", 0);
      }
      if (j.contains("choices") && !j["choices"].empty()
          && !j["choices"][0].value("text", std::string{}).empty()) {
        const double now = since(t0);
        if (last < 0)
          r.ttft_s = now;
        else
          r.itl_s.push_back(now - last);
        last = now;
      }
    }
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool sent = cli.send(req, res, err);
  r.e2e_s = since(t0);
  r.status = sent ? res.status : 0;
  if (!t.stream && sent && res.status == 200) {
    // One answer: its arrival is the first (and only) text.
    auto j = nlohmann::json::parse(buf, nullptr, false);
    if (j.is_discarded() || !j.contains("choices"))
      r.error = "unparsable answer: " + buf.substr(0, 200);
    else {
      saw_done = true;
      last = r.ttft_s = r.e2e_s;
      if (j.contains("usage") && j["usage"].is_object()) {
        r.output_tokens = j["usage"].value("completion_tokens", 0);
        r.prompt_tokens = j["usage"].value("prompt_tokens", 0);
      }
    }
  }
  if (!sent && r.error.empty())
    r.error = "no answer: " + httplib::to_string(err);
  else if (sent && res.status != 200 && r.error.empty())
    r.error = "HTTP " + std::to_string(res.status) + ": " + buf.substr(0, 300);
  else if (sent && r.error.empty() && !saw_done)
    r.error = "the stream ended without [DONE]";
  r.ok = r.error.empty() && last >= 0;
  if (r.error.empty() && last < 0)
    r.error = "no text came back";
  return r;
}

}  // namespace

std::vector<int32_t> prompt_source(const target& t) {
  httplib::Client cli{t.url};
  configure(cli, t);
  nlohmann::json body{{"model", t.model}, {"prompt", stock_text}, {"add_special_tokens", false}};
  auto res = cli.Post("/tokenize", headers_for(t), body.dump(), "application/json");
  if (!res)
    throw std::runtime_error("POST " + t.url + "/tokenize: " + httplib::to_string(res.error()));
  auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status != 200 || !j.is_object() || !j.contains("tokens") || j["tokens"].empty())
    throw std::runtime_error("POST " + t.url + "/tokenize answered " + std::to_string(res->status)
                             + ": " + res->body.substr(0, 300));
  return j["tokens"].get<std::vector<int32_t>>();
}

std::vector<request_result> run_plan(const target& t, const std::vector<planned_request>& plan,
                                     int workers, const std::vector<int32_t>& source,
                                     double& duration_s) {
  return run_plan(t, plan, workers, std::map<std::string, std::vector<int32_t>>{{t.model, source}}, duration_s);
}

std::vector<request_result> run_plan(const target& t, const std::vector<planned_request>& plan, int workers,
                                     const std::map<std::string, std::vector<int32_t>>& sources,
                                     double& duration_s) {
  static const std::vector<int32_t> none;
  auto source_of = [&](const planned_request& p) -> const std::vector<int32_t>& {
    auto it = sources.find(p.model.empty() ? t.model : p.model);
    return it == sources.end() ? none : it->second;
  };
  std::vector<request_result> results(plan.size());
  std::atomic<size_t> next{0};
  // Connections are shared, most recently used first: a request takes one
  // only when it is due, so the connections opened track the real
  // concurrency rather than the worker count (a thread-per-connection
  // server would otherwise hold a thread for every idle one).
  std::mutex mtx;
  std::vector<std::unique_ptr<httplib::Client>> idle;
  auto take = [&] {
    std::lock_guard<std::mutex> g{mtx};
    if (idle.empty()) {
      auto cli = std::make_unique<httplib::Client>(t.url);
      configure(*cli, t);
      return cli;
    }
    auto cli = std::move(idle.back());
    idle.pop_back();
    return cli;
  };
  const auto start = clock_type::now();
  std::vector<std::thread> pool;
  for (int w = 0; w < std::max(1, workers); ++w)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < plan.size();) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<clock_type::duration>(
                                                std::chrono::duration<double>(plan[i].at_s)));
        auto cli = take();
        results[i] = run_one(*cli, t, source_of(plan[i]), plan[i], i);
        std::lock_guard<std::mutex> g{mtx};
        idle.push_back(std::move(cli));
      }
    });
  for (auto& th : pool)
    th.join();
  duration_s = since(start);
  return results;
}

}  // namespace llmux::loadgen
