#include "actors/protocol/interfaces.hpp"

#include <caf/actor_system_config.hpp>

namespace llmux::protocol {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<gen_params>("llmux::gen_params");
  cfg.add_message_type<gen_request>("llmux::gen_request");
  cfg.add_message_type<token_delta>("llmux::token_delta");
  cfg.add_message_type<std::vector<token_delta>>("std::vector<llmux::token_delta>");
  cfg.add_message_type<token_batch>("llmux::token_batch");
  cfg.add_message_type<load_report>("llmux::load_report");
  cfg.add_message_type<actor_state>("llmux::actor_state");
  cfg.add_message_type<std::vector<actor_state>>("std::vector<llmux::actor_state>");
  cfg.add_message_type<enqueue_reply>("llmux::enqueue_reply");
  cfg.add_message_type<replica_info>("llmux::replica_info");
  cfg.add_message_type<std::vector<replica_info>>("std::vector<llmux::replica_info>");
  cfg.add_message_type<node_entry>("llmux::node_entry");
  cfg.add_message_type<std::vector<node_entry>>("std::vector<llmux::node_entry>");
  cfg.add_message_type<engine::seq_work>("llmux::seq_work");
  cfg.add_message_type<engine::step_input>("llmux::step_input");
  cfg.add_message_type<engine::step_output>("llmux::step_output");
  cfg.add_message_type<engine::token_logprobs>("llmux::token_logprobs");
  cfg.add_message_type<std::vector<engine::token_logprobs>>("std::vector<llmux::token_logprobs>");
  cfg.add_message_type<std::vector<int64_t>>("std::vector<int64_t>");
  cfg.add_message_type<kv_need>("llmux::kv_need");
  cfg.add_message_type<std::vector<kv_need>>("std::vector<llmux::kv_need>");
  cfg.add_message_type<kv_grant>("llmux::kv_grant");
  cfg.add_message_type<gateway_actor>("llmux::gateway_actor");
}

}  // namespace llmux::protocol
