#include "tools/llmux/bench_profile.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/step_profile.hpp"

namespace llmux::tools {

namespace {

/// What one (model, tp) of a profile holds.
struct coverage {
  std::string model;
  int tp = 0;
  std::vector<int> shares, batches, lengths;
  size_t points = 0, prefill_measured = 0, decode_measured = 0;
};

std::vector<coverage> coverage_of(const engine::step_profile& p) {
  std::vector<coverage> out;
  for (const auto& [model, tps] : p.tables())
    for (const auto& [tp, shares] : tps) {
      coverage c;
      c.model = model;
      c.tp = tp;
      std::set<int> batches, lengths;
      for (const auto& [s, bt] : shares) {
        c.shares.push_back(s);
        for (const auto& [b, lt] : bt) {
          batches.insert(b);
          for (const auto& [l, pt] : lt) {
            lengths.insert(l);
            ++c.points;
            c.prefill_measured += pt.prefill_ms > 0;
            c.decode_measured += pt.decode_ms > 0;
          }
        }
      }
      c.batches.assign(batches.begin(), batches.end());
      c.lengths.assign(lengths.begin(), lengths.end());
      out.push_back(std::move(c));
    }
  return out;
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (int x : v)
    out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

}  // namespace

int run_bench_profile(const profile_bench_options& o) {
  std::shared_ptr<const engine::step_profile> profile;
  try {
    profile = engine::step_profile::shared(o.profile);
  } catch (const std::exception& e) {
    std::cerr << "llmux bench profile: " << e.what() << "\n";
    return 2;
  }
  const auto cover = coverage_of(*profile);
  const auto errors = engine::holdout_errors(*profile);

  if (o.json) {
    nlohmann::json doc;
    doc["profile"] = o.profile;
    doc["meta"] = profile->meta();
    doc["coverage"] = nlohmann::json::array();
    for (const auto& c : cover)
      doc["coverage"].push_back({{"model", c.model}, {"tp", c.tp}, {"shares", c.shares},
                                 {"batches", c.batches}, {"lengths", c.lengths}, {"points", c.points},
                                 {"prefill_measured", c.prefill_measured},
                                 {"decode_measured", c.decode_measured}});
    doc["holdout"] = nlohmann::json::array();
    for (const auto& e : errors)
      doc["holdout"].push_back({{"kind", e.kind}, {"axis", e.axis}, {"points", e.points},
                                {"median", e.median}, {"p90", e.p90}, {"max", e.max},
                                {"worst", e.worst}});
    std::cout << doc.dump(2) << std::endl;
    return 0;
  }

  std::printf("profile %s\n", o.profile.c_str());
  for (const auto& [k, v] : profile->meta())
    std::printf("  %s: %s\n", k.c_str(), v.c_str());
  int width = 5;
  for (const auto& c : cover)
    width = std::max(width, static_cast<int>(c.model.size()));
  std::printf("\n%-*s %3s  %-24s %-40s %-22s %s\n", width, "model", "tp", "shares %", "batches", "lengths",
              "measured prefill/decode of points");
  for (const auto& c : cover)
    std::printf("%-*s %3d  %-24s %-40s %-22s %zu/%zu of %zu\n", width, c.model.c_str(), c.tp,
                join(c.shares).c_str(), join(c.batches).c_str(), join(c.lengths).c_str(),
                c.prefill_measured, c.decode_measured, c.points);
  std::printf("\nheld-out interpolation error, |predicted - measured| / measured: each interior\n"
              "point along an axis predicted from the others (batch: its whole batch removed;\n"
              "share: its whole share removed), over every model and tp\n\n");
  std::printf("%-8s %-7s %7s %8s %8s %8s  %s\n", "kind", "axis", "points", "median", "p90", "max",
              "worst point");
  for (const auto& e : errors)
    std::printf("%-8s %-7s %7zu %7.1f%% %7.1f%% %7.1f%%  %s\n", e.kind.c_str(), e.axis.c_str(), e.points,
                100 * e.median, 100 * e.p90, 100 * e.max, e.worst.c_str());
  return 0;
}

}  // namespace llmux::tools
