#pragma once
/// The simulated backend: no math. Tokens are a deterministic function of the
/// request seed and the position; step time comes from the `cost_model`
/// (a measured profile when the GPU type names one, else the roofline).
/// Everything it produces is labelled `sim`.

#include "engine/cost_model.hpp"
#include "engine/engine.hpp"
#include "engine/sim_tokenizer.hpp"

namespace llmux::engine {

class sim_engine final : public engine {
public:
  sim_engine(config::model_arch arch, config::gpu_spec gpu, double share = 1.0);
  explicit sim_engine(cost_model costs, double share = 1.0);

  [[nodiscard]] step_output step(const step_input& in) override;
  void set_share(double share) override { share_ = share; }
  /// Split jobs: decode steps are modelled on the decode job's share.
  void set_job_share(job_kind job, double share) override {
    (job == job_kind::decode ? decode_share_ : share_) = share;
  }
  [[nodiscard]] std::string backend() const override { return "sim"; }
  [[nodiscard]] const tokenizer& vocab() const override { return tokenizer_; }

  /// The token the sim emits at absolute position `pos` (0-based over prompt
  /// + output) for a request with `seed` and a prompt of `prompt_len` tokens:
  /// word tokens, then EOS once the output reaches output_length(seed).
  [[nodiscard]] static token_id token_at(uint64_t seed, int64_t prompt_len, int64_t pos);
  /// Output length (tokens before EOS) the sim gives a request: 16..271.
  [[nodiscard]] static int64_t output_length(uint64_t seed);

  [[nodiscard]] const cost_model& costs() const { return costs_; }
  /// What `step(in)` costs on its job's share (its `seconds` is the step's).
  [[nodiscard]] step_cost cost_of(const step_input& in) const;

private:
  cost_model costs_;
  sim_tokenizer tokenizer_;
  double share_;
  double decode_share_ = 0;  ///< 0: the decode job has no share of its own
};

}  // namespace llmux::engine
