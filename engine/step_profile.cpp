#include "engine/step_profile.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include <nlohmann/json.hpp>

#include "engine/builtin_profiles.hpp"

namespace llmux::engine {

namespace {

using json = nlohmann::json;

constexpr const char* builtin_a100_spec = "builtin:a100";

[[noreturn]] void fail(const std::string& source, const std::string& path, const std::string& what) {
  throw std::runtime_error(source + ": " + (path.empty() ? std::string{} : path + ": ") + what);
}

/// A key of the table: a positive integer written plainly ("8", "100").
int int_key(const std::string& key, const std::string& source, const std::string& path) {
  const bool digits = !key.empty() && key.size() <= 9
                      && std::all_of(key.begin(), key.end(),
                                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  const int v = digits ? std::stoi(key) : 0;
  if (v <= 0)
    fail(source, path, "key '" + key + "' is not a positive integer");
  return v;
}

const json& object_at(const json& j, const std::string& source, const std::string& path) {
  if (!j.is_object())
    fail(source, path, std::string{"expected an object, found "} + j.type_name());
  return j;
}

double number_at(const json& point, const char* name, const std::string& source,
                 const std::string& path) {
  auto it = point.find(name);
  if (it == point.end())
    fail(source, path, "a point needs \"prefill\" and \"decoding\" (no \"" + std::string{name} + "\")");
  if (!it->is_number())
    fail(source, path + "/" + name, std::string{"expected a number, found "} + it->type_name());
  return it->get<double>();
}

step_profile parse_text(std::string_view text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    fail(source, "", std::string{"not JSON: "} + e.what());
  }
  object_at(doc, source, "");
  step_profile out;
  for (const auto& [model, tps] : doc.items()) {
    if (!model.empty() && model[0] == '_') {
      // Metadata. Only "_meta" is kept (strings as they are, anything else
      // as its JSON text); other "_" keys are ignored, as the format says.
      if (model == "_meta")
        for (const auto& [k, v] : object_at(tps, source, model).items())
          out.set_meta(k, v.is_string() ? v.get<std::string>() : v.dump());
      continue;
    }
    for (const auto& [tp_key, shares] : object_at(tps, source, model).items()) {
      const std::string tp_path = model + "/" + tp_key;
      const int tp = int_key(tp_key, source, tp_path);
      for (const auto& [share_key, batches] : object_at(shares, source, tp_path).items()) {
        const std::string share_path = tp_path + "/" + share_key;
        const int share = int_key(share_key, source, share_path);
        if (share > 100)
          fail(source, share_path, "a share is a percentage, at most 100");
        for (const auto& [batch_key, lengths] : object_at(batches, source, share_path).items()) {
          const std::string batch_path = share_path + "/" + batch_key;
          const int batch = int_key(batch_key, source, batch_path);
          for (const auto& [length_key, point] : object_at(lengths, source, batch_path).items()) {
            const std::string point_path = batch_path + "/" + length_key;
            const int length = int_key(length_key, source, point_path);
            object_at(point, source, point_path);
            profile_point p;
            p.prefill_ms = number_at(point, "prefill", source, point_path);
            p.decode_ms = number_at(point, "decoding", source, point_path);
            out.set(model, tp, share, batch, length, p);
          }
        }
      }
    }
  }
  return out;
}

// -- interpolation ----------------------------------------------------------

enum class step_kind { prefill, decode };

double value_of(const profile_point& p, step_kind k) {
  return k == step_kind::prefill ? p.prefill_ms : p.decode_ms;
}

struct xy {
  double x, y;
};

/// The line through two measured points a.x < b.x, read at x: linear
/// between them; outside, the same line but never below the nearer point's
/// y (a measured time is a floor a noisy slope must not undercut, and a
/// falling slope must not reach zero).
double on_segment(const xy& a, const xy& b, double x) {
  if (x == b.x)
    return b.y;  // exactly: the line may round past it
  const double y = a.y + (x - a.x) * (b.y - a.y) / (b.x - a.x);
  if (x < a.x)
    return std::max(y, a.y);
  if (x > b.x)
    return std::max(y, b.y);
  return y;
}

/// Piecewise linear over the entries of an ordered map (int key → entry),
/// read at x: `value(entry)` is the entry's y, or nullopt to skip it (not
/// measured). Uses the segment of the two valid entries around x, the first
/// two below them, the last two above; one valid entry is a constant.
/// Stops at the first valid entry at or past x, so a query reads a few
/// entries of a table, not all of it.
template <class Map, class Value>
std::optional<double> piecewise(const Map& entries, double x, const Value& value) {
  std::optional<xy> before, last;
  for (const auto& [key, entry] : entries) {
    auto y = value(entry);
    if (!y)
      continue;
    const xy here{static_cast<double>(key), *y};
    if (last && here.x >= x)
      return on_segment(*last, here, x);
    before = last;
    last = here;
  }
  if (!last)
    return std::nullopt;
  return before ? on_segment(*before, *last, x) : last->y;
}

/// Milliseconds at one share: over length within each measured batch, then
/// over batch. nullopt when no point of that kind was measured there.
std::optional<double> at_share(const step_profile::batch_table& batches, step_kind k, double batch,
                               double length) {
  auto measured = [k](const profile_point& p) -> std::optional<double> {
    const double v = value_of(p, k);
    return v > 0 ? std::optional<double>{v} : std::nullopt;
  };
  return piecewise(batches, batch, [&](const step_profile::length_table& lengths) {
    return piecewise(lengths, length, measured);
  });
}

/// Milliseconds at `pct` percent of the device (see the header for the
/// rules below and above the measured shares).
std::optional<double> query_ms(const step_profile::share_table& shares, step_kind k, double pct,
                               double batch, double length) {
  batch = std::max(batch, 1.0);
  length = std::max(length, 1.0);
  std::optional<xy> last;
  for (const auto& [s, batches] : shares) {
    auto y = at_share(batches, k, batch, length);
    if (!y)
      continue;
    const xy here{static_cast<double>(s), *y};
    if (here.x == pct)
      return here.y;
    if (here.x > pct) {
      if (!last)
        return here.y * here.x / pct;  // below the smallest share
      return last->y + (pct - last->x) * (here.y - last->y) / (here.x - last->x);
    }
    last = here;
  }
  if (!last)
    return std::nullopt;
  return last->y;  // above the largest share
}

const step_profile::share_table* find_shares(const std::map<std::string, step_profile::tp_table>& models,
                                             const std::string& model, int tp) {
  auto m = models.find(model);
  if (m == models.end())
    return nullptr;
  auto t = m->second.find(tp);
  return t == m->second.end() ? nullptr : &t->second;
}

std::optional<double> seconds(const std::map<std::string, step_profile::tp_table>& models,
                              const std::string& model, int tp, double share, double batch,
                              double length, step_kind k) {
  const auto* shares = find_shares(models, model, tp);
  if (shares == nullptr)
    return std::nullopt;
  // A share of 0 would take forever; 1% is already far below any measured one.
  double pct = std::clamp(share, 0.01, 1.0) * 100.0;
  // 0.7 · 100 is 70.00000000000001: a measured share must hit its point.
  if (std::abs(pct - std::round(pct)) < 1e-9)
    pct = std::round(pct);
  auto ms = query_ms(*shares, k, pct, batch, length);
  if (!ms)
    return std::nullopt;
  return *ms / 1e3;
}

}  // namespace

// -- loading ------------------------------------------------------------------

step_profile step_profile::parse(const std::string& json_text, const std::string& source) {
  return parse_text(json_text, source);
}

step_profile step_profile::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read profile " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw std::runtime_error("cannot read profile " + path);
  return parse_text(text.str(), path);
}

const step_profile& step_profile::builtin_a100() {
  // Parsed on first use (about 30 ms), once: C++11 statics are thread-safe.
  static const step_profile profile = parse_text(detail::builtin_a100_json(), builtin_a100_spec);
  return profile;
}

step_profile step_profile::resolve(const std::string& spec) {
  if (spec == builtin_a100_spec)
    return builtin_a100();
  if (spec.rfind("builtin:", 0) == 0)
    throw std::runtime_error("unknown built-in profile '" + spec + "' (there is " + builtin_a100_spec + ")");
  return load(spec);
}

std::shared_ptr<const step_profile> step_profile::shared(const std::string& spec) {
  // Never destroyed: cost models holding these may outlive static destruction.
  static auto* mu = new std::mutex;
  static auto* cache = new std::map<std::string, std::shared_ptr<const step_profile>>;
  std::string key = spec;
  if (spec.rfind("builtin:", 0) != 0) {
    // "./a.json" and "a.json" are one file, parsed once.
    std::error_code ec;
    auto canonical = std::filesystem::weakly_canonical(spec, ec);
    if (!ec)
      key = canonical.string();
  }
  std::lock_guard<std::mutex> lock(*mu);
  if (auto it = cache->find(key); it != cache->end())
    return it->second;
  std::shared_ptr<const step_profile> p;
  if (spec == builtin_a100_spec)
    p = std::shared_ptr<const step_profile>(std::shared_ptr<const step_profile>{}, &builtin_a100());
  else
    p = std::make_shared<const step_profile>(resolve(spec));
  cache->emplace(key, p);
  return p;
}

std::string step_profile::to_json_text() const {
  // Insertion order keeps the numeric order of the keys (plain json would
  // sort them as strings: "100" before "30").
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();
  if (!meta_.empty()) {
    auto& meta = doc["_meta"];
    for (const auto& [k, v] : meta_)
      meta[k] = v;
  }
  for (const auto& [model, tps] : models_) {
    auto& m = doc[model];
    for (const auto& [tp, shares] : tps) {
      auto& t = m[std::to_string(tp)];
      for (const auto& [share, batches] : shares) {
        auto& s = t[std::to_string(share)];
        for (const auto& [batch, lengths] : batches) {
          auto& b = s[std::to_string(batch)];
          for (const auto& [length, p] : lengths)
            b[std::to_string(length)] = {{"prefill", p.prefill_ms}, {"decoding", p.decode_ms}};
        }
      }
    }
  }
  return doc.dump(2) + "\n";
}

void step_profile::set(const std::string& model, int tp, int share_pct, int batch, int length,
                       profile_point p) {
  models_[model][tp][share_pct][batch][length] = p;
}

// -- queries ------------------------------------------------------------------

bool step_profile::has(const std::string& model, int tp) const {
  return find_shares(models_, model, tp) != nullptr;
}

std::vector<std::string> step_profile::models() const {
  std::vector<std::string> out;
  for (const auto& [name, tps] : models_)
    out.push_back(name);
  return out;
}

std::vector<int> step_profile::tp_sizes(const std::string& model) const {
  std::vector<int> out;
  if (auto m = models_.find(model); m != models_.end())
    for (const auto& [tp, shares] : m->second)
      out.push_back(tp);
  return out;
}

std::vector<int> step_profile::share_percents(const std::string& model, int tp) const {
  std::vector<int> out;
  if (const auto* shares = find_shares(models_, model, tp))
    for (const auto& [s, batches] : *shares)
      out.push_back(s);
  return out;
}

int step_profile::max_batch(const std::string& model, int tp) const {
  int out = 0;
  if (const auto* shares = find_shares(models_, model, tp))
    for (const auto& [s, batches] : *shares)
      for (const auto& [b, lengths] : batches)
        for (const auto& [l, p] : lengths)
          if (p.decode_ms > 0)
            out = std::max(out, b);
  return out;
}

std::optional<double> step_profile::prefill_seconds(const std::string& model, int tp, double share,
                                                    double batch, double length) const {
  return seconds(models_, model, tp, share, batch, length, step_kind::prefill);
}

std::optional<double> step_profile::decode_seconds(const std::string& model, int tp, double share,
                                                   double batch, double length) const {
  return seconds(models_, model, tp, share, batch, length, step_kind::decode);
}

// -- held-out accuracy ----------------------------------------------------------

namespace {

struct holdout_sample {
  double error;
  std::string where;
};

holdout_error summarize(const char* kind, const char* axis, std::vector<holdout_sample> samples) {
  holdout_error out;
  out.kind = kind;
  out.axis = axis;
  out.points = samples.size();
  if (samples.empty())
    return out;
  std::sort(samples.begin(), samples.end(),
            [](const holdout_sample& a, const holdout_sample& b) { return a.error < b.error; });
  const size_t n = samples.size();
  out.median = n % 2 == 1 ? samples[n / 2].error : (samples[n / 2 - 1].error + samples[n / 2].error) / 2;
  // Nearest rank: the smallest error at least 90% of the points reach.
  out.p90 = samples[static_cast<size_t>(std::ceil(0.9 * static_cast<double>(n))) - 1].error;
  out.max = samples.back().error;
  out.worst = samples.back().where;
  return out;
}

std::string describe(const std::string& model, int tp, int share, int batch, int length, double measured,
                     double predicted) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s tp %d share %d batch %d length %d: measured %.2f ms, predicted %.2f ms",
                model.c_str(), tp, share, batch, length, measured, predicted);
  return buf;
}

/// Whether `c` is neither end of `measured` (the ascending coordinates
/// measured along one axis, the other coordinates fixed).
bool interior(const std::vector<int>& measured, int c) {
  return measured.size() >= 3 && c != measured.front() && c != measured.back();
}

}  // namespace

std::vector<holdout_error> holdout_errors(const step_profile& profile) {
  std::vector<holdout_error> out;
  for (step_kind k : {step_kind::prefill, step_kind::decode}) {
    std::vector<holdout_sample> by_batch, by_length, by_share;
    for (const auto& [model, tps] : profile.tables()) {
      for (const auto& [tp, original] : tps) {
        // A copy to take points out of and put back (node handles keep it cheap).
        step_profile::share_table shares = original;
        auto predict = [&](int s, int b, int l) {
          return query_ms(shares, k, static_cast<double>(s), b, l);
        };
        auto record = [&](std::vector<holdout_sample>& into, int s, int b, int l, double measured,
                          std::optional<double> predicted) {
          if (!predicted)
            return;  // nothing left to predict from (cannot happen for an interior point)
          into.push_back({std::abs(*predicted - measured) / measured,
                          describe(model, tp, s, b, l, measured, *predicted)});
        };

        // Every measured point of this (model, tp), in order.
        struct pt {
          int s, b, l;
          double v;
        };
        std::vector<pt> points;
        for (const auto& [s, batches] : original)
          for (const auto& [b, lengths] : batches)
            for (const auto& [l, p] : lengths)
              if (value_of(p, k) > 0)
                points.push_back({s, b, l, value_of(p, k)});
        auto along = [&](auto same, auto coord) {
          std::vector<int> cs;
          for (const auto& q : points)
            if (same(q))
              cs.push_back(coord(q));
          std::sort(cs.begin(), cs.end());
          return cs;
        };

        for (const auto& p : points) {
          // Length: the point alone is held out.
          auto lengths = along([&](const pt& q) { return q.s == p.s && q.b == p.b; },
                               [](const pt& q) { return q.l; });
          if (interior(lengths, p.l)) {
            auto& row = shares[p.s][p.b];
            auto node = row.extract(p.l);
            record(by_length, p.s, p.b, p.l, p.v, predict(p.s, p.b, p.l));
            row.insert(std::move(node));
          }
          // Batch: the whole batch (every length) at this share.
          auto batches = along([&](const pt& q) { return q.s == p.s && q.l == p.l; },
                               [](const pt& q) { return q.b; });
          if (interior(batches, p.b)) {
            auto& table = shares[p.s];
            auto node = table.extract(p.b);
            record(by_batch, p.s, p.b, p.l, p.v, predict(p.s, p.b, p.l));
            table.insert(std::move(node));
          }
          // Share: the whole share table.
          auto share_list = along([&](const pt& q) { return q.b == p.b && q.l == p.l; },
                                  [](const pt& q) { return q.s; });
          if (interior(share_list, p.s)) {
            auto node = shares.extract(p.s);
            record(by_share, p.s, p.b, p.l, p.v, predict(p.s, p.b, p.l));
            shares.insert(std::move(node));
          }
        }
      }
    }
    const char* kind = k == step_kind::prefill ? "prefill" : "decode";
    out.push_back(summarize(kind, "batch", std::move(by_batch)));
    out.push_back(summarize(kind, "length", std::move(by_length)));
    out.push_back(summarize(kind, "share", std::move(by_share)));
  }
  return out;
}

}  // namespace llmux::engine
