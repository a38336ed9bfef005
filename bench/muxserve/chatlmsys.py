#!/usr/bin/env python3
"""Is the simulator right? MuxServe's ChatLMSYS runs, simulated, against what
MuxServe measured on 32 A100s (../shared/muxserve/chatlmsys_day55_runs.json).

For each condense level (500 ... 2000) it writes, under OUT (default
bench/results/chatlmsys):
  - workload-C.toml: the 16 LLMs' arrivals, Poisson, each LLM's rate its
    request count over the trace's duration at that condense (the file's
    `request_num`; mean per-LLM rates 3.0 ... 11.9 req/s as MuxServe states),
    lengths log-normal with the trace's means (prompt ~100, output ~261);
  - plan-C.toml: the 16 LLMs (4 x 7B, 6 x 13B, 3 x 30B, 3 x 65B) on
    4 nodes x 8 A100-80GB, the built-in A100 profile;
then runs `llmux plan --no-replicas --baselines` (MuxServe places each LLM
once) and simulates
  - muxserve: those units with MuxServe's own per-LLM SM percentages from the
    file ([prefill, decode] MPS caps, oversubscribed as MPS allows, prefill
    steps one at a time on the unit, ADBS order), 
  - spatial: one unit per LLM (spare GPUs as replicas),
  - temporal: the same units as muxserve, one step at a time, FCFS,
and prints simulated vs measured system throughput (MuxServe's metric: the
request-weighted mean of the per-LLM throughputs). It also plans llmux itself
from the same input (`llmux plan`: replicas, SLO-aware shares, the shared
prefill lane, ADBS) and compares the four simulated systems.

Usage: python3 bench/muxserve/chatlmsys.py [--llmux build/llmux] [--out DIR]
       [--condense 500 800 1200 1600 2000] [--seed 1] [--cv 1]
"""
import argparse
import json
import os
import subprocess
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUNS = os.path.join(ROOT, "..", "shared", "muxserve", "chatlmsys_day55_runs.json")
SIZE = {"7B": "llama-7b", "13B": "llama-13b", "30B": "llama-30b", "65B": "llama-65b"}
# MuxServe: mean per-LLM rate 11.9 req/s at condense 2000, in proportion below.
RATE_PER_CONDENSE = 11.9 / 2000


def llms(run):
    names = sorted(run["models"], key=lambda n: int(n.split("-")[1]))
    return [(n, run["models"][n]) for n in names]


def write_inputs(out, condense, run, seed, cv):
    models = llms(run)
    total = sum(m["request_num"]["flexsm"] for _, m in models)
    duration = total / (len(models) * RATE_PER_CONDENSE * condense)
    w = os.path.join(out, f"workload-{condense}.toml")
    with open(w, "w") as f:
        f.write(f"# ChatLMSYS day 55 at condense {condense}: {total} requests over {duration:.1f} s\n")
        f.write(f"duration_s = {duration:.3f}\nseed = {seed}\n")
        if cv != 1:
            f.write(f'arrival = "gamma"\ncv = {cv}\n')
        f.write('prompt = "lognormal:100:1.0:4:1024"\noutput = "lognormal:261:1.0:4:1024"\n\n')
        for name, m in models:
            f.write(f'[[model]]\nname = "{name}"\nrate = {m["request_num"]["flexsm"] / duration:.4f}\n\n')
    p = os.path.join(out, f"plan-{condense}.toml")
    with open(p, "w") as f:
        f.write('[cluster]\nnodes = 4\ngpus_per_node = 8\ngpu = "a100"\n\n[gpus.a100]\nprofile = "builtin:a100"\n\n')
        for name, m in models:
            f.write(f'[[models]]\nname = "{name}"\narchitecture = "{SIZE[m["size"]]}"\n\n')
    return w, p


def muxserve_config(planned, run, out):
    """MuxServe's runtime on llmux's sim: the planned units with the file's SM
    percentages as MPS caps (oversubscribed), prefill steps one at a time."""
    with open(planned, "rb") as f:
        cfg = tomllib.load(f)
    lines = open(planned).read().split("[[units]]")
    head = lines[0]
    units = []
    for u in cfg["units"]:
        names = [m["name"] for m in u["models"]]
        dev = ", ".join(str(d) for d in u["devices"])
        s = f'[[units]]\nname = "{u["name"]}"\nnode = "{u["node"]}"\nbackend = "sim"\ngpu = "{u["gpu"]}"\ndevices = [{dev}]\n'
        if len(names) > 1:
            pre = max(run["models"][n]["mps"]["flexsm"][0] for n in names) / 100
            s += f'jobs = "split"\nprefill = "shared"\nprefill_share = {pre}\noversubscribe = true\npolicy = "adbs"\nmodels = [\n'
            for m in u["models"]:
                dec = run["models"][m["name"]]["mps"]["flexsm"][1] / 100
                s += f'  {{ name = "{m["name"]}", rate = {m["rate"]}, decode_share = {dec} }},\n'
        else:
            s += "models = [\n"
            for m in u["models"]:
                s += f'  {{ name = "{m["name"]}", rate = {m["rate"]} }},\n'
        s += "]\n"
        units.append(s)
    with open(out, "w") as f:
        f.write(head.replace('name = "planned-llmux"', 'name = "muxserve-emulated"'))
        f.write("\n".join(units))


def simulate(llmux, config, workload):
    r = subprocess.run([llmux, "simulate", "--config", config, "--workload", workload, "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"simulate {config}: {r.stderr}")
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "chatlmsys"))
    ap.add_argument("--condense", type=int, nargs="+", default=[500, 800, 1200, 1600, 2000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cv", type=float, default=1.0,
                    help="gaps' coefficient of variation: 1 Poisson, > 1 gamma (burstier, as the real trace is)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    runs = json.load(open(RUNS))
    rows = []
    for c in a.condense:
        run = runs[f"condense{c}"]
        w, p = write_inputs(a.out, c, run, a.seed, a.cv)
        base = os.path.join(a.out, f"placed-{c}.toml")
        r = subprocess.run([a.llmux, "plan", "--spec", p, "--workload", w, "--no-replicas", "--baselines",
                            "--out", base], capture_output=True, text=True)
        if r.returncode not in (0, 1):
            sys.exit(f"plan: {r.stderr}")
        mux = os.path.join(a.out, f"placed-{c}-muxserve.toml")
        muxserve_config(base, run, mux)
        # llmux itself, planned from the same input: replicas, SLO-aware shares.
        own = os.path.join(a.out, f"llmux-{c}.toml")
        r = subprocess.run([a.llmux, "plan", "--spec", p, "--workload", w, "--out", own], capture_output=True, text=True)
        if r.returncode not in (0, 1):
            sys.exit(f"plan: {r.stderr}")
        got = {}
        for system, cfg in [("muxserve", mux), ("spatial", base.replace(".toml", "-spatial.toml")),
                            ("temporal", base.replace(".toml", "-temporal.toml")), ("llmux", own)]:
            rep = simulate(a.llmux, cfg, w)
            got[system] = rep
        measured = run["systems"]
        row = {"condense": c}
        for system, key in [("muxserve", "flexsm"), ("spatial", "spatial"), ("temporal", "temporal")]:
            row[system] = {"simulated": got[system]["system_throughput_rps"],
                           "measured": measured[key]["throughput"],
                           "wall_s": got[system]["wall_s"],
                           "violations": got[system]["violations"]}
        row["llmux"] = {"simulated": got["llmux"]["system_throughput_rps"], "wall_s": got["llmux"]["wall_s"],
                        "violations": got["llmux"]["violations"]}
        rows.append(row)
        print(f"condense {c}: " + "  ".join(
            f"{s} sim {row[s]['simulated']:.2f} / measured {row[s]['measured']:.2f} "
            f"({100 * (row[s]['simulated'] / row[s]['measured'] - 1):+.0f}%)" for s in ["muxserve", "spatial", "temporal"]),
            flush=True)
    json.dump(rows, open(os.path.join(a.out, "summary.json"), "w"), indent=1)
    print("\nllmux planned from the same input, simulated, against the three simulated systems:")
    print("| condense | llmux | MuxServe (emulated) | spatial | temporal | llmux / spatial | llmux / temporal | llmux / MuxServe |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        l, m, sp, t = (r[s]["simulated"] for s in ["llmux", "muxserve", "spatial", "temporal"])
        print(f"| {r['condense']} | {l:.2f} | {m:.2f} | {sp:.2f} | {t:.2f} | {l / sp:.2f} | {l / t:.2f} | {l / m:.2f} |")
    print("\n| condense | MuxServe measured | simulated | spatial measured | simulated | temporal measured | simulated |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['condense']} | " + " | ".join(
            f"{r[s]['measured']:.2f} | {r[s]['simulated']:.2f} ({100 * (r[s]['simulated'] / r[s]['measured'] - 1):+.0f}%)"
            for s in ["muxserve", "spatial", "temporal"]) + " |")


if __name__ == "__main__":
    main()
