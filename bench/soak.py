#!/usr/bin/env python3
"""Soak: the real CPU engine under steady load for minutes, with the traffic a
public endpoint gets — streams, plain requests, clients that hang up
mid-stream, and bad requests — while the process's resident memory, open
file descriptors and threads are sampled. A leak shows as a slope; the
figures go in docs/benchmarks.md.

  1. capacity: closed loop, `--concurrency` streams of the request shape
     below for `--capacity-s` seconds; completed requests per second = C.
  2. soak: Poisson arrivals at `--load` x C for `--minutes`, each arrival one
     of: 55% streaming chat, 20% non-streaming completion, 15% a stream the
     client abandons after 3 chunks, 10% a bad request (malformed JSON, an
     unknown model, a bad parameter, an oversized max_tokens — each must be
     its 4xx).
  3. every `--sample-s`: VmRSS, fds, threads of the llmux process, and the
     edge's /metrics aborted counter.

Prints one line per sample and a summary; writes JSON (samples, latencies,
errors) to --out. Errors other than the deliberate 4xx are counted and listed.
Usage: python3 bench/soak.py [--minutes 10] [--load 0.7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
SMOL = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Write a short note to a friend about the weather today.",
    "Explain in two sentences why the sky is blue.",
    "List three things to pack for a day at the beach.",
    "Tell a very short story about a cat who learns to swim.",
    "What is the capital of France, and what is it known for?",
]
MAX_TOKENS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        n = os.cpu_count()
        return f"{m.group(1).strip() if m else '?'}, {n} vCPU"
    except OSError:
        return "?"


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s*(\d+) kB", status).group(1))
    threads = int(re.search(r"Threads:\s*(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mib": rss / 1024, "threads": threads, "fds": fds}


def chat_body(stream: bool) -> dict:
    return {"model": "smol", "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "max_tokens": MAX_TOKENS, "temperature": 0.7, "stream": stream}


class Stats:
    def __init__(self):
        self.lat = {"stream": [], "plain": []}  # end-to-end seconds
        self.ttft: list[float] = []
        self.counts = {"stream": 0, "plain": 0, "abandoned": 0, "bad": 0}
        self.errors: list[str] = []


async def stream_chat(session, base, stats: Stats, abandon_after: int | None = None):
    t0 = time.monotonic()
    first = None
    chunks = 0
    async with session.post(f"{base}/v1/chat/completions", json=chat_body(True)) as r:
        if r.status != 200:
            stats.errors.append(f"stream: HTTP {r.status} {await r.text()}")
            return
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                break
            ev = json.loads(line[6:])
            if "error" in ev:
                stats.errors.append(f"stream: {ev['error']}")
                return
            if first is None:
                first = time.monotonic() - t0
            chunks += 1
            if abandon_after is not None and chunks >= abandon_after:
                r.close()  # the client goes away mid-stream
                stats.counts["abandoned"] += 1
                return
    if abandon_after is not None:
        stats.errors.append("abandon: the stream ended before the client could leave")
        return
    stats.counts["stream"] += 1
    stats.lat["stream"].append(time.monotonic() - t0)
    if first is not None:
        stats.ttft.append(first)


async def plain_completion(session, base, stats: Stats):
    t0 = time.monotonic()
    body = {"model": "smol", "prompt": random.choice(PROMPTS), "max_tokens": MAX_TOKENS, "temperature": 0.7}
    async with session.post(f"{base}/v1/completions", json=body) as r:
        text = await r.text()
        if r.status != 200:
            stats.errors.append(f"plain: HTTP {r.status} {text[:200]}")
            return
    stats.counts["plain"] += 1
    stats.lat["plain"].append(time.monotonic() - t0)


BAD = [
    ("malformed JSON", b'{"model": "smol", "messages": [', 400),
    ("unknown model", json.dumps({"model": "nope", "prompt": "x"}).encode(), 404),
    ("bad parameter", json.dumps({"model": "smol", "prompt": "x", "temperature": -3}).encode(), 400),
    ("oversized max_tokens", json.dumps({"model": "smol", "prompt": "x", "max_tokens": 10**7}).encode(), 400),
]


async def bad_request(session, base, stats: Stats):
    what, body, want = random.choice(BAD)
    async with session.post(f"{base}/v1/completions", data=body,
                            headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        if r.status != want or "error" not in json.loads(text):
            stats.errors.append(f"bad request ({what}): HTTP {r.status}, wanted {want}: {text[:200]}")
            return
    stats.counts["bad"] += 1


async def one(session, base, stats: Stats):
    x = random.random()
    try:
        if x < 0.55:
            await stream_chat(session, base, stats)
        elif x < 0.75:
            await plain_completion(session, base, stats)
        elif x < 0.90:
            await stream_chat(session, base, stats, abandon_after=3)
        else:
            await bad_request(session, base, stats)
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        stats.errors.append(f"{type(e).__name__}: {e}")


async def capacity(base: str, concurrency: int, seconds: float) -> float:
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        end = time.monotonic() + seconds

        async def worker():
            while time.monotonic() < end:
                await stream_chat(session, base, stats)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - t0
    if stats.errors:
        raise SystemExit(f"capacity run had errors: {stats.errors[:3]}")
    return stats.counts["stream"] / took


async def soak(base: str, pid: int, rate: float, minutes: float, sample_s: float) -> dict:
    stats = Stats()
    samples = []
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t0 = time.monotonic()
        end = t0 + minutes * 60
        tasks = set()

        async def sampler():
            while time.monotonic() < end + 1:
                s = proc_sample(pid)
                s["t"] = round(time.monotonic() - t0, 1)
                s["in_flight"] = len(tasks)
                s.update({k: v for k, v in stats.counts.items()})
                s["errors"] = len(stats.errors)
                samples.append(s)
                print(f"  t={s['t']:6.0f}s rss={s['rss_mib']:7.1f} MiB fds={s['fds']:4d} threads={s['threads']:3d} "
                      f"in_flight={s['in_flight']:3d} done={sum(stats.counts.values()):6d} errors={len(stats.errors)}",
                      flush=True)
                await asyncio.sleep(sample_s)

        sampling = asyncio.create_task(sampler())
        next_at = t0
        while True:
            next_at += random.expovariate(rate)
            if next_at >= end:
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            t = asyncio.create_task(one(session, base, stats))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=120)
        sampling.cancel()
        left = len(tasks)
    # After the client's pool has closed its keep-alive connections, and the
    # last abandoned streams' cancellations have reached the unit.
    await asyncio.sleep(3)
    samples.append(dict(proc_sample(pid), t=round(time.monotonic() - t0, 1), in_flight=left, final=True))
    return {"stats": stats, "samples": samples}


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=str(ROOT / "build" / "llmux"))
    ap.add_argument("--model", default=str(SMOL))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--load", type=float, default=0.7, help="fraction of measured capacity")
    ap.add_argument("--concurrency", type=int, default=8, help="streams at once in the capacity run")
    ap.add_argument("--capacity-s", type=float, default=40.0)
    ap.add_argument("--sample-s", type=float, default=15.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak" / "soak.json"))
    args = ap.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"needs {args.model} (scripts/setup fetches it)")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(Path(args.out).with_suffix(".log"), "w") if Path(args.out).parent.exists() else subprocess.DEVNULL
    proc = subprocess.Popen([args.llmux, "serve", "--model", args.model, "--served-model-name", "smol",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{base}/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        print(f"llmux soak on {cpu_name()}: SmolLM2-135M-Instruct Q4_1, cpu backend, "
              f"chat of ~15 prompt tokens, max_tokens {MAX_TOKENS}")
        cap = asyncio.run(capacity(base, args.concurrency, args.capacity_s))
        rate = args.load * cap
        print(f"capacity: {cap:.2f} req/s at {args.concurrency} concurrent streams; soak at {args.load:.0%}: "
              f"{rate:.2f} req/s for {args.minutes:g} min")
        before = proc_sample(proc.pid)
        res = asyncio.run(soak(base, proc.pid, rate, args.minutes, args.sample_s))
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    st: Stats = res["stats"]
    samples = res["samples"]
    # Steady state: from the first minute on (pools and caches filled).
    steady = [s for s in samples if s["t"] >= 60]
    first, last = (steady[0], steady[-1]) if steady else (samples[0], samples[-1])
    summary = {
        "cpu": cpu_name(), "capacity_rps": cap, "rate_rps": rate, "minutes": args.minutes,
        "counts": st.counts, "errors": len(st.errors), "error_examples": st.errors[:10],
        "aborted_total": metric(metrics, "llmux:requests_aborted_total"),
        "ttft_p50_s": pct(st.ttft, 50), "ttft_p99_s": pct(st.ttft, 99),
        "stream_p50_s": pct(st.lat["stream"], 50), "stream_p99_s": pct(st.lat["stream"], 99),
        "plain_p50_s": pct(st.lat["plain"], 50), "plain_p99_s": pct(st.lat["plain"], 99),
        "before_load": before,
        "rss_mib": {"at_1min": first["rss_mib"], "end": last["rss_mib"],
                    "max": max(s["rss_mib"] for s in samples)},
        "fds": {"at_1min": first["fds"], "end": last["fds"], "max": max(s["fds"] for s in samples)},
        "threads": {"at_1min": first["threads"], "end": last["threads"], "max": max(s["threads"] for s in samples)},
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "error_examples"}, indent=1))
    if st.errors:
        print("errors:", *st.errors[:10], sep="\n  ")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
