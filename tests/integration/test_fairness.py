"""Fairness under ADBS: two co-located models with request rates 10:1 on one
sim unit (simulated: the cost model times each step, no model math). The hot
model alone asks for about 1.5x the unit's KV pool; the cold model's requests
must still finish within an SLO set from its own unloaded latency, and each
model's KV use per unit of request rate must stay within a stated factor of
the other's.

Setup and why:
  * One `llmux serve` with unit "u" (policy "adbs", a pool of POOL_BLOCKS) and
    two "tiny" models of the same shape, so a token of either costs the same
    KV. The config's expected rates are 10 and 1; the load below keeps that
    ratio (only the ratio matters for the quota split).
  * Every request is 30 prompt tokens + MAX_TOKENS generated: 3 token-blocks
    = 24 physical blocks at its largest, ~16 steps of ~41 ms (step time x
    TIME_SCALE), ~0.67 s alone. Step time does not depend on batch size for
    "tiny", so the pool, not compute, is what the models contend for.
  * Open-loop Poisson arrivals (fixed seed) for WINDOW_S: hot at HOT_RATE,
    cold at HOT_RATE / 10. Hot's demand, ~26 req/s x 0.67 s x ~22 blocks
    ~= 380 blocks, exceeds the 256-block pool, so its requests queue and
    get preempted; cold's, ~38 blocks, fits.
  * kv_floor_tokens = four cold requests. A purely rate-proportional quota
    would give cold 1/11 of the pool, about one request, which its Poisson
    bursts exceed while hot leaves nothing spare (unit_policy.hpp's fairness
    notes: size the floor for a low-rate model's concurrency; a trial with a
    one-request floor took cold's p90 from ~1.7x to 3.6x baseline). So cold's
    quota here is its floor and hot's the rest; with hot always backlogged
    and cold at its floor, no quota moves are expected.
  * http_threads = 256: the edge holds one thread per open request and hot's
    backlog peaks near 100. With the default 64, cold requests queue behind
    hot ones at the edge (cold p90 6x baseline in a trial); that is not the
    unit's scheduling, which this test is about.

What is asserted, and the bounds:
  * Nothing lost: every request of both models answers 200 with all
    MAX_TOKENS tokens, /metrics counts them, and afterwards neither model
    holds KV.
  * Contention was real: the kv_manager saw hot requests waiting for blocks,
    the pool was at least 90% used, and hot's p90 latency is at least
    HOT_P90_MIN = 6x baseline.
  * Cold SLO: baseline = median of three cold requests on the idle unit;
    loaded cold p90 <= COLD_P90_SLO = 4x baseline and every cold request
    <= COLD_MAX_SLO = 6x baseline. Measured: cold p90 ~1.3x (1.5-1.6x since
    a borrower's running sequences may grow into a waiting model's idle
    guarantee, which only holds back its new sequences), max ~1.6x, hot p90
    ~11x, cold preempted 0-2 times a run (3-6 since then). (Before a model with
    nothing waiting kept a token-block of its unused quota per running
    sequence, hot borrowed all of it, cold sequences were preempted 5-12
    times a run under their own quota, and cold p90 reached 2.9x.) A cold model starved behind hot (one FIFO for
    both, or hot's backlog holding the blocks cold's quota guarantees)
    would wait as hot does, above HOT_P90_MIN: the test would fail, as it
    did with the edge's 64 threads above.
  * KV by rate: mean physical blocks held while arrivals run, divided by the
    model's request rate (blocks per req/s), for cold over hot, within
    [KV_RATIO_MIN, KV_RATIO_MAX] = [1/2, 3]. Same request shape, so a split in
    proportion to rate gives 1; hot's overload raises it (hot cannot hold
    more than its quota, so its blocks per offered req/s fall) and so does
    cold's floor: measured 2.0-2.4. A starved cold model holds ~nothing
    (ratio -> 0); a cold model hogging the pool at 1/10 of the rate would
    give >10.

Not compared with policy "fcfs": its cold p90 was worse in every paired
trial, but only by 1.3-3x, while adbs's own cold p90 varied 1.7x between
runs of one seed: too close to assert without flakiness.

Wall time: ~18 s (8 s of arrivals, ~7 s for hot's backlog to drain).
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time

import requests

from conftest import (admin_state_http, free_port, metric, one_state, scrape_metrics, sim_models, solo_config,
                      start_serve, wait_until)

ADMIN = "adm-fair"
TIME_SCALE = 1000.0  # "tiny" on the sim h100: ~41 us a step (mostly overhead) -> ~41 ms
MAX_TOKENS = 16
PROMPT_BYTES = 29  # + BOS: 30 prompt tokens (the sim tokenizer counts one token per byte)
BLOCKS_PER_TOKEN_BLOCK = 8  # "tiny": 2 layers x 4 KV heads
REQUEST_BLOCKS = 3 * BLOCKS_PER_TOKEN_BLOCK  # 46 tokens -> 3 token-blocks of 16
POOL_BLOCKS = 256  # ~10 requests at their largest
FLOOR_TOKENS = 4 * 3 * 16  # four cold requests at their largest

HOT_RATE = 26.0  # req/s; cold gets a tenth
COLD_RATE = HOT_RATE / 10
WINDOW_S = 8.0
SEED = 1
SAMPLE_PERIOD_S = 0.15

COLD_P90_SLO = 4.0  # x baseline
COLD_MAX_SLO = 6.0  # x baseline
HOT_P90_MIN = 1.5 * COLD_P90_SLO  # x baseline: hot really queued
KV_RATIO_MIN, KV_RATIO_MAX = 0.5, 3.0


def _serve(tmp_path):
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "fairness.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"\nhttp_threads = 256') + sim_models("hot", "cold") + f"""

[[units]]
name = "u"
node = "solo"
time_scale = {TIME_SCALE}
kv_blocks = {POOL_BLOCKS}
policy = "adbs"
quota_period_ms = 500
kv_floor_tokens = {FLOOR_TOKENS}
models = [ {{ name = "hot", share = 0.5, rate = 10.0 }}, {{ name = "cold", share = 0.5, rate = 1.0 }} ]
""")
    return start_serve(["--config", cfg], tmp_path, "serve-fairness", __name__, http)


def _kv(base, timeout=10.0):
    return one_state(admin_state_http(base, ADMIN, timeout=timeout), "kv_manager")["state"]


def _complete(base, model, i):
    """One completion; returns (HTTP status or None, seconds, usage or error text)."""
    prompt = f"{model} {i:05d} ".ljust(PROMPT_BYTES, "x")  # unique prefix: no prefix-cache hits
    start = time.monotonic()
    try:
        r = requests.post(f"{base}/v1/completions", json={"model": model, "prompt": prompt,
                                                          "max_tokens": MAX_TOKENS}, timeout=60)
    except requests.RequestException as e:
        return None, time.monotonic() - start, repr(e)
    took = time.monotonic() - start
    return r.status_code, took, r.json().get("usage") if r.status_code == 200 else r.text[:300]


def _poisson(rng, rate, window):
    t, out = rng.expovariate(rate), []
    while t < window:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def _p90(values):
    s = sorted(values)
    return s[math.ceil(0.9 * len(s)) - 1]


def _fmt(d):
    return {k: round(v, 1) for k, v in d.items()}


def test_cold_model_keeps_its_slo_and_kv_share_beside_a_10x_hot_model(tmp_path):
    proc, base = _serve(tmp_path)
    try:
        kv = _kv(base)
        assert kv["policy"] == "adbs" and kv["quotas"] == "adbs", kv
        quota = {m: v["quota"] for m, v in kv["models"].items()}
        # Cold's rate share (1/11 of the pool) is below its floor: the floor
        # holds four of its requests; hot gets the rest.
        assert quota == {"cold": 4 * REQUEST_BLOCKS, "hot": POOL_BLOCKS - 4 * REQUEST_BLOCKS}, quota

        # Baseline: the cold model alone on the unit.
        alone = [_complete(base, "cold", 90000 + i) for i in range(3)]
        assert all(st == 200 and u["completion_tokens"] == MAX_TOKENS for st, _, u in alone), alone
        baseline = statistics.median(t for _, t, _ in alone)

        rng = random.Random(SEED)
        arrivals = sorted([(t, "hot") for t in _poisson(rng, HOT_RATE, WINDOW_S)]
                          + [(t, "cold") for t in _poisson(rng, COLD_RATE, WINDOW_S)])
        sent = {"hot": 0, "cold": 0}
        for _, model in arrivals:
            sent[model] += 1
        results = {"hot": [], "cold": []}
        samples, sample_errors = [], []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    k = _kv(base, timeout=5)
                    models = {m: (v["used"], v["backlog"]) for m, v in k["models"].items()}
                    samples.append((time.monotonic(), sum(u for u, _ in models.values()), models))
                except Exception as e:  # noqa: BLE001 - counted and reported below
                    sample_errors.append(repr(e))
                stop.wait(SAMPLE_PERIOD_S)

        def fire(model, i):
            results[model].append(_complete(base, model, i))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = []
        start = time.monotonic()
        # Open loop: each request goes at its scheduled time whatever the
        # server is doing (sleeping here is the arrival process, not a wait).
        for i, (t, model) in enumerate(arrivals):
            delay = start + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=fire, args=(model, i), daemon=True)
            th.start()
            threads.append(th)
        arrivals_end = time.monotonic()
        deadline = arrivals_end + 45
        for th in threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        stop.set()
        sampler.join(timeout=10)
        assert not any(th.is_alive() for th in threads), "requests still running 45 s after the last arrival"

        # Nothing lost.
        for model in ("hot", "cold"):
            res = results[model]
            assert len(res) == sent[model], (model, len(res), sent[model])
            bad = [r for r in res if r[0] != 200 or r[2]["completion_tokens"] != MAX_TOKENS]
            assert not bad, f"{model}: {len(bad)} of {len(res)} requests failed: {bad[:5]}"
        metrics = scrape_metrics(base)
        assert metric(metrics, "llmux:requests_total", model="cold", status="200") == sent["cold"] + 3
        assert metric(metrics, "llmux:requests_total", model="hot", status="200") == sent["hot"]

        window = [s for s in samples if start <= s[0] <= arrivals_end]
        assert len(window) >= WINDOW_S / SAMPLE_PERIOD_S / 3, \
            f"{len(window)} KV samples while arrivals ran; errors: {sample_errors[:3]}"
        lat = {m: [t for _, t, _ in results[m]] for m in results}
        used = {m: statistics.mean(s[2][m][0] for s in window) for m in results}
        span = arrivals_end - start
        kv_per_rate = {m: used[m] / (sent[m] / span) for m in results}  # blocks per req/s
        ratio = kv_per_rate["cold"] / kv_per_rate["hot"]
        summary = (f"baseline {baseline:.3f}s; sent {sent}; "
                   f"cold p90 {_p90(lat['cold']):.2f}s max {max(lat['cold']):.2f}s; "
                   f"hot p90 {_p90(lat['hot']):.2f}s max {max(lat['hot']):.2f}s; "
                   f"mean blocks used {_fmt(used)}; blocks per req/s {_fmt(kv_per_rate)}; "
                   f"cold/hot {ratio:.2f}; "
                   f"preemptions cold {metric(metrics, 'llmux:num_preemptions_total', model='cold')} "
                   f"hot {metric(metrics, 'llmux:num_preemptions_total', model='hot')}")
        print(summary)

        # The contention was real, else the SLO below proves nothing.
        assert any(s[2]["hot"][1] > 0 for s in window), f"hot never waited for KV blocks: {summary}"
        assert max(s[1] for s in window) >= 0.9 * POOL_BLOCKS, f"the pool never filled: {summary}"
        assert _p90(lat["hot"]) >= HOT_P90_MIN * baseline, f"hot was not overloaded: {summary}"

        # The cold model is not starved behind the hot one.
        assert _p90(lat["cold"]) <= COLD_P90_SLO * baseline, f"cold p90 over its SLO: {summary}"
        assert max(lat["cold"]) <= COLD_MAX_SLO * baseline, f"a cold request over its SLO: {summary}"

        # KV held in proportion to request rate, within the stated factor.
        assert KV_RATIO_MIN <= ratio <= KV_RATIO_MAX, f"KV per req/s out of bounds: {summary}"

        # Every sequence gave its blocks back.
        wait_until(lambda: all(v["used"] == 0 and v["sequences"] == 0
                               for v in _kv(base)["models"].values()),
                   10, "both models to hold no KV blocks after the load", proc=proc)
    finally:
        proc.cleanup()
