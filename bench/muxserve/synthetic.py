#!/usr/bin/env python3
"""MuxServe's synthetic experiment, planned and simulated three (four) ways.

19 LLMs (12 x LLaMA-7B, 4 x 13B, 2 x 30B, 1 x 65B) on 4 nodes x 8 A100-80GB
(the built-in A100 profile), Poisson arrivals, the rate of the LLM of
popularity rank i proportional to (i+1)^-alpha, ShareGPT-like lengths
(log-normal, mean prompt 161, mean output 337). Which size holds which rank
is not published: the sizes are shuffled once with --order-seed (the order
is printed and kept in the results).

Every point plans its system for exactly that load (`llmux plan`, the SLO
scale given to the planner too) and simulates it (`llmux simulate`;
SIMULATED: the sim backend's cost model, no model runs):
  - llmux:    MuxServe's placement search (+ replicas), decode partitions
              beside one shared prefill lane, ADBS;
  - muxserve: the same search without replicas, MuxServe's runtime emulated
              (prefill at 100% of the SMs and decode jobs at their share as
              MPS caps that overlap, ADBS);
  - spatial:  each LLM on GPUs of its own (spare GPUs as replicas);
  - temporal: llmux's units, one step at a time, FCFS.
It prints, per alpha, the highest rate of the most popular LLM at which each
system meets the SLO for 99% of requests (SLO = --slo-scale x the request's
latency alone on its model's reference GPUs; found by doubling, then
bisection to 5%), and each system's throughput (requests completed while
arrivals lasted) at the --load rates; everything goes to OUT/summary.json.

Usage: python3 bench/muxserve/synthetic.py [--alphas 0.7 0.9 1.3 1.7 2.1]
       [--load 40 80] [--seconds 60] [--jobs 2] [--out DIR]
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import subprocess
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = ["llama-7b"] * 12 + ["llama-13b"] * 4 + ["llama-30b"] * 2 + ["llama-65b"]
SYSTEMS = ["llmux", "muxserve", "spatial", "temporal"]
# llmux less one part each (--systems to run them): plan flags, then a config edit.
VARIANTS = {
    "llmux-norep": (["--no-replicas"], lambda t: t),                      # each model on one unit
    "llmux-noslo": ([], lambda t: t),                                     # planned without the SLO (slo 0)
    "llmux-fcfs": ([], lambda t: t.replace('policy = "adbs"', 'policy = "fcfs"')),  # no KV quotas, FCFS lane
    "llmux-moves": ([], lambda t: t.replace("[gateway]", "[controller]\nnode = \"node0\"\nmove_shares = true\n\n[gateway]")),
}


def order(seed):
    s = list(SIZES)
    random.Random(seed).shuffle(s)
    return s


def write_inputs(out, alpha, top, seconds, sizes, seed):
    tag = f"a{alpha}-r{top}"
    total = top * sum((i + 1) ** -alpha for i in range(len(sizes)))
    w = os.path.join(out, f"workload-{tag}.toml")
    with open(w, "w") as f:
        f.write(f"duration_s = {seconds}\nseed = {seed}\n")
        f.write('prompt = "lognormal:161:1.0:4:1024"\noutput = "lognormal:337:1.0:4:1024"\n')
        f.write("models = [" + ", ".join(f'"llm-{i}"' for i in range(len(sizes))) + "]\n")
        f.write(f"total_rate = {total:.4f}\nalpha = {alpha}\n")
    p = os.path.join(out, "plan.toml")
    if not os.path.exists(p):
        with open(p, "w") as f:
            f.write('[cluster]\nnodes = 4\ngpus_per_node = 8\ngpu = "a100"\n\n[gpus.a100]\nprofile = "builtin:a100"\n\n')
            for i, s in enumerate(sizes):
                f.write(f'[[models]]\nname = "llm-{i}"\narchitecture = "{s}"\n\n')
    return tag, w, p


def muxserve_config(planned, out):
    """MuxServe's runtime on llmux's sim: prefill at 100% and decode jobs at
    their planned share, as MPS caps that may overlap."""
    with open(planned, "rb") as f:
        cfg = tomllib.load(f)
    head = open(planned).read().split("[[units]]")[0]
    parts = [head.replace('name = "planned-llmux"', 'name = "muxserve-emulated"')]
    for u in cfg["units"]:
        dev = ", ".join(str(d) for d in u["devices"])
        s = f'[[units]]\nname = "{u["name"]}"\nnode = "{u["node"]}"\nbackend = "sim"\ngpu = "{u["gpu"]}"\ndevices = [{dev}]\n'
        if u.get("prefill") == "shared":
            s += 'jobs = "split"\nprefill = "shared"\nprefill_share = 1.0\noversubscribe = true\npolicy = "adbs"\n'
            s += "models = [\n" + "".join(
                f'  {{ name = "{m["name"]}", rate = {m["rate"]}, decode_share = {m["decode_share"]} }},\n'
                for m in u["models"]) + "]\n"
        else:
            s += "models = [\n" + "".join(f'  {{ name = "{m["name"]}", rate = {m["rate"]} }},\n' for m in u["models"]) + "]\n"
        parts.append(s)
    with open(out, "w") as f:
        f.write("\n".join(parts))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: {r.stderr}")
    return r.stdout


def configs(args, alpha, top, sizes, system):
    """Plans `system` for this load; returns its config and the workload."""
    tag, w, p = write_inputs(args.out, alpha, top, args.seconds, sizes, args.seed)
    tag += f"-{system}"
    if system == "muxserve":
        nore = os.path.join(args.out, f"placed-{tag}-norep.toml")
        run([args.llmux, "plan", "--spec", p, "--workload", w, "--no-replicas", "--slo-scale",
             str(args.slo_scale), "--out", nore])
        mux = os.path.join(args.out, f"placed-{tag}.toml")
        muxserve_config(nore, mux)
        return mux, w
    if system == "spatial-norep":
        # MuxServe's spatial partitioning read strictly: each LLM once, on the
        # fewest GPUs that hold it (spare GPUs idle).
        base = os.path.join(args.out, f"placed-{tag}.toml")
        run([args.llmux, "plan", "--spec", p, "--workload", w, "--baselines", "--no-replicas", "--slo-scale",
             str(args.slo_scale), "--out", base])
        return base.replace(".toml", "-spatial.toml"), w
    if system in VARIANTS:
        # llmux with one of its parts taken away: what that part adds.
        flags, edit = VARIANTS[system]
        cfg = os.path.join(args.out, f"placed-{tag}.toml")
        slo = "0" if system == "llmux-noslo" else str(args.slo_scale)
        run([args.llmux, "plan", "--spec", p, "--workload", w, "--slo-scale", slo, "--out", cfg, *flags])
        text = open(cfg).read()
        open(cfg, "w").write(edit(text))
        return cfg, w
    base = os.path.join(args.out, f"placed-{tag}.toml")
    run([args.llmux, "plan", "--spec", p, "--workload", w, "--baselines", "--slo-scale", str(args.slo_scale),
         "--out", base])
    return (base if system == "llmux" else base.replace(".toml", f"-{system}.toml")), w


def measure(args, alpha, top, sizes, system):
    cfg, w = configs(args, alpha, top, sizes, system)
    rep = json.loads(run([args.llmux, "simulate", "--config", cfg, "--workload", w, "--json"]))
    k = rep["slo_scales"].index(args.slo_scale)
    return {"throughput_rps": rep["window_rps"], "attainment": rep["all"]["slo_attainment"][k],
            "requests": rep["all"]["requests"], "wall_s": rep["wall_s"], "violations": rep["violations"]}


def max_rate(args, alpha, sizes, system):
    """The highest rate of the most popular LLM at which `system` meets the
    SLO for 99% of requests: doubling (or halving) from --start, then
    bisection to 5%."""
    tried = {}

    def ok(top):
        tried[top] = measure(args, alpha, top, sizes, system)
        return tried[top]["attainment"] >= 0.99

    lo, hi = 0.0, args.start
    while hi <= args.max_rate and ok(hi):
        lo, hi = hi, hi * 2
    # Not even the first rate: halve until one passes.
    while lo == 0 and hi > args.start / 64:
        if ok(hi / 2):
            lo = hi / 2
        else:
            hi /= 2
    while lo > 0 and hi - lo > 0.05 * lo and hi <= args.max_rate:
        mid = round((lo + hi) / 2, 2)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return alpha, system, lo, tried


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "synthetic"))
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.7, 0.9, 1.3, 1.7, 2.1])
    ap.add_argument("--systems", nargs="+", default=SYSTEMS)
    ap.add_argument("--start", type=float, default=10, help="first rate tried for the 99%% search")
    ap.add_argument("--max-rate", type=float, default=160)
    ap.add_argument("--load", type=float, nargs="+", default=[40, 80],
                    help="rates of the most popular LLM at which throughput is compared")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--slo-scale", type=float, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order-seed", type=int, default=7)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sizes = order(a.order_seed)
    print("popularity ranks 0..18:", " ".join(s.split("-")[1] for s in sizes), flush=True)
    best, load = {}, {}
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        futs = [ex.submit(max_rate, a, alpha, sizes, s) for alpha in a.alphas for s in a.systems]
        tput = {ex.submit(measure, a, alpha, top, sizes, s): (alpha, top, s)
                for alpha in a.alphas for top in a.load for s in a.systems}
        for f in cf.as_completed(futs):
            alpha, system, lo, tried = f.result()
            best.setdefault(str(alpha), {})[system] = {"max_rate_99": lo, "tried": tried}
            steps = ", ".join(f"{t:g}: {100 * r['attainment']:.1f}%" for t, r in sorted(tried.items()))
            print(f"alpha {alpha} {system}: 99% up to {lo:g} req/s at the top LLM (tried {steps})", flush=True)
        for f, (alpha, top, system) in tput.items():
            load.setdefault(str(alpha), {}).setdefault(str(top), {})[system] = f.result()
    summary = {"sizes": sizes, "seconds": a.seconds, "slo_scale": a.slo_scale, "max_rate_99": best,
               "throughput": load}
    json.dump(summary, open(os.path.join(a.out, "summary.json"), "w"), indent=1)
    ratio = lambda x, y: f"{x / y:.2f}" if y else "-"
    print(f"\nhighest rate of the most popular LLM with >= 99% of requests within {a.slo_scale:g}x their "
          f"reference latency (req/s; the total is 1 + 2^-a + ... + 19^-a times it)")
    print("| alpha | " + " | ".join(a.systems) + " | llmux / spatial | llmux / temporal | llmux / muxserve |")
    print("|---|" + "---|" * (len(a.systems) + 3))
    for alpha in a.alphas:
        b = {s: best[str(alpha)][s]["max_rate_99"] for s in a.systems}
        print(f"| {alpha} | " + " | ".join(f"{b[s]:g}" for s in a.systems)
              + f" | {ratio(b.get('llmux', 0), b.get('spatial', 0))} | {ratio(b.get('llmux', 0), b.get('temporal', 0))}"
              + f" | {ratio(b.get('llmux', 0), b.get('muxserve', 0))} |")
    for top in a.load:
        print(f"\nthroughput (req/s completed while arrivals lasted) at {top:g} req/s for the most popular LLM")
        print("| alpha | offered | " + " | ".join(a.systems) + " | llmux / spatial | llmux / temporal |")
        print("|---|---|" + "---|" * (len(a.systems) + 2))
        for alpha in a.alphas:
            r = load[str(alpha)][str(top)]
            offered = top * sum((i + 1) ** -alpha for i in range(len(sizes)))
            print(f"| {alpha} | {offered:.0f} | " + " | ".join(
                f"{r[s]['throughput_rps']:.1f} ({100 * r[s]['attainment']:.0f}%)" for s in a.systems)
                + f" | {ratio(*(r.get(s, {}).get('throughput_rps', 0) for s in ['llmux', 'spatial']))}"
                + f" | {ratio(*(r.get(s, {}).get('throughput_rps', 0) for s in ['llmux', 'temporal']))} |")


if __name__ == "__main__":
    main()
