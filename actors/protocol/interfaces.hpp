#pragma once
/// Every atom, every message that carries actor handles, and every typed
/// actor interface of llmux. Reading this file tells the whole conversation
/// of the system; `docs/architecture.md` walks through it in request order.
///
/// CAF 0.17 API: atoms are atom_constant<atom("...")> (<= 10 chars), typed
/// interfaces use replies_to<...>::with<...> / reacts_to<...>.

#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/protocol/generation.hpp"

namespace caf {
class actor_system_config;
}

namespace llmux::protocol {

// -- atoms --------------------------------------------------------------------

using submit_atom = caf::atom_constant<caf::atom("submit")>;      // edge → router
using enqueue_atom = caf::atom_constant<caf::atom("enqueue")>;    // router → scheduler
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;      // edge → scheduler
using step_atom = caf::atom_constant<caf::atom("step")>;          // scheduler → unit
using step_done_atom = caf::atom_constant<caf::atom("stepdone")>; // unit → itself (sim delay)
using set_share_atom = caf::atom_constant<caf::atom("setshare")>; // controller/admin → unit
using kv_open_atom = caf::atom_constant<caf::atom("kvopen")>;     // scheduler → kv_manager
using kv_grow_atom = caf::atom_constant<caf::atom("kvgrow")>;     // scheduler → kv_manager
using kv_commit_atom = caf::atom_constant<caf::atom("kvcommit")>; // scheduler → kv_manager
using kv_close_atom = caf::atom_constant<caf::atom("kvclose")>;   // scheduler → kv_manager
using kv_load_atom = caf::atom_constant<caf::atom("kvload")>;     // scheduler → kv_manager
using replica_up_atom = caf::atom_constant<caf::atom("replicaup")>;   // controller → router
using replica_dn_atom = caf::atom_constant<caf::atom("replicadn")>;   // controller → router
using lost_atom = caf::atom_constant<caf::atom("lost")>;              // edge → router
using get_state_atom = caf::atom_constant<caf::atom("getstate")>;     // admin → any actor
using cluster_atom = caf::atom_constant<caf::atom("cluster")>;        // admin CLI → admin
using add_actor_atom = caf::atom_constant<caf::atom("addactor")>;     // node boot → admin
using replicas_atom = caf::atom_constant<caf::atom("replicas")>;      // controller → admin
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;            // admin → controller
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;   // router → scheduler (load reports)
using tick_atom = caf::atom_constant<caf::atom("tick")>;              // timers, self-sent
using share_tick_atom = caf::atom_constant<caf::atom("sharetick")>;  // controller, self-sent
using drain_atom = caf::atom_constant<caf::atom("drain")>;          // controller → scheduler
using routable_atom = caf::atom_constant<caf::atom("routable")>;    // controller → router
using set_layout_atom = caf::atom_constant<caf::atom("setlayout")>; // admin → controller
using layout_tick_atom = caf::atom_constant<caf::atom("laytick")>;  // controller, self-sent
using hand_back_atom = caf::atom_constant<caf::atom("handback")>;  // controller → scheduler
using step_timeout_atom = caf::atom_constant<caf::atom("steptmo")>; // scheduler, self-sent
using sleep_atom = caf::atom_constant<caf::atom("sleep")>;        // admin/unit → scheduler → unit
using wake_atom = caf::atom_constant<caf::atom("wake")>;          // admin → scheduler → unit
using attach_atom = caf::atom_constant<caf::atom("attach")>;      // scheduler → unit
using woke_atom = caf::atom_constant<caf::atom("woke")>;          // unit, self-sent (sim wake time)
using move_atom = caf::atom_constant<caf::atom("move")>;          // admin → controller
using plan_atom = caf::atom_constant<caf::atom("plan")>;          // admin → controller
using apply_plan_atom = caf::atom_constant<caf::atom("applyplan")>; // admin → controller
using replan_tick_atom = caf::atom_constant<caf::atom("replantick")>; // controller, self-sent

/// How a unit's answer to `wake` begins when the model's engine could not be
/// built (a missing or broken file), as opposed to no room yet.
constexpr const char* load_failed_prefix = "loading model '";

// -- messages carrying handles --------------------------------------------------

/// The scheduler's answer to `enqueue` (relayed by the router): accepted, or
/// refused with an HTTP-like status (429 queue full, 503 no replica, 400 bad).
struct enqueue_reply {
  bool ok = false;
  int32_t status = 0;
  std::string message;
  std::string replica;    ///< "<unit>/<model>"
  caf::actor scheduler;   ///< where cancels go; monitored by the edge
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, enqueue_reply& x) {
  return f(caf::meta::type_name("enqueue_reply"), x.ok, x.status, x.message, x.replica,
           x.scheduler);
}

/// One model replica (a scheduler on a unit), as a node advertises it.
struct replica_info {
  std::string replica;  ///< "<unit>/<model>"
  std::string model;
  std::string unit;
  std::string node;
  std::string backend;  ///< "sim" | "cpu" | "cuda"
  caf::actor scheduler;
  caf::actor unit_actor;  ///< its gpu_unit (share moves go there)
  double share = 1.0;     ///< its compute share when it came up
  /// The cost model's prefill rate on that share, tokens/s (sim and cuda
  /// backends; 0: unknown until its scheduler measures one).
  double prefill_tok_s = 0;
  /// A replica of a unit laid out as several (layout "replicas"/"dynamic"):
  /// its key in the unit ("MODEL#i"), its index and how many there are.
  std::string instance;
  int32_t index = 0;
  int32_t instances = 1;
  bool parked = false;  ///< lent its threads to instance 0: not routed to
  /// Asleep when it came up (`awake = false`, or past the unit's
  /// memory_mib): the router passes it over while an awake replica of its
  /// model is there, from the start rather than from its first load report.
  bool asleep = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_info& x) {
  return f(caf::meta::type_name("replica_info"), x.replica, x.model, x.unit, x.node, x.backend,
           x.scheduler, x.unit_actor, x.share, x.prefill_tok_s, x.instance, x.index, x.instances,
           x.parked, x.asleep);
}

/// A node as the controller sees it.
struct node_entry {
  std::string name;
  std::string status;  ///< "up" | "connecting" | "down"
  caf::actor admin;    ///< invalid unless up
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_entry& x) {
  return f(caf::meta::type_name("node_entry"), x.name, x.status, x.admin);
}

// -- typed interfaces -------------------------------------------------------------

/// The HTTP edge's actor: receives token batches from any scheduler, and
/// submissions/cancels from its own HTTP threads.
using gateway_actor = caf::typed_actor<
  caf::reacts_to<token_batch>,
  caf::reacts_to<submit_atom, gen_request>,
  caf::reacts_to<cancel_atom, uint64_t>,
  caf::reacts_to<tick_atom>,
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// One per model replica: continuous batching over its unit.
using scheduler_actor = caf::typed_actor<
  caf::replies_to<enqueue_atom, gen_request, gateway_actor>::with<enqueue_reply>,
  caf::reacts_to<cancel_atom, uint64_t>,
  caf::reacts_to<subscribe_atom, caf::actor>,  // send load reports to this router
  // true: refuse new requests (429) and hand every sequence back to its
  // gateway to continue elsewhere (finish "migrate"); answers how many.
  // false: accept again.
  caf::replies_to<drain_atom, bool>::with<int32_t>,
  // Hands this fraction of its sequences back (those that lose least by
  // moving), for replicas that just joined; answers how many.
  caf::replies_to<hand_back_atom, double>::with<int32_t>,
  caf::reacts_to<tick_atom>,
  // Self-sent at a step's deadline: (step serial, job kind).
  caf::reacts_to<step_timeout_atom, uint64_t, int32_t>,
  // Puts the model to sleep now, if nothing of it is queued or running (its
  // unit frees the engine, the kv_manager its cached blocks); answers "" or
  // why not. From the admin CLI, and from its unit making room for another.
  caf::replies_to<sleep_atom>::with<std::string>,
  // Wakes it now (a request would too); answers "" once it is ready, or why not.
  caf::replies_to<wake_atom>::with<std::string>,
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// Picks a replica per request and delegates `enqueue` to its scheduler.
using router_actor = caf::typed_actor<
  caf::replies_to<submit_atom, gen_request, gateway_actor>::with<enqueue_reply>,
  caf::reacts_to<replica_up_atom, replica_info>,
  caf::reacts_to<replica_dn_atom, std::string>,  // node name: all its replicas are down
  caf::reacts_to<lost_atom, std::string>,        // replica name: the edge saw it go down
  // Whether new requests may go to this replica (a layout switch parks
  // and unparks replicas); answers false for an unknown replica.
  caf::replies_to<routable_atom, std::string, bool>::with<bool>,
  caf::reacts_to<load_report>,
  caf::reacts_to<tick_atom>,  // self-sent: expires requests waiting for a first replica
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// Runs engine steps for the models co-located on one GPU (or CPU socket).
using gpu_unit_actor = caf::typed_actor<
  caf::replies_to<step_atom, std::string, engine::step_input>::with<engine::step_output>,
  caf::reacts_to<step_done_atom, uint64_t>,
  // Moves a model's jobs to a partition of this share, between steps; the
  // answer is empty, or why the move was refused.
  caf::replies_to<set_share_atom, std::string, double>::with<std::string>,
  // A model's scheduler, asked to sleep when the unit makes room.
  caf::reacts_to<attach_atom, std::string, caf::actor>,
  // From the model's scheduler: builds its engine again, first putting the
  // least recently used idle models to sleep when the unit's memory_mib
  // needs it; answers "" once ready, or why it cannot now.
  caf::replies_to<wake_atom, std::string>::with<std::string>,
  // From the model's scheduler, which sends it no step until it wakes:
  // frees its engine; answers "" or why not.
  caf::replies_to<sleep_atom, std::string>::with<std::string>,
  caf::reacts_to<woke_atom, std::string, uint64_t>,
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// The unit's KV block pool, one block table per sequence (kv_block_pool).
/// - `kv_open`: tables for new sequences, granted in order while they fit;
///   the grant holds each one's cached prefix length in tokens, or `never`
///   when the first can never fit the model's quota or the pool.
/// - `kv_grow`: longer tables for running sequences (`lookup` unused),
///   granted in order while they fit.
///   Both grants carry the new physical block ids for models whose engine
///   reads the unit's blocks (the CPU engine), none for the sim.
/// - `kv_commit`: these tokens of a sequence are computed: its full blocks
///   join the model's prefix cache.
/// - `kv_close`: the sequences ended or were preempted.
/// - `kv_load`: a scheduler's arrivals since its last report and the tokens
///   its waiting requests need (their backlog), for the ADBS quotas.
/// - `sleep`: the model went to sleep: its cached blocks go back to the
///   pool (its engine that computed them is gone); answers how many.
using kv_manager_actor = caf::typed_actor<
  caf::replies_to<kv_open_atom, std::string, std::vector<kv_need>>::with<kv_grant>,
  caf::replies_to<kv_grow_atom, std::string, std::vector<kv_need>>::with<kv_grant>,
  caf::reacts_to<kv_commit_atom, std::string, uint64_t, std::vector<int32_t>>,
  caf::reacts_to<kv_close_atom, std::string, std::vector<uint64_t>>,
  caf::reacts_to<kv_load_atom, std::string, int32_t, int64_t>,
  caf::replies_to<sleep_atom, std::string>::with<int64_t>,
  caf::reacts_to<tick_atom>,
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// One per cluster: connects to every node, tells the router about replicas.
using controller_actor = caf::typed_actor<
  caf::replies_to<nodes_atom>::with<std::vector<node_entry>>,
  caf::reacts_to<load_report>,  // from every scheduler, for share moves
  caf::reacts_to<share_tick_atom>,
  caf::reacts_to<layout_tick_atom>,
  caf::reacts_to<tick_atom>,
  // Lays a unit out as "single" or "replicas" now; answers "" or why not.
  caf::replies_to<set_layout_atom, std::string, std::string>::with<std::string>,
  // Moves a model's serving from one unit's replica to another's (model,
  // from unit, to unit): wake the target, route there, hand the source's
  // sequences over, put the source to sleep; answers "" or why not.
  caf::replies_to<move_atom, std::string, std::string, std::string>::with<std::string>,
  // Online re-placement (replan_policy): what it would wake and put to
  // sleep now, as JSON; and doing it, answering what was done.
  caf::replies_to<plan_atom>::with<std::string>,
  caf::replies_to<apply_plan_atom>::with<std::string>,
  caf::reacts_to<replan_tick_atom>,
  caf::replies_to<get_state_atom>::with<actor_state>>;

/// One per node, published on the node's middleman port: the node's agent.
/// It knows every local actor, answers for them, and (where the controller
/// runs) for the whole cluster.
using admin_actor = caf::typed_actor<
  caf::reacts_to<add_actor_atom, std::string, std::string, caf::actor>,  // kind, name, handle
  caf::reacts_to<replica_up_atom, replica_info>,                         // a local replica
  caf::replies_to<replicas_atom>::with<std::vector<replica_info>>,
  caf::replies_to<get_state_atom>::with<std::vector<actor_state>>,       // this node
  caf::replies_to<cluster_atom>::with<std::vector<actor_state>>>;        // every node

/// Registers every message type above with CAF (needed to cross nodes).
void register_types(caf::actor_system_config& cfg);

}  // namespace llmux::protocol
