#include "actors/router/router_policy.hpp"

#include <algorithm>
#include <limits>

#include "actors/kv_manager/kv_block_pool.hpp"

namespace llmux::router {

namespace {

struct policy_name {
  policy_kind kind;
  const char* name;
};

constexpr policy_name kPolicies[] = {
  {policy_kind::least_loaded, "least_loaded"}, {policy_kind::round_robin, "round_robin"},
  {policy_kind::power_of_two, "power_of_two"}, {policy_kind::least_tokens, "least_tokens"},
  {policy_kind::prefix_aware, "prefix_aware"}, {policy_kind::session, "session"},
  {policy_kind::slo_aware, "slo_aware"},
};

int64_t prompt_len(const route_request& req) {
  return req.prompt ? static_cast<int64_t>(req.prompt->size()) : req.prompt_tokens;
}

/// Fewer requests, then fewer dispatched: equal replicas alternate.
bool less_loaded(const replica_load* a, const replica_load* b) {
  if (a->load() != b->load())
    return a->load() < b->load();
  return a->dispatched < b->dispatched;
}

}  // namespace

std::optional<policy_kind> parse_policy(const std::string& name) {
  for (const auto& p : kPolicies)
    if (name == p.name)
      return p.kind;
  return std::nullopt;
}

const char* to_string(policy_kind kind) {
  for (const auto& p : kPolicies)
    if (kind == p.kind)
      return p.name;
  return "?";
}

std::vector<std::string> policy_names() {
  std::vector<std::string> out;
  for (const auto& p : kPolicies)
    out.emplace_back(p.name);
  return out;
}

std::vector<uint64_t> router_policy::block_hashes(const std::vector<int32_t>& prompt, int block_tokens) {
  std::vector<uint64_t> out;
  if (block_tokens <= 0)
    return out;
  const size_t bt = static_cast<size_t>(block_tokens);
  uint64_t h = 0;
  for (size_t at = 0; at + bt <= prompt.size(); at += bt) {
    h = kv::kv_block_pool::chain_hash(h, prompt.data() + at, bt);
    out.push_back(h);
  }
  return out;
}

void router_policy::replica_up(const std::string& replica, const std::string& model,
                               const std::string& node, double prefill_tok_s) {
  auto& r = replicas_[replica];
  r.replica = replica;
  r.model = model;
  r.node = node;
  r.up = true;
  r.routable = true;
  r.waiting = r.running = r.sent_since_report = 0;
  r.outstanding_tokens = r.queued_prefill = r.tokens_since_report = r.prefill_since_report = 0;
  r.model_prefill_tok_s = prefill_tok_s;
  r.prefill_tok_s = prefill_tok_s;
  prefixes_.erase(replica);
}

bool router_policy::set_routable(const std::string& replica, bool routable) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return false;
  it->second.routable = routable;
  return true;
}

void router_policy::replica_down(const std::string& replica) {
  auto it = replicas_.find(replica);
  if (it != replicas_.end())
    it->second.up = false;
}

int router_policy::node_down(const std::string& node) {
  int n = 0;
  for (auto& [name, r] : replicas_)
    if (r.node == node && r.up) {
      r.up = false;
      ++n;
    }
  return n;
}

void router_policy::report(const std::string& replica, int32_t waiting, int32_t running,
                           double tokens_per_s) {
  load_sample s;
  s.waiting = waiting;
  s.running = running;
  s.tokens_per_s = tokens_per_s;
  report(replica, s);
}

void router_policy::report(const std::string& replica, const load_sample& s) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return;
  auto& r = it->second;
  r.waiting = s.waiting;
  r.running = s.running;
  r.tokens_per_s = s.tokens_per_s;
  r.outstanding_tokens = s.outstanding_tokens;
  r.queued_prefill = s.queued_prefill;
  r.residency = s.residency;
  if (s.prefill_tok_s > 0)
    r.prefill_tok_s = s.prefill_tok_s;
  r.sent_since_report = 0;
  r.tokens_since_report = r.prefill_since_report = 0;
}

bool router_policy::has_model(const std::string& model) const {
  for (const auto& [name, r] : replicas_)
    if (r.model == model)
      return true;
  return false;
}

policy_kind router_policy::kind_of(const std::string& model) const {
  auto it = opts_.model_policy.find(model);
  return it != opts_.model_policy.end() ? it->second : opts_.policy;
}

size_t router_policy::prefix_entries(const std::string& replica) const {
  auto it = prefixes_.find(replica);
  return it == prefixes_.end() ? 0 : it->second.where.size();
}

bool router_policy::within_cap(const replica_load& r, int64_t min_load) const {
  const int64_t load = r.load();
  return load <= min_load + opts_.affinity_slack
         || static_cast<double>(load) <= opts_.affinity_ratio * static_cast<double>(min_load);
}

replica_load* router_policy::least_tokens(const std::vector<replica_load*>& live) {
  replica_load* best = nullptr;
  for (auto* r : live)
    if (!best || r->tokens() < best->tokens()
        || (r->tokens() == best->tokens() && less_loaded(r, best)))
      best = r;
  return best;
}

size_t router_policy::matched_blocks(const std::string& replica, const std::vector<uint64_t>& hashes) const {
  auto it = prefixes_.find(replica);
  if (it == prefixes_.end())
    return 0;
  size_t n = 0;
  // A chain hash names its whole prefix: the first miss ends the match.
  while (n < hashes.size() && it->second.where.count(hashes[n]))
    ++n;
  return n;
}

void router_policy::remember_prefix(const std::string& replica, const std::vector<uint64_t>& hashes) {
  if (hashes.empty() || opts_.prefix_cache_blocks == 0)
    return;
  auto& idx = prefixes_[replica];
  // Deepest block first, so the root ends up most recent: eviction takes
  // the tails of prefixes (leaves of the radix tree) before their roots.
  for (auto hit = hashes.rbegin(); hit != hashes.rend(); ++hit) {
    const uint64_t h = *hit;
    auto it = idx.where.find(h);
    if (it != idx.where.end()) {
      idx.lru.splice(idx.lru.begin(), idx.lru, it->second);
      continue;
    }
    idx.lru.push_front(h);
    idx.where[h] = idx.lru.begin();
  }
  while (idx.where.size() > opts_.prefix_cache_blocks) {
    idx.where.erase(idx.lru.back());
    idx.lru.pop_back();
  }
}

void router_policy::bind_session(const std::string& session, const std::string& replica) {
  auto it = sessions_.find(session);
  if (it != sessions_.end()) {
    it->second.replica = replica;
    session_lru_.splice(session_lru_.begin(), session_lru_, it->second.lru);
    return;
  }
  if (opts_.max_sessions == 0)
    return;
  session_lru_.push_front(session);
  sessions_[session] = {replica, session_lru_.begin()};
  while (sessions_.size() > opts_.max_sessions) {
    sessions_.erase(session_lru_.back());
    session_lru_.pop_back();
  }
}

uint64_t router_policy::next_random() {
  // splitmix64: deterministic for a seed, good enough to draw two replicas.
  if (rng_ == 0)
    rng_ = opts_.seed * 0x9e3779b97f4a7c15ull + 1;
  uint64_t z = (rng_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::optional<std::string> router_policy::pick(const std::string& model,
                                              const std::vector<std::string>& exclude) {
  route_request req;
  req.model = model;
  return choose(req, exclude).replica;
}

route_choice router_policy::choose(const route_request& req, const std::vector<std::string>& exclude) {
  route_choice out;
  std::vector<replica_load*> live;
  for (auto& [name, r] : replicas_)
    if (r.model == req.model && r.up && r.routable
        && std::find(exclude.begin(), exclude.end(), name) == exclude.end())
      live.push_back(&r);
  if (live.empty())
    return out;
  if (std::any_of(live.begin(), live.end(), [](const replica_load* r) { return !r->asleep(); }))
    live.erase(std::remove_if(live.begin(), live.end(), [](const replica_load* r) { return r->asleep(); }),
               live.end());
  int64_t min_load = std::numeric_limits<int64_t>::max();
  for (auto* r : live)
    min_load = std::min(min_load, r->load());
  const int64_t prompt = prompt_len(req);

  replica_load* best = nullptr;
  std::vector<uint64_t> hashes;
  switch (kind_of(req.model)) {
    case policy_kind::round_robin:
      best = live[rr_next_[req.model]++ % live.size()];
      break;
    case policy_kind::least_loaded:
      for (auto* r : live)
        if (!best || less_loaded(r, best))
          best = r;
      break;
    case policy_kind::power_of_two: {
      if (live.size() == 1) {
        best = live[0];
        break;
      }
      size_t a = next_random() % live.size();
      size_t b = next_random() % (live.size() - 1);
      if (b >= a)
        ++b;
      best = less_loaded(live[b], live[a]) ? live[b] : live[a];
      break;
    }
    case policy_kind::least_tokens:
      best = least_tokens(live);
      break;
    case policy_kind::prefix_aware: {
      if (req.prompt)
        hashes = block_hashes(*req.prompt, opts_.block_tokens);
      size_t best_match = 0;
      for (auto* r : live) {
        if (!within_cap(*r, min_load))
          continue;
        size_t m = matched_blocks(r->replica, hashes);
        if (m > best_match || (m == best_match && m > 0 && best && r->tokens() < best->tokens())) {
          best = r;
          best_match = m;
        }
      }
      if (best_match == 0) {
        best = least_tokens(live);
      } else {
        out.affinity = true;
        out.prefix_blocks = static_cast<int32_t>(best_match);
        ++best->affinity_hits;
        best->prefix_blocks_matched += best_match;
      }
      break;
    }
    case policy_kind::session: {
      if (!req.session.empty()) {
        auto it = sessions_.find(req.session);
        if (it != sessions_.end())
          for (auto* r : live)
            if (r->replica == it->second.replica && within_cap(*r, min_load)) {
              best = r;
              out.affinity = true;
              ++best->affinity_hits;
              break;
            }
      }
      if (!best)
        best = least_tokens(live);
      if (!req.session.empty())
        bind_session(req.session, best->replica);
      break;
    }
    case policy_kind::slo_aware: {
      double best_ttft = std::numeric_limits<double>::infinity();
      for (auto* r : live) {
        if (r->prefill_tok_s <= 0)
          continue;
        double ttft = 1e3 * static_cast<double>(r->queued_prefill + r->prefill_since_report + prompt)
                      / r->prefill_tok_s;
        if (ttft < best_ttft || (ttft == best_ttft && less_loaded(r, best))) {
          best = r;
          best_ttft = ttft;
        }
      }
      if (!best) {  // no rate known anywhere yet: nothing to predict with
        best = least_tokens(live);
        break;
      }
      out.predicted_ttft_ms = best_ttft;
      if (req.ttft_budget_ms > 0 && best_ttft > req.ttft_budget_ms) {
        out.over_deadline = true;
        return out;
      }
      break;
    }
  }
  out.replica = best->replica;
  out.tokens = prompt + std::max<int64_t>(req.max_tokens, 0);
  out.prefill = prompt;
  ++best->sent_since_report;
  best->tokens_since_report += out.tokens;
  best->prefill_since_report += out.prefill;
  ++best->dispatched;
  if (!hashes.empty())
    remember_prefix(best->replica, hashes);
  return out;
}

void router_policy::refused(const std::string& replica, const route_choice& choice) {
  auto it = replicas_.find(replica);
  if (it == replicas_.end())
    return;
  auto& r = it->second;
  if (r.sent_since_report > 0)
    --r.sent_since_report;
  r.tokens_since_report = std::max<int64_t>(0, r.tokens_since_report - choice.tokens);
  r.prefill_since_report = std::max<int64_t>(0, r.prefill_since_report - choice.prefill);
}

}  // namespace llmux::router
