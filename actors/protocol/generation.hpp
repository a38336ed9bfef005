#pragma once
/// Plain message payloads of the request path (no CAF handles inside), with
/// their `inspect` overloads. Including this costs nothing: only
/// `caf/meta/type_name.hpp` is pulled in, so the HTTP edge and pure cores can
/// use these types without the rest of CAF.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>

#include "engine/engine.hpp"

namespace llmux::protocol {

/// Why a sequence ended. Values travel on the wire: append only.
enum class finish_reason : uint8_t {
  none = 0,       ///< still running
  stop = 1,       ///< EOS or a stop token
  length = 2,     ///< max_tokens or the context window
  cancelled = 3,  ///< the client went away
  error = 4,      ///< see token_delta::error
  /// Not an end: the replica gives the sequence up (its unit changes
  /// layout); the gateway continues it elsewhere after the tokens it has.
  migrate = 5,
};

[[nodiscard]] inline const char* to_string(finish_reason r) {
  switch (r) {
    case finish_reason::none: return "";
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::error: return "error";
    case finish_reason::migrate: return "";
  }
  return "";
}

/// Sampling and stopping rules of one request.
struct gen_params {
  int32_t max_tokens = 16;  ///< output tokens still to generate (>= 1)
  double temperature = 1.0;
  double top_p = 1.0;
  int32_t top_k = 0;   ///< 0: off
  double min_p = 0.0;  ///< 0: off
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  double repetition_penalty = 1.0;  ///< 1: off
  std::vector<int32_t> bias_tokens;  ///< logit_bias keys
  std::vector<float> bias_values;    ///< logit_bias values
  std::vector<int32_t> stop_tokens;  ///< end with "stop" when sampled (besides EOS)
  int32_t logprobs = -1;             ///< -1: none; k >= 0: log-prob + top k per token
  uint64_t seed = 0;
  bool ignore_eos = false;
  int32_t min_tokens = 0;  ///< EOS and stop_tokens are masked until this many are out
  std::string grammar;     ///< structured outputs: GBNF the output follows; empty: free
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, gen_params& x) {
  return f(caf::meta::type_name("gen_params"), x.max_tokens, x.temperature, x.top_p, x.top_k,
           x.min_p, x.presence_penalty, x.frequency_penalty, x.repetition_penalty, x.bias_tokens,
           x.bias_values, x.stop_tokens, x.logprobs, x.seed, x.ignore_eos, x.min_tokens, x.grammar);
}

/// A tokenized request, as it leaves the edge. After a migration, `prompt`
/// holds the original prompt plus the tokens already streamed, and
/// `params.max_tokens` what is left to generate.
struct gen_request {
  uint64_t id = 0;  ///< unique per gateway process
  std::string model;
  std::vector<int32_t> prompt;
  int32_t original_prompt_len = 0;  ///< prompt tokens the client sent (for the sim's output length)
  gen_params params;
  /// Routing hints: the client's session (X-Session-ID header, else the
  /// OpenAI `user` field; empty: none), and the time to first token it can
  /// still wait, ms (the model's ttft_slo_ms, else what is left of the
  /// request deadline; 0: none).
  std::string session;
  int32_t ttft_budget_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, gen_request& x) {
  return f(caf::meta::type_name("gen_request"), x.id, x.model, x.prompt, x.original_prompt_len,
           x.params, x.session, x.ttft_budget_ms);
}

/// What a scheduler asks its unit's kv_manager for, for one sequence: a
/// block table covering `tokens` tokens. With `lookup` tokens given (the
/// sequence's prompt, or prompt + generated tokens after a preemption), the
/// longest cached prefix of them, in whole blocks and never all of them, is
/// shared first.
struct kv_need {
  uint64_t seq = 0;
  int32_t tokens = 0;
  std::vector<int32_t> lookup;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_need& x) {
  return f(caf::meta::type_name("kv_need"), x.seq, x.tokens, x.lookup);
}

/// The kv_manager's answer to `kv_open` and `kv_grow`: the first `granted`
/// needs got their tables, in order.
struct kv_grant {
  int32_t granted = 0;
  /// kv_open: the first need can never fit (larger than the model's whole
  /// quota or the pool); nothing is granted.
  bool never = false;
  /// kv_open: tokens of each granted sequence's prefix found in the cache.
  std::vector<int32_t> cached;
  /// For engines that read the unit's blocks (empty otherwise): the physical
  /// block ids each granted sequence's table gained, token-block-major, then
  /// layer, then KV head. The scheduler hands them to the engine with the
  /// sequence's next step.
  std::vector<std::vector<int32_t>> blocks;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_grant& x) {
  return f(caf::meta::type_name("kv_grant"), x.granted, x.never, x.cached, x.blocks);
}

/// New tokens of one request in one step; `finish != none` ends the stream.
struct token_delta {
  uint64_t id = 0;
  std::vector<int32_t> tokens;
  std::vector<engine::token_logprobs> logprobs;  ///< one per token, when asked for
  finish_reason finish = finish_reason::none;
  std::string error;  ///< set when finish == error
  int32_t status = 0; ///< the HTTP status an error becomes (0: 500)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_delta& x) {
  return f(caf::meta::type_name("token_delta"), x.id, x.tokens, x.logprobs, x.finish, x.error,
           x.status);
}

/// Everything one scheduler step produced for one gateway: one message per
/// step per gateway, however many requests it carries.
struct token_batch {
  std::vector<token_delta> deltas;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_batch& x) {
  return f(caf::meta::type_name("token_batch"), x.deltas);
}

/// A scheduler's load, sent to the router every `load_report_ms` while it changes.
struct load_report {
  std::string replica;  ///< "<unit>/<model>"
  std::string model;
  int32_t waiting = 0;
  int32_t running = 0;
  double tokens_per_s = 0;
  int64_t outstanding_tokens = 0;  ///< batch_scheduler::outstanding_tokens
  int64_t queued_prefill = 0;      ///< batch_scheduler::queued_prefill_tokens
  double prefill_tok_s = 0;        ///< measured; 0: not yet
  /// The replica's model: "ready", "sleeping", "loading" (waking),
  /// "unloading" (going to sleep) or "draining" (awake, handing its
  /// sequences over: a move or a layout switch).
  std::string residency = "ready";
  uint64_t arrived = 0;  ///< requests it accepted since it started (online re-placement's rates)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, load_report& x) {
  return f(caf::meta::type_name("load_report"), x.replica, x.model, x.waiting, x.running,
           x.tokens_per_s, x.outstanding_tokens, x.queued_prefill, x.prefill_tok_s, x.residency, x.arrived);
}

/// One actor's live state for `llmux admin state`.
struct actor_state {
  std::string node;
  std::string kind;  ///< gateway | router | scheduler | gpu_unit | kv_manager | controller | admin
  std::string name;
  uint64_t mailbox = 0;    ///< messages waiting in its mailbox
  std::string state_json;  ///< kind-specific JSON object
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, actor_state& x) {
  return f(caf::meta::type_name("actor_state"), x.node, x.kind, x.name, x.mailbox, x.state_json);
}

}  // namespace llmux::protocol

namespace llmux::engine {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, seq_work& x) {
  return f(caf::meta::type_name("seq_work"), x.seq_id, x.tokens, x.context_len, x.prompt_len,
           x.sample, x.seed, x.temperature, x.top_p, x.top_k, x.min_p, x.presence_penalty,
           x.frequency_penalty, x.repetition_penalty, x.bias_tokens, x.bias_values, x.logprobs,
           x.grammar, x.grammar_prefix, x.constrained, x.kv_blocks);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_input& x) {
  return f(caf::meta::type_name("step_input"), x.seqs, x.released, x.job);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_logprobs& x) {
  return f(caf::meta::type_name("token_logprobs"), x.logprob, x.top_ids, x.top_logprobs);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_output& x) {
  return f(caf::meta::type_name("step_output"), x.tokens, x.logprobs, x.seconds);
}

}  // namespace llmux::engine
