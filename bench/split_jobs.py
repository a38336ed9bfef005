#!/usr/bin/env python3
"""Mixed steps vs split prefill/decode jobs on one CPU unit (issue 5).

One real model (SmolLM2-135M-Instruct, Q4_1) on a CPU unit of `--threads`
worker threads, served twice from generated configs:
- `jobs = "mixed"`: one job on all the threads; each step feeds the running
  decodes and a chunk of waiting prompts together (chunked prefill);
- `jobs = "split"`: a prefill job and a decode job, each on its own
  partition (`--decode-share` of the unit for decodes, the rest for
  prefills), stepping at the same time.
Each point drives it open loop with `llmux bench serve` (Poisson arrivals)
and prints throughput and latency percentiles; ITL is the gap between two
streamed tokens of one request, where a decode stalled behind a prompt shows.

    ~/.cache/llmux/venv/bin/python bench/split_jobs.py [--rates 0.5 1 2 3] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
from pathlib import Path

from adbs_sweep import SMOL, free_port, solo_node, wait_ready


def config(jobs: str, threads: int, decode_share: float, port: int, node: int, admin: int) -> str:
    entry = f'{{ name = "smol", share = 1.0{f", decode_share = {decode_share}" if jobs == "split" else ""} }}'
    return solo_node(port, node, admin, http_threads=64) + f"""
[timeouts]
request_ms = 300000

[[models]]
name = "smol"
backend = "cpu"
file = "{SMOL}"

[[units]]
name = "u"
node = "solo"
backend = "cpu"
threads = {threads}
kv_cache_mib = 256
max_waiting = 100000
jobs = "{jobs}"
models = [ {entry} ]
"""


def run(llmux: str, jobs: str, args) -> list[dict]:
    port, node, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "split.toml"
        cfg.write_text(config(jobs, args.threads, args.decode_share, port, node, admin))
        log = open(Path(d) / "serve.log", "w")
        srv = subprocess.Popen([llmux, "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, 120)
            rows = []
            for rate in args.rates:
                n = max(10, int(rate * args.seconds))
                res = subprocess.run([llmux, "bench", "serve", "--url", base, "--model", "smol",
                                      "--requests", str(n), "--rate", str(rate),
                                      "--prompt-len", args.prompt_len, "--output-len", args.output_len,
                                      "--slo-ttft-ms", str(args.slo_ttft_ms), "--slo-tpot-ms", str(args.slo_tpot_ms),
                                      "--temperature", "0", "--json", "--seed", "11"],
                                     capture_output=True, text=True)
                got = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
                if not got:
                    raise RuntimeError(f"bench serve failed: {res.stderr[-400:]}")
                rows.append(got[0])
            return rows
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=30)
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default="build/llmux")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.5, 1, 2, 3], help="requests/s")
    ap.add_argument("--seconds", type=float, default=30, help="seconds of arrivals per point")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-share", type=float, default=0.5)
    ap.add_argument("--prompt-len", default="lognormal:192:0.6:32:512")
    ap.add_argument("--output-len", default="lognormal:48:0.5:8:128")
    ap.add_argument("--slo-ttft-ms", type=float, default=2000)
    ap.add_argument("--slo-tpot-ms", type=float, default=100)
    args = ap.parse_args()
    if not SMOL.exists():
        print(f"{SMOL} is missing: scripts/setup fetches it")
        return 2
    print(f"SmolLM2-135M-Instruct Q4_1 on one CPU unit of {args.threads} threads; prompts {args.prompt_len}, "
          f"outputs {args.output_len}; split: decode job on {args.decode_share} of the unit")
    head = (f"{'jobs':6} {'rate':>5} {'req/s':>6} {'tok/s':>6} {'ttft50':>7} {'ttft90':>7} {'tpot50':>7} "
            f"{'tpot90':>7} {'itl50':>6} {'itl99':>7} {'slo%':>6}")
    print(head)
    for jobs in ("mixed", "split"):
        for r in run(args.llmux, jobs, args):
            print(f"{jobs:6} {r['value']:5.2f} {r['requests_per_s']:6.2f} {r['output_tokens_per_s']:6.1f} "
                  f"{r['ttft']['p50_ms']:7.0f} {r['ttft']['p90_ms']:7.0f} {r['tpot']['p50_ms']:7.1f} "
                  f"{r['tpot']['p90_ms']:7.1f} {r['itl']['p50_ms']:6.1f} {r['itl']['p99_ms']:7.1f} "
                  f"{100 * r['slo_attainment']:6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
