#!/usr/bin/env python3
"""What one KV pool for every head size wastes (issue 5).

A unit's blocks each hold one head of one layer for 16 tokens, sized for the
largest head among its models, so models of different shapes draw from one
free list. A model with a smaller head leaves the rest of each of its blocks
empty. This serves stories260K (head 8) and SmolLM2-135M (head 64) on one CPU
unit, drives both at once with `llmux bench serve`, samples the kv_manager's
admin state while they run and prints, over the samples with blocks in use:
the blocks in use per model and `slot_padding` (the fraction of the in-use
blocks' memory that smaller heads leave empty), mean and peak, and what the
same KV would take in one pool per head size.

    ~/.cache/llmux/venv/bin/python bench/kv_padding.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from adbs_sweep import SMOL, STORIES, free_port, solo_node, wait_ready


def config(port: int, node: int, admin: int) -> str:
    return solo_node(port, node, admin, http_threads=64) + f"""
[[models]]
name = "stories"
backend = "cpu"
file = "{STORIES}"

[[models]]
name = "smol"
backend = "cpu"
file = "{SMOL}"

[[units]]
name = "u"
node = "solo"
backend = "cpu"
threads = 2
kv_cache_mib = 64
models = [ {{ name = "stories", share = 0.5, rate = 8 }}, {{ name = "smol", share = 0.5, rate = 1 }} ]
"""


def kv_state(base: str) -> dict:
    with urllib.request.urlopen(base + "/admin/state", timeout=5) as r:
        states = json.loads(r.read())
    return next(s["state"] for s in states if s["kind"] == "kv_manager")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default="build/llmux")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    port, node, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "padding.toml"
        cfg.write_text(config(port, node, admin))
        log = open(Path(d) / "serve.log", "w")
        srv = subprocess.Popen([args.llmux, "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, 120)
            loads = {"stories": (8.0, "lognormal:24:0.5:4:96", "lognormal:96:0.5:16:256"),
                     "smol": (1.0, "lognormal:128:0.6:16:512", "lognormal:48:0.5:8:128")}

            def drive(model):
                rate, prompt, output = loads[model]
                subprocess.run([args.llmux, "bench", "serve", "--url", base, "--model", model,
                                "--requests", str(int(rate * args.seconds)), "--rate", str(rate),
                                "--prompt-len", prompt, "--output-len", output, "--seed", "5"],
                               capture_output=True, text=True)

            threads = [threading.Thread(target=drive, args=(m,)) for m in loads]
            for t in threads:
                t.start()
            samples = []
            while any(t.is_alive() for t in threads):
                st = kv_state(base)
                held = {m: v["used"] + v["cached"] for m, v in st["models"].items()}
                if sum(held.values()) > 0:
                    samples.append((st, held))
                time.sleep(0.25)
            for t in threads:
                t.join()
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=30)
            log.close()
    if not samples:
        print("no sample had blocks in use")
        return 1
    st0 = samples[0][0]
    big = st0["block_head_dim"]
    heads = {m: v["head_dim"] for m, v in st0["models"].items()}
    block_bytes = 2 * st0["block_tokens"] * big * 2  # K and V, f16
    print(f"one pool, blocks sized for head {big} ({block_bytes} B); heads: "
          + ", ".join(f"{m} {h}" for m, h in heads.items()))
    pad = [s["slot_padding"] for s, _ in samples]
    print(f"{len(samples)} samples with blocks in use over {args.seconds:g} s of load")
    for m in heads:
        used = [h[m] for _, h in samples]
        print(f"  {m:8} blocks in use: mean {sum(used) / len(used):7.1f}  peak {max(used):5d}")
    print(f"slot_padding (in-use block memory left empty by smaller heads): mean {100 * sum(pad) / len(pad):.1f}%"
          f"  peak {100 * max(pad):.1f}%")
    # One pool per head size: the same blocks at each model's own head size.
    own = [sum(h[m] * heads[m] / big for m in heads) / sum(h.values()) for _, h in samples]
    print(f"one pool per head size would hold the same KV in {100 * sum(own) / len(own):.1f}% of the memory "
          f"(mean), but each pool is sized up front and cannot lend to the other")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
