"""ADBS's KV quotas on a sim unit with two co-located models: the split starts
from the config's expected rates (hot 9 req/s, cold 1 req/s), and when the cold
model's requests need more than its quota while the hot model leaves its quota
unused, the pool lends them hot's idle blocks (quotas guarantee rather than
cap; a backlog quota move, a message flow inside the kv_manager visible in admin
state and /metrics, takes only what a lender holds above its share of the rate
split). The sim backend is simulated: no model math."""

from __future__ import annotations

import threading

import requests

from conftest import admin_state_http, free_port, one_state, sim_models, solo_config, start_serve, wait_until

ADMIN = "adm-adbs"
TOKEN_BLOCKS = 40  # of 16 tokens; "tiny" takes 2 layers x 4 KV heads = 8 blocks per token-block


def _serve(tmp_path, policy):
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / f"adbs-{policy}.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + sim_models("hot", "cold") + f"""

[[units]]
name = "u"
node = "solo"
time_scale = 3000.0
kv_blocks = {TOKEN_BLOCKS * 8}
policy = "{policy}"
quota_period_ms = 300
kv_floor_tokens = 16
models = [ {{ name = "hot", share = 0.5, rate = 9.0 }}, {{ name = "cold", share = 0.5, rate = 1.0 }} ]
""")
    return start_serve(["--config", cfg], tmp_path, f"serve-adbs-{policy}", __name__, http)


def _kv(base):
    return one_state(admin_state_http(base, ADMIN), "kv_manager")["state"]


def _burst(base, model, n, prompt_words=20, max_tokens=6):
    results = []

    def one(i):
        body = {"model": model, "prompt": " ".join(f"w{i}x{j}" for j in range(prompt_words)),
                "max_tokens": max_tokens}
        results.append(requests.post(f"{base}/v1/completions", json=body, timeout=60))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_quotas_start_from_rates_and_move_to_a_backlog(tmp_path):
    proc, base = _serve(tmp_path, "adbs")
    try:
        kv = _kv(base)
        assert kv["policy"] == "adbs" and kv["quotas"] == "adbs", kv
        q = {m: v["quota"] for m, v in kv["models"].items()}
        assert sum(q.values()) == kv["blocks_total"], q
        # Floors of one token-block each, the rest 9:1 (same KV size per token).
        assert q["hot"] > 6 * q["cold"] > 0, q
        assert kv["quota_moves"] == 0

        # Cold requests that need more than cold's quota at once; hot is idle.
        # The pool lends hot's idle quota to them (a guarantee, not a cap):
        # cold holds more than its quota, and hot keeps its share of the rate
        # split (a backlog move takes only quota above it).
        threads, results = _burst(base, "cold", 6)

        def borrowed(k):
            cold = k["models"]["cold"]
            return k if cold["used"] > cold["quota"] else None

        st = wait_until(lambda: borrowed(_kv(base)), 20, "cold to hold more blocks than its quota, lent by idle hot",
                        proc=proc)
        assert st["models"]["hot"]["quota"] >= q["hot"], st["models"]
        assert st["models"]["cold"]["quota"] + st["models"]["hot"]["quota"] == st["blocks_total"]
        for t in threads:
            t.join(timeout=60)
        assert len(results) == 6 and all(r.status_code == 200 for r in results), \
            [r.text for r in results if r.status_code != 200]
        # Larger than the pool less hot's floor: a clear 400 at once, whatever
        # the quotas; larger than cold's quota alone is not (quotas move).
        huge = {"model": "cold", "prompt": " ".join(f"z{j}" for j in range(400)), "max_tokens": 2}
        r = requests.post(f"{base}/v1/completions", json=huge, timeout=30)
        assert r.status_code == 400 and "needs more KV cache" in r.json()["error"]["message"], r.text
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'llmux:kv_quota_moves_total{unit="u/kv"}' in metrics, metrics
        assert 'llmux:kv_model_blocks_quota{unit="u/kv",model="cold"}' in metrics
    finally:
        proc.cleanup()


def test_fcfs_has_no_quotas(tmp_path):
    proc, base = _serve(tmp_path, "fcfs")
    try:
        kv = _kv(base)
        assert kv["policy"] == "fcfs" and kv["quotas"] == "none", kv
        assert all(v["quota"] == kv["blocks_total"] for v in kv["models"].values()), kv["models"]
    finally:
        proc.cleanup()
