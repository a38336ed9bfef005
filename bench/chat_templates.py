#!/usr/bin/env python3
"""What rendering a model's chat template costs per request: llmux's C++ Jinja
engine (`llmux bench chat-template`, engine/jinja) beside Python's jinja2 set up as
transformers sets it up (what vLLM renders with), on the same templates and
contexts, in one run on one machine.

The templates and contexts are tests/data/chat_templates' (the models' own
templates; `system_multi_turn` is a four-turn chat, `tool_round_trip` a chat with
two tools, a call and its result). Each side parses once, then renders R times;
the figure is the median render in microseconds, best of `--repeat` interleaved
runs. The C++ side also converts the JSON context to its values on every render,
as the edge does. Writes OUT/chat_templates.md and .json.

Usage: python3 bench/chat_templates.py [--llmux build/llmux] [--out bench/results/chat_templates]
       [--reps 2000] [--repeat 3]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEMPLATES = os.path.join(ROOT, "tests", "data", "chat_templates")
sys.path.insert(0, TEMPLATES)
from make_reference import environment  # noqa: E402  transformers' jinja2 setup

CASES = ["system_multi_turn", "tool_round_trip"]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def jinja2_us(source, context, reps):
    t = environment().from_string(source)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        t.render(**context)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return times[len(times) // 2]


def llmux_us(llmux, template_path, context, reps):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(context, f)
        ctx = f.name
    try:
        out = subprocess.run([llmux, "bench", "chat-template", "--template", template_path, "--context", ctx,
                              "--reps", str(reps)], check=True, capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(ctx)
    return json.loads(out.stdout)["render_us_median"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmux", default=os.path.join(ROOT, "build", "llmux"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "chat_templates"))
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    ref = json.load(open(os.path.join(TEMPLATES, "reference.json")))
    rows = []
    for c in ref["cases"]:
        if c["case"] not in CASES or "output" not in c or c["template"] == "features.jinja":
            continue
        path = os.path.join(TEMPLATES, c["template"])
        source = open(path).read()
        ours, theirs = [], []
        for _ in range(a.repeat):  # interleaved: both see the same machine state
            ours.append(llmux_us(a.llmux, path, c["context"], a.reps))
            theirs.append(jinja2_us(source, c["context"], a.reps))
        rows.append({"template": c["template"], "case": c["case"], "output_bytes": len(c["output"].encode()),
                     "llmux_us": min(ours), "jinja2_us": min(theirs)})
        print(f"{c['template']:32} {c['case']:18} llmux {min(ours):8.1f} us   jinja2 {min(theirs):8.1f} us", flush=True)
    os.makedirs(a.out, exist_ok=True)
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "reps": a.reps, "repeat": a.repeat,
            "command": "python3 bench/chat_templates.py " + " ".join(sys.argv[1:])}
    with open(os.path.join(a.out, "chat_templates.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(a.out, "chat_templates.md"), "w") as f:
        f.write(f"Chat template render time per request, median of {a.reps} renders, best of {a.repeat} "
                f"({meta['cpu']}, {meta['date']})\n\n")
        f.write("| template | conversation | output bytes | llmux (C++) µs | jinja2 (transformers' setup) µs | ratio |\n")
        f.write("|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['template']} | {r['case']} | {r['output_bytes']} | {r['llmux_us']:.1f} | "
                    f"{r['jinja2_us']:.1f} | {r['jinja2_us'] / r['llmux_us']:.1f}× |\n")
    print(f"wrote {a.out}/chat_templates.md")


if __name__ == "__main__":
    main()
