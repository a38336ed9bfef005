#pragma once
/// The cluster description: one TOML file → one `cluster_config` value.
///
/// Configuration flows one way: file → `load_cluster_config` (validates every
/// key, fills defaults) → constructors of actors and servers. Nothing else
/// reads the file or the environment. No CAF in here.

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmux::config {

/// One OS process of the cluster. Nodes talk through CAF's middleman on
/// `port`; the admin CLI talks msgpack to `admin_port`.
struct node_config {
  std::string name;
  std::string host = "127.0.0.1";
  uint16_t port = 0;        ///< middleman port (required, unique per host)
  uint16_t admin_port = 0;  ///< admin wire port; default port + 100
};

/// The HTTP edge.
struct gateway_config {
  std::string node;                   ///< node that runs the gateway
  std::string host = "127.0.0.1";     ///< listen address
  uint16_t port = 8080;               ///< listen port
  /// Accepted bearer keys; empty: no authentication. Also read from
  /// `api_key_file` (one a line, # comments) and, at the edge's start, from
  /// the environment variable LLMUX_API_KEY (add_environment_keys).
  std::vector<std::string> api_keys;
  std::string admin_token;            ///< guards /admin/* and the admin port
  /// Threads that parse, tokenize and render answers; 0: one per core (at
  /// least 2). Connections and waiting streams hold no thread (one event
  /// loop serves them all).
  int http_threads = 0;
  size_t max_body_bytes = 1 << 20;    ///< larger bodies get 413
  /// Generation requests in flight at this edge (parsing, queued, running,
  /// streaming); beyond it an immediate 429 with Retry-After.
  int max_in_flight = 8192;
  int max_connections = 16384;        ///< open client connections; beyond: 503 and close
  double keep_alive_s = 75;           ///< idle keep-alive connections close after this (nginx's 75 s)
  /// A second listen address for /metrics and /admin/* (and /health,
  /// /ready), which the public port then no longer serves; 0: all on `port`.
  uint16_t ops_port = 0;
  std::string ops_host;               ///< empty: `host`
};

struct router_config {
  std::string node;                     ///< node that runs the router (the gateway's, for now)
  /// How a model's requests pick a replica (actors/router/router_policy.hpp):
  /// "least_loaded" | "round_robin" | "power_of_two" | "least_tokens" |
  /// "prefix_aware" | "session" | "slo_aware"; a model's `router_policy`
  /// overrides it.
  std::string policy = "least_loaded";
  /// session: the request header naming a session (lower case); without
  /// it, the OpenAI `user` field.
  std::string session_header = "x-session-id";
  /// prefix_aware and session: a replica loaded beyond the least loaded by
  /// more than `affinity_slack` requests and more than `affinity_ratio`
  /// times is passed over for affinity.
  int affinity_slack = 16;
  double affinity_ratio = 1.5;
  int prefix_cache_blocks = 65536;  ///< prefix_aware: block hashes remembered per replica
  int max_sessions = 100000;        ///< session: sessions remembered (LRU)
};

struct controller_config {
  std::string node;  ///< node that runs the controller (the router's, for now)
  /// Move compute shares on a unit from idle models to models whose queues
  /// stay long (controller::share_policy), `share_step` at a time, at most
  /// once per `share_cooldown_ms` per unit. Off: shares change only by
  /// `llmux admin set-share`.
  bool move_shares = false;
  double share_step = 0.125;
  int share_cooldown_ms = 5000;
  int share_tick_ms = 500;  ///< how often the controller decides share moves
  /// Online re-placement on units with a memory_mib: every `replan_s`
  /// seconds (0: only `llmux admin apply-plan`) the controller re-runs the
  /// placement planner on the measured rates (`replan_planner`, where the
  /// units have a cost model; else the rate rule: the most popular models
  /// that fit) and applies the difference: wakes of sleeping models the
  /// plan wants, in the place of idle awake ones with at most
  /// 1/`replan_ratio` of their rate, moves of a model to the unit the plan
  /// puts it on, decode-share moves; at most `replan_budget` wakes and
  /// moves at a time; models below `replan_min_rate` req/s wait for a
  /// request to wake them (controller::replan_policy).
  double replan_s = 0;
  int replan_budget = 2;
  double replan_ratio = 2.0;
  double replan_min_rate = 0.05;
  bool replan_planner = true;
};

/// Per-GPU-type constants of the sim cost model (roofline).
struct gpu_spec {
  std::string name;
  double mem_bandwidth_gbs = 3350;  ///< HBM bandwidth, GB/s
  double peak_tflops = 989;         ///< dense BF16 peak, TFLOP/s
  double step_overhead_us = 40;     ///< fixed launch/sync cost per step, µs
  double memory_gib = 80;           ///< device memory, GiB
  /// GB/s at which a sleeping model's weights come back from host memory
  /// to the device when it wakes (PCIe); the sim's wake time is its
  /// weights over this.
  double load_gbs = 25;
  /// Measured step latencies that calibrate the cost model instead of the
  /// roofline (engine/step_profile.hpp): a file path (relative to the config
  /// file) or "builtin:a100" (MuxServe's A100 profile of LLaMA 7B-65B).
  /// Empty: the roofline above.
  std::string profile;
};

/// Transformer shape; for `sim` it drives the cost model, for real backends it
/// is read from the model file instead.
struct model_arch {
  std::string preset;  ///< name of the preset it came from, or "custom"
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;
  int intermediate = 0;
  int vocab = 0;
  int context_length = 0;
  int dtype_bytes = 2;  ///< bytes per weight / KV element
  int head_dim = 0;     ///< per-head size; 0: hidden / heads (files may say otherwise)

  /// The size of one attention head: `head_dim`, else hidden / heads.
  [[nodiscard]] int head_size() const { return head_dim > 0 ? head_dim : heads > 0 ? hidden / heads : 0; }
  /// Parameters (weights), counted as a Llama-style decoder.
  [[nodiscard]] double params() const;
  /// Bytes of K and V for one token across all layers.
  [[nodiscard]] double kv_bytes_per_token() const;
};

/// Known shapes for `architecture = "<preset>"`: "tiny", "llama-1b",
/// "llama-3b", "llama-7b", "llama-8b", "llama-13b", "llama-30b",
/// "llama-65b", "llama-70b" (7b/13b: LLaMA-2; 30b/65b: LLaMA-1, the shapes
/// of MuxServe's A100 profile).
[[nodiscard]] std::optional<model_arch> arch_preset(const std::string& name);

struct model_config {
  std::string name;            ///< the OpenAI `model` field
  std::string backend = "sim"; ///< "sim" | "cpu" | "cuda"
  std::string file;            ///< model file (cpu/cuda); must exist
  std::string load_format = "auto";  ///< "auto" (the file) | "dummy" (random weights of `arch`)
  std::string dtype = "f16";         ///< dummy weights' type (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k)
  model_arch arch;             ///< sim and dummy: from `architecture` (preset or table)
  int max_tokens_default = 256;  ///< when a request gives none
  /// Requests of this model in flight at the edge; beyond it an immediate
  /// 429 (0: only the edge's own limit).
  int max_in_flight = 0;
  bool enforce_eager = false;    ///< cuda: no CUDA graphs for decode steps (vLLM's flag)
  /// cuda: "none" (weights in dtype) or "int8" (weight-only: the layers'
  /// matrices as int8 with a scale per output row, activations in dtype;
  /// embeddings and the output head stay in dtype), as vLLM's quantization.
  std::string quantization = "none";
  /// The model's key in its GPU type's profile (engine/step_profile.hpp);
  /// empty: its name, then its architecture preset.
  std::string profile_key;
  /// The router policy of this model's requests; empty: `[router] policy`.
  std::string router_policy;
  /// Time to first token its requests should get, ms: the slo_aware
  /// router's deadline (0: what is left of `timeouts.request_ms`).
  int ttft_slo_ms = 0;
  /// vLLM's --chat-template: the Jinja chat template that replaces the
  /// model file's (its text, read from the file the config names, or given
  /// inline); empty: the model file's own.
  std::string chat_template;
  /// Seconds without a request after which each of its replicas goes to
  /// sleep (its engine and KV freed, the weights kept in host memory; the
  /// next request wakes it); 0: never.
  double idle_sleep_s = 0;
};

struct unit_model {
  std::string model;   ///< a name from [[models]]
  /// Compute share in (0, 1]; split jobs: both jobs together (with a shared
  /// prefill lane: the lane's share plus its decode_share).
  double share = 1.0;
  double rate = 1.0;   ///< expected requests/s: ADBS's starting point for its KV quota
  /// Split jobs: the decode job's part of `share` (the prefill job gets the
  /// rest); share / 2 unless given. 0 with mixed jobs.
  double decode_share = 0;
  /// false: the model starts asleep (not loaded) and wakes on its first
  /// request, as llama.cpp's router mode loads on demand.
  bool awake = true;
};

/// A GPU unit (or CPU socket): co-located models share its compute and KV pool.
struct unit_config {
  std::string name;
  std::string node;
  std::string backend = "sim";
  std::string gpu = "h100";       ///< key into `gpus` (sim cost model)
  int kv_blocks = 0;              ///< physical blocks in the unit's pool; 0 = size from GPU memory
  int block_tokens = 16;          ///< tokens per block
  int max_running = 256;          ///< sequences in a step, per model
  int max_batch_tokens = 4096;    ///< tokens in a step (prefill chunking), per model
  int max_waiting = 1024;         ///< queued requests per model before 429
  /// KV blocks per sequence: "on_demand" (prompt + 1 at admission, grow per
  /// block, preempt the newest by recompute when refused) or "reserve"
  /// (prompt + max_tokens at admission, never preempted).
  std::string kv_growth = "on_demand";
  /// How co-located models share the KV pool: "adbs" (MuxServe: quotas
  /// proportional to measured rate × KV per token, moved every
  /// `quota_period_ms` toward models with a backlog), "fcfs" or
  /// "round_robin" (no quotas: first come, first served from one pool).
  std::string policy = "adbs";
  /// How the unit's compute is shared between its models' steps:
  /// "spatial" (each model steps at once on its share: CPU partitions, GPU
  /// SM partitions, the sim's concurrent steps) or "temporal" (one step at a
  /// time on the whole unit, ordered by `policy`: adbs runs steps with prefill
  /// work first, round-robin over models; fcfs by the step's arrival;
  /// round_robin in rotation).
  std::string multiplex = "spatial";
  /// How each model's work is split into jobs: "mixed" (one step feeds its
  /// decodes and prefill chunks together, chunked prefill) or "split" (its
  /// prefill job and decode job step at once, each in its own partition and
  /// share: on CPU, worker threads; spatial units only).
  std::string jobs = "mixed";
  /// Split jobs: where each model's prefill job runs. "own": a partition of
  /// its own (its `share` less its `decode_share`). "shared" (MuxServe's
  /// layout): the models' prefill steps take turns, in `policy` order, on
  /// one lane of `prefill_share`, while each decode job keeps its own
  /// partition, so no decode waits behind a prompt and no prefill partition
  /// idles between prompts. sim backend only, for now.
  std::string prefill = "own";
  /// prefill = "shared": the lane's share of the unit. Unset (0): what the
  /// decode shares leave; models without a decode_share then get
  /// 1 / (models + 1) each.
  double prefill_share = 0;
  /// sim only: shares are caps, not partitions, and may sum above 1, as
  /// CUDA MPS percentages do (MuxServe's runtime): jobs computing at once
  /// whose shares sum above 1 slow down in proportion. For simulating
  /// MuxServe itself; llmux's green-context partitions never overlap.
  bool oversubscribe = false;
  int quota_period_ms = 5000;     ///< adbs: seconds between quota moves, in ms
  int kv_floor_tokens = 512;      ///< adbs: KV every model keeps room for, tokens
  double time_scale = 1.0;        ///< sim: multiplies step time; 0 = no wait
  int threads = 0;                ///< cpu: worker threads of the unit; 0 = every core
  int kv_cache_mib = 1024;        ///< cpu: KV cache budget when kv_blocks = 0
  /// cuda: the CUDA device ordinals of the unit; more than one runs each
  /// model tensor-parallel across them (NCCL), as vLLM's
  /// tensor_parallel_size over those GPUs. sim: the GPUs the unit models;
  /// their count is the tensor-parallel size its cost model uses.
  std::vector<int> devices{0};
  std::vector<unit_model> models;
  /// How the unit's one model is laid out over its k = `threads` (cpu):
  /// "single" (one replica on all k, the default), "replicas" (k replicas
  /// of one thread each, sharing the mapped weights) or "dynamic" (the
  /// controller switches between the two by measured concurrency; `llmux
  /// admin set-layout` forces it). cpu units with one model, for now.
  std::string layout = "single";
  /// dynamic: the concurrency (waiting + running requests on the unit)
  /// above which replicas are faster; 0: where the cost model (the unit's
  /// GPU type's profile) says their step times cross.
  double layout_switch_at = 0;
  /// dynamic: switch to replicas above switch_at × (1 + h), back below
  /// switch_at × (1 − h).
  double layout_hysteresis = 0.25;
  int layout_cooldown_ms = 5000;  ///< dynamic: at least this long between switches
  /// Memory the unit's awake models' weights may take together, MiB (host
  /// memory on cpu, device memory on cuda and sim); 0: no limit. Models
  /// past it start asleep (in config order), and waking one puts the
  /// least recently used idle ones to sleep until it fits.
  int memory_mib = 0;
};

/// Mutual TLS between the nodes (`[tls]`): each node presents the
/// certificate the cluster's CA signed for it and admits only peers that do
/// the same; the cluster port then speaks nothing else. Paths are absolute
/// (resolved against the config's folder); `{node}` in `cert` and `key`
/// stands for the node's name. `llmux certs CONFIG` writes them into `dir`.
struct tls_config {
  bool enabled = false;
  std::string dir;   ///< where `llmux certs` writes; default layout below
  std::string ca;    ///< the cluster CA's certificate (dir/ca.pem)
  std::string cert;  ///< a node's certificate (dir/{node}.pem)
  std::string key;   ///< a node's key (dir/{node}.key)

  [[nodiscard]] std::string cert_of(const std::string& node) const;
  [[nodiscard]] std::string key_of(const std::string& node) const;
};

struct timeouts_config {
  int request_ms = 30000;             ///< whole request deadline at the edge
  int connect_ms = 2000;              ///< middleman connect attempts
  int reconnect_ms = 1000;            ///< retry period for unreachable nodes
  int heartbeat_ms = 500;             ///< middleman heartbeat, every node
  int connection_timeout_ms = 3000;   ///< drop a silent peer after this
  int load_report_ms = 100;           ///< scheduler → router load reports
};

struct cluster_config {
  std::string source;  ///< file it was read from ("<embedded>" for defaults)
  std::string name = "llmux";
  int scheduler_threads = 2;  ///< CAF worker threads per node
  std::vector<node_config> nodes;
  gateway_config gateway;
  router_config router;
  controller_config controller;
  std::map<std::string, gpu_spec> gpus;  ///< always holds at least "h100", "h200", "a100"
  std::vector<model_config> models;
  std::vector<unit_config> units;
  timeouts_config timeouts;
  tls_config tls;

  [[nodiscard]] const node_config* find_node(const std::string& name) const;
  [[nodiscard]] const model_config* find_model(const std::string& name) const;
  [[nodiscard]] const unit_config* find_unit(const std::string& name) const;
};

/// A bad config: `what()` is one line "FILE:LINE: key 'KEY': REASON".
struct config_error : std::runtime_error {
  config_error(std::string file, int line, std::string key, std::string reason);
  std::string file;
  int line;  ///< 0 when unknown
  std::string key;
  std::string reason;
};

/// Physical KV blocks a unit gets when `kv_blocks` is 0: 90% of the GPU's
/// memory minus the weights of its models, at most its `memory_mib` (cpu
/// units: `kv_cache_mib`), in
/// blocks of one head of one layer for `block_tokens` tokens of the largest
/// head size among them. File-backed models need their `arch` filled first.
[[nodiscard]] int64_t auto_kv_blocks(const cluster_config& cfg, const unit_config& unit);

/// Reads and validates a TOML file. Throws `config_error`.
[[nodiscard]] cluster_config load_cluster_config(const std::string& path);

/// Same, from text; `source_name` is used in error messages. Relative model
/// file paths resolve against `base_dir`.
[[nodiscard]] cluster_config parse_cluster_config(const std::string& toml_text,
                                                  const std::string& source_name,
                                                  const std::string& base_dir = ".");

/// The embedded default of `llmux serve`: one node "local" with gateway,
/// router, controller and one sim unit serving model `tiny` (architecture
/// "tiny"), HTTP on host:port, no API key.
/// Adds the API key in the environment variable LLMUX_API_KEY (as vLLM's
/// VLLM_API_KEY) to `cfg.gateway.api_keys`, when it is set and not empty.
/// Returns whether one was added.
bool add_environment_keys(cluster_config& cfg);

[[nodiscard]] cluster_config default_single_node(const std::string& host = "127.0.0.1",
                                                 uint16_t http_port = 8080);

/// A chat template as vLLM's --chat-template takes it: the text of the file
/// `value` names (relative to `base_dir`), or `value` itself when it is
/// Jinja (holds "{{" or "{%") and no such file exists. Throws
/// std::runtime_error for a value that is neither.
[[nodiscard]] std::string read_chat_template(const std::string& value, const std::string& base_dir = ".");

}  // namespace llmux::config
