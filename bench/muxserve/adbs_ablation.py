#!/usr/bin/env python3
"""MuxServe's ADBS ablation, simulated: adbs vs fcfs vs round_robin on one unit.

MuxServe (ICML 2024, §5.4) co-locates LLaMA-65B (1 req/s, mean prompt 778)
with LLaMA-30B (8 req/s, mean prompt 128) on 4 A100s and measures ADBS
7.48 req/s against 3.92 for FCFS and 5.81 for round-robin. Here the same
pair shares one 4-GPU A100 unit (tensor-parallel 4, the built-in A100
profile) under `llmux simulate` (SIMULATED: the sim backend's cost model,
no model runs): 120 s of Poisson arrivals, outputs log-normal with mean
256, and the unit's `policy` set to each of adbs, fcfs and round_robin, in
two layouts:
  - temporal: `multiplex = "temporal"`, one step at a time on the whole unit;
  - shared:   `jobs = "split"`, `prefill = "shared"`: each decode job on its
              own partition (30% of the SMs), prefill steps taking turns on
              one lane (the rest) — llmux's MuxServe layout.
The unit's config rates match the workload's, so ADBS's quota split starts
where the load is. With --rates the 30B's rate is swept (the 65B stays at
1 req/s). Every point is deterministic for its seed; with several --seeds
the tables show the mean over seeds, and every run's report is kept.

Prints per layout, policy and 30B rate: aggregate req/s (requests completed
over the span from the first arrival to the last completion), each model's
req/s, SLO attainment at --slo-scale (all requests, then per model; the SLO
is that scale times the request's latency alone on its model's reference
GPUs) and preemptions. Writes the configs, workloads, each run's JSON report
(raw/) and the tables (summary.txt, summary.json) to --out.

Usage: python3 bench/muxserve/adbs_ablation.py [--llmux build/llmux]
       [--rates 4 8 12] [--seeds 1] [--seconds 120] [--jobs 2] [--out DIR]
"""
import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
POLICIES = ["adbs", "fcfs", "round_robin"]
LAYOUTS = ["temporal", "shared"]
MODELS = ["llama-65b", "llama-30b"]
COLD_RATE = 1.0  # the 65B's req/s


def workload(seconds, seed, hot_rate):
    return f"""duration_s = {seconds:g}
seed = {seed}
output = "lognormal:256:1.0:4:1024"
[[model]]
name = "llama-65b"
rate = {COLD_RATE:g}
prompt = "lognormal:778:1.0:16:1500"
[[model]]
name = "llama-30b"
rate = {hot_rate:g}
prompt = "lognormal:128:1.0:4:1024"
"""


def config(layout, policy, hot_rate):
    if layout == "temporal":
        unit = ('multiplex = "temporal"\n'
                f'models = [ {{ name = "llama-65b", rate = {COLD_RATE:g}, share = 0.5 }}, '
                f'{{ name = "llama-30b", rate = {hot_rate:g}, share = 0.5 }} ]\n')
    else:
        unit = ('jobs = "split"\nprefill = "shared"\n'
                f'models = [ {{ name = "llama-65b", rate = {COLD_RATE:g}, decode_share = 0.3 }}, '
                f'{{ name = "llama-30b", rate = {hot_rate:g}, decode_share = 0.3 }} ]\n')
    return f"""[cluster]
name = "ablation"
[[nodes]]
name = "n0"
port = 7501
[gateway]
node = "n0"
[gpus.a100]
profile = "builtin:a100"
[[models]]
name = "llama-65b"
architecture = "llama-65b"
[[models]]
name = "llama-30b"
architecture = "llama-30b"
[[units]]
name = "u0"
node = "n0"
gpu = "a100"
devices = [0, 1, 2, 3]
policy = "{policy}"
""" + unit


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def run_point(a, layout, policy, rate, seed):
    tag = f"{layout}-{policy}-r{rate:g}-s{seed}"
    cfg = os.path.join(a.out, f"c-{layout}-{policy}-r{rate:g}.toml")
    wl = os.path.join(a.out, f"w-r{rate:g}-s{seed}.toml")
    raw = os.path.join(a.out, "raw", tag + ".json")
    p = subprocess.run([a.llmux, "simulate", "--config", cfg, "--workload", wl, "--slo-scale", f"{a.slo_scale:g}",
                        "--json", "--json-out", raw], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{tag}: llmux simulate failed ({p.returncode}):\n{p.stderr}")
    rep = json.loads(p.stdout)
    if rep.get("violations"):
        sys.exit(f"{tag}: the simulator reports broken invariants: {rep['violations']}")
    k = rep["slo_scales"].index(a.slo_scale) if a.slo_scale in rep["slo_scales"] else None

    def att(g):
        if k is not None:
            return g["slo_attainment"][k]
        sys.exit(f"{tag}: SLO scale {a.slo_scale:g} not in the report's {rep['slo_scales']}")

    return {"aggregate_rps": rep["aggregate_rps"], "attainment": att(rep["all"]),
            "preemptions": rep["preemptions"], "end_s": rep["end_s"],
            "models": {m["name"]: {"rps": m["throughput_rps"], "attainment": att(m)} for m in rep["models"]}}


def mean(points):
    n = len(points)
    out = {"aggregate_rps": sum(p["aggregate_rps"] for p in points) / n,
           "attainment": sum(p["attainment"] for p in points) / n,
           "preemptions": sum(p["preemptions"] for p in points) / n,
           "models": {}}
    for m in MODELS:
        out["models"][m] = {k: sum(p["models"][m][k] for p in points) / n for k in ("rps", "attainment")}
    return out


def table(a, results):
    lines = [f"SIMULATED (llmux simulate, A100 profile): LLaMA-65B at {COLD_RATE:g} req/s + LLaMA-30B on one "
             f"4-GPU unit, {a.seconds:g} s of arrivals, SLO scale {a.slo_scale:g}, "
             f"seeds {' '.join(str(s) for s in a.seeds)} ({'mean' if len(a.seeds) > 1 else 'one run'})",
             "",
             "| layout | 30B req/s | policy | aggregate req/s | 65B req/s | 30B req/s | SLO all | SLO 65B | SLO 30B "
             "| preemptions |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for layout in a.layouts:
        for rate in a.rates:
            for policy in a.policies:
                r = results[layout][f"{rate:g}"][policy]["mean"]
                m = r["models"]
                lines.append(f"| {layout} | {rate:g} | {policy} | {r['aggregate_rps']:.2f} | "
                             f"{m['llama-65b']['rps']:.2f} | {m['llama-30b']['rps']:.2f} | "
                             f"{100 * r['attainment']:.1f}% | {100 * m['llama-65b']['attainment']:.1f}% | "
                             f"{100 * m['llama-30b']['attainment']:.1f}% | {r['preemptions']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.environ.get("LLMUX_BIN", os.path.join(ROOT, "build", "llmux")))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "adbs_ablation"))
    ap.add_argument("--rates", type=float, nargs="+", default=[4, 8, 12], help="the 30B's req/s")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--slo-scale", type=float, default=5)
    ap.add_argument("--policies", nargs="+", default=POLICIES, choices=POLICIES)
    ap.add_argument("--layouts", nargs="+", default=LAYOUTS, choices=LAYOUTS)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "raw"), exist_ok=True)
    for rate in a.rates:
        for seed in a.seeds:
            write(os.path.join(a.out, f"w-r{rate:g}-s{seed}.toml"), workload(a.seconds, seed, rate))
        for layout in a.layouts:
            for policy in a.policies:
                write(os.path.join(a.out, f"c-{layout}-{policy}-r{rate:g}.toml"), config(layout, policy, rate))

    points = [(layout, policy, rate, seed) for layout in a.layouts for rate in a.rates for policy in a.policies
              for seed in a.seeds]
    results = {}
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        futs = {ex.submit(run_point, a, *p): p for p in points}
        for f in cf.as_completed(futs):
            layout, policy, rate, seed = futs[f]
            results.setdefault(layout, {}).setdefault(f"{rate:g}", {}).setdefault(policy, {})[str(seed)] = f.result()
    for by_rate in results.values():
        for by_policy in by_rate.values():
            for runs in by_policy.values():
                runs["mean"] = mean([runs[str(s)] for s in a.seeds])

    text = table(a, results)
    print(text)
    write(os.path.join(a.out, "summary.txt"), text + "\n")
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"seconds": a.seconds, "slo_scale": a.slo_scale, "seeds": a.seeds, "rates_30b": a.rates,
                   "rate_65b": COLD_RATE, "results": results}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
