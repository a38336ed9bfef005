// cuda_tp_engine: one cuda_engine rank per GPU, stepped together.

#include "engine/cuda/cuda_engine.hpp"

#include <algorithm>
#include <string>

namespace llmux::engine {

cuda_tp_engine::cuda_tp_engine(std::shared_ptr<const llama_model> model, std::shared_ptr<const tokenizer> tok,
                               cuda_engine_options opts, const std::vector<int>& devices) {
  const int size = static_cast<int>(devices.size());
  std::string why;
  if (!cuda::device_available(&why))
    throw cuda::cuda_error("no usable CUDA device: " + why);
  int count = 0;
  cuda::check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  for (int d : devices)
    if (d < 0 || d >= count)
      throw cuda::cuda_error("the unit lists CUDA device " + std::to_string(d) + "; this machine has " +
                             std::to_string(count));
  // The shard check before NCCL starts: a model the GPUs cannot split is
  // refused with the count that does not divide.
  (void)make_tp_shard(model->hparams(), 0, size);
  nccl_ = std::make_unique<cuda::nccl_group>(devices);
  for (int r = 0; r < size; ++r) {
    auto o = opts;
    o.device = devices[static_cast<size_t>(r)];
    o.tp_rank = r;
    o.tp_size = size;
    o.comm = nccl_->comm(r);
    ranks_.push_back(std::make_unique<cuda_engine>(model, tok, o));
  }
  errors_.resize(ranks_.size());
  for (size_t r = 1; r < ranks_.size(); ++r)
    threads_.emplace_back([this, r] { worker(r); });
}

cuda_tp_engine::~cuda_tp_engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_)
    t.join();
  ranks_.clear();  // before the communicators go
}

void cuda_tp_engine::worker(size_t rank) {
  uint64_t seen = 0;
  for (;;) {
    const step_input* in = nullptr;
    bool compute = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
      in = job_;
      compute = compute_;
    }
    std::exception_ptr error;
    try {
      if (compute)
        (void)ranks_[rank]->run(*in);
      else
        ranks_[rank]->prepare(*in);
    } catch (...) {
      error = std::current_exception();
      if (compute)
        nccl_->abort();  // the other ranks may wait for this one in an all-reduce
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      errors_[rank] = error;
      ++finished_;
    }
    done_.notify_all();
  }
}

void cuda_tp_engine::phase(const step_input& in, bool compute, step_output* out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &in;
    compute_ = compute;
    finished_ = 0;
    std::fill(errors_.begin(), errors_.end(), nullptr);
    ++generation_;
  }
  wake_.notify_all();
  // Rank 0 on this thread: its all-reduces meet the other ranks' there.
  std::exception_ptr error;
  try {
    if (compute)
      *out = ranks_[0]->run(in);
    else
      ranks_[0]->prepare(in);
  } catch (...) {
    error = std::current_exception();
    if (compute)
      nccl_->abort();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return finished_ == ranks_.size() - 1; });
    for (size_t r = 1; r < errors_.size() && error == nullptr; ++r)
      error = errors_[r];
  }
  if (error)
    std::rethrow_exception(error);
}

step_output cuda_tp_engine::step(const step_input& in) {
  std::lock_guard<std::mutex> one_step(step_mu_);
  if (nccl_->aborted())
    throw cuda::cuda_error("tensor-parallel group stopped: a rank failed during an earlier step");
  // Two phases: what can fail (grants, buffers, uploads) on every rank
  // first, so no rank waits in an all-reduce for one that has failed.
  step_output out;
  phase(in, false, nullptr);
  phase(in, true, &out);
  return out;
}

void cuda_tp_engine::set_job_partition(job_kind job, double offset, double share) {
  // The same SM range on every GPU of the unit.
  for (auto& r : ranks_)
    r->set_job_partition(job, offset, share);
}

}  // namespace llmux::engine
