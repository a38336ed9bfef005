#include "sim/workload.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

namespace llmux::sim {

namespace {

int line_of(const toml::node* n) {
  return n ? static_cast<int>(n->source().begin.line) : 0;
}

[[noreturn]] void fail(const std::string& source, const toml::node* n, const std::string& key,
                       const std::string& reason) {
  throw workload_error(source + ":" + std::to_string(line_of(n)) + ": key '" + key + "': " + reason);
}

double number_of(const std::string& source, const toml::table& t, const std::string& key,
                 const std::string& path, double fallback) {
  const auto* n = t.get(key);
  if (!n)
    return fallback;
  if (auto v = n->value<double>())
    return *v;
  fail(source, n, path, "must be a number");
}

/// The union of keys a table may hold; anything else is a typo.
void allow_only(const std::string& source, const toml::table& t, const std::string& prefix,
                const std::set<std::string>& keys) {
  for (auto&& [k, v] : t)
    if (keys.count(std::string{k.str()}) == 0)
      fail(source, &v, prefix + std::string{k.str()}, "unknown key");
}

loadgen::length_spec length_of(const std::string& source, const toml::table& t, const std::string& key,
                               const std::string& path, const loadgen::length_spec& fallback,
                               const std::string& base_dir) {
  const auto* n = t.get(key);
  if (!n)
    return fallback;
  std::string text;
  if (n->is_boolean())
    fail(source, n, path, "must be a length form such as \"lognormal:161\"");
  if (auto v = n->value<std::string>())
    text = *v;
  else if (auto i = n->value<int64_t>())
    text = std::to_string(*i);
  else
    fail(source, n, path, "must be a length form such as \"lognormal:161\"");
  try {
    return loadgen::parse_length_spec(text, base_dir);
  } catch (const std::invalid_argument& e) {
    fail(source, n, path, e.what());
  }
}

}  // namespace

std::vector<double> power_law_rates(size_t n, double total_rate, double alpha) {
  std::vector<double> w(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    w[i] = std::pow(static_cast<double>(i + 1), -alpha);
    sum += w[i];
  }
  for (auto& x : w)
    x = sum > 0 ? total_rate * x / sum : 0;
  return w;
}

workload_spec parse_workload_spec(const std::string& toml_text, const std::string& source,
                                  const std::string& base_dir) {
  toml::table top;
  try {
    top = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw workload_error(source + ":" + std::to_string(e.source().begin.line) + ": "
                         + std::string{e.description()});
  }
  allow_only(source, top, "",
             {"duration_s", "seed", "arrival", "cv", "prompt", "output", "models", "total_rate", "alpha",
              "model", "phase", "prefix_groups", "prefix_tokens", "prefix_alpha", "sessions",
              "session_alpha", "session_max_tokens"});
  workload_spec spec;
  spec.duration_s = number_of(source, top, "duration_s", "duration_s", spec.duration_s);
  if (!(spec.duration_s > 0) || !std::isfinite(spec.duration_s))
    fail(source, top.get("duration_s"), "duration_s", "must be a positive number of seconds");
  if (const auto* n = top.get("seed")) {
    auto v = n->value<int64_t>();
    if (!v || *v < 0)
      fail(source, n, "seed", "must be an integer >= 0");
    spec.seed = static_cast<uint64_t>(*v);
  }
  if (const auto* n = top.get("arrival")) {
    auto v = n->value<std::string>();
    if (v && *v == "poisson")
      spec.arrival = arrival_kind::poisson;
    else if (v && *v == "gamma")
      spec.arrival = arrival_kind::gamma;
    else
      fail(source, n, "arrival", "must be \"poisson\" or \"gamma\"");
  }
  spec.cv = number_of(source, top, "cv", "cv", 1.0);
  if (!(spec.cv > 0) || !std::isfinite(spec.cv))
    fail(source, top.get("cv"), "cv", "must be a positive number");
  if (top.get("cv") && spec.arrival != arrival_kind::gamma)
    fail(source, top.get("cv"), "cv", "is the gap variation of arrival = \"gamma\"");

  auto count_of = [&](const char* key, int& out, int64_t min) {
    const auto* n = top.get(key);
    if (!n)
      return;
    auto v = n->value<int64_t>();
    if (!v || *v < min || *v > (1 << 24))
      fail(source, n, key, "must be an integer in " + std::to_string(min) + ".." + std::to_string(1 << 24));
    out = static_cast<int>(*v);
  };
  count_of("prefix_groups", spec.prefix_groups, 0);
  count_of("prefix_tokens", spec.prefix_tokens, 1);
  count_of("sessions", spec.sessions, 0);
  count_of("session_max_tokens", spec.session_max_tokens, 2);
  spec.prefix_alpha = number_of(source, top, "prefix_alpha", "prefix_alpha", spec.prefix_alpha);
  spec.session_alpha = number_of(source, top, "session_alpha", "session_alpha", spec.session_alpha);
  for (const char* key : {"prefix_alpha", "session_alpha"})
    if (top.get(key) && !std::isfinite(number_of(source, top, key, key, 0)))
      fail(source, top.get(key), key, "must be a finite number");

  const loadgen::length_spec default_prompt = length_of(source, top, "prompt", "prompt",
                                                        loadgen::parse_length_spec("lognormal:161"), base_dir);
  const loadgen::length_spec default_output = length_of(source, top, "output", "output",
                                                        loadgen::parse_length_spec("lognormal:337"), base_dir);

  // Models in rank order: `models` first, then [[model]] names not in it.
  workload_phase first;
  std::map<std::string, size_t> index;
  auto add_model = [&](const std::string& name, const toml::node* where, const std::string& path) {
    if (name.empty())
      fail(source, where, path, "must not be empty");
    auto [it, fresh] = index.try_emplace(name, first.models.size());
    if (fresh)
      first.models.push_back({name, 0, default_prompt, default_output});
    return it->second;
  };
  if (const auto* n = top.get("models")) {
    const auto* arr = n->as_array();
    if (!arr || arr->empty())
      fail(source, n, "models", "must be a non-empty array of model names");
    for (size_t i = 0; i < arr->size(); ++i) {
      auto v = arr->get(i)->value<std::string>();
      if (!v)
        fail(source, arr->get(i), "models[" + std::to_string(i) + "]", "must be a model name");
      if (index.count(*v))
        fail(source, arr->get(i), "models[" + std::to_string(i) + "]", "names '" + *v + "' twice");
      add_model(*v, arr->get(i), "models[" + std::to_string(i) + "]");
    }
  }
  const bool law = top.get("total_rate") != nullptr;
  if (top.get("alpha") && !law)
    fail(source, top.get("alpha"), "alpha", "needs total_rate (the rate the law divides)");
  if (law) {
    const double total = number_of(source, top, "total_rate", "total_rate", 0);
    const double alpha = number_of(source, top, "alpha", "alpha", 0);
    if (!(total >= 0) || !std::isfinite(total))
      fail(source, top.get("total_rate"), "total_rate", "must be a number >= 0 (req/s)");
    if (!std::isfinite(alpha))
      fail(source, top.get("alpha"), "alpha", "must be a finite number");
    if (first.models.empty())
      fail(source, top.get("total_rate"), "total_rate", "needs `models`, the models in popularity order");
    auto rates = power_law_rates(first.models.size(), total, alpha);
    for (size_t i = 0; i < rates.size(); ++i)
      first.models[i].rate = rates[i];
  }
  std::set<std::string> rated;
  if (const auto* n = top.get("model")) {
    const auto* arr = n->as_array();
    if (!arr)
      fail(source, n, "model", "must be an array of tables ([[model]])");
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string path = "model[" + std::to_string(i) + "]";
      const auto* t = arr->get(i)->as_table();
      if (!t)
        fail(source, arr->get(i), path, "must be a table");
      allow_only(source, *t, path + ".", {"name", "rate", "prompt", "output"});
      auto name = t->get("name") ? t->get("name")->value<std::string>() : std::nullopt;
      if (!name)
        fail(source, arr->get(i), path + ".name", "is required (a model name)");
      if (!rated.insert(*name).second)
        fail(source, t->get("name"), path + ".name", "model '" + *name + "' has two [[model]] entries");
      auto& m = first.models[add_model(*name, t->get("name"), path + ".name")];
      if (t->get("rate")) {
        m.rate = number_of(source, *t, "rate", path + ".rate", 0);
        if (!(m.rate >= 0) || !std::isfinite(m.rate))
          fail(source, t->get("rate"), path + ".rate", "must be a number >= 0 (req/s)");
      } else if (!law) {
        fail(source, arr->get(i), path + ".rate", "is required without total_rate");
      }
      m.prompt = length_of(source, *t, "prompt", path + ".prompt", m.prompt, base_dir);
      m.output = length_of(source, *t, "output", path + ".output", m.output, base_dir);
    }
  }
  if (first.models.empty())
    throw workload_error(source + ":0: key 'models': a workload needs models ([[model]], or `models` "
                                  "with total_rate)");
  if (!law)
    for (const auto& m : first.models)
      if (!rated.count(m.model))
        throw workload_error(source + ":0: key 'models': model '" + m.model
                             + "' has no rate (give total_rate, or a [[model]] rate)");
  spec.phases.push_back(first);

  if (const auto* n = top.get("phase")) {
    const auto* arr = n->as_array();
    if (!arr)
      fail(source, n, "phase", "must be an array of tables ([[phase]])");
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string path = "phase[" + std::to_string(i) + "]";
      const auto* t = arr->get(i)->as_table();
      if (!t)
        fail(source, arr->get(i), path, "must be a table");
      allow_only(source, *t, path + ".", {"at_s", "total_rate", "alpha", "rotate", "rates"});
      workload_phase ph = spec.phases.back();
      if (!t->get("at_s"))
        fail(source, arr->get(i), path + ".at_s", "is required (seconds from the start)");
      ph.at_s = number_of(source, *t, "at_s", path + ".at_s", 0);
      if (!(ph.at_s > spec.phases.back().at_s) || !(ph.at_s < spec.duration_s))
        fail(source, t->get("at_s"), path + ".at_s",
             "must lie after the previous phase and before duration_s");
      if (t->get("total_rate") || t->get("alpha")) {
        double total = 0;
        for (const auto& m : ph.models)
          total += m.rate;
        total = number_of(source, *t, "total_rate", path + ".total_rate", total);
        if (!(total >= 0) || !std::isfinite(total))
          fail(source, t->get("total_rate"), path + ".total_rate", "must be a finite number >= 0 (req/s)");
        const double alpha = number_of(source, *t, "alpha", path + ".alpha", 0);
        if (!std::isfinite(alpha))
          fail(source, t->get("alpha"), path + ".alpha", "must be a finite number");
        if (t->get("alpha")) {
          auto rates = power_law_rates(ph.models.size(), total, alpha);
          for (size_t k = 0; k < rates.size(); ++k)
            ph.models[k].rate = rates[k];
        } else {
          // A new total keeps the proportions.
          double old = 0;
          for (const auto& m : ph.models)
            old += m.rate;
          for (auto& m : ph.models)
            m.rate = old > 0 ? m.rate * total / old : total / static_cast<double>(ph.models.size());
        }
      }
      if (const auto* r = t->get("rotate")) {
        auto k = r->value<int64_t>();
        if (!k)
          fail(source, r, path + ".rotate", "must be an integer");
        const auto count = static_cast<int64_t>(ph.models.size());
        std::vector<double> rates(ph.models.size());
        for (int64_t j = 0; j < count; ++j)
          rates[static_cast<size_t>(j)] = ph.models[static_cast<size_t>(((j + *k) % count + count) % count)].rate;
        for (size_t j = 0; j < rates.size(); ++j)
          ph.models[j].rate = rates[j];
      }
      if (const auto* r = t->get("rates")) {
        const auto* tbl = r->as_table();
        if (!tbl)
          fail(source, r, path + ".rates", "must be a table of model = rate");
        for (auto&& [k, v] : *tbl) {
          const std::string name{k.str()};
          auto it = index.find(name);
          if (it == index.end())
            fail(source, &v, path + ".rates." + name, "unknown model '" + name + "'");
          auto rate = v.value<double>();
          if (!rate || !(*rate >= 0) || !std::isfinite(*rate))
            fail(source, &v, path + ".rates." + name, "must be a number >= 0 (req/s)");
          ph.models[it->second].rate = *rate;
        }
      }
      spec.phases.push_back(std::move(ph));
    }
  }
  return spec;
}

workload generate(const workload_spec& spec) {
  workload w;
  w.duration_s = spec.duration_s;
  for (const auto& m : spec.phases.front().models)
    w.models.push_back(m.model);
  std::mt19937_64 rng{spec.seed};
  for (size_t p = 0; p < spec.phases.size(); ++p) {
    const auto& ph = spec.phases[p];
    const double end = p + 1 < spec.phases.size() ? spec.phases[p + 1].at_s : spec.duration_s;
    for (const auto& m : ph.models) {
      if (m.rate <= 0)
        continue;
      // Gamma gaps of mean 1/rate and coefficient of variation cv:
      // shape 1/cv², scale cv²/rate (Poisson: cv 1, exponential gaps).
      const double cv = spec.arrival == arrival_kind::gamma ? spec.cv : 1.0;
      std::gamma_distribution<double> gap(1.0 / (cv * cv), cv * cv / m.rate);
      for (double t = ph.at_s + gap(rng); t < end; t += gap(rng)) {
        request_spec r;
        r.at_s = t;
        r.model = m.model;
        r.prompt_tokens = loadgen::draw_length(m.prompt, rng);
        r.output_tokens = loadgen::draw_length(m.output, rng);
        w.requests.push_back(std::move(r));
      }
    }
  }
  std::stable_sort(w.requests.begin(), w.requests.end(),
                   [](const request_spec& a, const request_spec& b) { return a.at_s < b.at_s; });
  if (spec.prefix_groups > 0 || spec.sessions > 0) {
    // Prefix groups and sessions are drawn in arrival order from their own
    // stream, so adding them leaves arrivals and lengths as they were.
    std::mt19937_64 share_rng{spec.seed ^ 0x5eed5eed5eedull};
    auto law = [](int n, double alpha) {
      auto w = power_law_rates(static_cast<size_t>(n), 1.0, alpha);
      return std::discrete_distribution<int>(w.begin(), w.end());
    };
    auto group_of = law(std::max(spec.prefix_groups, 1), spec.prefix_alpha);
    auto session_of = law(std::max(spec.sessions, 1), spec.session_alpha);
    struct conversation {
      int64_t epoch = 0;
      int length = 0;  ///< tokens after the group prefix so far
    };
    std::map<std::pair<std::string, int>, conversation> talks;
    const int64_t sessions = std::max(spec.sessions, 1);
    for (auto& r : w.requests) {
      const int turn = r.prompt_tokens;
      int history = 0;
      if (spec.sessions > 0) {
        const int s = session_of(share_rng);
        auto& c = talks[{r.model, s}];
        if (c.length > 0 && c.length + turn > spec.session_max_tokens) {
          ++c.epoch;  // a new conversation of the same user
          c.length = 0;
        }
        history = c.length;
        c.length += turn;
        // Unique per model, session and conversation.
        const int64_t model_no = static_cast<int64_t>(
          std::find(w.models.begin(), w.models.end(), r.model) - w.models.begin());
        r.session = (model_no * sessions + s) * 4096 + c.epoch % 4096;
        if (spec.prefix_groups > 0)
          r.group = s % spec.prefix_groups;
      } else if (spec.prefix_groups > 0) {
        r.group = group_of(share_rng);
      }
      r.prefix_tokens = r.group >= 0 ? spec.prefix_tokens : 0;
      r.prompt_tokens = r.prefix_tokens + history + turn;
    }
  }
  return w;
}

std::vector<int32_t> prompt_of(const request_spec& r, uint32_t index, int words) {
  std::vector<int32_t> out(static_cast<size_t>(std::max(r.prompt_tokens, 0)));
  const auto w = static_cast<uint64_t>(std::max(words, 1));
  auto word = [w](uint64_t a, uint64_t k) {
    uint64_t z = a * 0x9e3779b97f4a7c15ull + k * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
    z = (z ^ (z >> 31)) * 0xd6e8feb86659fd93ull;
    return 3 + static_cast<int32_t>((z ^ (z >> 29)) % w);
  };
  const size_t prefix = static_cast<size_t>(std::clamp(r.prefix_tokens, 0, r.prompt_tokens));
  for (size_t k = 0; k < out.size(); ++k) {
    if (k < prefix)
      out[k] = word(1000003ull + static_cast<uint64_t>(r.group), k);
    else if (r.session >= 0)
      out[k] = word(0x100000000ull + static_cast<uint64_t>(r.session), k - prefix);
    else
      out[k] = word(0x200000000ull + index, k);
  }
  return out;
}

workload parse_trace(const std::string& text, const std::string& source) {
  workload w;
  w.source = source;
  std::set<std::string> seen;
  std::istringstream in(text);
  int line = 0;
  for (std::string s; std::getline(in, s);) {
    ++line;
    if (s.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    auto bad = [&](const std::string& why) {
      throw workload_error(source + ":" + std::to_string(line) + ": " + why);
    };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(s);
    } catch (const nlohmann::json::exception& e) {
      bad(std::string{"not JSON: "} + e.what());
    }
    if (!j.is_object())
      bad("a request is a JSON object {\"t\", \"model\", \"prompt_tokens\", \"output_tokens\"}");
    request_spec r;
    auto need = [&](const char* key) -> const nlohmann::json& {
      if (!j.contains(key))
        bad(std::string{"missing \""} + key + "\"");
      return j.at(key);
    };
    const auto& t = need("t");
    const auto& m = need("model");
    const auto& p = need("prompt_tokens");
    const auto& o = need("output_tokens");
    if (!t.is_number() || !(t.get<double>() >= 0))
      bad("\"t\" must be seconds >= 0");
    if (!m.is_string() || m.get<std::string>().empty())
      bad("\"model\" must be a model name");
    constexpr int64_t most = 1 << 24;  // tokens: far past any context window, well inside an int
    if (!p.is_number_integer() || p.get<int64_t>() < 1 || p.get<int64_t>() > most)
      bad("\"prompt_tokens\" must be an integer in 1.." + std::to_string(most));
    if (!o.is_number_integer() || o.get<int64_t>() < 1 || o.get<int64_t>() > most)
      bad("\"output_tokens\" must be an integer in 1.." + std::to_string(most));
    r.at_s = t.get<double>();
    r.model = m.get<std::string>();
    r.prompt_tokens = static_cast<int>(p.get<int64_t>());
    r.output_tokens = static_cast<int>(o.get<int64_t>());
    if (j.contains("session")) {
      if (!j["session"].is_number_integer() || j["session"].get<int64_t>() < 0)
        bad("\"session\" must be an integer >= 0");
      r.session = j["session"].get<int64_t>();
    }
    if (j.contains("group")) {
      const auto& g = j["group"];
      const auto& n = j.contains("prefix_tokens") ? j["prefix_tokens"] : nlohmann::json();
      if (!g.is_number_integer() || g.get<int64_t>() < 0 || g.get<int64_t>() > most)
        bad("\"group\" must be an integer >= 0");
      if (!n.is_number_integer() || n.get<int64_t>() < 1 || n.get<int64_t>() >= r.prompt_tokens)
        bad("\"group\" needs \"prefix_tokens\", an integer in 1..prompt_tokens - 1");
      r.group = static_cast<int>(g.get<int64_t>());
      r.prefix_tokens = static_cast<int>(n.get<int64_t>());
    }
    if (seen.insert(r.model).second)
      w.models.push_back(r.model);
    w.duration_s = std::max(w.duration_s, r.at_s);
    w.requests.push_back(std::move(r));
  }
  std::stable_sort(w.requests.begin(), w.requests.end(),
                   [](const request_spec& a, const request_spec& b) { return a.at_s < b.at_s; });
  return w;
}

workload load_workload(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    throw workload_error(path + ":0: cannot read the workload file");
  std::stringstream buf;
  buf << file.rdbuf();
  workload w;
  if (std::filesystem::path(path).extension() == ".jsonl") {
    w = parse_trace(buf.str(), path);
  } else {
    const auto base = std::filesystem::path(path).parent_path().string();
    w = generate(parse_workload_spec(buf.str(), path, base.empty() ? "." : base));
  }
  w.source = path;
  return w;
}

void write_trace(const workload& w, std::ostream& out) {
  for (const auto& r : w.requests) {
    nlohmann::json j{{"t", r.at_s}, {"model", r.model}, {"prompt_tokens", r.prompt_tokens},
                     {"output_tokens", r.output_tokens}};
    if (r.group >= 0) {
      j["group"] = r.group;
      j["prefix_tokens"] = r.prefix_tokens;
    }
    if (r.session >= 0)
      j["session"] = r.session;
    out << j.dump() << '\n';
  }
}

}  // namespace llmux::sim
