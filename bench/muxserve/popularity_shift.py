#!/usr/bin/env python3
"""More models than memory, with popularity that shifts mid-run (issue 16):
MuxServe's static placement against llmux's sleep and wake, in `llmux simulate`
(SIMULATED: the sim backend's cost model on MuxServe's measured A100 profile; no
model runs).

24 LLaMA-13B models on 4 A100-80GB. Each holds 24.2 GiB of f16 weights, so one
GPU keeps two awake with room for KV. Requests come in bursts of groups, as
Prism sees in production traces: group A (models 0-7) is popular for the first
third of the run, then group B (8-15) turns on together and A goes quiet, then
group C (16-23); every model also gets a trickle of requests all along.

- static (MuxServe): planned on the first phase's rates, it places the 8
  models that are popular then, two per GPU (half the SMs each), and can place
  no more: requests for the other 16 are not served.
- llmux-replan: the same, and the controller re-plans every --replan-s (5 s)
  on the measured rates: the placement planner (MuxServe's greedy on the
  units that exist) says which models each GPU should hold awake, and it
  wakes those in the place of idle ones with at most half their rate
  (controller::replan_policy).
- llmux-replan-rule: the same with the rate rule as the target (the most
  popular models that fit; [controller] replan_planner = false).
- llmux: every GPU lists 6 of the 24 models (memory_mib lets two be awake;
  oversubscribed shares of 0.5, MPS-style, so two awake models split the GPU as
  the static ones do), the others asleep; a request for a sleeping model wakes
  it, the least recently used idle model on that GPU going to sleep first
  (wake: 24.2 GiB over the A100's load_gbs, 25 GB/s: about 1.1 s). A request
  waits at most its TTFT budget (ttft_slo_ms) for a wake, else 503.

Prints throughput and SLO attainment per phase for both, writes the timelines
to OUT/summary.json and a plot to docs/img/popularity_shift.png.

Usage: ~/.cache/llmux/venv/bin/python bench/muxserve/popularity_shift.py
       [--phase-s 120] [--hot-rate 0.6] [--cold-rate 0.01] [--slo-scale 5] [--out DIR]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = [f"m{i:02d}" for i in range(24)]
GROUPS = {"A": MODELS[0:8], "B": MODELS[8:16], "C": MODELS[16:24]}
GPUS = 4


def config(name, placement, memory_mib, ttft_slo_ms, oversubscribe, replan_s=0, planner=True):
    """placement: unit index -> models it lists."""
    t = f'[cluster]\nname = "{name}"\n\n[[nodes]]\nname = "node0"\nport = 7990\n\n[gateway]\nnode = "node0"\n\n'
    if replan_s:
        t += f"[controller]\nreplan_s = {replan_s}\nreplan_planner = {'true' if planner else 'false'}\n\n"
    t += '[gpus.a100]\nprofile = "builtin:a100"\n\n[timeouts]\nload_report_ms = 100\n\n'
    for m in sorted({m for ms in placement.values() for m in ms}):
        t += f'[[models]]\nname = "{m}"\nbackend = "sim"\narchitecture = "llama-13b"\nttft_slo_ms = {ttft_slo_ms}\n\n'
    for u, ms in sorted(placement.items()):
        t += f'[[units]]\nname = "gpu{u}"\nnode = "node0"\nbackend = "sim"\ngpu = "a100"\n'
        if memory_mib:
            t += f"memory_mib = {memory_mib}\n"
        if oversubscribe:
            t += "oversubscribe = true\n"
        t += "models = [ " + ", ".join(f'{{ name = "{m}", share = 0.5 }}' for m in ms) + " ]\n\n"
    return t


def workload(phase_s, hot, cold, seed):
    t = f'duration_s = {3 * phase_s}\nseed = {seed}\narrival = "poisson"\n'
    t += 'prompt = "lognormal:161:1.0:4:2048"\noutput = "lognormal:337:1.0:4:2048"\n\n'
    for m in MODELS:
        t += f'[[model]]\nname = "{m}"\nrate = {hot if m in GROUPS["A"] else cold}\n\n'
    for i, g in enumerate(["B", "C"], start=1):
        rates = ", ".join(f'"{m}" = {hot if m in GROUPS[g] else cold}' for m in MODELS)
        t += f"[[phase]]\nat_s = {i * phase_s}\nrates = {{ {rates} }}\n\n"
    return t


def simulate(llmux, cfg, wl, slo_scale, window, extra=()):
    out = subprocess.run([llmux, "simulate", "--config", cfg, "--workload", wl, "--json", "--timeline", str(window),
                          "--slo-scale", str(slo_scale), *extra], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"llmux simulate failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--phase-s", type=float, default=120)
    ap.add_argument("--hot-rate", type=float, default=0.6, help="req/s of each model of the popular group")
    ap.add_argument("--cold-rate", type=float, default=0.01, help="req/s of every other model")
    ap.add_argument("--ttft-slo-ms", type=int, default=10000, help="how long a request waits for a wake")
    ap.add_argument("--slo-scale", type=float, default=5)
    ap.add_argument("--window", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replan-s", type=float, default=5, help="the llmux-replan system's [controller] replan_s")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "popularity_shift"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "popularity_shift.png"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    wl = os.path.join(a.out, "workload.toml")
    open(wl, "w").write(workload(a.phase_s, a.hot_rate, a.cold_rate, a.seed))
    # llmux: model i on GPU i mod 4, so each group has two models on every GPU.
    mux = {u: [m for i, m in enumerate(MODELS) if i % GPUS == u] for u in range(GPUS)}
    # 2 x 24.2 GiB awake, not 3.
    llmux_cfg = os.path.join(a.out, "llmux.toml")
    open(llmux_cfg, "w").write(config("llmux-sleep-wake", mux, 52000, a.ttft_slo_ms, True))
    trace = os.path.join(a.out, "trace.jsonl")
    res = {"llmux": simulate(a.llmux, llmux_cfg, wl, a.slo_scale, a.window, ["--trace-out", trace])}
    # llmux with online re-placement: the controller's plan every replan_s.
    replan_cfg = os.path.join(a.out, "llmux-replan.toml")
    open(replan_cfg, "w").write(config("llmux-replan", mux, 52000, a.ttft_slo_ms, True, a.replan_s))
    res["llmux-replan"] = simulate(a.llmux, replan_cfg, wl, a.slo_scale, a.window)
    # The same with the rate rule as re-placement's target instead of the planner.
    rule_cfg = os.path.join(a.out, "llmux-replan-rule.toml")
    open(rule_cfg, "w").write(config("llmux-replan-rule", mux, 52000, a.ttft_slo_ms, True, a.replan_s, False))
    res["llmux-replan-rule"] = simulate(a.llmux, rule_cfg, wl, a.slo_scale, a.window)

    # static: the models popular at planning time (group A), two per GPU.
    static = {u: [m for m in GROUPS["A"] if MODELS.index(m) % GPUS == u] for u in range(GPUS)}
    static_cfg = os.path.join(a.out, "static.toml")
    open(static_cfg, "w").write(config("muxserve-static", static, 0, a.ttft_slo_ms, False))
    placed = set(GROUPS["A"])
    lines = open(trace).read().splitlines()
    static_trace = os.path.join(a.out, "trace-static.jsonl")
    with open(static_trace, "w") as f:
        for line in lines:
            if json.loads(line)["model"] in placed:
                f.write(line + "\n")
    res["static"] = simulate(a.llmux, static_cfg, static_trace, a.slo_scale, a.window)

    # Every request of the workload, by arrival window: the static system's
    # unplaced ones arrive too, and are never served.
    n_windows = max(len(r["timeline"]) for r in res.values())
    arrived = [0] * n_windows
    for line in lines:
        w = int(json.loads(line)["t"] // a.window)
        if w < n_windows:
            arrived[w] += 1
    series = {}
    for name, r in res.items():
        tl = r["timeline"]
        rps = [p["completed_rps"] for p in tl] + [0] * (n_windows - len(tl))
        met = [p["attainment"] * p["arrived"] for p in tl] + [0] * (n_windows - len(tl))
        att = [met[i] / arrived[i] if arrived[i] else None for i in range(n_windows)]
        series[name] = {"completed_rps": rps, "attainment": att}

    total = len(lines)
    print(f"SIMULATED (llmux simulate, MuxServe's A100 profile): 24 x LLaMA-13B on 4 A100-80GB, {total} requests, "
          f"phases of {a.phase_s:.0f} s (A, then B, then C popular at {a.hot_rate} req/s each; "
          f"others {a.cold_rate} req/s)")
    print(f"{'system':17} {'phase':5} {'arrived':>8} {'served':>8} {'req/s':>7} {f'SLO@{a.slo_scale:g}':>8}")
    summary = {"windows_s": a.window, "slo_scale": a.slo_scale, "requests": total, "phases": {}, "series": series,
               "units": {k: r["units"] for k, r in res.items()}, "args": vars(a)}
    per_phase = int(a.phase_s // a.window)
    for name in ("static", "llmux", "llmux-replan-rule", "llmux-replan"):
        for p, g in enumerate(["A", "B", "C"]):
            lo, hi = p * per_phase, (p + 1) * per_phase
            arr = sum(arrived[lo:hi])
            met = sum((series[name]["attainment"][i] or 0) * arrived[i] for i in range(lo, min(hi, n_windows)))
            done = sum(series[name]["completed_rps"][lo:hi]) * a.window
            summary["phases"].setdefault(name, {})[g] = {"arrived": arr, "completed_rps": done / a.phase_s,
                                                         "slo_attainment": met / arr if arr else 0}
            print(f"{name:17} {g:5} {arr:8d} {int(done):8d} {done / a.phase_s:7.2f} {100 * met / max(arr, 1):7.1f}%")
        ok = res[name]["all"]["ok"]
        print(f"{name:17} all   {total:8d} {ok:8d}   (of all requests: {100 * ok / total:.1f}% served)")
    for name in ("llmux", "llmux-replan-rule", "llmux-replan"):
        units = res[name]["units"]
        print(f"{name}: {sum(u['wakes'] for u in units)} wakes ({sum(u['wake_s'] for u in units):.0f} s waking; "
              f"{res[name]['replan_wakes']} by re-placement), {sum(u['sleeps'] for u in units)} sleeps")
    json.dump(summary, open(os.path.join(a.out, "summary.json"), "w"), indent=1)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    xs = [i * a.window for i in range(n_windows)]
    style = {"static": ("tab:orange", "MuxServe static placement (8 of 24 models)"),
             "llmux": ("tab:blue", "llmux sleep and wake (24 models, 2 awake per GPU)"),
             "llmux-replan-rule": ("tab:red", "llmux sleep and wake + re-placement every 5 s (rate rule)"),
             "llmux-replan": ("tab:green", "llmux sleep and wake + re-placement every 5 s (placement planner)")}
    for name, (colour, label) in style.items():
        ax[0].plot(xs, series[name]["completed_rps"], color=colour, label=label)
        ax[1].plot(xs, [None if v is None else 100 * v for v in series[name]["attainment"]], color=colour,
                   label=label)
    for p in (1, 2):
        for axis in ax:
            axis.axvline(p * a.phase_s, color="grey", linestyle=":")
    ax[0].set_ylabel("requests completed / s")
    ax[1].set_ylabel(f"% meeting SLO x{a.slo_scale:g} (by arrival)")
    ax[1].set_xlabel("seconds (group A popular, then B, then C)")
    ax[0].set_title("Popularity shifting between groups of models (SIMULATED, A100 profile)")
    ax[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=90)
    print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
