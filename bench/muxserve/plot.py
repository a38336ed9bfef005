#!/usr/bin/env python3
"""Plots of issue 13's results (docs/img): the synthetic experiment's highest
rate at 99% SLO and throughput against alpha, per system, and the ChatLMSYS
validation (simulated against MuxServe's measurements) with llmux beside.
Reads bench/results/{synthetic,chatlmsys}/summary*.json; all figures are
simulated (llmux simulate with MuxServe's A100 profile), except MuxServe's
own measured bars.

Usage: ~/.cache/llmux/venv/bin/python bench/muxserve/plot.py
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RES = os.path.join(ROOT, "bench", "results")
IMG = os.path.join(ROOT, "docs", "img")
STYLE = {"llmux": ("tab:blue", "o"), "muxserve": ("tab:orange", "s"), "spatial": ("tab:green", "^"),
         "spatial-norep": ("tab:olive", "v"), "temporal": ("tab:red", "x")}


def synthetic():
    main = json.load(open(os.path.join(RES, "synthetic", "summary.json")))
    extra = json.load(open(os.path.join(RES, "synthetic", "summary-temporal-spatial-norep.json")))
    alphas = sorted(main["max_rate_99"], key=float)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for system, (colour, marker) in STYLE.items():
        # The temporal search of the main run stopped at its first rate: the
        # second run (halving below it) has its figures.
        src = extra if system in ("spatial-norep", "temporal") else main
        if system not in src["max_rate_99"][alphas[0]]:
            continue
        ys = [src["max_rate_99"][a][system]["max_rate_99"] for a in alphas]
        ax[0].plot([float(a) for a in alphas], ys, marker=marker, color=colour, label=system)
        load = src["throughput"][alphas[0]]
        top = "80" if "80" in load else "80.0"
        if system in src["throughput"][alphas[0]][top]:
            ys = [src["throughput"][a][top][system]["throughput_rps"] for a in alphas]
            ax[1].plot([float(a) for a in alphas], ys, marker=marker, color=colour, label=system)
    ax[0].set_title("Highest rate with 99% of requests within 5x their latency alone")
    ax[0].set_xlabel("popularity skew alpha")
    ax[0].set_ylabel("rate of the most popular LLM (req/s)")
    ax[0].set_yscale("log")
    ax[1].set_title("Throughput, most popular LLM at 80 req/s")
    ax[1].set_xlabel("popularity skew alpha")
    ax[1].set_ylabel("req/s completed while arrivals lasted")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle("MuxServe's synthetic experiment, simulated: 19 LLMs on 32 A100s (A100 profile)")
    fig.tight_layout()
    out = os.path.join(IMG, "muxserve_synthetic.png")
    fig.savefig(out, dpi=110)
    print(out)


def chatlmsys():
    rows = json.load(open(os.path.join(RES, "chatlmsys", "summary.json")))
    xs = [r["condense"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for system, (colour, marker) in STYLE.items():
        if system not in rows[0]:
            continue
        ax.plot(xs, [r[system]["simulated"] for r in rows], marker=marker, color=colour,
                label=f"{system} (simulated)")
        if "measured" in rows[0][system]:
            ax.plot(xs, [r[system]["measured"] for r in rows], marker=marker, color=colour, linestyle="--",
                    alpha=0.6, label=f"{system} (MuxServe measured)")
    ax.set_xlabel("condense (trace compression)")
    ax.set_ylabel("system throughput (req/s)")
    ax.set_title("ChatLMSYS day 55 on 32 A100s: simulated vs MuxServe's measurements")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(IMG, "muxserve_chatlmsys.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    os.makedirs(IMG, exist_ok=True)
    synthetic()
    chatlmsys()
