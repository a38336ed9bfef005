#!/usr/bin/env python3
"""What idle keep-alive connections cost an edge: N connections each ask
GET /health once and then stay open; the server's CPU over the next HOLD
seconds, its RSS, and how many were answered within 10 s.

  python3 bench/edge/idle_cost.py [--llmux BIN] [--connections 2000] [--hold 10] [--http-threads 2100]

--http-threads is written to the config: for an llmux build with the
cpp-httplib edge it is the thread pool (one thread per connection); for the
event-loop edge it sizes the worker pool, which idle connections do not use."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ladder  # noqa: E402  (config helpers, free ports, CPU name)


def cpu_seconds(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmux", default=str(ladder.LLMUX))
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--http-threads", type=int, default=2100)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = ladder.free_port()
    work = Path(tempfile.mkdtemp(prefix="llmux-idle-"))
    cfg = work / "idle.toml"
    text = ladder.config(port).replace("keep_alive_s = 600\n", "").replace("max_in_flight = 8192\n", "")
    cfg.write_text(text.replace("[gateway]\n", f"[gateway]\nhttp_threads = {a.http_threads}\n", 1))
    srv = ladder.start([a.llmux, "serve", "--config", cfg], work / "serve.log")
    try:
        ladder.wait_health(f"http://127.0.0.1:{port}")
        socks = []
        t0 = time.time()
        for _ in range(a.connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        answered = 0
        for s in socks:
            s.settimeout(max(0.01, 10 - (time.time() - t0)))
            try:
                answered += s.recv(4096).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
        c0 = cpu_seconds(srv.pid)
        time.sleep(a.hold)
        used = cpu_seconds(srv.pid) - c0
        rss = ladder.rss_kb(srv.pid)
        print(f"{ladder.cpu_name()}: {a.llmux} http_threads={a.http_threads}: {a.connections} idle connections, "
              f"{answered} answered within 10 s; server CPU while they idle {100 * used / a.hold:.1f}% of a core; "
              f"RSS {rss} kB")
        for s in socks:
            s.close()
    finally:
        ladder.stop(srv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
