#!/usr/bin/env python3
"""What structured outputs cost on the REAL CPU engine (`llmux serve`, SmolLM2-135M-
Instruct Q4_1, 2 threads), side by side in one run on one machine:

  free        no constraint (ignore_eos, so every answer is max_tokens long);
  schema      a JSON schema (response_format json_schema), temperature 1: the
              sampler draws, checks the token against the grammar, and computes
              the full mask only when the draw is refused;
  schema+top_p  the same with top_p 0.95: a truncated chain needs the mask before
              every draw (the worst case: one mask per token, cached per grammar
              state).

Decode throughput (completion tokens/s over the wall time of B concurrent
requests) at B = 1 and B = 32, and the overhead against `free`. Then the first
request of a schema never seen (grammar compiled, masks computed) against the
same request again (all cached), max_tokens 1, top_p 0.95. The schema forces
long answers (an array of 40-60 short strings) so constrained answers run to
max_tokens like the free ones. Writes OUT/structured_outputs.md and .json.

Usage: python3 bench/structured_outputs.py [--llmux build/llmux] [--out bench/results/structured]
       [--output-len 96] [--batches 1 32] [--repeat 3]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = "SmolLM2-135M-Instruct"
LONG_SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 40, "maxItems": 60}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def post(url, body, timeout=600):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def body(variant, seed, output_len, schema=LONG_SCHEMA):
    b = {"model": MODEL, "messages": [{"role": "user", "content": "List many short city names as a JSON array."}],
         "max_tokens": output_len, "temperature": 1.0, "seed": seed}
    if variant == "free":
        b["ignore_eos"] = True
    else:
        b["response_format"] = {"type": "json_schema", "json_schema": {"name": "cities", "schema": schema}}
    if variant == "schema+top_p":
        b["top_p"] = 0.95
    return b


def throughput(url, variant, batch, output_len):
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=batch) as pool:
        resps = list(pool.map(lambda i: post(url, body(variant, 1000 + i, output_len)), range(batch)))
    wall = time.perf_counter() - start
    tokens = sum(r["usage"]["completion_tokens"] for r in resps)
    stops = sum(1 for r in resps for c in r["choices"] if c["finish_reason"] == "stop")
    return {"variant": variant, "batch": batch, "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "ended_early": stops}


def first_vs_repeat(url, k):
    """ms of a max_tokens=1 request with a schema never seen, then the same again."""
    out = []
    for i in range(k):
        schema = {"type": "object", "properties": {f"field_{i}_{j}": {"type": "string", "maxLength": 12}
                                                   for j in range(6)},
                  "required": [f"field_{i}_0"]}
        b = body("schema+top_p", 7, 1, schema)
        t0 = time.perf_counter()
        post(url, b)
        first = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        post(url, b)
        again = (time.perf_counter() - t0) * 1000
        out.append((first, again))
    free = []
    for _ in range(k):
        t0 = time.perf_counter()
        post(url, {**body("free", 7, 1), "ignore_eos": False})
        free.append((time.perf_counter() - t0) * 1000)
    return out, free


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "structured"))
    ap.add_argument("--output-len", type=int, default=96)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each variant, interleaved; the median is reported")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    port = free_port()
    log_path = os.path.join(tempfile.gettempdir(), f"llmux-structured-{port}.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([args.llmux, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/ready", timeout=1)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(f"llmux serve did not come up; see {log_path}")
                time.sleep(0.2)
        post(url, body("free", 1, 8))  # warm up
        compile_rows, free_ms = first_vs_repeat(url, 5)
        rows = []
        for batch in args.batches:
            # Interleaved repeats, median reported: this machine's neighbours
            # and the client on the same cores move a single run by 10-30%.
            runs = {v: [] for v in ["free", "schema", "schema+top_p"]}
            for _ in range(args.repeat):
                for variant in runs:
                    runs[variant].append(throughput(url, variant, batch, args.output_len))
                    print(runs[variant][-1], flush=True)
            for variant, rs in runs.items():
                rs.sort(key=lambda r: r["tok_s"])
                med = dict(rs[len(rs) // 2])
                med["runs_tok_s"] = [round(r["tok_s"], 1) for r in rs]
                rows.append(med)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    cpu = cpu_name()
    lines = [f"# Structured outputs on the CPU engine — {cpu}, {os.cpu_count()} vCPU (REAL engine)", "",
             f"`python3 bench/structured_outputs.py --output-len {args.output_len} --repeat {args.repeat}`; "
             "SmolLM2-135M-Instruct Q4_1, temperature 1; tokens/s = completion tokens / wall time of the batch, "
             "median of the interleaved runs (all runs listed).", "",
             "| batch | variant | tokens | ended early | tok/s (median) | vs free | runs |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if x["batch"] == r["batch"] and x["variant"] == "free")
        lines.append(f"| {r['batch']} | {r['variant']} | {r['tokens']} | {r['ended_early']} | {r['tok_s']:.1f} "
                     f"| {r['tok_s'] / base['tok_s']:.3f} | {', '.join(str(x) for x in r['runs_tok_s'])} |")
    lines += ["", "First request of a new schema (grammar compiled, masks computed) vs the same request again, "
              "max_tokens 1, top_p 0.95, ms end to end:", "", "| schema | first | again |", "|---|---|---|"]
    for i, (first, again) in enumerate(compile_rows):
        lines.append(f"| {i} | {first:.1f} | {again:.1f} |")
    lines.append(f"\nUnconstrained, same request shape: {', '.join(f'{x:.1f}' for x in free_ms)} ms.")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(args.out, "structured_outputs.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "structured_outputs.json"), "w") as f:
        json.dump({"cpu": cpu, "rows": rows, "first_vs_again_ms": compile_rows, "free_ms": free_ms}, f, indent=1)


if __name__ == "__main__":
    main()
