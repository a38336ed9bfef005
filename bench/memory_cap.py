#!/usr/bin/env python3
"""More models configured than a CPU unit's memory holds (issue 16), on the real
CPU engine: N copies of SmolLM2-135M-Instruct Q4_1 (94 MiB of weights each,
separate files: separate mappings) and M copies of stories260K under a
`memory_mib` that holds two SmolLM2 at once. Requests arrive for all of them in
a random order, `--concurrency` at a time; each names a model drawn uniformly.

Prints: requests served and failed, TTFT of the requests that found their model
awake and of those that waited for a wake, the unit's wakes and sleeps, each
wake's time as the unit measured it (mmap of the file, already in the page
cache, and the engine's buffers), and the process's resident memory sampled
over the run against the cap. JSON to --out.

Usage: ~/.cache/llmux/venv/bin/python bench/memory_cap.py [--smol 4] [--stories 2]
       [--requests 120] [--concurrency 4] [--memory-mib 200]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
SMOL = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
STORIES = ROOT.parent / "shared" / "models" / "stories260K" / "stories260K.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=str(ROOT / "build" / "llmux"))
    ap.add_argument("--smol", type=int, default=4)
    ap.add_argument("--stories", type=int, default=2)
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--memory-mib", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory_cap.json"))
    a = ap.parse_args()
    for f in (SMOL, STORIES):
        if not f.is_file():
            sys.exit(f"needs {f}")
    d = Path(tempfile.mkdtemp(prefix="llmux-memcap-"))
    models = {}
    for i in range(a.smol):
        models[f"smol-{i}"] = d / f"smol-{i}.gguf"
        shutil.copyfile(SMOL, models[f"smol-{i}"])
    for i in range(a.stories):
        models[f"stories-{i}"] = d / f"stories-{i}.gguf"
        shutil.copyfile(STORIES, models[f"stories-{i}"])
    http, node, admin = free_port(), free_port(), free_port()
    share = int(10000 / len(models)) / 10000
    cfg = d / "memcap.toml"
    text = f'[[nodes]]\nname = "solo"\nport = {node}\nadmin_port = {admin}\n\n[gateway]\nnode = "solo"\nport = {http}\n\n'
    text += "[timeouts]\nrequest_ms = 120000\n\n"
    for m, p in models.items():
        text += f'[[models]]\nname = "{m}"\nbackend = "cpu"\nfile = "{p}"\n\n'
    # Oversubscription is a sim feature: the cpu unit's threads are split by
    # share, so each model gets 1/N of them (at least one thread).
    text += (f'[[units]]\nname = "cpu0"\nnode = "solo"\nbackend = "cpu"\nthreads = {a.threads}\nkv_cache_mib = 128\n'
             f"memory_mib = {a.memory_mib}\nmodels = [ "
             + ", ".join(f'{{ name = "{m}", share = {share} }}' for m in models) + " ]\n")
    cfg.write_text(text)
    log = open(d / "serve.log", "w")
    proc = subprocess.Popen([a.llmux, "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    try:
        t_end = time.time() + 60
        while True:
            try:
                if requests.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > t_end or proc.poll() is not None:
                sys.exit(f"llmux did not start: {(d / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        rss = []
        stop = threading.Event()

        def sample():
            t0 = time.time()
            while not stop.is_set():
                rss.append((round(time.time() - t0, 2), round(rss_mib(proc.pid), 1)))
                stop.wait(0.25)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def state():
            st = requests.get(f"{base}/admin/state", timeout=10).json()
            return next(s["state"] for s in st if s["kind"] == "gpu_unit")

        rnd = random.Random(a.seed)
        order = [rnd.choice(list(models)) for _ in range(a.requests)]

        def one(model):
            awake = state()["models"][model]["state"] == "ready"
            t0 = time.time()
            ttft = None
            with requests.post(f"{base}/v1/completions", stream=True, timeout=120,
                               json={"model": model, "prompt": "Once upon a time", "max_tokens": a.max_tokens,
                                     "temperature": 0, "stream": True}) as r:
                if r.status_code != 200:
                    return model, awake, None, f"HTTP {r.status_code}: {r.text[:200]}"
                for line in r.iter_lines():
                    if line.startswith(b"data: {") and ttft is None:
                        ttft = time.time() - t0
                    if b'"error"' in line:
                        return model, awake, ttft, line.decode()[:200]
            return model, awake, ttft, None

        t0 = time.time()
        with cf.ThreadPoolExecutor(a.concurrency) as pool:
            results = list(pool.map(one, order))
        wall = time.time() - t0
        final = state()
        stop.set()
        sampler.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    failed = [r for r in results if r[3] is not None]
    warm = sorted(r[2] for r in results if r[3] is None and r[1])
    cold = sorted(r[2] for r in results if r[3] is None and not r[1])

    def pct(v, q):
        return 1e3 * v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")

    wakes = {m: final["models"][m] for m in models}
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} vCPU; unit of {a.threads} threads; {a.smol} x SmolLM2-135M Q4_1 "
          f"({SMOL.stat().st_size / 2**20:.0f} MiB each) + {a.stories} x stories260K under memory_mib = {a.memory_mib}")
    print(f"{len(results)} requests ({a.concurrency} at a time, {a.max_tokens} tokens each) in {wall:.1f} s: "
          f"{len(results) - len(failed)} served, {len(failed)} failed")
    print(f"TTFT, model awake:  n={len(warm)} p50 {pct(warm, .5):.0f} ms  p99 {pct(warm, .99):.0f} ms")
    print(f"TTFT, woken for it: n={len(cold)} p50 {pct(cold, .5):.0f} ms  p99 {pct(cold, .99):.0f} ms "
          "(waits for other models' requests to end before one sleeps)")
    total_wakes = sum(w["wakes"] for w in wakes.values())
    print(f"unit: {total_wakes} wakes, {sum(w['sleeps'] for w in wakes.values())} sleeps; wake time (mmap + engine "
          f"build), ms: max per model " + ", ".join(f"{m} {1e3 * w['wake_seconds_max']:.1f}" for m, w in wakes.items()))
    print(f"mean wake {1e3 * sum(w['wake_seconds_total'] for w in wakes.values()) / max(1, total_wakes):.1f} ms; "
          f"memory_awake_mib at the end {final['memory_awake_mib']:.0f} of {a.memory_mib}")
    print(f"RSS over the run: min {min(v for _, v in rss):.0f} MiB, max {max(v for _, v in rss):.0f} MiB "
          f"(KV arena {128} MiB, paged in as used, plus the binary)")
    for f in failed[:5]:
        print("failed:", f)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    json.dump({"args": vars(a), "cpu": cpu, "wall_s": wall, "results": results, "rss": rss, "unit": final},
              open(a.out, "w"), indent=1)
    shutil.rmtree(d, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
