#!/usr/bin/env python3
"""One CPU unit of 2 threads serving SmolLM2-135M-Instruct (Q4_1) under a
concurrency ramp, three ways, side by side on the same machine in one run
(REAL engine, not simulated):

  single    one replica on both threads (layout = "single");
  replicas  two replicas of one thread each (layout = "replicas");
  dynamic   switched by the controller from measured concurrency
            (layout = "dynamic"; the switch point where the measured
            profile bench/profiles/cpu_smollm2_epyc.json says the two
            layouts' decode steps cross, with hysteresis).

The ramp: closed-loop stages of 1, 4, 16, 64, 16 and 1 requests in flight
(`llmux bench serve --concurrency C`), greedy, prompt and output lengths
fixed. For each stage: TTFT and TPOT percentiles, output tokens/s, failures;
for dynamic, the layout at the end of each stage and the switches. Writes
OUT/layout_ramp.md and OUT/layout_ramp.json.

Usage: python3 bench/router/layout_ramp.py [--llmux build/llmux]
       [--model ~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf]
       [--prompt-len 64] [--output-len 64] [--out bench/results/router]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STAGES = [(1, 16), (4, 32), (16, 64), (64, 128), (16, 64), (1, 16)]  # (concurrency, requests)
LAYOUTS = ["single", "replicas", "dynamic"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def config(layout, model, ports):
    node, admin, http = ports
    return f"""
[[nodes]]
name = "solo"
port = {node}
admin_port = {admin}

[gateway]
node = "solo"
port = {http}

[timeouts]
request_ms = 300000

[gpus.cpu]
profile = "{os.path.join(ROOT, 'bench', 'profiles', 'cpu_smollm2_epyc.json')}"

[[models]]
name = "smol"
backend = "cpu"
file = "{model}"
profile_key = "SmolLM2-135M-Instruct"

[[units]]
name = "cpu0"
node = "solo"
backend = "cpu"
gpu = "cpu"
threads = 2
max_running = 64
layout = "{layout}"
models = [ {{ name = "smol" }} ]
"""


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def layout_state(base):
    for s in get_json(base + "/admin/state"):
        if s["kind"] == "controller":
            return (s.get("state") or {}).get("layouts", {}).get("cpu0")
    return None


def run_layout(args, layout, tmp):
    ports = (free_port(), free_port(), free_port())
    path = os.path.join(tmp, f"{layout}.toml")
    with open(path, "w") as f:
        f.write(config(layout, args.model, ports))
    log = open(os.path.join(tmp, f"{layout}.log"), "w")
    proc = subprocess.Popen([args.llmux, "serve", "--config", path], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{ports[2]}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/ready", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{layout}: server did not become ready (log {log.name})")
        stages = []
        for conc, n in STAGES:
            out = subprocess.run([args.llmux, "bench", "serve", "--url", base, "--model", "smol",
                                  "--concurrency", str(conc), "--requests", str(n),
                                  "--prompt-len", str(args.prompt_len), "--output-len", str(args.output_len),
                                  "--temperature", "0", "--json"],
                                 capture_output=True, text=True, check=True)
            point = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
            lay = layout_state(base)
            stages.append({"concurrency": conc, "requests": n, "point": point, "layout": lay})
            print(f"{layout:9s} c={conc:3d}: {point['output_tokens_per_s']:7.1f} tok/s, "
                  f"TTFT p50 {point['ttft']['p50_ms']:.0f} ms p99 {point['ttft']['p99_ms']:.0f}, "
                  f"TPOT p50 {point['tpot']['p50_ms']:.1f} ms p99 {point['tpot']['p99_ms']:.1f}, "
                  f"failed {point['failed']}"
                  + (f", layout {lay['layout']} (switches {lay['switches']})" if lay else ""), flush=True)
        return stages
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "router"))
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        sys.exit(f"needs {args.model} (scripts/setup fetches it)")
    os.makedirs(args.out, exist_ok=True)
    cpu = cpu_name()
    results = {"cpu": cpu, "prompt_len": args.prompt_len, "output_len": args.output_len, "layouts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in LAYOUTS:
            results["layouts"][layout] = run_layout(args, layout, tmp)
    rows = []
    for i, (conc, n) in enumerate(STAGES):
        cells = []
        for layout in LAYOUTS:
            st = results["layouts"][layout][i]
            p = st["point"]
            cell = (f"{p['output_tokens_per_s']:.0f} | {p['ttft']['p50_ms']:.0f} / {p['ttft']['p99_ms']:.0f} | "
                    f"{p['tpot']['p50_ms']:.1f} / {p['tpot']['p99_ms']:.1f} | {p['failed']}")
            if layout == "dynamic" and st["layout"]:
                cell += f" | {st['layout']['layout']}"
            cells.append(cell)
        rows.append(f"| {i + 1}: c={conc} ({n} req) | " + " | ".join(cells) + " |")
    dyn = results["layouts"]["dynamic"][-1]["layout"] or {}
    head = ("| stage | single tok/s | TTFT p50/p99 ms | TPOT p50/p99 ms | failed | replicas tok/s | "
            "TTFT p50/p99 ms | TPOT p50/p99 ms | failed | dynamic tok/s | TTFT p50/p99 ms | TPOT p50/p99 ms | "
            "failed | layout after |\n|" + "---|" * 14)
    md = (f"REAL engine: SmolLM2-135M-Instruct Q4_1, one cpu unit of 2 threads, {cpu}; prompt {args.prompt_len}, "
          f"output {args.output_len} tokens, greedy, closed loop.\nCommand: python3 bench/router/layout_ramp.py\n\n"
          + head + "\n" + "\n".join(rows) + "\n\n"
          + f"dynamic: switch point {dyn.get('switch_at')} concurrent requests (hysteresis {dyn.get('hysteresis')}), "
          + f"{dyn.get('switches')} switches, {dyn.get('failed_switches')} failed, "
          + f"{1e3 * dyn.get('switching_s', 0):.0f} ms spent switching, {dyn.get('handed_back')} sequences handed back\n")
    with open(os.path.join(args.out, "layout_ramp.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "layout_ramp.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(md)


if __name__ == "__main__":
    main()
