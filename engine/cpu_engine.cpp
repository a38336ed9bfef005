#include "engine/cpu_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>


namespace llmux::engine {

namespace {

int threads_for(const cpu_engine_options& o, double share) {
  int max = o.max_threads > 0 ? o.max_threads
                              : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::clamp(static_cast<int>(std::lround(share * max)), 1, max);
}

}  // namespace

cpu_engine::cpu_engine(std::shared_ptr<const llama_model> model,
                       std::shared_ptr<const tokenizer> tok, cpu_engine_options opts)
  : tok_(std::move(tok)), opts_(opts),
    runner_(opts.arena ? llama_runner(std::move(model), opts.arena)
                       : llama_runner(std::move(model), opts.block_tokens, opts.kv_blocks)),
    lanes_{} {
  sampler_.set_vocab(tok_);
  lanes_[0].share = opts.share;
  lanes_[0].pool = std::make_unique<kernels::thread_pool>(threads_for(opts, opts.share));
  // A decode lane given no share of its own starts at the engine's first one
  // (read by the decode job's thread only: lane 0's share may change meanwhile).
  lanes_[1].share = opts.share;
}

void cpu_engine::set_share(double share) {
  set_job_share(job_kind::mixed, share);
}

void cpu_engine::set_job_share(job_kind job, double share) {
  // Each lane is changed only by its own job's thread, between its steps.
  auto& l = lanes_[job == job_kind::decode ? 1 : 0];
  l.share = share;
  int n = threads_for(opts_, share);
  if (!l.pool || n != l.pool->size())
    l.pool = std::make_unique<kernels::thread_pool>(n);
}

int cpu_engine::threads(job_kind job) const {
  const auto& l = lanes_[job == job_kind::decode ? 1 : 0];
  return l.pool ? l.pool->size() : 0;
}

step_output cpu_engine::step(const step_input& in) {
  auto t0 = std::chrono::steady_clock::now();
  auto& lane = lanes_[in.job == job_kind::decode ? 1 : 0];
  if (!lane.pool)  // a decode job given no share of its own: the mixed one's
    lane.pool = std::make_unique<kernels::thread_pool>(threads_for(opts_, lane.share));
  for (auto id : in.released)
    runner_.release(id);
  sampler_.release(in.released);
  // Tables granted since the last step (released ones first: a preempted
  // sequence comes back under its id with a new table).
  for (const auto& w : in.seqs)
    runner_.adopt(w.seq_id, w.kv_blocks);
  sampler_.feed(in);
  std::vector<runner_seq> seqs;
  seqs.reserve(in.seqs.size());
  for (const auto& w : in.seqs)
    seqs.push_back({w.seq_id, w.tokens.data(), static_cast<int32_t>(w.tokens.size()),
                    w.context_len, w.sample});
  if (!runner_.forward(seqs, lane.logits, *lane.pool, lane.scratch))
    throw std::runtime_error("KV cache full: the step needs more blocks than the engine has");
  step_output out;
  sampler_.sample(in, lane.logits.data(), runner_.model().hparams().n_vocab, out);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace llmux::engine
