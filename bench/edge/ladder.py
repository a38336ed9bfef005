#!/usr/bin/env python3
"""The HTTP edge at real concurrency (issue 14), one command, one machine:

  python3 bench/edge/ladder.py [--out DIR] [--quick]

Against `llmux serve` with a sim model at zero step time (so the edge, not
the engine, is what is measured):
  1. closed-loop ladder, streaming: concurrency 64 128 256 1024 4096;
  2. the same with 10,000 idle keep-alive connections held open beside it;
  3. memory per idle keep-alive connection (server RSS and the kernel's TCP
     memory before and after opening them);
  4. open loop above capacity on an edge with gateway.max_in_flight = 256:
     admitted requests' TTFT, and how fast the rest get 429;
  5. the ladder through sglang-router (and vllm-router, when installed) in
     front of the same server, and through the previous llmux edge
     (cpp-httplib, 64 threads) when --old-llmux names its binary.
Prints tables and writes DIR/results.json (configs and server logs go to a
temporary directory, named at the end)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LLMUX = ROOT / "build" / "llmux"
VENV_PY = Path.home() / ".cache" / "llmux" / "venv" / "bin" / "python"


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROMPT = ("Operating systems learned to share processors between many programs, to cache what is "
          "used often, and to move work to where the data lives. Serving language models repeats that "
          "story: many models, one pool of memory, and schedulers that decide who runs next. ") * 2


def config(port: int, max_in_flight: int = 8192, hold: bool = False) -> str:
    node, admin = free_port(), free_port()
    held = """
[[models]]
name = "hold"
backend = "sim"
architecture = "llama-7b"

[[units]]
name = "h"
node = "solo"
time_scale = 100000
max_running = 1
max_waiting = 4096
models = [ { name = "hold", share = 1.0 } ]
""" if hold else ""
    return held + f"""
[[nodes]]
name = "solo"
port = {node}
admin_port = {admin}

[gateway]
node = "solo"
port = {port}
keep_alive_s = 600
max_in_flight = {max_in_flight}

[[models]]
name = "tiny"
backend = "sim"
architecture = "tiny"

[[units]]
name = "u"
node = "solo"
time_scale = 0
max_running = 1024
max_waiting = 16384
models = [ {{ name = "tiny", share = 1.0 }} ]
"""


def wait_health(url: str, timeout: float = 30) -> None:
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered /health")


def start(args: list, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(a) for a in args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=15)
    except Exception:
        os.killpg(p.pid, signal.SIGKILL)


def bench(url: str, extra: list, requests: int, conc=None, rates=None, workers=None) -> list[dict]:
    # A text prompt (the routers have no /tokenize): the server tokenizes it.
    args = [LLMUX, "bench", "serve", "--url", url, "--model", "tiny", "--requests", requests,
            "--prompt-text", PROMPT, "--output-len", "64", "--json", *extra]
    if conc:
        args += ["--concurrency", conc]
    if rates:
        args += ["--rate", *rates]
    if workers:
        args += ["--max-workers", workers]
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900)
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    for l in out.stdout.splitlines():
        if l.startswith("idle connections:"):
            for r in rows:
                r["idle_note"] = l
    if not rows:
        rows = [{"error": (out.stdout + out.stderr)[-600:]}]
    return rows


class prober:
    """GET /health and /metrics every 20 ms on one keep-alive connection
    each while a load runs: how fast they stay under it."""

    def __init__(self, url: str):
        import threading
        self.url, self.times, self.stop_flag = url, {"/health": [], "/metrics": []}, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import http.client
        host, port = self.url.split("//")[1].split(":")
        conns = {p: http.client.HTTPConnection(host, int(port), timeout=30) for p in self.times}
        while not self.stop_flag:
            for path, conn in conns.items():
                t = time.perf_counter()
                try:
                    conn.request("GET", path)
                    conn.getresponse().read()
                    self.times[path].append((time.perf_counter() - t) * 1e3)
                except Exception:
                    self.times[path].append(float("inf"))
            time.sleep(0.02)

    def finish(self) -> dict:
        self.stop_flag = True
        self.thread.join()
        out = {}
        for path, ts in self.times.items():
            ts = sorted(ts)
            if ts:
                out[path] = {"n": len(ts), "p50_ms": ts[len(ts) // 2], "p99_ms": ts[min(len(ts) - 1, int(0.99 * len(ts)))],
                             "max_ms": ts[-1]}
        return out


def ladder(url: str, points: list[int], extra: list = (), min_requests: int = 3000,
           probe: bool = False) -> list[dict]:
    rows = []
    for c in points:
        p = prober(url) if probe else None
        r = bench(url, list(extra), max(min_requests, 4 * c), conc=c)[0]
        r["concurrency"] = c
        if p:
            r["probes"] = p.finish()
        rows.append(r)
        print(f"  c={c:5d}: " + (f"{r['requests_per_s']:8.1f} req/s  TTFT p50 {r['ttft']['p50_ms']:8.1f} ms"
                                 f"  p99 {r['ttft']['p99_ms']:8.1f} ms  failed {r['failed']}"
                                 if "error" not in r else r["error"]), flush=True)
        if "probes" in r:
            print("           meanwhile " + ", ".join(
                f"{k} p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f} / max {v['max_ms']:.2f} ms"
                for k, v in r["probes"].items()), flush=True)
    return rows


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slab_bytes() -> int:
    """The kernel's slab memory in use (active objects times their size);
    0 where /proc/slabinfo is not readable."""
    try:
        total = 0
        for line in open("/proc/slabinfo").readlines()[2:]:
            f = line.split()
            total += int(f[1]) * int(f[3])
        return total
    except OSError:
        return 0


def idle_memory(port: int, pid: int, n: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    rss0, slab0 = rss_kb(pid), slab_bytes()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(1)
    rss1, slab1 = rss_kb(pid), slab_bytes()
    for s in socks:
        s.close()
    return {"connections": n, "server_rss_kb_before": rss0, "server_rss_kb_after": rss1,
            "server_bytes_per_connection": (rss1 - rss0) * 1024 / n,
            # sockets, inodes, epoll items...: both ends of each loopback connection
            "kernel_slab_bytes_per_connection_both_ends": (slab1 - slab0) / n}


def refusal_probe(port: int, held: int, n: int = 2000) -> dict:
    """Fills the edge with `held` streams of the slow "hold" model, then times
    `n` requests from one keep-alive client: each must be a 429 at once."""
    import http.client
    socks = []
    body = json.dumps({"model": "hold", "prompt": "hi", "max_tokens": 4, "stream": True}).encode()
    for _ in range(held):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        socks.append(s)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.time() + 30
    while True:  # until the edge is full
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        if f"llmux:edge_requests_in_flight {held}" in text or time.time() > deadline:
            break
        time.sleep(0.05)
    times, statuses, retry = [], [], True
    small = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 4}).encode()
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/v1/completions", body=small, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t)
        statuses.append(r.status)
        retry = retry and r.getheader("Retry-After") == "1"
    for s in socks:
        s.close()
    times.sort()
    ms = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1e3
    return {"n": n, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": times[-1] * 1e3,
            "all_429": all(x == 429 for x in statuses) and retry}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/edge")
    ap.add_argument("--quick", action="store_true", help="fewer points (64 256 1024), 1,000 idle")
    ap.add_argument("--old-llmux", help="a build of the previous edge (httplib) to run the ladder on too")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="llmux-edge-"))  # configs and server logs
    points = [64, 256, 1024] if args.quick else [64, 128, 256, 1024, 4096]
    idle_n = 1000 if args.quick else 10000
    res = {"cpu": cpu_name(), "cores": os.cpu_count(), "points": points}
    print(f"CPU: {res['cpu']} ({res['cores']} cores); sim model at zero step time; prompt 128, output 64, streaming")

    # Memory per idle connection, on a fresh server.
    port = free_port()
    cfg = work / "edge.toml"
    cfg.write_text(config(port))
    srv = start([LLMUX, "serve", "--config", cfg], work / "serve-idle.log")
    try:
        wait_health(f"http://127.0.0.1:{port}")
        res["idle_memory"] = idle_memory(port, srv.pid, idle_n)
        m = res["idle_memory"]
        print(f"memory per idle keep-alive connection ({idle_n} on a fresh server): server RSS "
              f"{m['server_bytes_per_connection']:.0f} B, kernel slab (both ends of the loopback) "
              f"{m['kernel_slab_bytes_per_connection_both_ends']:.0f} B")
    finally:
        stop(srv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg.write_text(config(port))
    srv = start([LLMUX, "serve", "--config", cfg], work / "serve.log")
    try:
        wait_health(url)
        print("llmux edge, closed loop:")
        res["llmux"] = ladder(url, points, probe=True)
        print(f"llmux edge, with {idle_n} idle keep-alive connections held open:")
        res["llmux_idle"] = ladder(url, points, ["--idle-connections", idle_n])
        print(f"  {res['llmux_idle'][-1].get('idle_note', '')}")

        for name, launch in (("sglang-router", [VENV_PY, "-m", "sglang_router.launch_router"]),
                             ("vllm-router", [VENV_PY.parent / "vllm-router"]
                              if (VENV_PY.parent / "vllm-router").exists() else None)):
            if launch is None:
                print(f"{name}: not installed, skipped")
                res[name] = "not installed"
                continue
            rport = free_port()
            router = start([*launch, "--host", "127.0.0.1", "--port", rport, "--worker-urls", url,
                            "--policy", "round_robin"], work / f"{name}.log")
            try:
                wait_health(f"http://127.0.0.1:{rport}", 60)
                print(f"{name} in front of the same server:")
                res[name] = ladder(f"http://127.0.0.1:{rport}", points)
            except Exception as e:
                res[name] = f"failed: {e}"
                print(f"{name}: {e}")
            finally:
                stop(router)
    finally:
        stop(srv)

    # Overload: an edge that admits 256 at once.
    port2 = free_port()
    cfg2 = work / "edge-256.toml"
    cfg2.write_text(config(port2, max_in_flight=256, hold=True))
    srv2 = start([LLMUX, "serve", "--config", cfg2], work / "serve-256.log")
    url2 = f"http://127.0.0.1:{port2}"
    try:
        wait_health(url2)
        print("open loop (Poisson) above capacity, gateway.max_in_flight = 256:")
        rows = bench(url2, [], 20000, rates=[2000, 5000, 10000], workers=8192)
        for r in rows:
            print(f"  rate {r.get('value')}: admitted {r['ok']} at {r['requests_per_s']:.0f} req/s, TTFT p99 "
                  f"{r['ttft']['p99_ms']:.1f} ms; 429 {r['rejected_429']} in p50 "
                  f"{r['rejected_latency']['p50_ms']:.2f} / p99 {r['rejected_latency']['p99_ms']:.2f} ms "
                  f"(the client on the same 2 cores); other failures {r['failed'] - r['rejected_429']}")
        res["overload"] = rows
        res["refusal_probe"] = refusal_probe(port2, 256)
        p = res["refusal_probe"]
        print(f"a full edge (256 held requests) refuses one client's {p['n']} requests in p50 {p['p50_ms']:.3f}"
              f" / p99 {p['p99_ms']:.3f} / max {p['max_ms']:.3f} ms, each 429 with Retry-After: {p['all_429']}")
    finally:
        stop(srv2)

    if args.old_llmux:
        port3 = free_port()
        cfg3 = work / "edge-old.toml"
        cfg3.write_text(config(port3).replace("keep_alive_s = 600\n", "").replace(
            "max_in_flight = 8192\n", ""))
        srv3 = start([args.old_llmux, "serve", "--config", cfg3], work / "serve-old.log")
        try:
            wait_health(f"http://127.0.0.1:{port3}")
            print("previous llmux edge (cpp-httplib, 64 threads), same ladder up to 256:")
            res["llmux_httplib"] = ladder(f"http://127.0.0.1:{port3}", [p for p in points if p <= 256], [], 1000)
        finally:
            stop(srv3)

    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"results: {out / 'results.json'}; configs and logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
