#!/usr/bin/env python3
"""Is the simulator right about a real engine? The same multi-model workload
served by real `llmux serve` CPU units and by `llmux simulate` with the CPU
profile that `llmux bench engine --profile` measured on this machine.

Two SmolLM2-135M-Instruct replicas (`smol-a`, `smol-b`: the same Q4_1 file,
each its own scheduler and KV) share one CPU unit of 2 threads, a share of
0.5 (one worker thread) each, one KV pool. The sim config is the same unit
with backend = "sim": each model's step times come from the measured profile
(bench/profiles/cpu_smollm2_<cpu>.json, the thread shares 50% and 100%), its
KV shape from SmolLM2's (30 layers, 3 KV heads of 64). Prompts are distinct
in both (no prefix-cache hits: the load generator opens each replayed
prompt with the request's index).

It prints per model and in all: throughput (completed requests over the run),
TTFT p50/p99 and E2E p50, real vs simulated, and writes them to OUT.

The real run shares the 2 cores with the load generator, which the profile
measurement did not; say so beside the figures.

Usage: python3 bench/muxserve/sim_vs_cpu.py [--profile bench/profiles/cpu_smollm2_epyc.json]
       [--seconds 60] [--rates 2 1] [--out bench/results/sim_vs_cpu]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = os.path.expanduser("~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf")
KV_BLOCKS = 30 * 3 * 400  # 400 token-blocks of 16: 6400 tokens in all


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unit(backend, gpu_line, rates):
    return (f'[[units]]\nname = "cpu0"\nnode = "n0"\nbackend = "{backend}"\n{gpu_line}'
            f'threads = 2\nkv_blocks = {KV_BLOCKS}\npolicy = "fcfs"\n'
            f'models = [ {{ name = "smol-a", share = 0.5, rate = {rates[0]} }}, '
            f'{{ name = "smol-b", share = 0.5, rate = {rates[1]} }} ]\n')


def real_config(port, node, rates):
    models = "".join(f'[[models]]\nname = "{n}"\nbackend = "cpu"\nfile = "{MODEL}"\n\n' for n in ["smol-a", "smol-b"])
    return (f'[cluster]\nname = "sim-vs-cpu"\n[[nodes]]\nname = "n0"\nport = {node}\n[gateway]\nnode = "n0"\n'
            f'port = {port}\n\n{models}' + unit("cpu", "", rates).replace("threads = 2", "threads = 2"))


def sim_config(profile, rates):
    arch = ('architecture = { layers = 30, hidden = 576, heads = 9, kv_heads = 3, intermediate = 1536, '
            'vocab = 49152, context_length = 8192 }\nprofile_key = "SmolLM2-135M-Instruct"\n')
    models = "".join(f'[[models]]\nname = "{n}"\n{arch}\n' for n in ["smol-a", "smol-b"])
    gpu = f'[gpus.cpu]\nprofile = "{os.path.abspath(profile)}"\nmem_bandwidth_gbs = 40\nmemory_gib = 16\n\n'
    return (f'[cluster]\nname = "sim-vs-cpu"\n[[nodes]]\nname = "n0"\nport = 7399\n[gateway]\nnode = "n0"\n\n'
            + gpu + models + unit("sim", 'gpu = "cpu"\n', rates).replace("threads = 2\n", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--profile", default=os.path.join(ROOT, "bench", "profiles", "cpu_smollm2_epyc.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "sim_vs_cpu"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rates", type=float, nargs=2, default=[2.0, 1.0])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    w = os.path.join(a.out, "workload.toml")
    with open(w, "w") as f:
        f.write(f'duration_s = {a.seconds}\nseed = {a.seed}\nprompt = "lognormal:64:1.0:8:256"\n'
                f'output = "lognormal:32:1.0:4:96"\n')
        for name, rate in zip(["smol-a", "smol-b"], a.rates):
            f.write(f'[[model]]\nname = "{name}"\nrate = {rate}\n')
    port, node = free_port(), free_port()
    real = os.path.join(a.out, "real.toml")
    open(real, "w").write(real_config(port, node, a.rates))
    sim = os.path.join(a.out, "sim.toml")
    open(sim, "w").write(sim_config(a.profile, a.rates))

    results = {}
    for contention in [True, False]:
        cmd = [a.llmux, "simulate", "--config", sim, "--workload", w, "--json"]
        if not contention:
            cmd.append("--no-contention")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stderr)
        rep = json.loads(r.stdout)
        key = "sim" if contention else "sim_no_contention"
        results[key] = {g["name"]: {"rps": g["ok"] / rep["end_s"], "ttft_p50_ms": g["ttft"]["p50_ms"],
                                    "ttft_p99_ms": g["ttft"]["p99_ms"], "e2e_p50_ms": g["e2e"]["p50_ms"],
                                    "ok": g["ok"]} for g in rep["models"] + [rep["all"]]}

    log = open(os.path.join(a.out, "serve.log"), "w")
    srv = subprocess.Popen([a.llmux, "serve", "--config", real], stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.2)
        else:
            sys.exit("the real server never became ready; see serve.log")
        r = subprocess.run([a.llmux, "bench", "serve", "--url", f"http://127.0.0.1:{port}", "--workload", w,
                            "--json"], capture_output=True, text=True)
        print(r.stdout)
        real_rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        results["real"] = {j["model"]: {"rps": j["requests_per_s"], "ttft_p50_ms": j["ttft"]["p50_ms"],
                                        "ttft_p99_ms": j["ttft"]["p99_ms"], "e2e_p50_ms": j["e2e"]["p50_ms"],
                                        "ok": j["ok"]} for j in real_rows}
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        srv.wait(timeout=30)
    json.dump(results, open(os.path.join(a.out, "summary.json"), "w"), indent=1)
    print("| model | measure | real | simulated | sim / real | sim without contention |")
    print("|---|---|---|---|---|---|")
    for m in ["smol-a", "smol-b", "all"]:
        for k, label in [("rps", "req/s"), ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p99_ms", "TTFT p99 ms"),
                         ("e2e_p50_ms", "E2E p50 ms")]:
            re_, si, nc = results["real"][m][k], results["sim"][m][k], results["sim_no_contention"][m][k]
            print(f"| {m} | {label} | {re_:.2f} | {si:.2f} | {si / re_:.2f} | {nc:.2f} |")


if __name__ == "__main__":
    main()
