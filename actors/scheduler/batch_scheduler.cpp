#include "actors/scheduler/batch_scheduler.hpp"

#include <algorithm>
#include <limits>

namespace llmux::scheduler {

using protocol::finish_reason;

batch_scheduler::batch_scheduler(scheduler_options opts) : opts_(opts) {
}

namespace {

/// `banned`: tokens masked this step (EOS and stop tokens before min_tokens).
void fill_sampling(engine::seq_work& w, const protocol::gen_params& p, const std::vector<int32_t>& banned) {
  w.seed = p.seed;
  w.temperature = static_cast<float>(p.temperature);
  w.top_p = static_cast<float>(p.top_p);
  w.top_k = p.top_k;
  w.min_p = static_cast<float>(p.min_p);
  w.presence_penalty = static_cast<float>(p.presence_penalty);
  w.frequency_penalty = static_cast<float>(p.frequency_penalty);
  w.repetition_penalty = static_cast<float>(p.repetition_penalty);
  w.bias_tokens = p.bias_tokens;
  w.bias_values = p.bias_values;
  for (auto t : banned) {
    w.bias_tokens.push_back(t);
    w.bias_values.push_back(-std::numeric_limits<float>::infinity());
  }
  w.logprobs = p.logprobs;
}

/// Penalties make the engine count the tokens a sequence feeds (prompt and
/// output); a prefix taken from the cache is never fed, so such a request
/// computes its whole history itself.
bool prefix_shareable(const protocol::gen_params& p) {
  return p.presence_penalty == 0 && p.frequency_penalty == 0 && p.repetition_penalty == 1;
}

}  // namespace

void batch_scheduler::attach_grammar(engine::seq_work& w, sequence& s) {
  if (s.req.params.grammar.empty())
    return;
  w.constrained = true;
  if (s.grammar_sent)
    return;
  s.grammar_sent = true;
  w.grammar = s.req.params.grammar;
  // Output that came with the request (a migration's continuation) or that
  // an earlier admission sampled (before a preemption).
  const auto orig = static_cast<size_t>(std::max<int32_t>(0, s.req.original_prompt_len));
  if (orig < s.req.prompt.size())
    w.grammar_prefix.assign(s.req.prompt.begin() + static_cast<std::ptrdiff_t>(orig), s.req.prompt.end());
  w.grammar_prefix.insert(w.grammar_prefix.end(), s.generated.begin(), s.generated.end());
}

std::vector<int32_t> batch_scheduler::banned(const sequence& s) const {
  std::vector<int32_t> out;
  const auto& p = s.req.params;
  if (static_cast<int32_t>(s.generated.size()) >= p.min_tokens)
    return out;
  if (opts_.eos_id >= 0 && !p.ignore_eos)
    out.push_back(opts_.eos_id);
  out.insert(out.end(), p.stop_tokens.begin(), p.stop_tokens.end());
  return out;
}

int64_t batch_scheduler::blocks_for_tokens(int64_t tokens) const {
  return (tokens + opts_.block_tokens - 1) / opts_.block_tokens;
}

int64_t batch_scheduler::admission_blocks(const protocol::gen_request& r) const {
  const auto prompt = static_cast<int64_t>(r.prompt.size());
  return blocks_for_tokens(opts_.growth == kv_growth::reserve ? prompt + r.params.max_tokens
                                                               : prompt + 1);
}

int64_t batch_scheduler::capacity(const sequence& s) const {
  return s.blocks * opts_.block_tokens;
}

int32_t batch_scheduler::total_len(const sequence& s) const {
  return static_cast<int32_t>(s.req.prompt.size() + s.generated.size());
}

enqueue_status batch_scheduler::enqueue(protocol::gen_request req, uint32_t sink) {
  if (req.prompt.empty())
    return enqueue_status::empty_prompt;
  if (static_cast<int64_t>(req.prompt.size()) >= opts_.context_length)
    return enqueue_status::prompt_too_long;
  if (static_cast<int>(waiting_.size()) >= opts_.max_waiting)
    return enqueue_status::queue_full;
  if (running_.count(req.id) > 0
      || std::any_of(waiting_.begin(), waiting_.end(),
                     [&](const auto& w) { return w.first.id == req.id; })
      || std::any_of(preempted_.begin(), preempted_.end(),
                     [&](const sequence& p) { return p.req.id == req.id; }))
    return enqueue_status::duplicate_id;
  // The context window caps the output: the request ends with "length" there.
  auto room = opts_.context_length - static_cast<int32_t>(req.prompt.size());
  req.params.max_tokens = std::clamp(req.params.max_tokens, 1, room);
  waiting_.emplace_back(std::move(req), sink);
  return enqueue_status::accepted;
}

int64_t batch_scheduler::cancel(uint64_t id) {
  auto w = std::find_if(waiting_.begin(), waiting_.end(),
                        [&](const auto& x) { return x.first.id == id; });
  if (w != waiting_.end()) {
    waiting_.erase(w);
    return 0;
  }
  auto pw = std::find_if(preempted_.begin(), preempted_.end(),
                         [&](const sequence& x) { return x.req.id == id; });
  if (pw != preempted_.end()) {
    preempted_.erase(pw);  // holds no blocks; the engine was told at preemption
    return 0;
  }
  auto r = running_.find(id);
  if (r == running_.end())
    return 0;
  if (r->second.busy) {
    r->second.cancelled = true;  // dropped when the step returns
    return 0;
  }
  auto freed = r->second.blocks;
  hold_admission_ = false;
  blocks_held_ -= freed;
  running_.erase(r);
  order_.erase(std::find(order_.begin(), order_.end(), id));
  released_.push_back(id);
  return freed;
}

int64_t batch_scheduler::cancel_sink(uint32_t sink, size_t* n, std::vector<uint64_t>* closed) {
  std::vector<uint64_t> ids;
  for (const auto& [req, s] : waiting_)
    if (s == sink)
      ids.push_back(req.id);
  for (const auto& p : preempted_)
    if (p.sink == sink)
      ids.push_back(p.req.id);
  for (const auto& [id, seq] : running_)
    if (seq.sink == sink && !seq.cancelled)
      ids.push_back(id);
  int64_t freed = 0;
  for (auto id : ids) {
    auto f = cancel(id);
    if (f > 0 && closed != nullptr)
      closed->push_back(id);
    freed += f;
  }
  if (n != nullptr)
    *n = ids.size();
  return freed;
}

step_events batch_scheduler::migrate_all() {
  return migrate_some(waiting_.size() + preempted_.size() + running_.size());
}

step_events batch_scheduler::migrate_some(size_t n) {
  step_events ev;
  std::vector<std::pair<uint64_t, uint32_t>> all;
  for (auto it = waiting_.rbegin(); it != waiting_.rend(); ++it)
    all.emplace_back(it->first.id, it->second);
  for (const auto& p : preempted_)
    all.emplace_back(p.req.id, p.sink);
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    const auto& seq = running_.at(*it);
    if (!seq.cancelled)
      all.emplace_back(*it, seq.sink);
  }
  if (all.size() > n)
    all.resize(n);
  for (const auto& [id, sink] : all) {
    routed_delta rd;
    rd.sink = sink;
    rd.delta.id = id;
    rd.delta.finish = finish_reason::migrate;
    ev.deltas.push_back(std::move(rd));
    const auto freed = cancel(id);
    if (freed > 0)
      ev.closed.push_back(id);
    ev.freed_blocks += freed;
  }
  return ev;
}

std::vector<protocol::kv_need> batch_scheduler::admission_candidates() const {
  std::vector<protocol::kv_need> out;
  // After a preemption the pool is known to be short: admitting again
  // (the preempted sequence first) before anything ends would only preempt
  // again and recompute for nothing.
  if (hold_admission_ && !running_.empty())
    return out;
  auto room = static_cast<size_t>(std::max(0, opts_.max_running - static_cast<int>(running_.size())));
  // A preempted sequence comes back with room for everything it has plus
  // the token it samples next.
  for (size_t i = 0; i < preempted_.size() && out.size() < room; ++i) {
    const auto& p = preempted_[i];
    if (release_pending(p.req.id))
      return out;  // its old KV is not yet dropped; those behind it wait too
    protocol::kv_need n{p.req.id,
                        static_cast<int32_t>(blocks_for_tokens(total_len(p) + 1) * opts_.block_tokens), {}};
    if (opts_.share_prefix && prefix_shareable(p.req.params)) {
      n.lookup = p.req.prompt;
      n.lookup.insert(n.lookup.end(), p.generated.begin(), p.generated.end());
    }
    out.push_back(std::move(n));
  }
  for (size_t i = 0; i < waiting_.size() && out.size() < room; ++i) {
    const auto& r = waiting_[i].first;
    protocol::kv_need n{r.id, static_cast<int32_t>(admission_blocks(r) * opts_.block_tokens), {}};
    if (opts_.share_prefix && prefix_shareable(r.params))
      n.lookup = r.prompt;
    out.push_back(std::move(n));
  }
  return out;
}

void batch_scheduler::admit(size_t n) {
  admit(std::vector<int32_t>(n, 0));
}

void batch_scheduler::admit(const std::vector<int32_t>& cached) {
  protocol::kv_grant g;
  g.granted = static_cast<int32_t>(cached.size());
  g.cached = cached;
  admit(g);
}

void batch_scheduler::admit(const protocol::kv_grant& grant) {
  const auto n = static_cast<size_t>(std::max(grant.granted, 0));
  size_t i = 0;
  auto start = [&](sequence s) {
    // A cached prefix is whole blocks of the tokens looked up, never all of
    // them: at least one token is left to compute and sample from.
    const int32_t cached = i < grant.cached.size() ? grant.cached[i] : 0;
    const int32_t hit = opts_.share_prefix ? std::max(cached, 0) : 0;
    if (i < grant.blocks.size())
      s.new_blocks = grant.blocks[i];
    ++i;
    s.computed = std::min(hit, total_len(s) - 1);
    s.committed_blocks = s.computed / opts_.block_tokens;
    blocks_held_ += s.blocks;
    auto id = s.req.id;
    order_.push_back(id);
    running_.emplace(id, std::move(s));
  };
  while (i < n && !preempted_.empty()) {
    sequence s = std::move(preempted_.front());
    preempted_.pop_front();
    // Room for all it has and its next token (a cached prefix is shorter).
    s.blocks = blocks_for_tokens(total_len(s) + 1);
    start(std::move(s));
  }
  while (i < n && !waiting_.empty()) {
    auto [req, sink] = std::move(waiting_.front());
    waiting_.pop_front();
    sequence s;
    s.blocks = admission_blocks(req);
    s.sink = sink;
    s.req = std::move(req);
    const auto prompt = static_cast<uint64_t>(s.req.prompt.size());
    const size_t at = i;
    start(std::move(s));
    admitted_prompt_tokens_ += prompt;
    if (opts_.share_prefix && at < grant.cached.size())
      cached_prompt_tokens_ += static_cast<uint64_t>(std::max(
        std::min<int64_t>(grant.cached[at], static_cast<int64_t>(prompt) - 1), int64_t{0}));
  }
}

int64_t batch_scheduler::outstanding_tokens() const {
  int64_t n = 0;
  for (const auto& [req, sink] : waiting_)
    n += static_cast<int64_t>(req.prompt.size()) + req.params.max_tokens;
  auto rest = [](const sequence& s, int64_t total) {
    // Prompt (or recompute) tokens still to feed, then outputs still to make.
    return std::max<int64_t>(total - s.computed, 0)
           + std::max<int64_t>(s.req.params.max_tokens - static_cast<int64_t>(s.generated.size()), 0);
  };
  for (const auto& s : preempted_)
    n += rest(s, total_len(s));
  for (const auto& [id, s] : running_)
    n += rest(s, total_len(s));
  return n;
}

int64_t batch_scheduler::queued_prefill_tokens() const {
  int64_t n = 0;
  for (const auto& [req, sink] : waiting_)
    n += static_cast<int64_t>(req.prompt.size());
  for (const auto& s : preempted_)
    n += total_len(s);
  for (const auto& [id, s] : running_)
    n += std::max<int64_t>(total_len(s) - 1 - s.computed, 0);
  return n;
}

routed_delta batch_scheduler::reject_first_waiting(const std::string& why) {
  routed_delta rd;
  if (!preempted_.empty()) {
    // It has streamed tokens already: it ends where the pool let it get.
    rd.sink = preempted_.front().sink;
    rd.delta.id = preempted_.front().req.id;
    rd.delta.finish = finish_reason::length;
    preempted_.pop_front();
    ++finished_;
    return rd;
  }
  if (waiting_.empty())
    return rd;
  rd.sink = waiting_.front().second;
  rd.delta.id = waiting_.front().first.id;
  rd.delta.finish = finish_reason::error;
  rd.delta.error = why;
  rd.delta.status = 400;
  waiting_.pop_front();
  return rd;
}

std::optional<routed_delta> batch_scheduler::reject_waiting(uint64_t id, const std::string& why, int32_t status) {
  auto it = std::find_if(waiting_.begin(), waiting_.end(), [id](const auto& w) { return w.first.id == id; });
  if (it == waiting_.end())
    return std::nullopt;
  routed_delta rd;
  rd.sink = it->second;
  rd.delta.id = id;
  rd.delta.finish = finish_reason::error;
  rd.delta.error = why;
  rd.delta.status = status;
  waiting_.erase(it);
  return rd;
}

std::vector<protocol::kv_need> batch_scheduler::growth_candidates() {
  growth_ids_.clear();
  if (opts_.growth != kv_growth::on_demand || (!opts_.split_jobs && step_in_flight()))
    return {};
  std::vector<protocol::kv_need> needs;
  for (auto id : order_) {
    const auto& s = running_.at(id);
    if (s.busy)
      continue;  // split jobs: in the other job's step; asked for when it returns
    // Whatever the next step feeds this sequence (a decode token, or the
    // rest of a re-admitted prefill) must fit its blocks.
    if (total_len(s) > capacity(s)) {
      growth_ids_.push_back(id);
      needs.push_back({id, static_cast<int32_t>(blocks_for_tokens(total_len(s)) * opts_.block_tokens), {}});
    }
  }
  return needs;
}

step_events batch_scheduler::apply_growth(int32_t granted) {
  protocol::kv_grant g;
  g.granted = granted;
  return apply_growth(g);
}

step_events batch_scheduler::apply_growth(const protocol::kv_grant& grant) {
  step_events ev;
  std::vector<uint64_t> ids;
  ids.swap(growth_ids_);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = running_.find(ids[i]);
    if (it == running_.end())
      continue;  // cancelled meanwhile: its kv_close, sent after, frees the block
    if (static_cast<int32_t>(i) < grant.granted) {
      // Granted: the blocks are held now (even if the sequence goes below).
      auto need = blocks_for_tokens(total_len(it->second)) - it->second.blocks;
      it->second.blocks += need;
      blocks_held_ += need;
      if (i < grant.blocks.size())
        it->second.new_blocks.insert(it->second.new_blocks.end(), grant.blocks[i].begin(),
                                     grant.blocks[i].end());
      continue;
    }
    // Refused: make room by recompute, newest first (perhaps this one),
    // among the sequences in no step (split jobs: the other job's step may
    // be computing some).
    for (auto v = order_.rbegin(); v != order_.rend(); ++v)
      if (!running_.at(*v).busy) {
        preempt(*v, ev);
        break;
      }
  }
  return ev;
}

void batch_scheduler::preempt(uint64_t id, step_events& ev) {
  auto it = running_.find(id);
  sequence s = std::move(it->second);
  ev.freed_blocks += s.blocks;
  ev.closed.push_back(id);
  blocks_held_ -= s.blocks;
  running_.erase(it);
  order_.erase(std::find(order_.begin(), order_.end(), id));
  released_.push_back(id);  // the engine drops its KV
  s.blocks = 0;
  s.computed = 0;
  s.committed_blocks = 0;
  s.new_blocks.clear();
  s.grammar_sent = false;  // the engine forgets the sequence with its KV
  // Preempted newest first, so pushing to the front keeps them oldest first.
  preempted_.push_front(std::move(s));
  ++preemptions_;
  hold_admission_ = true;
}

bool batch_scheduler::prefill_ready(const sequence& s) const {
  const int32_t pending = total_len(s) - s.computed;
  return pending > 0 && (s.generated.empty() || pending != 1) && capacity(s) > s.computed;
}

bool batch_scheduler::decode_ready(const sequence& s) const {
  return !s.generated.empty() && total_len(s) - s.computed == 1 && s.computed + 1 <= capacity(s);
}

bool batch_scheduler::release_pending(uint64_t id) const {
  if (!opts_.split_jobs)
    return false;
  auto has = [id](const std::vector<uint64_t>& v) { return std::find(v.begin(), v.end(), id) != v.end(); };
  return has(released_) || has(releasing_[0]) || has(releasing_[1]);
}

bool batch_scheduler::can_step(engine::job_kind job) const {
  if (in_flight_[slot(job)])
    return false;
  if (job == engine::job_kind::mixed)
    return !in_flight_[1] && !running_.empty();
  for (const auto& [id, s] : running_)
    if (!s.busy && (job == engine::job_kind::prefill ? prefill_ready(s) : decode_ready(s)))
      return true;
  return false;
}

std::vector<uint64_t> batch_scheduler::take_released() {
  std::vector<uint64_t> out;
  out.swap(released_);
  return out;
}

engine::step_input batch_scheduler::next_step(engine::job_kind job) {
  engine::step_input in;
  in.job = job;
  in.released = take_released();
  auto& plan = plans_[slot(job)];
  plan.clear();
  int budget = opts_.max_batch_tokens;
  // Decodes first: one token each, so running streams never stall behind prompts.
  for (auto id : order_) {
    if (job == engine::job_kind::prefill)
      break;
    auto& s = running_.at(id);
    if (s.busy || !decode_ready(s) || budget <= 0)
      continue;
    engine::seq_work w;
    w.seq_id = id;
    w.tokens = {s.generated.back()};
    w.kv_blocks = std::move(s.new_blocks);
    s.new_blocks.clear();
    w.context_len = s.computed;
    w.prompt_len = s.req.original_prompt_len;
    w.sample = true;
    fill_sampling(w, s.req.params, banned(s));
    attach_grammar(w, s);
    in.seqs.push_back(std::move(w));
    plan.push_back({id, 1, true});
    budget -= 1;
  }
  // Then prefill chunks in admission order, split to fit the token budget.
  // A sequence re-admitted after preemption prefills its prompt and the
  // tokens it generated, and samples after the last of them.
  for (auto id : order_) {
    if (budget <= 0 || job == engine::job_kind::decode)
      break;
    auto& s = running_.at(id);
    if (s.busy || !prefill_ready(s))
      continue;
    int32_t pending = total_len(s) - s.computed;
    auto room = capacity(s) - s.computed;
    int32_t chunk = static_cast<int32_t>(
      std::min({static_cast<int64_t>(pending), static_cast<int64_t>(budget), room}));
    engine::seq_work w;
    w.seq_id = id;
    const auto prompt_len = static_cast<int32_t>(s.req.prompt.size());
    for (int32_t i = s.computed; i < s.computed + chunk; ++i)
      w.tokens.push_back(i < prompt_len ? s.req.prompt[i] : s.generated[i - prompt_len]);
    w.kv_blocks = std::move(s.new_blocks);
    s.new_blocks.clear();
    w.context_len = s.computed;
    w.prompt_len = s.req.original_prompt_len;
    bool sample = chunk == pending;
    w.sample = sample;
    fill_sampling(w, s.req.params, banned(s));
    attach_grammar(w, s);
    in.seqs.push_back(std::move(w));
    plan.push_back({id, chunk, sample});
    budget -= chunk;
  }
  for (const auto& p : plan)
    running_.at(p.id).busy = true;
  auto& flying = in_flight_[slot(job)];
  flying = !plan.empty();
  if (opts_.split_jobs) {
    // The engine drops these sequences' KV when this step starts; until it
    // returns, none of them may come back with a new table.
    releasing_[slot(job)] = in.released;
    flying = flying || !in.released.empty();
  }
  if (!plan.empty())
    ++steps_;
  return in;
}

void batch_scheduler::retire(uint64_t id, step_events& ev) {
  hold_admission_ = false;
  auto it = running_.find(id);
  ev.freed_blocks += it->second.blocks;
  ev.closed.push_back(id);
  blocks_held_ -= it->second.blocks;
  running_.erase(it);
  order_.erase(std::find(order_.begin(), order_.end(), id));
  released_.push_back(id);
}

step_events batch_scheduler::apply(const engine::step_output& out, engine::job_kind job) {
  step_events ev;
  const int k = slot(job);
  in_flight_[k] = false;
  releasing_[k].clear();
  auto& plan = plans_[k];
  // The prefill rate the router predicts TTFT with: prompt tokens fed per
  // second of the steps that carried any (decodes beside them slow it, as
  // they slow a new request's prefill), smoothed over steps.
  int64_t prompt_fed = 0;
  for (const auto& p : plan)
    if (p.fed > 1 || !p.sample)
      prompt_fed += p.fed;
  if (prompt_fed > 0 && out.seconds > 0) {
    const double rate = static_cast<double>(prompt_fed) / out.seconds;
    prefill_tok_s_ = prefill_tok_s_ > 0 ? 0.7 * prefill_tok_s_ + 0.3 * rate : rate;
  }
  for (size_t i = 0; i < plan.size(); ++i) {
    const auto& p = plan[i];
    auto it = running_.find(p.id);
    if (it == running_.end())
      continue;
    auto& s = it->second;
    s.busy = false;
    if (s.cancelled) {
      retire(p.id, ev);
      continue;
    }
    s.computed += p.fed;
    if (opts_.share_prefix && s.computed / opts_.block_tokens > s.committed_blocks) {
      s.committed_blocks = s.computed / opts_.block_tokens;
      const auto prompt_len = static_cast<int32_t>(s.req.prompt.size());
      std::vector<int32_t> done(s.req.prompt.begin(),
                                s.req.prompt.begin() + std::min(prompt_len, s.computed));
      for (int32_t i = prompt_len; i < s.computed; ++i)
        done.push_back(s.generated[i - prompt_len]);
      ev.commits.emplace_back(p.id, std::move(done));
    }
    if (!p.sample)
      continue;
    auto tok = i < out.tokens.size() ? out.tokens[i] : -1;
    routed_delta rd;
    rd.sink = s.sink;
    rd.delta.id = p.id;
    const auto& stops = s.req.params.stop_tokens;
    // Before min_tokens, an EOS or stop token (the sim engine's, or a tie
    // past the mask) is output like any other.
    const bool may_stop = static_cast<int32_t>(s.generated.size()) >= s.req.params.min_tokens;
    if (may_stop
        && ((tok == opts_.eos_id && !s.req.params.ignore_eos)
            || std::find(stops.begin(), stops.end(), tok) != stops.end())) {
      rd.delta.finish = finish_reason::stop;
    } else {
      s.generated.push_back(tok);
      rd.delta.tokens.push_back(tok);
      if (i < out.logprobs.size() && s.req.params.logprobs >= 0)
        rd.delta.logprobs.push_back(out.logprobs[i]);
      ++generated_total_;
      ++ev.new_tokens;
      if (static_cast<int32_t>(s.generated.size()) >= s.req.params.max_tokens
          || total_len(s) >= opts_.context_length)
        rd.delta.finish = finish_reason::length;
    }
    if (rd.delta.finish != finish_reason::none) {
      ++finished_;
      retire(p.id, ev);
    }
    ev.deltas.push_back(std::move(rd));
  }
  plan.clear();
  return ev;
}

step_events batch_scheduler::fail_step(const std::string& why, engine::job_kind job) {
  step_events ev;
  const int k = slot(job);
  in_flight_[k] = false;
  // The engine may never have seen these releases; they stay pending for
  // the next step (the sequences' KV is dropped there, before any new table).
  released_.insert(released_.end(), releasing_[k].begin(), releasing_[k].end());
  releasing_[k].clear();
  auto& plan = plans_[k];
  for (const auto& p : plan) {
    auto it = running_.find(p.id);
    if (it == running_.end())
      continue;
    it->second.busy = false;
    routed_delta rd;
    rd.sink = it->second.sink;
    rd.delta.id = p.id;
    rd.delta.finish = finish_reason::error;
    rd.delta.error = why;
    bool cancelled = it->second.cancelled;
    retire(p.id, ev);
    if (!cancelled)
      ev.deltas.push_back(std::move(rd));
  }
  plan.clear();
  return ev;
}

step_events batch_scheduler::abandon_step(const std::string& why, engine::job_kind job) {
  step_events ev;
  for (const auto& p : plans_[slot(job)]) {
    auto it = running_.find(p.id);
    if (it == running_.end() || it->second.cancelled)
      continue;
    it->second.cancelled = true;  // no more deltas; retired when the step returns
    routed_delta rd;
    rd.sink = it->second.sink;
    rd.delta.id = p.id;
    rd.delta.finish = finish_reason::error;
    rd.delta.error = why;
    rd.delta.status = 504;  // a deadline, as the edge's own
    ev.deltas.push_back(std::move(rd));
  }
  return ev;
}

}  // namespace llmux::scheduler
