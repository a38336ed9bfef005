#!/usr/bin/env python3
"""Router policies compared in `llmux simulate` (SIMULATED: the sim backend's
cost model over MuxServe's A100 profile; no model runs).

Three scenarios, each a config and a workload in this folder, every policy
run on the same arrivals (`llmux simulate --router-policy P`):

  shared-prefix  4 x A100 replicas of LLaMA-7B; 16 shared 1,024-token
                 prefixes and 400 multi-turn sessions (shared-prefix.toml):
                 what prefix-aware and session routing are for;
  hot-prefix     the same replicas; one of 8 prefixes carries 83% of the
                 requests (hot-prefix.toml): what the affinity load cap is
                 for (prefix_aware with the cap lifted is run beside it);
  mixed-speed    2 replicas on a whole A100, 2 on 30% of one (chat.toml, no
                 sharing): what predicting TTFT from each replica's measured
                 prefill rate is for.

For each run: requests ok/failed, TTFT p50/p99, TPOT p50, E2E p99, completed
req/s, prefix-cache hit rate (prompt tokens found cached), affinity (requests
sent where their session/prefix was), dispatch imbalance (busiest replica's
requests over the mean) and busy imbalance (busiest GPU's computing time over
the mean). Writes OUT/policies.md and OUT/policies.json.

Usage: python3 bench/router/policies.py [--llmux build/llmux] [--out bench/results/router]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ALL = ["least_loaded", "round_robin", "power_of_two", "least_tokens", "prefix_aware", "session", "slo_aware"]
SCENARIOS = [
    ("shared-prefix", "replicas-a100.toml", "shared-prefix.toml", [(p, None) for p in ALL]),
    ("hot-prefix", "replicas-a100.toml", "hot-prefix.toml",
     [("least_loaded", None), ("least_tokens", None), ("prefix_aware", None),
      ("prefix_aware", "no cap")]),
    ("mixed-speed", "replicas-mixed.toml", "chat.toml",
     [(p, None) for p in ["least_loaded", "round_robin", "power_of_two", "least_tokens", "slo_aware"]]),
]


def run(llmux, config, workload, policy):
    out = subprocess.run([llmux, "simulate", "--config", config, "--workload", workload,
                          "--router-policy", policy, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "router"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, workload, runs in SCENARIOS:
            cfg_path = os.path.join(HERE, config)
            for policy, variant in runs:
                path = cfg_path
                if variant == "no cap":
                    # Affinity never passes a replica over, however loaded.
                    with open(cfg_path) as f:
                        text = f.read()
                    text = text.replace('[router]\n', '[router]\naffinity_slack = 1000000000\n'
                                                      'affinity_ratio = 1000000000\n', 1)
                    path = os.path.join(tmp, "nocap-" + config)
                    with open(path, "w") as f:
                        f.write(text)
                r = run(args.llmux, path, os.path.join(HERE, workload), policy)
                a, rt = r["all"], r["routing"]
                label = policy + (f" ({variant})" if variant else "")
                results.append({"scenario": name, "policy": label, "report": r})
                rows.append(f"| {name} | {label} | {a['ok']} / {a['failed'] + a['unfinished']} | "
                            f"{a['ttft']['p50_ms']:.0f} | {a['ttft']['p99_ms']:.0f} | {a['tpot']['p50_ms']:.1f} | "
                            f"{a['e2e']['p99_ms'] / 1e3:.1f} | {r['window_rps']:.2f} | "
                            f"{100 * rt['prefix_hit_rate']:.1f}% | {100 * rt['affinity_rate']:.1f}% | "
                            f"{rt['dispatch_imbalance']:.2f} | {rt['busy_imbalance']:.2f} |")
                print(rows[-1], flush=True)
    head = ("| scenario | policy | ok / failed | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | E2E p99 s | "
            "req/s | prefix hits | affinity | dispatch imb. | busy imb. |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    md = ("SIMULATED (llmux simulate, MuxServe's A100 profile): router policies on the same arrivals.\n"
          "Command: python3 bench/router/policies.py\n\n" + head + "\n" + "\n".join(rows) + "\n")
    with open(os.path.join(args.out, "policies.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "policies.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}/policies.md and policies.json", file=sys.stderr)


if __name__ == "__main__":
    main()
