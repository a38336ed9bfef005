#!/usr/bin/env python3
"""ADBS vs FCFS vs round-robin with skewed popularity (issue 5's benchmark).

For each policy, skew alpha and total rate: serve N co-located models on one
unit (`llmux serve --config`, a generated config), drive every model at once
with its own `llmux bench serve` (open loop, Poisson, rate_i proportional to
(i+1)^-alpha), and report throughput and SLO attainment per model and in all.

    ~/.cache/llmux/venv/bin/python bench/adbs_sweep.py [--backend sim|cpu] [--multiplex temporal]

Backends:
- sim (default): llama-7b-shaped models; simulated (the cost model's step
  times, no model math).
- cpu: real models on the CPU engine: SmolLM2-135M-Instruct, stories260K and a
  second SmolLM2 entry (same file, its own scheduler and KV), on one unit.

What differs between the policies:
- the KV pool: `adbs` gives each model a quota (expected rate x KV per token,
  moved toward backlogs every period); `fcfs` and `round_robin` let whoever
  asks first take blocks;
- the step order, with `--multiplex temporal`: one step at a time
  on the whole unit, `adbs` prefill steps first round-robin, `fcfs` by
  arrival, `round_robin` in rotation. With `spatial` (the default) each model
  steps at once on its share, and `round_robin` equals `fcfs`.
"""

from __future__ import annotations

import argparse
import json
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


SMOL = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260K" / "stories260K.gguf"


def model_names(backend: str, n: int) -> list[str]:
    if backend == "cpu":
        return ["smol-a", "stories", "smol-b"][:n]
    return [f"m{i}" for i in range(n)]


def solo_node(port: int, node: int, admin: int, http_threads: int = 256) -> str:
    """The [[nodes]] and [gateway] tables of a one-node config."""
    return f"""
[[nodes]]
name = "solo"
port = {node}
admin_port = {admin}

[gateway]
node = "solo"
port = {port}
http_threads = {http_threads}
"""


def config(backend, multiplex, models, rates, policy, kv_token_blocks, port, node, admin) -> str:
    text = solo_node(port, node, admin)
    for m in models:
        if backend == "cpu":
            path = STORIES if m == "stories" else SMOL
            text += f'\n[[models]]\nname = "{m}"\nbackend = "cpu"\nfile = "{path}"\n'
        else:
            text += f'\n[[models]]\nname = "{m}"\nbackend = "sim"\narchitecture = "llama-7b"\n'
    share = 1.0 / len(models)
    entries = ", ".join(f'{{ name = "{m}", share = {share:.4f}, rate = {r:.4f} }}' for m, r in zip(models, rates))
    # llama-7b: 32 layers x 32 KV heads = 1024 head-blocks per 16-token block;
    # on cpu, kv_token_blocks counts SmolLM2's (30 layers x 3 KV heads = 90).
    per = 90 if backend == "cpu" else 1024
    extra = ('threads = 2\n' if backend == "cpu" else "") + f'multiplex = "{multiplex}"\n'
    text += f"""
[[units]]
name = "u"
node = "solo"
backend = "{backend}"
kv_blocks = {kv_token_blocks * per}
policy = "{policy}"
quota_period_ms = 1000
kv_floor_tokens = 512
max_waiting = 100000
{extra}models = [ {entries} ]
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
    models = model_names(args.backend, args.models)
    weights = [(i + 1) ** -alpha for i in range(args.models)]
    rates = [total_rate * w / sum(weights) for w in weights]
    port, node, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "adbs.toml"
        cfg.write_text(config(args.backend, args.multiplex, models, rates, policy, args.kv_token_blocks,
                              port, node, admin))
        log = open(Path(d) / "serve.log", "w")
        srv = subprocess.Popen([llmux, "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, 120)
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
            # Preemptions by recompute over the run, all models.
            with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                text = r.read().decode()
            out["_preemptions"] = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                                      if l.startswith("llmux:num_preemptions_total{"))
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
    ap.add_argument("--policies", nargs="+", default=["adbs", "fcfs", "round_robin"])
    ap.add_argument("--backend", choices=["sim", "cpu"], default="sim")
    ap.add_argument("--multiplex", choices=["spatial", "temporal"], default="spatial",
                    help="sim: how the unit shares compute between the models' steps")
    ap.add_argument("--seconds", type=float, default=30, help="seconds of arrivals per point")
    ap.add_argument("--kv-token-blocks", type=int, default=160, help="pool size in 16-token blocks")
    ap.add_argument("--prompt-len", default="lognormal:256:1:16:1024")
    ap.add_argument("--output-len", default="lognormal:128:1:8:512")
    ap.add_argument("--slo-ttft-ms", type=float, default=2000)
    ap.add_argument("--slo-tpot-ms", type=float, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    what = (f"sim unit (simulated), {args.multiplex} multiplexing, {args.models} llama-7b-shaped models"
            if args.backend == "sim" else
            f"cpu unit (real engine, 2 threads), {args.multiplex} multiplexing, models "
            f"{', '.join(model_names('cpu', args.models))}")
    print(f"{what}, KV pool {args.kv_token_blocks} x 16 tokens, {args.seconds:g} s of Poisson arrivals "
          f"per point, prompts {args.prompt_len}, outputs {args.output_len}, SLO TTFT <= "
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
                      + f"  preempted {out.pop('_preemptions', 0):.0f}"
                      + ("" if ok == reqs else f"  ({reqs - ok} failed)"), flush=True)
                if args.json:
                    print(json.dumps({"alpha": alpha, "rate": total, "policy": policy, "backend": args.backend,
                                      "multiplex": args.multiplex, "models": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
