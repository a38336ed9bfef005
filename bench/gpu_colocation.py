#!/usr/bin/env python3
"""Two models on one GPU: green-context SM partitions vs time-slicing (issue 6).

Two dummy-weight Llama models (`--arch`, bf16) on one cuda unit, served
twice from generated configs:
- `partitions`: `multiplex = "spatial"`, each model on its own half of the
  SMs (green contexts), both stepping at the same time;
- `time-sliced`: `multiplex = "temporal"`, one step at a time on the whole
  GPU, ADBS order (prefill first, round-robin over models).
Both models get the same Poisson load at each rate (`llmux bench serve`,
one per model, at once); prints per-model TTFT/TPOT percentiles and the
aggregate output tokens/s. Needs a GPU (the cuda backend).

    python3 bench/gpu_colocation.py [--arch llama-1b] [--rates 2 8 16] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
from pathlib import Path

from adbs_sweep import free_port, solo_node, wait_ready

MODELS = ("a", "b")


def config(mode: str, arch: str, port: int, node: int, admin: int) -> str:
    models = "".join(f"""
[[models]]
name = "{m}"
backend = "cuda"
load_format = "dummy"
architecture = "{arch}"
dtype = "bf16"
""" for m in MODELS)
    entries = ", ".join(f'{{ name = "{m}", share = 0.5 }}' for m in MODELS)
    return solo_node(port, node, admin, http_threads=256) + f"""
[timeouts]
request_ms = 300000
{models}
[[units]]
name = "gpu0"
node = "solo"
backend = "cuda"
multiplex = "{'spatial' if mode == 'partitions' else 'temporal'}"
max_waiting = 100000
models = [ {entries} ]
"""


def run(llmux: str, mode: str, args) -> list[dict]:
    port, node, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "coloc.toml"
        cfg.write_text(config(mode, args.arch, port, node, admin))
        log = open(Path(d) / "serve.log", "w")
        srv = subprocess.Popen([llmux, "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, 600)  # dummy weights are made on the GPU: seconds
            rows = []
            for rate in args.rates:
                n = max(10, int(rate * args.seconds))
                procs = {m: subprocess.Popen([llmux, "bench", "serve", "--url", base, "--model", m,
                                              "--requests", str(n), "--rate", str(rate),
                                              "--prompt-len", args.prompt_len, "--output-len", args.output_len,
                                              "--temperature", "0", "--json", "--seed", str(11 + i)],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for i, m in enumerate(MODELS)}
                point = {"rate": rate}
                for m, p in procs.items():
                    out, err = p.communicate()
                    got = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                    if not got:
                        raise RuntimeError(f"bench serve ({m}) failed: {err[-400:]}")
                    point[m] = got[0]
                rows.append(point)
            return rows
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=60)
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default="build/llmux")
    ap.add_argument("--arch", default="llama-1b")
    ap.add_argument("--rates", type=float, nargs="+", default=[2, 8, 16], help="requests/s per model")
    ap.add_argument("--seconds", type=float, default=30, help="seconds of arrivals per point")
    ap.add_argument("--prompt-len", default="lognormal:512:0.6:64:2048")
    ap.add_argument("--output-len", default="lognormal:128:0.5:16:512")
    args = ap.parse_args()
    print(f"two {args.arch} (bf16, dummy weights) on one GPU; prompts {args.prompt_len}, outputs {args.output_len}")
    print(f"{'mode':12} {'rate':>5} {'model':5} {'tok/s':>7} {'ttft50':>7} {'ttft90':>7} {'tpot50':>7} {'tpot90':>7}"
          f" {'total tok/s':>11}")
    for mode in ("partitions", "time-sliced"):
        for point in run(args.llmux, mode, args):
            total = sum(point[m]["output_tokens_per_s"] for m in MODELS)
            for m in MODELS:
                r = point[m]
                print(f"{mode:12} {point['rate']:5.1f} {m:5} {r['output_tokens_per_s']:7.1f} "
                      f"{r['ttft']['p50_ms']:7.0f} {r['ttft']['p90_ms']:7.0f} {r['tpot']['p50_ms']:7.1f} "
                      f"{r['tpot']['p90_ms']:7.1f} {total:11.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
