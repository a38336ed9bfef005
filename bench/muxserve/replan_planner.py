#!/usr/bin/env python3
"""Online re-placement with the placement planner as its target (issue 16), in
`llmux simulate` (SIMULATED: the sim backend's cost model on MuxServe's measured
A100 profile; no model runs). Each scenario runs three ways on one workload:

- none: no re-placement (the config's placement, plus wakes on request);
- rule: re-placement every 5 s by the rate rule ([controller] replan_planner =
  false): the most popular models that fit, a second replica only where the
  first has requests waiting;
- planner: re-placement every 5 s by the placement planner (MuxServe's greedy
  and share search, plan::plan_on_units, on the units that exist and the
  measured rates): wakes, moves between units and decode-share moves.

Scenarios:

- hotspot: 2 A100s, 4 x LLaMA-7B, each listed on both GPUs, memory_mib for two
  awake per GPU, shares of 0.5 as MPS-style caps. m0 and m1 start awake on
  gpu0, m2 and m3 on gpu1; the load is on m0 and m1 (10 req/s each), m2 and
  m3 get a trickle. Both models' own requests wait on gpu0, so both ways
  scale them out (a second replica on gpu1, in the place of an idle one).
- shares: 1 A100 in MuxServe's layout (jobs = "split", a shared prefill lane of
  0.2, decode shares 0.4 + 0.4), 2 x LLaMA-7B; m0 has 4.5 req/s and m1 0.5 for
  the first half, then the other way round. The planner re-splits the 0.8 of
  decode share between them as the rates move; without it the split stays
  even.

Usage: ~/.cache/llmux/venv/bin/python bench/muxserve/replan_planner.py [--duration 240] [--out DIR]
"""
import argparse
import json
import os

from popularity_shift import ROOT, simulate

HEAD = ('[cluster]\nname = "{name}"\n\n[[nodes]]\nname = "node0"\nport = 7990\n\n[gateway]\nnode = "node0"\n\n'
        '[gpus.a100]\nprofile = "builtin:a100"\n\n[timeouts]\nload_report_ms = 100\n\n')


def controller(mode):
    if mode == "none":
        return ""
    return f"[controller]\nreplan_s = 5\nreplan_planner = {'true' if mode == 'planner' else 'false'}\n\n"


def models(names):
    return "".join(f'[[models]]\nname = "{m}"\nbackend = "sim"\narchitecture = "llama-7b"\n\n' for m in names)


def hotspot_config(mode):
    names = ["m0", "m1", "m2", "m3"]
    t = HEAD.format(name=f"hotspot-{mode}") + controller(mode) + models(names)
    for u, awake in ((0, {"m0", "m1"}), (1, {"m2", "m3"})):
        entries = ", ".join(f'{{ name = "{m}", share = 0.5, awake = {"true" if m in awake else "false"} }}'
                            for m in names)
        t += (f'[[units]]\nname = "gpu{u}"\nnode = "node0"\nbackend = "sim"\ngpu = "a100"\ndevices = [{u}]\n'
              f"memory_mib = 30000\noversubscribe = true\nmodels = [ {entries} ]\n\n")
    return t


def hotspot_workload(duration, seed):
    t = f'duration_s = {duration}\nseed = {seed}\narrival = "poisson"\n'
    t += 'prompt = "lognormal:161:1.0:4:2048"\noutput = "lognormal:337:1.0:4:2048"\n\n'
    for m, r in (("m0", 10.0), ("m1", 10.0), ("m2", 0.02), ("m3", 0.02)):
        t += f'[[model]]\nname = "{m}"\nrate = {r}\n\n'
    return t


def shares_config(mode):
    t = HEAD.format(name=f"shares-{mode}") + controller(mode) + models(["m0", "m1"])
    t += ('[[units]]\nname = "gpu0"\nnode = "node0"\nbackend = "sim"\ngpu = "a100"\nmemory_mib = 30000\n'
          'jobs = "split"\nprefill = "shared"\nprefill_share = 0.2\n'
          'models = [ { name = "m0", decode_share = 0.4 }, { name = "m1", decode_share = 0.4 } ]\n')
    return t


def shares_workload(duration, seed):
    t = f'duration_s = {duration}\nseed = {seed}\narrival = "poisson"\n'
    t += 'prompt = "lognormal:161:1.0:4:2048"\noutput = "lognormal:337:1.0:4:2048"\n\n'
    t += '[[model]]\nname = "m0"\nrate = 4.5\n\n[[model]]\nname = "m1"\nrate = 0.5\n\n'
    t += f'[[phase]]\nat_s = {duration / 2}\nrates = {{ "m0" = 0.5, "m1" = 4.5 }}\n'
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--duration", type=float, default=240)
    ap.add_argument("--slo-scale", type=float, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "replan_planner"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    scenarios = {"hotspot": (hotspot_config, hotspot_workload), "shares": (shares_config, shares_workload)}
    summary = {}
    print(f"SIMULATED (llmux simulate, MuxServe's A100 profile), {a.duration:.0f} s of arrivals each, "
          f"SLO {a.slo_scale:g}x a request's latency alone")
    print(f"{'scenario':9} {'re-placement':12} {'requests':>8} {'served':>7} {'req/s':>6} {'SLO':>6} "
          f"{'TTFT p99':>9} {'E2E p99':>8} {'wakes':>5} {'moves':>5} {'shares':>6}")
    for name, (make_cfg, make_wl) in scenarios.items():
        wl = os.path.join(a.out, f"{name}-workload.toml")
        open(wl, "w").write(make_wl(a.duration, a.seed))
        for mode in ("none", "rule", "planner"):
            cfg = os.path.join(a.out, f"{name}-{mode}.toml")
            open(cfg, "w").write(make_cfg(mode))
            r = simulate(a.llmux, cfg, wl, a.slo_scale, 10)
            al = r["all"]
            wakes = sum(u["wakes"] for u in r["units"])
            slo = al["slo_attainment"][r["slo_scales"].index(a.slo_scale)]
            row = {"requests": al["requests"], "ok": al["ok"], "rps": al["throughput_rps"], "slo": slo,
                   "ttft_p99_ms": al["ttft"]["p99_ms"], "e2e_p99_s": al["e2e"]["p99_ms"] / 1e3, "wakes": wakes,
                   "replan_wakes": r["replan_wakes"], "moves": r["replan_moves"],
                   "share_moves": r["replan_share_moves"]}
            summary.setdefault(name, {})[mode] = row
            print(f"{name:9} {mode:12} {row['requests']:8d} {row['ok']:7d} {row['rps']:6.2f} "
                  f"{100 * row['slo']:5.1f}% {row['ttft_p99_ms']:7.0f}ms {row['e2e_p99_s']:7.1f}s {wakes:5d} "
                  f"{row['moves']:5d} {row['share_moves']:6d}")
    json.dump(summary, open(os.path.join(a.out, "summary.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
