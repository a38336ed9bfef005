#!/usr/bin/env python3
"""Plots what bench/adbs_sweep.py printed: SLO attainment and achieved
throughput against the offered total rate, one column per skew alpha, one
line per policy (and per run, when several are given).

    ~/.cache/llmux/venv/bin/python bench/plot_adbs_sweep.py OUT.png RUN.txt [RUN.txt ...] \\
        [--labels temporal spatial] [--title TEXT]

A RUN.txt is the sweep's standard output, as is: its first line says what
was run and every row starts `alpha rate policy req/s slo%`.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)\s+(\w+)\s+(\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)\s")


def read_run(path: str):
    """{alpha: {policy: [(rate, req_s, slo_pct)]}} and the run's first line."""
    data: dict = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        m = ROW.match(line)
        if m:
            alpha, rate, policy, rps, slo = m.groups()
            data[float(alpha)][policy].append((float(rate), float(rps), float(slo)))
    if not data:
        raise SystemExit(f"{path}: no sweep rows found")
    return data, (lines[0] if lines else path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--labels", nargs="*", default=[])
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    runs = [read_run(p) for p in args.runs]
    labels = args.labels + [f"run {i + 1}" for i in range(len(args.labels), len(runs))]
    alphas = sorted({a for data, _ in runs for a in data})
    fig, axes = plt.subplots(2, len(alphas), figsize=(4.2 * len(alphas), 7), squeeze=False)
    styles = ["-", "--", ":"]
    markers = {"adbs": "o", "fcfs": "s", "round_robin": "^"}
    for col, alpha in enumerate(alphas):
        top, bottom = axes[0][col], axes[1][col]
        for r, (data, _) in enumerate(runs):
            for policy, pts in sorted(data.get(alpha, {}).items()):
                pts = sorted(pts)
                name = policy if len(runs) == 1 else f"{policy}, {labels[r]}"
                kw = dict(linestyle=styles[r % len(styles)], marker=markers.get(policy, "x"), label=name)
                top.plot([p[0] for p in pts], [p[2] for p in pts], **kw)
                bottom.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
        top.set_title(f"alpha = {alpha:g}")
        top.set_ylim(0, 105)
        top.set_ylabel("SLO attainment, %")
        bottom.set_ylabel("achieved req/s")
        rates = sorted({p[0] for data, _ in runs for pts in data.get(alpha, {}).values() for p in pts})
        for ax in (top, bottom):
            ax.set_xlabel("offered total req/s")
            ax.set_xscale("log", base=2)
            ax.set_xticks(rates, [f"{r:g}" for r in rates])
            ax.grid(True, alpha=0.3)
        top.legend(fontsize=8)
    fig.suptitle(textwrap.fill(args.title or runs[0][1], 140), fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
