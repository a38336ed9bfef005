#pragma once
/// The placement planner as online re-placement's target: `plan_on_units`
/// over a running cluster's units, fed the rates the controller measures.
/// The controller (and `llmux simulate`, which runs the same
/// `controller::replan_policy`) hand it to the policy with `use_planner`.

#include <optional>
#include <string>

#include "actors/controller/replan_policy.hpp"
#include "config/cluster_config.hpp"
#include "plan/placement.hpp"

namespace llmux::plan {

/// The re-placement planner of `cfg`: MuxServe's placement over the units
/// re-placement works on (those with a `memory_mib`), each unit holding
/// only the models it lists, its weights under its memory_mib, at the
/// measured rates (mean prompt and output: `demand`'s defaults, ChatLMSYS's
/// as the planner's). Shares: on units with MuxServe's layout (jobs =
/// "split", prefill = "shared") each decode job's as planned; on
/// oversubscribed units (MPS-style caps), a model planned alone gets the
/// whole unit, as the planner's estimate assumes, else its configured cap;
/// elsewhere (partitions the planner's estimate does not model) the unit's
/// own shares stand. nullopt, and `why`, when the units have no cost model the
/// planner can use: a cpu unit, units of different GPU types, a model
/// whose shape is unknown. There the rate rule plans.
[[nodiscard]] std::optional<controller::placement_fn> online_planner(const config::cluster_config& cfg,
                                                                     std::string* why = nullptr,
                                                                     model_demand demand = {});

}  // namespace llmux::plan
