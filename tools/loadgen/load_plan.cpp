#include "tools/loadgen/load_plan.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace llmux::loadgen {

namespace {

int to_int(const std::string& field, const std::string& text) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(field, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != field.size() || v < 1)
    throw std::invalid_argument("'" + text + "': '" + field + "' is not a positive integer");
  return v;
}

}  // namespace

int draw_length(const length_spec& s, std::mt19937_64& rng) {
  switch (s.dist) {
    case length_spec::kind::empirical:
      return s.samples[std::uniform_int_distribution<size_t>(0, s.samples.size() - 1)(rng)];
    case length_spec::kind::fixed: return s.mean;
    case length_spec::kind::uniform: return std::uniform_int_distribution<int>(s.min, s.max)(rng);
    case length_spec::kind::lognormal: {
      // mean of a log-normal = exp(mu + sigma²/2)
      const double mu = std::log(static_cast<double>(s.mean)) - s.sigma * s.sigma / 2.0;
      const double v = std::lognormal_distribution<double>(mu, s.sigma)(rng);
      return std::clamp(static_cast<int>(std::lround(v)), s.min, s.max);
    }
  }
  return s.mean;
}

length_spec parse_length_spec(const std::string& text, const std::string& base_dir) {
  std::vector<std::string> f;
  std::stringstream in{text};
  for (std::string part; std::getline(in, part, ':');)
    f.push_back(part);
  length_spec s;
  if (text.rfind("empirical:", 0) == 0) {
    std::filesystem::path path(text.substr(10));
    if (path.is_relative())
      path = std::filesystem::path(base_dir) / path;
    std::ifstream file(path);
    if (!file)
      throw std::invalid_argument("'" + text + "': cannot read " + path.string());
    s.dist = length_spec::kind::empirical;
    int64_t sum = 0;
    for (std::string word; file >> word;) {
      std::stringstream parts{word};
      for (std::string field; std::getline(parts, field, ',');)
        if (!field.empty()) {
          s.samples.push_back(to_int(field, text));
          sum += s.samples.back();
        }
    }
    if (s.samples.empty())
      throw std::invalid_argument("'" + text + "': " + path.string() + " holds no lengths");
    s.mean = static_cast<int>(sum / static_cast<int64_t>(s.samples.size()));
    s.min = *std::min_element(s.samples.begin(), s.samples.end());
    s.max = *std::max_element(s.samples.begin(), s.samples.end());
    return s;
  }
  if (f.size() == 1) {
    s.mean = to_int(f[0], text);
    return s;
  }
  if (f[0] == "fixed" && f.size() == 2) {
    s.mean = to_int(f[1], text);
  } else if (f[0] == "uniform" && f.size() == 3) {
    s.dist = length_spec::kind::uniform;
    s.min = to_int(f[1], text);
    s.max = to_int(f[2], text);
    if (s.min > s.max)
      throw std::invalid_argument("'" + text + "': min is above max");
    s.mean = (s.min + s.max) / 2;
  } else if (f[0] == "lognormal" && (f.size() == 2 || f.size() == 3 || f.size() == 5)) {
    s.dist = length_spec::kind::lognormal;
    s.mean = to_int(f[1], text);
    if (f.size() >= 3) {
      try {
        s.sigma = std::stod(f[2]);
      } catch (const std::exception&) {
        s.sigma = -1;
      }
      if (!(s.sigma > 0 && s.sigma < 4))
        throw std::invalid_argument("'" + text + "': sigma must be in (0, 4)");
    }
    if (f.size() == 5) {
      s.min = to_int(f[3], text);
      s.max = to_int(f[4], text);
    } else {
      s.max = std::max(s.max, 8 * s.mean);
    }
    if (s.min > s.max)
      throw std::invalid_argument("'" + text + "': min is above max");
  } else {
    throw std::invalid_argument("'" + text + "': expected N, fixed:N, uniform:MIN:MAX, "
                                "lognormal:MEAN[:SIGMA[:MIN:MAX]] or empirical:FILE");
  }
  return s;
}

std::vector<planned_request> make_plan(int n, double rate, const length_spec& prompt,
                                       const length_spec& output, uint64_t seed) {
  std::mt19937_64 rng{seed};
  std::exponential_distribution<double> gap{rate > 0 ? rate : 1.0};
  std::vector<planned_request> plan;
  double t = 0;
  for (int i = 0; i < n; ++i) {
    planned_request p;
    if (rate > 0) {
      t += gap(rng);
      p.at_s = t;
    }
    p.prompt_tokens = draw_length(prompt, rng);
    p.output_tokens = draw_length(output, rng);
    plan.push_back(p);
  }
  return plan;
}

latency_stats stats_of(std::vector<double> v) {
  latency_stats s;
  s.n = v.size();
  if (v.empty())
    return s;
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {
    // nearest rank: the smallest value with at least p% of samples at or below it
    auto k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
  };
  double sum = 0;
  for (double x : v)
    sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = rank(50);
  s.p90 = rank(90);
  s.p99 = rank(99);
  return s;
}

run_summary summarize(const std::vector<request_result>& results, double duration_s,
                      const slo_spec& slo) {
  run_summary s;
  s.requests = static_cast<int>(results.size());
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e, rejected;
  int64_t out_tokens = 0;
  int met = 0;
  for (const auto& r : results) {
    if (!r.ok) {
      ++s.failed;
      if (r.status == 429) {
        ++s.rejected;
        rejected.push_back(r.e2e_s);
        continue;
      }
      if (s.first_error.empty())
        s.first_error = r.error;
      continue;
    }
    ++s.ok;
    out_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    double request_tpot = 0;
    if (r.output_tokens > 1) {
      request_tpot = (r.e2e_s - r.ttft_s) / (r.output_tokens - 1);
      tpot.push_back(request_tpot);
    }
    const bool ttft_ok = slo.ttft_s <= 0 || r.ttft_s <= slo.ttft_s;
    const bool tpot_ok = slo.tpot_s <= 0 || request_tpot <= slo.tpot_s;
    met += ttft_ok && tpot_ok ? 1 : 0;
  }
  if (duration_s > 0) {
    s.requests_per_s = s.ok / duration_s;
    s.output_tokens_per_s = static_cast<double>(out_tokens) / duration_s;
  }
  s.ttft = stats_of(ttft);
  s.tpot = stats_of(tpot);
  s.itl = stats_of(itl);
  s.e2e = stats_of(e2e);
  s.rejected_latency = stats_of(rejected);
  s.slo_attainment = s.requests > 0 ? static_cast<double>(met) / s.requests : 0;
  return s;
}

nlohmann::json to_json(const run_summary& s) {
  auto stats = [](const latency_stats& l) {
    return nlohmann::json{{"mean_ms", l.mean * 1e3}, {"p50_ms", l.p50 * 1e3},
                          {"p90_ms", l.p90 * 1e3}, {"p99_ms", l.p99 * 1e3}, {"n", l.n}};
  };
  nlohmann::json j{{"requests", s.requests},
                   {"ok", s.ok},
                   {"failed", s.failed},
                   {"duration_s", s.duration_s},
                   {"requests_per_s", s.requests_per_s},
                   {"output_tokens_per_s", s.output_tokens_per_s},
                   {"ttft", stats(s.ttft)},
                   {"tpot", stats(s.tpot)},
                   {"itl", stats(s.itl)},
                   {"e2e", stats(s.e2e)},
                   {"slo_attainment", s.slo_attainment},
                   {"rejected_429", s.rejected},
                   {"rejected_latency", stats(s.rejected_latency)}};
  if (!s.first_error.empty())
    j["first_error"] = s.first_error;
  return j;
}

}  // namespace llmux::loadgen
