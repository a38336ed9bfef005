"""Preemption by recompute on the real CPU engine: stories260K in a KV pool too
small for every golden case at once. With `kv_growth = "on_demand"` all five cases
are admitted, outgrow the pool and preempt each other; each preempted one later
prefills its prompt and its generated tokens again and carries on. The greedy
continuations must still be llama.cpp's (shared/golden/stories260K_greedy.json),
and the pool must be whole again afterwards."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from conftest import (SOURCE_DIR, admin_state_http, free_port, one_state, solo_config, start_serve,
                      wait_until)

SHARED = SOURCE_DIR.parent / "shared"
MODEL = SHARED / "models" / "stories260K" / "stories260K.gguf"
GOLDEN = json.loads((SHARED / "golden" / "stories260K_greedy.json").read_text())
ADMIN = "adm-preempt"
LAYERS, KV_HEADS = 5, 4  # stories260K: a token-block takes 5 × 4 head-blocks
POOL_TOKEN_BLOCKS = 6    # 96 tokens: one case (<= 13 + 48 tokens, 4 blocks) fits, five do not


def _serve(tmp_path_factory, growth):
    d = tmp_path_factory.mktemp(f"preempt-{growth}")
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "preempt.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + f"""
[[models]]
name = "stories260K"
backend = "cpu"
file = "{MODEL}"

[[units]]
name = "cpu0"
node = "solo"
backend = "cpu"
threads = 1
block_tokens = 16
kv_blocks = {POOL_TOKEN_BLOCKS * LAYERS * KV_HEADS}
kv_growth = "{growth}"
models = [ {{ name = "stories260K", share = 1.0 }} ]
""")
    return start_serve(["--config", cfg], d, f"serve-preempt-{growth}", __name__, http)


def _all_cases_at_once(base):
    results = {}

    def run(i, case):
        body = {"model": "stories260K", "prompt": case["prompt"],
                "max_tokens": len(case["completion_tokens"]), "temperature": 0}
        results[i] = requests.post(f"{base}/v1/completions", json=body, timeout=120)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(GOLDEN["cases"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    return results


def _scheduler(base):
    return one_state(admin_state_http(base, ADMIN), "scheduler")["state"]


@pytest.mark.parametrize("growth", ["on_demand", "reserve"])
def test_greedy_outputs_survive_a_pool_too_small_for_all(tmp_path_factory, growth):
    proc, base = _serve(tmp_path_factory, growth)
    try:
        results = _all_cases_at_once(base)
        for i, case in enumerate(GOLDEN["cases"]):
            assert results[i].status_code == 200, results[i].text
            body = results[i].json()
            assert body["choices"][0]["text"] == case["completion_text"], (growth, case["prompt"])
            assert body["choices"][0]["finish_reason"] == "length"
        st = wait_until(lambda: (lambda s: s if s["running"] == 0 and s["waiting"] == 0 else None)(
            _scheduler(base)), 10, "the scheduler to be idle")
        assert st["kv_token_blocks_held"] == 0, st
        kv = one_state(admin_state_http(base, ADMIN), "kv_manager")["state"]
        # The pool is whole: nothing held by a sequence, every block free
        # (the prefix cache's unreferenced ones among them, evictable).
        assert kv["blocks_used"] == 0, kv
        assert kv["blocks_free"] == kv["blocks_total"], kv
        assert kv["models"]["stories260K"]["used"] == 0, kv
        assert kv["models"]["stories260K"]["sequences"] == 0, kv
        if growth == "on_demand":
            # The pool really was outgrown: sequences were preempted and recomputed.
            assert st["preemptions"] > 0, st
        else:
            # Reserving prompt + max_tokens admits fewer at once and never preempts.
            assert st["preemptions"] == 0, st
    finally:
        proc.cleanup()
