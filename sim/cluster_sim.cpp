#include "sim/cluster_sim.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "actors/controller/replan_policy.hpp"
#include "actors/controller/share_policy.hpp"
#include "actors/gpu_unit/residency.hpp"
#include "actors/gpu_unit/unit_core.hpp"
#include "actors/gpu_unit/unit_policy.hpp"
#include "actors/kv_manager/kv_manager_core.hpp"
#include "actors/router/router_policy.hpp"
#include "actors/scheduler/batch_scheduler.hpp"
#include "actors/unit_setup.hpp"
#include "engine/cost_model.hpp"
#include "engine/engine_factory.hpp"
#include "engine/sim_engine.hpp"
#include "engine/step_profile.hpp"

namespace llmux::sim {

namespace {

using engine::job_kind;

enum class ev_kind : uint8_t { arrival, run_done, tick, quota, shares, woke, replan };

struct event {
  double t = 0;
  uint64_t seq = 0;  ///< ties: in the order scheduled
  ev_kind kind = ev_kind::tick;
  uint32_t a = 0;    ///< arrival: request; run_done: run slot; quota: unit
  uint64_t b = 0;    ///< run_done: the run's version when scheduled
  bool operator>(const event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

struct unit_sim;

/// One model replica: a scheduler core and what its actor keeps beside it.
struct replica_sim {
  std::string name;  ///< "<unit>/<model>"
  std::string model;
  unit_sim* unit = nullptr;
  std::unique_ptr<scheduler::batch_scheduler> core;
  bool split = false;
  // What the scheduler actor reports to the kv_manager each tick.
  int32_t arrivals = 0;
  bool open_refused = false;
  int64_t last_backlog = -1;
  // What it reports to the router (and the controller).
  int32_t last_waiting = -1, last_running = -1;
  int64_t last_tokens = -1;
  double last_report_s = -1e18;
  // Sleep and wake, as the scheduler actor keeps them.
  std::string residency = "ready";
  double last_active_s = 0;
  double wake_after_s = 0;    ///< a refused wake is asked again from then
  double idle_sleep_s = 0;
  double wake_s = 0;          ///< the modelled time of a wake
  int32_t ttft_slo_ms = 0;    ///< its model's: waiting past it while asleep is a 503
  uint64_t arrived = 0;       ///< accepted since the start (the controller's rates)
  std::string last_residency = "ready";  ///< as last reported
  uint64_t last_arrived = 0;
  uint32_t index = 0;         ///< in replicas_
  std::map<uint64_t, double> wake_deadline;  ///< request id → when it stops waiting for a wake
  /// Moved away by re-placement to `moved_to`: its sequences handed back
  /// (the gateway offers them again elsewhere), not routed to; asleep, and
  /// routable again (passed over while another replica is awake), once
  /// idle and the target is awake, as `llmux admin move` does it.
  bool draining = false;
  std::string moved_to;
};

/// A step computing (or queued) on a unit.
struct run {
  replica_sim* r = nullptr;
  job_kind job = job_kind::mixed;
  engine::step_input in;
  engine::step_output out;
  bool lane = false;        ///< holds the unit's step_queue lane
  bool active = false;      ///< computing now
  double remaining = 0;     ///< seconds of its time alone still to compute
  double last_s = 0;        ///< when `remaining` was last brought up to date
  double slowdown = 1;
  double bandwidth = 0;     ///< fraction of the unit's bandwidth it uses alone
  double share = 1;         ///< of the unit's compute it may use
  bool memory_bound = true;
  uint64_t version = 0;
};

struct unit_sim {
  const config::unit_config* cfg = nullptr;
  int gpus = 1;
  double bandwidth_bps = 0;  ///< the unit's memory bandwidth, all GPUs
  std::unique_ptr<kv::kv_manager_core> kv;
  std::unique_ptr<unit::unit_core> core;
  std::unique_ptr<unit::step_queue> queue;  ///< temporal, or the shared prefill lane
  bool lane_prefill_only = false;
  std::vector<uint32_t> active;  ///< run slots computing now
  double busy_since = -1;
  unit::residency memory;  ///< which models are awake (memory_mib)
  std::map<std::string, replica_sim*> replica_of;  ///< model → its replica here
  unit_outcome out;
};

/// What the unit's jobs hold of it at once. One step at a time (temporal)
/// holds all of it, whatever the books say.
double share_sum(const unit::unit_core& core, bool temporal) {
  if (temporal)
    return 1;
  double sum = core.prefill_lane();
  for (const auto& [name, slot] : core.models())
    sum += core.prefill_lane() > 0 ? slot.decode_share.load() : slot.total_share();
  return sum;
}

/// The cost model a request's SLO is measured on: the model alone on its
/// reference devices at full share.
engine::cost_model reference_costs(const config::cluster_config& cfg, const config::model_config& m,
                                   const config::gpu_spec& gpu) {
  int tp = 1;
  if (!gpu.profile.empty()) {
    auto profile = engine::step_profile::shared(gpu.profile);
    // The key the cost model finds the model under (cost_model::for_model).
    for (const auto& key : {m.profile_key, m.name, m.arch.preset})
      if (!key.empty() && profile->has(key)) {
        tp = profile->tp_sizes(key).front();
        break;
      }
  } else {
    const double weights = m.arch.params() * m.arch.dtype_bytes;
    while (weights * 2 > gpu.memory_gib * 1024.0 * 1024 * 1024 * tp && tp < 64)
      tp *= 2;
  }
  (void)cfg;
  return engine::cost_model::for_model(m, gpu, tp);
}

class cluster_sim {
public:
  cluster_sim(const config::cluster_config& cfg, const workload& w, const sim_options& o)
    : cfg_(cfg), w_(w), opts_(o), router_(setup::routing(cfg)) {
    share_opts_.step = cfg.controller.share_step;
    share_opts_.cooldown_s = cfg.controller.share_cooldown_ms / 1e3;
    shares_ = controller::share_policy(share_opts_);
    controller::replan_options ro;
    ro.budget = cfg.controller.replan_budget;
    ro.ratio = cfg.controller.replan_ratio;
    ro.min_rate = cfg.controller.replan_min_rate;
    replan_ = controller::replan_policy(ro);
    if (o.planner)
      replan_.use_planner(o.planner);
    build();
  }

  sim_result run_all();

private:
  void build();
  void push(double t, ev_kind kind, uint32_t a = 0, uint64_t b = 0) {
    events_.push(event{t, next_seq_++, kind, a, b});
  }

  void arrive(uint32_t i);
  void pump(replica_sim& r);
  void run_steps(replica_sim& r);
  void submit(replica_sim& r, job_kind job, engine::step_input in);
  void start(uint32_t slot);
  void finish(uint32_t slot);
  void settle(unit_sim& u);
  void reschedule(unit_sim& u);
  void deliver(replica_sim& r, scheduler::step_events& ev);
  void tick();
  void move_shares();
  void check_pools(const char* when);
  void note_shares(unit_sim& u);
  bool idle(const replica_sim& r) const;
  void sleep(replica_sim& r);
  void wake(replica_sim& r);
  void woke(replica_sim& r);
  void replan();
  void offer(uint32_t i, const std::vector<std::string>& exclude, int done);

  const config::cluster_config& cfg_;
  const workload& w_;
  sim_options opts_;
  router::router_policy router_;
  bool shares_prefixes_ = false;  ///< the workload's prompts share prefixes
  controller::share_policy_options share_opts_;
  controller::share_policy shares_;
  controller::replan_policy replan_;
  bool replans_ = false;  ///< [controller] replan_s > 0 and a unit has a memory_mib
  uint64_t replan_wakes_ = 0;
  uint64_t replan_moves_ = 0;
  /// Requests handed back by a replica (finish "migrate"), and which: the
  /// event loop offers them again, elsewhere.
  std::vector<std::pair<uint32_t, std::string>> handed_;
  uint64_t replan_share_moves_ = 0;
  std::vector<std::unique_ptr<unit_sim>> units_;
  std::vector<std::unique_ptr<replica_sim>> replicas_;
  std::map<std::string, replica_sim*> by_name_;
  std::map<std::string, engine::cost_model> reference_;
  std::vector<run> runs_;
  std::vector<uint32_t> free_runs_;
  std::priority_queue<event, std::vector<event>, std::greater<>> events_;
  uint64_t next_seq_ = 0;
  uint64_t versions_ = 0;
  double now_ = 0;
  sim_result res_;
  size_t resolved_ = 0;
  size_t arrived_ = 0;
};

void cluster_sim::build() {
  for (const auto& r : w_.requests)
    if (r.group >= 0 || r.session >= 0) {
      shares_prefixes_ = true;
      break;
    }
  for (const auto& u : cfg_.units) {
    if (u.backend != "sim")
      throw std::invalid_argument("unit '" + u.name + "' has backend '" + u.backend
                                  + "': llmux simulate runs sim units (their cost model is the clock)");
    auto us = std::make_unique<unit_sim>();
    us->cfg = &u;
    us->gpus = static_cast<int>(std::max<size_t>(1, u.devices.size()));
    const auto& gpu = cfg_.gpus.at(u.gpu);
    us->bandwidth_bps = gpu.mem_bandwidth_gbs * 1e9 * us->gpus;
    auto kvo = setup::kv_options(cfg_, u);
    us->kv = std::make_unique<kv::kv_manager_core>(kvo);
    us->core = std::make_unique<unit::unit_core>(1.0);
    setup::configure_core(*us->core, u);
    const auto sharing = setup::sharing(u);
    if (sharing.temporal || sharing.shared_prefill) {
      auto kind = unit::parse_policy(sharing.policy).value_or(unit::policy_kind::adbs);
      us->queue = std::make_unique<unit::step_queue>(kind, sharing.max_prefill_streak);
      us->lane_prefill_only = sharing.shared_prefill;
    }
    us->memory = unit::residency(int64_t{u.memory_mib} << 20);
    for (const auto& um : u.models) {
      const auto* m = cfg_.find_model(um.model);
      auto ctx = setup::engine_context(cfg_, u, um, kvo.total_blocks);
      // As run_node builds them: awake while the weights fit memory_mib.
      const bool awake =
        us->memory.add(m->name, setup::weight_bytes(*m), um.awake) == unit::residency_state::ready;
      auto make = [mc = *m, ctx] { return engine::make_engine(mc, ctx); };
      us->core->add_model(m->name, engine::make_engine(*m, ctx), ctx.share, um.decode_share, make);
      if (us->queue)
        us->queue->add_model(m->name);
      auto r = std::make_unique<replica_sim>();
      r->name = u.name + "/" + m->name;
      r->model = m->name;
      r->unit = us.get();
      auto so = setup::scheduler_options(u, *m, us->core->models().at(m->name).engine->vocab().eos_id());
      // Without prefix groups or sessions, workload prompts are distinct
      // (no request shares a prefix with another), so the prefix cache
      // could only publish blocks nobody looks up and evict them later as
      // if free: the same decisions at a large cost in time (a 7B
      // token-block is 1024 head-blocks).
      so.share_prefix = shares_prefixes_;
      r->core = std::make_unique<scheduler::batch_scheduler>(so);
      r->split = u.jobs == "split";
      if (!awake)
        us->core->unload(m->name);  // built for its vocabulary above; asleep from the start
      r->residency = awake ? "ready" : "sleeping";
      r->idle_sleep_s = m->idle_sleep_s;
      r->wake_s = setup::sim_wake_seconds(cfg_, u, *m);
      r->ttft_slo_ms = m->ttft_slo_ms;
      us->replica_of[m->name] = r.get();
      r->index = static_cast<uint32_t>(replicas_.size());
      if (u.memory_mib > 0 && cfg_.controller.replan_s > 0) {
        replans_ = true;
        replan_.add_unit(u.name, int64_t{u.memory_mib} << 20);
        const bool lane = u.jobs == "split" && u.prefill == "shared";
        const auto& slot = us->core->models().at(m->name);
        replan_.add_replica(u.name, m->name, r->name, setup::weight_bytes(*m),
                            lane ? slot.decode_share.load() : um.share);
      }
      router_.replica_up(r->name, m->name, u.node, setup::prefill_rate(cfg_, u, um));
      if (!awake) {
        router::load_sample ls;
        ls.residency = r->residency;
        router_.report(r->name, ls);
      }
      shares_.set_share(u.name, m->name, um.share);
      by_name_[r->name] = r.get();
      replicas_.push_back(std::move(r));
      if (!reference_.count(m->name))
        reference_.emplace(m->name, reference_costs(cfg_, *m, gpu));
    }
    us->out.name = u.name;
    us->out.gpus = us->gpus;
    us->out.kv_blocks = kvo.total_blocks;
    us->out.max_share_sum = share_sum(*us->core, u.multiplex == "temporal");
    units_.push_back(std::move(us));
  }
  // Every model a request names, whether or not the workload lists it.
  std::set<std::string> named(w_.models.begin(), w_.models.end());
  for (const auto& r : w_.requests)
    named.insert(r.model);
  for (const auto& model : named)
    if (!router_.has_model(model))
      throw std::invalid_argument("workload model '" + model + "' is not hosted by any unit of "
                                  + cfg_.source);
}

void cluster_sim::arrive(uint32_t i) {
  ++arrived_;
  offer(i, {}, 0);
}

/// Routes request `i` and enqueues it, as the gateway does: on arrival, and
/// again (`exclude`: the replica that handed it back; `done`: the tokens it
/// already delivered) when a replica hands its sequences over.
void cluster_sim::offer(uint32_t i, const std::vector<std::string>& exclude, int done) {
  const auto& spec = w_.requests[i];
  auto& out = res_.requests[i];
  protocol::gen_request req;
  req.id = i + 1;
  req.model = spec.model;
  // Token ids inside the sim vocabulary's word range: shared where the
  // workload's prefix groups and sessions share them, else the request's own.
  req.prompt = prompt_of(spec, i);
  // A continuation carries the tokens delivered so far (their ids do not
  // matter to the sim's cost; the count does).
  for (int k = 0; k < done; ++k)
    req.prompt.push_back(req.prompt.back());
  router::route_request rr;
  rr.model = spec.model;
  rr.prompt = &req.prompt;
  rr.max_tokens = spec.output_tokens;
  if (spec.session >= 0)
    rr.session = std::to_string(spec.session);
  if (const auto* m = cfg_.find_model(spec.model))
    rr.ttft_budget_ms = m->ttft_slo_ms;
  auto choice = router_.choose(rr, exclude);
  if (!choice.replica) {
    out.status = choice.over_deadline ? 429 : 503;
    out.error = choice.over_deadline ? "no replica of '" + spec.model + "' predicted to meet its TTFT budget"
                                     : "no live replica for model '" + spec.model + "'";
    out.finish_s = now_;
    ++resolved_;
    return;
  }
  auto& r = *by_name_.at(*choice.replica);
  out.replica = r.name;
  req.original_prompt_len = spec.prompt_tokens;
  req.params.max_tokens = spec.output_tokens - done;
  req.params.ignore_eos = true;
  req.params.temperature = 0;
  req.params.seed = i + 1;
  switch (r.core->enqueue(std::move(req), 0)) {
    case scheduler::enqueue_status::accepted:
      if (done == 0) {  // a continuation is not a new arrival (as the scheduler actor counts)
        ++r.arrivals;
        ++r.arrived;
      }
      r.last_active_s = now_;
      if (r.residency != "ready" && r.ttft_slo_ms > 0)
        r.wake_deadline[i + 1] = now_ + r.ttft_slo_ms / 1e3;
      pump(r);
      return;
    case scheduler::enqueue_status::queue_full:
      out.status = 429;
      out.error = "model '" + spec.model + "' is overloaded on " + r.name;
      break;
    case scheduler::enqueue_status::prompt_too_long:
      out.status = 400;
      out.error = "prompt does not fit the context window";
      break;
    default:
      out.status = 400;
      out.error = "refused";
      break;
  }
  out.finish_s = now_;
  ++resolved_;
}

void cluster_sim::deliver(replica_sim& r, scheduler::step_events& ev) {
  auto& kv = *r.unit->kv;
  for (auto& [seq, tokens] : ev.commits)
    kv.commit(r.model, seq, tokens);
  if (!ev.closed.empty())
    kv.close(r.model, ev.closed);
  for (const auto& rd : ev.deltas) {
    const auto& d = rd.delta;
    auto& out = res_.requests[d.id - 1];
    if (!d.tokens.empty()) {
      if (out.generated == 0)
        out.first_token_s = now_;
      out.generated += static_cast<int>(d.tokens.size());
    }
    if (d.finish == protocol::finish_reason::none || out.finish_s >= 0)
      continue;
    if (d.finish == protocol::finish_reason::migrate) {
      // Handed over (a move): the gateway continues it on another replica.
      handed_.push_back({d.id - 1, r.name});
      continue;
    }
    out.finish_s = now_;
    if (d.finish == protocol::finish_reason::error) {
      out.status = d.status ? d.status : 500;
      out.error = d.error;
    }
    ++resolved_;
  }
}

/// The scheduler actor's pump: blocks for growth (each refusal preempts),
/// then admission, then a step.
void cluster_sim::pump(replica_sim& r) {
  auto& core = *r.core;
  auto& kv = *r.unit->kv;
  if (r.residency != "ready") {
    // Asleep: waiting work wakes the model (as the scheduler actor asks its unit).
    if (r.residency == "sleeping" && core.waiting() > 0 && now_ >= r.wake_after_s)
      wake(r);
    return;
  }
  for (;;) {
    if (!r.split && core.step_in_flight())
      return;
    auto grow = core.growth_candidates();
    if (!grow.empty()) {
      auto ev = core.apply_growth(kv.grow(r.model, grow));
      deliver(r, ev);
      continue;
    }
    auto cand = core.admission_candidates();
    if (!cand.empty()) {
      auto grant = kv.open(r.model, cand);
      r.open_refused = grant.granted == 0;
      if (grant.never) {
        scheduler::step_events ev;
        ev.deltas.push_back(core.reject_first_waiting("request needs more KV cache than unit '"
                                                      + r.unit->cfg->name + "' can hold for model '"
                                                      + r.model + "'"));
        deliver(r, ev);
      } else if (grant.granted > 0) {
        core.admit(grant);
      }
    }
    run_steps(r);
    return;
  }
}

void cluster_sim::run_steps(replica_sim& r) {
  auto& core = *r.core;
  if (r.split) {
    for (auto job : {job_kind::decode, job_kind::prefill}) {
      if (core.step_in_flight(job))
        continue;
      if (!core.can_step(job) && !(core.has_released() && job == job_kind::prefill))
        continue;
      submit(r, job, core.next_step(job));
    }
    return;
  }
  if (!core.can_step()) {
    // Idle with ended sequences: the actor tells the engine alone (the sim
    // engine holds nothing, and no answer is applied).
    if (core.has_released() && !core.step_in_flight())
      (void)core.take_released();
    return;
  }
  submit(r, job_kind::mixed, core.next_step());
}

void cluster_sim::submit(replica_sim& r, job_kind job, engine::step_input in) {
  uint32_t slot;
  if (!free_runs_.empty()) {
    slot = free_runs_.back();
    free_runs_.pop_back();
  } else {
    slot = static_cast<uint32_t>(runs_.size());
    runs_.emplace_back();
  }
  auto& x = runs_[slot];
  x = run{};
  x.r = &r;
  x.job = job;
  x.in = std::move(in);
  auto& u = *r.unit;
  const bool queued = u.queue && !x.in.seqs.empty() && (!u.lane_prefill_only || job == job_kind::prefill);
  if (!queued) {
    start(slot);
    return;
  }
  x.lane = true;
  bool prefill = job == job_kind::prefill;
  if (!prefill)
    for (const auto& w : x.in.seqs)
      prefill = prefill || w.context_len < w.prompt_len || w.tokens.size() > 1;
  // A scheduler has one step of a job in flight: nothing is ever replaced.
  (void)u.queue->submit(r.model, slot, prefill, now_);
  if (auto g = u.queue->start_next())
    start(static_cast<uint32_t>(g->ticket));
}

void cluster_sim::start(uint32_t slot) {
  auto& x = runs_[slot];
  auto& u = *x.r->unit;
  if (!x.in.seqs.empty())
    u.memory.touch(x.r->model, now_);
  x.out = u.core->step(x.r->model, x.in);
  ++u.out.steps;
  if (x.in.seqs.empty() || x.out.seconds <= 0) {
    // Nothing to compute: answered at once, after what is already due now.
    x.version = ++versions_;
    push(now_, ev_kind::run_done, slot, x.version);
    return;
  }
  const auto& eng = dynamic_cast<const engine::sim_engine&>(u.core->engine_of(x.r->model));
  const auto cost = eng.cost_of(x.in);
  x.remaining = x.out.seconds;
  x.memory_bound = !cost.compute_bound;
  if (u.cfg->multiplex == "temporal") {
    x.share = 1;
  } else {
    const auto& slot = u.core->models().at(x.r->model);
    x.share = x.job == job_kind::decode ? slot.decode_share.load() : slot.share.load();
  }
  x.bandwidth = std::min(1.0, cost.bytes / (x.out.seconds * u.bandwidth_bps));
  settle(u);
  x.active = true;
  x.last_s = now_;
  if (u.active.empty())
    u.busy_since = now_;
  u.active.push_back(slot);
  reschedule(u);
}

void cluster_sim::settle(unit_sim& u) {
  for (auto slot : u.active) {
    auto& x = runs_[slot];
    x.remaining = std::max(0.0, x.remaining - (now_ - x.last_s) / x.slowdown);
    x.last_s = now_;
  }
}

void cluster_sim::reschedule(unit_sim& u) {
  double demand = 0, compute = 0;
  for (auto slot : u.active) {
    if (opts_.bandwidth_contention && runs_[slot].memory_bound)
      demand += runs_[slot].bandwidth;
    compute += runs_[slot].share;
  }
  const double stretch = std::max(1.0, demand);
  // Partitions never overlap, so `compute` stays at most 1, except on an
  // oversubscribed unit (MPS caps), where every job slows by the sum.
  const double crowd = std::max(1.0, compute);
  for (auto slot : u.active) {
    auto& x = runs_[slot];
    const double slowdown = std::max(crowd, x.memory_bound ? stretch : 1.0);
    if (x.version > 0 && slowdown == x.slowdown)
      continue;  // its completion event still holds
    x.slowdown = slowdown;
    x.version = ++versions_;  // unique across slots: a reused slot never matches a stale event
    push(now_ + x.remaining * x.slowdown, ev_kind::run_done, slot, x.version);
  }
}

void cluster_sim::finish(uint32_t slot) {
  auto& x = runs_[slot];
  auto& r = *x.r;
  auto& u = *r.unit;
  if (x.active) {
    settle(u);
    u.active.erase(std::find(u.active.begin(), u.active.end(), slot));
    x.active = false;
    if (u.active.empty() && u.busy_since >= 0) {
      u.out.busy_s += now_ - u.busy_since;
      u.busy_since = -1;
    }
    reschedule(u);
  }
  const bool lane = x.lane;
  const job_kind job = x.job;
  auto out = std::move(x.out);
  x.r = nullptr;
  free_runs_.push_back(slot);
  // Every submitted step is one the scheduler marked in flight (a mixed
  // scheduler's release-only notes never come here).
  auto ev = r.core->apply(out, job);
  deliver(r, ev);
  r.last_active_s = now_;
  if (lane) {
    u.queue->finish();
    if (auto g = u.queue->start_next())
      start(static_cast<uint32_t>(g->ticket));
  }
  pump(r);
}

void cluster_sim::note_shares(unit_sim& u) {
  u.out.max_share_sum = std::max(u.out.max_share_sum, share_sum(*u.core, u.cfg->multiplex == "temporal"));
}

void cluster_sim::tick() {
  // What each scheduler actor does on its load tick: report to the router
  // (and the controller) when its load changed or a second passed, report
  // arrivals and backlog to its kv_manager, and pump.
  for (auto& rp : replicas_) {
    auto& r = *rp;
    const auto waiting = static_cast<int32_t>(r.core->waiting());
    const auto running = static_cast<int32_t>(r.core->running());
    const int64_t tokens = r.core->outstanding_tokens();
    if (waiting != r.last_waiting || running != r.last_running || tokens != r.last_tokens
        || r.residency != r.last_residency || r.arrived != r.last_arrived || now_ - r.last_report_s >= 1.0) {
      r.last_residency = r.residency;
      r.last_arrived = r.arrived;
      router::load_sample ls;
      ls.waiting = waiting;
      ls.running = running;
      ls.outstanding_tokens = tokens;
      ls.queued_prefill = r.core->queued_prefill_tokens();
      ls.prefill_tok_s = r.core->prefill_tokens_per_s();
      ls.residency = r.residency;
      router_.report(r.name, ls);
      if (replans_)
        replan_.observe(r.name, r.arrived, r.draining ? "draining" : r.residency, waiting, running, now_);
      r.last_tokens = tokens;
      if (cfg_.controller.move_shares)
        shares_.observe(r.unit->cfg->name, r.model, waiting);
      r.last_waiting = waiting;
      r.last_running = running;
      r.last_report_s = now_;
    }
    int64_t backlog = 0;
    if (r.open_refused)
      for (const auto& n : r.core->admission_candidates())
        backlog += n.tokens;
    if (r.arrivals != 0 || backlog != r.last_backlog) {
      r.unit->kv->load(r.model, r.arrivals, backlog, now_);
      r.arrivals = 0;
      r.last_backlog = backlog;
    }
    if (r.idle_sleep_s > 0 && r.residency == "ready" && idle(r) && now_ - r.last_active_s >= r.idle_sleep_s)
      sleep(r);
    if (r.draining && r.residency == "ready" && idle(r) && by_name_.at(r.moved_to)->residency == "ready") {
      sleep(r);
      r.draining = false;
      (void)router_.set_routable(r.name, true);  // a replica again, asleep: passed over while another is awake
    }
    if (r.residency == "sleeping" && !r.wake_deadline.empty()) {
      // Requests whose TTFT budget ran out asleep: 503, as the scheduler answers.
      scheduler::step_events ev;
      for (auto it = r.wake_deadline.begin(); it != r.wake_deadline.end();) {
        if (it->second > now_ + 2 * cfg_.timeouts.load_report_ms / 1e3) {
          ++it;
          continue;
        }
        if (auto rd = r.core->reject_waiting(it->first, "model '" + r.model + "' is asleep on " + r.name
                                                          + " and could not be woken in time", 503))
          ev.deltas.push_back(std::move(*rd));
        it = r.wake_deadline.erase(it);
      }
      deliver(r, ev);
    }
    pump(r);
  }
}

/// Nothing queued, running or computing: what the scheduler actor asks
/// before it agrees to sleep.
bool cluster_sim::idle(const replica_sim& r) const {
  return r.core->waiting() == 0 && r.core->running() == 0 && !r.core->step_in_flight();
}

/// The model goes to sleep: the unit drops its engine, the kv_manager its
/// cached blocks (instant here: freeing memory is not what takes time).
void cluster_sim::sleep(replica_sim& r) {
  auto& u = *r.unit;
  (void)r.core->take_released();
  u.core->unload(r.model);
  u.kv->forget_cache(r.model);
  u.memory.slept(r.model);
  r.residency = "sleeping";
  ++u.out.sleeps;
}

/// The unit's wake, as the gpu_unit actor does it: residency plans it, the
/// least recently used idle models sleep first, the wake takes its modelled
/// time; no room now: asked again a tick later.
void cluster_sim::wake(replica_sim& r) {
  auto& u = *r.unit;
  std::set<std::string> busy;
  for (const auto& [model, other] : u.replica_of)
    if (other != &r && !idle(*other))
      busy.insert(model);
  auto plan = u.memory.plan_wake(r.model, busy);
  switch (plan.kind) {
    case unit::residency::wake_plan::ready:
      r.residency = "ready";
      return;
    case unit::residency::wake_plan::busy:
      return;
    case unit::residency::wake_plan::too_big:
    case unit::residency::wake_plan::no_room:
      ++u.out.wake_refusals;
      r.wake_after_s = now_ + cfg_.timeouts.load_report_ms / 1e3;
      return;
    case unit::residency::wake_plan::evict:
      for (const auto& v : plan.victims)
        sleep(*u.replica_of.at(v));
      break;
    case unit::residency::wake_plan::fits:
      break;
  }
  u.memory.set_state(r.model, unit::residency_state::loading);
  r.residency = "loading";
  u.core->load(r.model);
  push(now_ + r.wake_s, ev_kind::woke, r.index);
}

/// The controller's re-placement tick: its replan_policy plans, and each
/// move goes out as the controller sends it: the sleeps (each agreed only
/// by an idle replica), then the wake.
void cluster_sim::replan() {
  const auto plan = replan_.plan();
  for (const auto& mv : plan.moves) {
    bool room = true;
    for (const auto& v : mv.sleep) {
      auto& victim = *by_name_.at(v);
      if (victim.residency != "ready" || !idle(victim)) {
        room = false;
        break;
      }
      sleep(victim);
    }
    auto& target = *by_name_.at(mv.replica);
    if (room && target.residency == "sleeping") {
      wake(target);
      ++replan_wakes_;
      if (!mv.from.empty()) {
        // A move: the old replica takes no new requests and sleeps once idle.
        auto& source = *by_name_.at(mv.from);
        source.draining = true;
        source.moved_to = mv.replica;
        // Its sequences go back to the gateway, which offers them again
        // with what they delivered so far (as `llmux admin move` does).
        auto ev = source.core->migrate_all();
        deliver(source, ev);
        (void)router_.set_routable(source.name, false);
        ++replan_moves_;
      }
    }
  }
  for (const auto& sh : plan.shares) {
    auto& r = *by_name_.at(sh.replica);
    if (!r.unit->core->set_share(sh.job.empty() ? sh.model : sh.model + "/" + sh.job, sh.to)) {
      replan_.set_share(sh.replica, sh.to);
      ++replan_share_moves_;
      note_shares(*r.unit);
    }
  }
}

void cluster_sim::woke(replica_sim& r) {
  auto& u = *r.unit;
  u.memory.woke(r.model, r.wake_s);
  u.memory.touch(r.model, now_);
  r.residency = "ready";
  r.last_active_s = now_;
  r.wake_deadline.clear();
  ++u.out.wakes;
  u.out.wake_s += r.wake_s;
  pump(r);
}

/// The controller's share tick (every `share_tick_ms`): its share_policy
/// decides, and each move goes to the unit as the controller sends it.
void cluster_sim::move_shares() {
  for (const auto& mv : shares_.decide(now_))
      for (auto& u : units_)
        if (u->cfg->name == mv.unit) {
          // As the controller sends them: the lower share first; a refusal
          // books again the shares the unit kept.
          bool moved = false;
          if (u->core->set_share(mv.from, mv.from_share)) {
            shares_.set_share(mv.unit, mv.from, mv.from_before);
            shares_.set_share(mv.unit, mv.to, mv.to_before);
          } else if (u->core->set_share(mv.to, mv.to_share)) {
            shares_.set_share(mv.unit, mv.to, mv.to_before);
          } else {
            moved = true;
          }
          u->out.share_moves += moved ? 1 : 0;
          note_shares(*u);
        }
}

void cluster_sim::check_pools(const char* when) {
  for (const auto& u : units_) {
    const auto& pool = u->kv->pool();
    u->out.kv_peak_used = std::max(u->out.kv_peak_used, pool.used());
    if (auto err = pool.check_invariants(); !err.empty())
      res_.violations.push_back(std::string{when} + ": unit " + u->cfg->name + " KV pool: " + err);
    if (pool.used() > pool.total())
      res_.violations.push_back(std::string{when} + ": unit " + u->cfg->name + " holds "
                                + std::to_string(pool.used()) + " blocks of " + std::to_string(pool.total()));
  }
}

sim_result cluster_sim::run_all() {
  const auto wall0 = std::chrono::steady_clock::now();
  const size_t n = w_.requests.size();
  res_.requests.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& spec = w_.requests[i];
    auto& out = res_.requests[i];
    out.model = spec.model;
    out.arrival_s = spec.at_s;
    out.prompt_tokens = spec.prompt_tokens;
    out.output_tokens = spec.output_tokens;
    const auto& ref = reference_.at(spec.model);
    out.reference_s = ref.prefill_seconds(1, spec.prompt_tokens)
                      + (spec.output_tokens - 1) * ref.decode_seconds(1, spec.prompt_tokens + spec.output_tokens / 2.0);
  }
  // Arrivals go in one at a time (the next is queued when one is taken),
  // so the event heap stays small.
  if (n > 0)
    push(w_.requests[0].at_s, ev_kind::arrival, 0);
  const double tick_s = cfg_.timeouts.load_report_ms / 1e3;
  push(tick_s, ev_kind::tick);
  const double share_tick_s = cfg_.controller.share_tick_ms / 1e3;
  if (cfg_.controller.move_shares)
    push(share_tick_s, ev_kind::shares);
  if (replans_)
    push(cfg_.controller.replan_s, ev_kind::replan);
  for (size_t i = 0; i < units_.size(); ++i)
    if (units_[i]->kv->planner())
      push(units_[i]->cfg->quota_period_ms / 1e3, ev_kind::quota, static_cast<uint32_t>(i));
  const double last_arrival = n > 0 ? w_.requests.back().at_s : 0;
  size_t reported = 0;
  while (!events_.empty() && resolved_ < n) {
    const event e = events_.top();
    events_.pop();
    if (e.t > last_arrival + opts_.drain_s)
      break;
    now_ = e.t;
    ++res_.events;
    switch (e.kind) {
      case ev_kind::arrival:
        arrive(e.a);
        if (e.a + 1 < n)
          push(w_.requests[e.a + 1].at_s, ev_kind::arrival, e.a + 1);
        if (opts_.progress && n > 0 && arrived_ * 100 / n > reported) {
          reported = arrived_ * 100 / n;
          opts_.progress(static_cast<double>(arrived_) / static_cast<double>(n));
        }
        break;
      case ev_kind::run_done:
        if (runs_[e.a].version == e.b && runs_[e.a].r != nullptr)
          finish(e.a);
        break;
      case ev_kind::tick:
        tick();
        push(now_ + tick_s, ev_kind::tick);
        break;
      case ev_kind::shares:
        move_shares();
        push(now_ + share_tick_s, ev_kind::shares);
        break;
      case ev_kind::woke:
        woke(*replicas_[e.a]);
        break;
      case ev_kind::replan:
        replan();
        push(now_ + cfg_.controller.replan_s, ev_kind::replan);
        break;
      case ev_kind::quota:
        units_[e.a]->kv->rebalance(now_);
        push(now_ + units_[e.a]->cfg->quota_period_ms / 1e3, ev_kind::quota, e.a);
        break;
    }
    while (!handed_.empty()) {
      // Sequences a replica handed back: offered again, elsewhere, with the
      // tokens they delivered (as the gateway continues them).
      auto handed = std::move(handed_);
      handed_.clear();
      for (const auto& [i, from] : handed)
        offer(i, {from}, res_.requests[i].generated);
    }
    if (opts_.check_every_events > 0 && res_.events % opts_.check_every_events == 0)
      check_pools("during the run");
    for (const auto& u : units_)
      u->out.kv_peak_used = std::max(u->out.kv_peak_used, u->kv->pool().used());
  }
  res_.end_s = now_;
  res_.replan_wakes = replan_wakes_;
  res_.replan_moves = replan_moves_;
  res_.replan_share_moves = replan_share_moves_;
  check_pools("at the end");
  size_t ok = 0, failed = 0, unfinished = 0;
  for (const auto& r : res_.requests) {
    if (r.ok())
      ++ok;
    else if (r.finish_s >= 0)
      ++failed;
    else
      ++unfinished;
  }
  if (ok + failed + unfinished != n)
    res_.violations.push_back("requests: " + std::to_string(ok) + " ok + " + std::to_string(failed) + " failed + "
                              + std::to_string(unfinished) + " unfinished != " + std::to_string(n));
  if (unfinished == 0) {
    // Every request ended: no sequence may still hold KV.
    for (const auto& u : units_)
      for (const auto& [model, m] : u->kv->pool().models())
        if (m.sequences != 0)
          res_.violations.push_back("unit " + u->cfg->name + " model " + model + " still holds "
                                    + std::to_string(m.sequences) + " sequences after every request ended");
  }
  for (auto& u : units_) {
    if (u->out.max_share_sum > 1 + 1e-9 && !u->cfg->oversubscribe)
      res_.violations.push_back("unit " + u->cfg->name + " shares summed to "
                                + std::to_string(u->out.max_share_sum));
    if (u->busy_since >= 0)
      u->out.busy_s += now_ - u->busy_since;
    u->out.quota_moves = u->kv->quota_moves();
    res_.units.push_back(u->out);
  }
  for (const auto& r : replicas_) {
    res_.preemptions += r->core->preemptions();
    replica_outcome ro;
    ro.name = r->name;
    ro.model = r->model;
    ro.unit = r->unit->cfg->name;
    ro.policy = router::to_string(router_.kind_of(r->model));
    const auto& load = router_.replicas().at(r->name);
    ro.dispatched = load.dispatched;
    ro.affinity_hits = load.affinity_hits;
    ro.prompt_tokens = r->core->admitted_prompt_tokens();
    ro.cached_tokens = r->core->cached_prompt_tokens();
    res_.replicas.push_back(std::move(ro));
  }
  res_.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return std::move(res_);
}

}  // namespace

sim_result simulate(const config::cluster_config& cfg, const workload& w, const sim_options& opts) {
  cluster_sim s(cfg, w, opts);
  return s.run_all();
}

}  // namespace llmux::sim
