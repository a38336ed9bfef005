#!/usr/bin/env python3
"""ADBS vs FCFS on a sim unit with skewed popularity (issue 5's benchmark).

For each policy, skew alpha and total rate: serve N co-located sim models on
one unit (`llmux serve --config`, a generated config; the backend is simulated:
the cost model's step times, no model math), drive every model at once with its
own `llmux bench serve` (open loop, Poisson, rate_i proportional to (i+1)^-alpha),
and report throughput and SLO attainment per model and in all.

    ~/.cache/llmux/venv/bin/python bench/adbs_sweep.py [--llmux build/llmux] [--quick]

What differs between the policies today: the KV pool. `adbs` gives each model a
quota (expected rate x KV per token, moved toward backlogs every period);
`fcfs` lets whoever asks first take blocks. Step order across models is not a
policy yet (each model steps in its own partition), so `round_robin`, which
differs from `fcfs` only there, is not run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(models, rates, policy, kv_token_blocks, port, node, admin) -> str:
    text = f"""
[[nodes]]
name = "solo"
port = {node}
admin_port = {admin}

[gateway]
node = "solo"
port = {port}
http_threads = 256
"""
    for m in models:
        text += f'\n[[models]]\nname = "{m}"\nbackend = "sim"\narchitecture = "llama-7b"\n'
    share = 1.0 / len(models)
    entries = ", ".join(f'{{ name = "{m}", share = {share:.4f}, rate = {r:.4f} }}' for m, r in zip(models, rates))
    # llama-7b: 32 layers x 32 KV heads = 1024 head-blocks per 16-token block.
    text += f"""
[[units]]
name = "u"
node = "solo"
kv_blocks = {kv_token_blocks * 1024}
policy = "{policy}"
quota_period_ms = 1000
kv_floor_tokens = 512
max_waiting = 100000
models = [ {entries} ]
"""
    return text


def wait_ready(base: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready")


def run_point(llmux, policy, alpha, total_rate, args):
    models = [f"m{i}" for i in range(args.models)]
    weights = [(i + 1) ** -alpha for i in range(args.models)]
    rates = [total_rate * w / sum(weights) for w in weights]
    port, node, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "adbs.toml"
        cfg.write_text(config(models, rates, policy, args.kv_token_blocks, port, node, admin))
        log = open(Path(d) / "serve.log", "w")
        srv = subprocess.Popen([llmux, "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base)
            out = {}

            def drive(m, r):
                n = max(10, int(r * args.seconds))
                res = subprocess.run([llmux, "bench", "serve", "--url", base, "--model", m,
                                      "--requests", str(n), "--rate", f"{r:.4f}",
                                      "--prompt-len", args.prompt_len, "--output-len", args.output_len,
                                      "--slo-ttft-ms", str(args.slo_ttft_ms),
                                      "--slo-tpot-ms", str(args.slo_tpot_ms), "--json",
                                      "--seed", str(7 + len(m))],
                                     capture_output=True, text=True)
                rows = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
                out[m] = rows[0] if rows else {"error": res.stderr[-300:]}

            threads = [threading.Thread(target=drive, args=(m, r)) for m, r in zip(models, rates)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return models, rates, out
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=30)
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default="build/llmux")
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.7, 1.3, 2.1])
    ap.add_argument("--rates", type=float, nargs="+", default=[4, 8, 16], help="total req/s")
    ap.add_argument("--policies", nargs="+", default=["adbs", "fcfs"])
    ap.add_argument("--seconds", type=float, default=30, help="seconds of arrivals per point")
    ap.add_argument("--kv-token-blocks", type=int, default=160, help="pool size in 16-token blocks")
    ap.add_argument("--prompt-len", default="lognormal:256:1:16:1024")
    ap.add_argument("--output-len", default="lognormal:128:1:8:512")
    ap.add_argument("--slo-ttft-ms", type=float, default=2000)
    ap.add_argument("--slo-tpot-ms", type=float, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    print(f"sim unit (simulated), {args.models} llama-7b-shaped models, KV pool {args.kv_token_blocks} "
          f"x 16 tokens, {args.seconds:g} s of Poisson arrivals per point, SLO TTFT <= "
          f"{args.slo_ttft_ms:g} ms and TPOT <= {args.slo_tpot_ms:g} ms")
    print(f"{'alpha':>5} {'rate':>5} {'policy':>6} {'req/s':>7} {'slo%':>6}  per model: rate -> slo% (ttft p99 ms)")
    for alpha in args.alphas:
        for total in args.rates:
            for policy in args.policies:
                models, rates, out = run_point(args.llmux, policy, alpha, total, args)
                ok = sum(out[m].get("ok", 0) for m in models)
                reqs = sum(out[m].get("requests", 0) for m in models)
                met = sum(out[m].get("slo_attainment", 0) * out[m].get("requests", 0) for m in models)
                rps = sum(out[m].get("requests_per_s", 0) for m in models)
                per = "  ".join(
                    f"{m} {r:.2f} -> {100 * out[m].get('slo_attainment', 0):.0f}% "
                    f"({out[m].get('ttft', {}).get('p99_ms', float('nan')):.0f})" for m, r in zip(models, rates))
                print(f"{alpha:5.1f} {total:5g} {policy:>6} {rps:7.2f} {100 * met / max(reqs, 1):6.1f}  {per}"
                      + ("" if ok == reqs else f"  ({reqs - ok} failed)"), flush=True)
                if args.json:
                    print(json.dumps({"alpha": alpha, "rate": total, "policy": policy, "models": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
