"""ADBS's step order on a temporally multiplexed unit (`multiplex = "temporal"`,
sim backend: simulated, no model math): one step at a time on the whole unit,
and when it frees up, the unit's arbiter picks the next queued step. Under
ADBS a step with prefill work goes first (round-robin over models), so a new
request of a third model is never queued behind the decode steps of two
models that are streaming; under FCFS it waits for the step that arrived
before it. What the unit granted, and how many grants each step waited
behind, is in its admin state."""

from __future__ import annotations

import threading

import requests

from conftest import admin_state_http, free_port, one_state, sim_models, solo_config, start_serve, wait_until

ADMIN = "adm-order"


def _serve(tmp_path, policy):
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / f"order-{policy}.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + sim_models("a", "b", "c") + f"""
[[units]]
name = "u"
node = "solo"
time_scale = 250.0
multiplex = "temporal"
policy = "{policy}"
models = [ {{ name = "a", share = 0.3 }}, {{ name = "b", share = 0.3 }}, {{ name = "c", share = 0.3 }} ]
""")
    return start_serve(["--config", cfg], tmp_path, f"serve-order-{policy}", __name__, http)


def _states(base):
    st = admin_state_http(base, ADMIN)
    sched = {s["state"]["model"]: s["state"] for s in st if s["kind"] == "scheduler"}
    return one_state(st, "gpu_unit")["state"], sched


def _run(tmp_path, policy):
    """Streams on a and b, and meanwhile four short requests to c, one after
    another. Returns the unit's state afterwards and c's results."""
    proc, base = _serve(tmp_path, policy)
    try:
        long_results = {}

        def stream(model):
            long_results[model] = requests.post(f"{base}/v1/completions", timeout=120, json={
                "model": model, "prompt": "one two three four", "max_tokens": 150})

        longs = [threading.Thread(target=stream, args=(m,)) for m in "ab"]
        for t in longs:
            t.start()
        # Both past their prompts and decoding.
        wait_until(lambda: all(s["generated_tokens"] >= 5 for m, s in _states(base)[1].items() if m in "ab"),
                   30, "a and b to decode", interval=0.01)
        shorts = []
        for i in range(4):
            shorts.append(requests.post(f"{base}/v1/completions", timeout=60, json={
                "model": "c", "prompt": " ".join(f"w{i}x{j}" for j in range(40)), "max_tokens": 2}))
        unit, sched = _states(base)
        still_decoding = all(sched[m]["running"] == 1 for m in "ab")
        for t in longs:
            t.join(timeout=120)
        assert all(long_results[m].status_code == 200 for m in "ab"), long_results
        assert all(r.status_code == 200 for r in shorts), [r.text for r in shorts]
        return unit, still_decoding
    finally:
        proc.cleanup()


def test_adbs_runs_a_prefill_before_queued_decodes(tmp_path):
    unit, still_decoding = _run(tmp_path, "adbs")
    assert still_decoding, "a and b finished before c's requests did: the load is too light to test order"
    assert unit["multiplex"] == "temporal" and unit["order"] == "adbs", unit
    # One step at a time on the whole unit.
    assert unit["steps_in_flight_max"] == 1, unit
    models = unit["models"]
    # c's prefill steps arrived while a decode step of a or b was queued, and
    # were granted before it: they waited behind no grant.
    assert models["c"]["prefill_grants"] >= 4, models
    assert models["c"]["prefill_waited_max"] == 0, models
    # a and b each had a prefill step, then decode steps.
    assert all(models[m]["decode_grants"] > 0 for m in "ab"), models


def test_fcfs_queues_a_prefill_behind_earlier_decodes(tmp_path):
    unit, still_decoding = _run(tmp_path, "fcfs")
    assert still_decoding
    assert unit["order"] == "fcfs" and unit["steps_in_flight_max"] == 1, unit
    # The decode step of a or b queued before c's prefill step went first.
    assert unit["models"]["c"]["prefill_waited_max"] >= 1, unit["models"]
