"""How co-located models share a CPU unit's compute, on the real engine.

Split jobs (`[[units]] jobs = "split"`): each model's prefill job and decode
job run in their own partitions (worker threads) at the same time, over one
engine and one KV arena. stories260K and SmolLM2 share one 2-thread unit, so
four partitions of one thread each. Greedy outputs are llama.cpp's
(stories260K) and what a request generates alone (SmolLM2), whatever ran
beside it; a model's two jobs really computed at once; `set-share` moves one
job (MODEL/decode) or a whole model as messages while requests run, and
loses none of them.

Temporal multiplexing (`multiplex = "temporal"`): one step at a time on the
whole unit, the next picked by ADBS (prefill steps first, round-robin over
models): a new request of a third model is never queued behind the decode
steps of two streaming models, and no two steps ever compute at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests

from conftest import (
    SOURCE_DIR,
    free_port,
    models_ready,
    one_state,
    run_llmux,
    serve_cpu_unit,
    wait_until,
)

SHARED = SOURCE_DIR.parent / "shared"
STORIES = SHARED / "models" / "stories260K" / "stories260K.gguf"
GOLDEN = json.loads((SHARED / "golden" / "stories260K_greedy.json").read_text())
SMOL_FILE = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL, STORY = "SmolLM2-135M-Instruct", "stories260K"


def _unit(base):
    return one_state(requests.get(f"{base}/admin/state", timeout=10).json(), "gpu_unit")["state"]


def _scheduler(base, model):
    states = requests.get(f"{base}/admin/state", timeout=10).json()
    return next(s["state"] for s in states if s["kind"] == "scheduler" and s["state"]["model"] == model)


def _serve_cpu_unit(tmp_path, name, files: dict, unit_keys: str, models: str):
    if not SMOL_FILE.exists():
        pytest.skip(f"{SMOL_FILE} is missing: scripts/setup fetches it")
    return serve_cpu_unit(tmp_path, name, __name__, files, models, unit_keys)


def test_split_jobs_compute_at_once_and_lose_nothing(llmux_bin, tmp_path):
    proc, base, cfg = _serve_cpu_unit(
        tmp_path, "split", {STORY: STORIES, SMOL: SMOL_FILE}, 'jobs = "split"',
        f'{{ name = "{STORY}", share = 0.5 }}, {{ name = "{SMOL}", share = 0.5, decode_share = 0.25 }}')
    try:
        wait_until(lambda: models_ready(base, None, [STORY, SMOL]), 30, "both models to have a live replica",
                   proc=proc)
        unit = _unit(base)
        assert unit["partitions"] == 4, unit  # two jobs per model
        jobs = {m: {j: v["share"] for j, v in unit["models"][m]["jobs"].items()} for m in unit["models"]}
        # stories260K's decode_share defaults to half its share.
        assert jobs == {STORY: {"prefill": 0.25, "decode": 0.25}, SMOL: {"prefill": 0.25, "decode": 0.25}}, jobs

        # A long SmolLM2 completion decodes while SmolLM2 prompts prefill
        # beside it and every golden stories260K case runs at once.
        results = {}
        long_body = {"model": SMOL, "prompt": "Once upon a time, in a quiet village,", "max_tokens": 120,
                     "temperature": 0}
        prompts = [
            "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz "
            "combined movable metal type, oil-based ink and a wooden screw press. Explain in two sentences",
            "A recipe for bread needs flour, water, salt and yeast. Knead the dough, let it rise for an hour, "
            "shape it, let it rise again and bake it hot. What makes the crust brown?",
            "Rivers carry sediment from mountains to the sea; where they slow down, in deltas and on flood "
            "plains, the sediment settles. Name one famous delta and say where it is.",
        ]

        def post(key, path, body):
            results[key] = requests.post(f"{base}{path}", timeout=180, json=body)

        long_t = threading.Thread(target=post, args=("long", "/v1/completions", long_body))
        long_t.start()
        wait_until(lambda: _scheduler(base, SMOL)["generated_tokens"] > 0, 60, "the long SmolLM2 request to decode",
                   interval=0.01)
        threads = [threading.Thread(target=post, args=(f"p{i}", "/v1/completions",
                                                       {"model": SMOL, "prompt": p, "max_tokens": 16,
                                                        "temperature": 0}))
                   for i, p in enumerate(prompts)]
        threads += [threading.Thread(target=post, args=(f"s{i}", "/v1/completions",
                                                        {"model": STORY, "prompt": c["prompt"], "temperature": 0,
                                                         "max_tokens": len(c["completion_tokens"])}))
                    for i, c in enumerate(GOLDEN["cases"])]
        for t in threads:
            t.start()

        # Meanwhile, share moves as messages: SmolLM2's decode job cannot
        # take half the unit while stories260K holds half ...
        wait_until(lambda: _scheduler(base, SMOL)["running"] > 1, 60, "SmolLM2 prompts to join the long one",
                   interval=0.01)
        r = run_llmux(["admin", "--config", cfg, "set-share", "cpu0", f"{SMOL}/decode", "0.5"])
        assert r.returncode == 1 and "sum" in r.stderr, r.stderr
        # ... so stories260K shrinks to a quarter (both its jobs, in proportion),
        r = run_llmux(["admin", "--config", cfg, "set-share", "cpu0", STORY, "0.25"])
        assert r.returncode == 0, r.stderr
        # and then it can.
        r = run_llmux(["admin", "--config", cfg, "set-share", "cpu0", f"{SMOL}/decode", "0.5"])
        assert r.returncode == 0, r.stderr

        for t in [long_t, *threads]:
            t.join(timeout=240)
        for i, c in enumerate(GOLDEN["cases"]):
            assert results[f"s{i}"].status_code == 200, results[f"s{i}"].text
            assert results[f"s{i}"].json()["choices"][0]["text"] == c["completion_text"], c["prompt"]
        assert results["long"].status_code == 200, results["long"].text
        assert results["long"].json()["usage"]["completion_tokens"] == 120
        for i in range(len(prompts)):
            assert results[f"p{i}"].status_code == 200, results[f"p{i}"].text

        unit = _unit(base)
        smol = unit["models"][SMOL]
        # SmolLM2's prefill and decode steps computed at the same time.
        assert smol["steps_at_once_max"] == 2, smol
        assert smol["jobs"]["prefill"]["steps"] > 0 and smol["jobs"]["decode"]["steps"] > 0, smol
        jobs = {m: {j: v["share"] for j, v in unit["models"][m]["jobs"].items()} for m in unit["models"]}
        assert jobs == {STORY: {"prefill": 0.125, "decode": 0.125}, SMOL: {"prefill": 0.25, "decode": 0.5}}, jobs
        assert {m: unit["models"][m]["share"] for m in unit["models"]} == {STORY: 0.25, SMOL: 0.75}
        assert smol["share_moves"] == 1 and unit["models"][STORY]["share_moves"] == 1, unit["models"]

        # Each SmolLM2 request generates alone what it generated beside the others.
        alone = requests.post(f"{base}/v1/completions", timeout=180, json=long_body)
        assert alone.json()["choices"][0]["text"] == results["long"].json()["choices"][0]["text"]
        for i, p in enumerate(prompts):
            again = requests.post(f"{base}/v1/completions", timeout=120,
                                  json={"model": SMOL, "prompt": p, "max_tokens": 16, "temperature": 0})
            assert again.json()["choices"][0]["text"] == results[f"p{i}"].json()["choices"][0]["text"], p

        # Clear refusals for job targets.
        r = run_llmux(["admin", "--config", cfg, "set-share", "cpu0", "nope/decode", "0.1"])
        assert r.returncode == 1 and "not on this unit" in r.stderr, r.stderr
        r = run_llmux(["admin", "--config", cfg, "set-share", "cpu0", f"{SMOL}/prefill", "0"])
        assert r.returncode == 1 and "(0, 1]" in r.stderr, r.stderr

        # Nothing is held once everything ended.
        kv = one_state(requests.get(f"{base}/admin/state", timeout=10).json(), "kv_manager")["state"]
        assert all(v["sequences"] == 0 and v["used"] == 0 for v in kv["models"].values()), kv
    finally:
        proc.cleanup()


def test_temporal_cpu_unit_steps_one_at_a_time_prefill_first(llmux_bin, tmp_path):
    # Two SmolLM2 entries (same file, each its own scheduler and KV) stream;
    # stories260K gets golden prompts one after another.
    proc, base, cfg = _serve_cpu_unit(
        tmp_path, "temporal", {"a": SMOL_FILE, "b": SMOL_FILE, "c": STORIES},
        'multiplex = "temporal"\npolicy = "adbs"',
        '{ name = "a", share = 0.3 }, { name = "b", share = 0.3 }, { name = "c", share = 0.3 }')
    try:
        wait_until(lambda: models_ready(base, None, ["a", "b", "c"]), 30, "three live replicas", proc=proc)
        long_results = {}
        body = {"prompt": "Once upon a time, in a quiet village,", "max_tokens": 400, "temperature": 0}

        def stream(model):
            long_results[model] = requests.post(f"{base}/v1/completions", timeout=180, json={"model": model, **body})

        longs = [threading.Thread(target=stream, args=(m,)) for m in "ab"]
        for t in longs:
            t.start()
        wait_until(lambda: all(_scheduler(base, m)["generated_tokens"] >= 5 for m in "ab"), 60,
                   "a and b to decode", interval=0.01)
        shorts = []
        for case in GOLDEN["cases"][:4]:
            shorts.append((case, requests.post(f"{base}/v1/completions", timeout=120, json={
                "model": "c", "prompt": case["prompt"], "temperature": 0,
                "max_tokens": len(case["completion_tokens"])})))
        still_decoding = all(_scheduler(base, m)["running"] == 1 for m in "ab")
        for t in longs:
            t.join(timeout=180)
        assert still_decoding, "a and b finished before c's requests did: too light to test the order"
        for case, r in shorts:
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == case["completion_text"], case["prompt"]
        assert all(long_results[m].status_code == 200 for m in "ab"), long_results
        texts = {m: long_results[m].json()["choices"][0]["text"] for m in "ab"}
        assert texts["a"] == texts["b"], texts  # one file, one prompt: interleaving changed nothing

        unit = _unit(base)
        assert unit["multiplex"] == "temporal" and unit["order"] == "adbs", unit
        # One step at a time on the whole unit (each step gets both threads).
        assert unit["concurrent_steps_max"] == 1, unit
        models = unit["models"]
        # c's prefill steps were queued beside a's and b's decode steps and
        # went first: each waited behind no grant.
        assert models["c"]["prefill_grants"] >= 4, models
        assert models["c"]["prefill_waited_max"] == 0, models
        assert all(models[m]["decode_grants"] > 0 for m in "abc"), models
        alone = requests.post(f"{base}/v1/completions", timeout=180, json={"model": "a", **body})
        assert alone.json()["choices"][0]["text"] == texts["a"]
    finally:
        proc.cleanup()
