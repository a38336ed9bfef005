"""Router policies end to end (issue 15): a real `llmux serve` with three sim
units, each model routed by its own policy from the config, observed from the
outside — which replica's scheduler finished each request — and in the
router's admin state.

* session: requests naming a session (X-Session-ID, else the OpenAI `user`
  field) all go to one replica; sessions spread over replicas;
* prefix_aware: requests that share a long prompt prefix go where the first
  one went; another prefix goes elsewhere;
* slo_aware: a request no replica is predicted to start within the model's
  ttft_slo_ms gets 429 at once (counted), one with room is served.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests

from conftest import (admin_state_http, assert_openai_error, free_port, one_state, solo_config,
                      start_serve, wait_until)

ADMIN = "routing-admin"
UNITS = ("u0", "u1", "u2")


@pytest.fixture(scope="module")
def cluster(llmux_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("routing")
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "routing.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + """
[router]
policy = "least_loaded"

[[models]]
name = "sess"
backend = "sim"
architecture = "tiny"
router_policy = "session"

[[models]]
name = "pfx"
backend = "sim"
architecture = "tiny"
router_policy = "prefix_aware"

# A 7B's prefill on an H100, 50 times slower: about 1,400 prompt tokens/s.
[[models]]
name = "tight"
backend = "sim"
architecture = "llama-7b"
router_policy = "slo_aware"
ttft_slo_ms = 20

[[models]]
name = "roomy"
backend = "sim"
architecture = "llama-7b"
router_policy = "slo_aware"
ttft_slo_ms = 5000
""" + "".join(f"""
[[units]]
name = "{u}"
node = "solo"
models = [ {{ name = "sess", share = 0.5 }}, {{ name = "pfx", share = 0.5 }} ]
""" for u in UNITS) + """
[[units]]
name = "slow"
node = "solo"
time_scale = 50.0
models = [ { name = "tight", share = 0.5 }, { name = "roomy", share = 0.5 } ]
""")
    proc, base = start_serve(["--config", cfg], d, "serve-routing", __name__, http)
    try:
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 20,
                   "every replica up", proc=proc)
        yield SimpleNamespace(base=base, proc=proc)
    finally:
        proc.cleanup()


def finished(base: str, model: str) -> dict[str, int]:
    states = admin_state_http(base, ADMIN)
    return {u: one_state(states, "scheduler", name=f"{u}/{model}")["state"]["finished"] for u in UNITS}


def served_by(base: str, model: str, body: dict, headers: dict | None = None) -> str:
    """Sends one request and returns the unit whose scheduler finished it."""
    before = finished(base, model)
    r = requests.post(f"{base}/v1/completions", json={"model": model, "max_tokens": 2, **body},
                      headers=headers or {}, timeout=10)
    assert r.status_code == 200, r.text
    after = {}

    def one_more():
        nonlocal after
        after = finished(base, model)
        return sum(after.values()) == sum(before.values()) + 1

    wait_until(one_more, 10, f"the {model} request counted as finished")
    return next(u for u in UNITS if after[u] == before[u] + 1)


def router_state(base: str) -> dict:
    return one_state(admin_state_http(base, ADMIN), "router")["state"]


def test_each_model_has_its_configured_policy(cluster):
    st = router_state(cluster.base)
    assert st["policy"] == "least_loaded"
    assert st["model_policies"] == {"sess": "session", "pfx": "prefix_aware", "tight": "slo_aware",
                                    "roomy": "slo_aware"}


def test_a_session_stays_on_one_replica_and_sessions_spread(cluster):
    where: dict[str, set[str]] = {}
    names = ["alice", "bob", "carol"]
    for turn in range(3):
        # A different order each turn: no rotation or load pattern can
        # keep the sessions together by chance.
        for s in names[turn:] + names[:turn]:
            u = served_by(cluster.base, "sess", {"prompt": f"turn {turn} of {s}"}, {"X-Session-ID": s})
            where.setdefault(s, set()).add(u)
    assert all(len(units) == 1 for units in where.values()), where
    # New sessions go to the replica with the fewest outstanding tokens:
    # three sessions, one after the other on an idle cluster, take three replicas.
    assert len({next(iter(units)) for units in where.values()}) == 3, where
    # Without the header, the OpenAI `user` field names the session.
    by_user = {served_by(cluster.base, "sess", {"prompt": f"q{i}", "user": "dave"}) for i in range(3)}
    assert len(by_user) == 1, by_user
    st = router_state(cluster.base)
    assert st["sessions"] == 4
    hits = sum(r["affinity_hits"] for r in st["replicas"] if r["model"] == "sess")
    assert hits == 3 * 2 + 2, st["replicas"]  # every turn after a session's first


def test_requests_sharing_a_prefix_follow_it(cluster):
    doc = "You are a careful assistant. Answer from this manual only. " * 6  # ~360 bytes: 22 blocks
    first = served_by(cluster.base, "pfx", {"prompt": doc + "Question 0?"})
    for i in range(1, 5):
        assert served_by(cluster.base, "pfx", {"prompt": doc + f"Question {i}?"}) == first
    # Another prefix, with the cluster idle again: the replica dispatched to least.
    other = served_by(cluster.base, "pfx", {"prompt": "A different system prompt entirely. " * 8})
    assert other != first
    reps = {r["replica"]: r for r in router_state(cluster.base)["replicas"]}
    mine = reps[f"{first}/pfx"]
    assert mine["affinity_hits"] == 4
    assert mine["prefix_blocks_matched"] >= 4 * 20, mine  # each matched the document's blocks
    assert mine["prefix_blocks_known"] > 0
    # The scheduler found those prefixes in its unit's cache: prefill skipped.
    sched = one_state(admin_state_http(cluster.base, ADMIN), "scheduler", name=f"{first}/pfx")["state"]
    assert sched["prompt_tokens_cached"] >= 4 * 16 * 20, sched


def test_slo_aware_refuses_at_once_what_no_replica_can_start_in_time(cluster):
    prompt = "x" * 400  # ~400 tokens: ~300 ms of prefill on the slow unit
    r = requests.post(f"{cluster.base}/v1/completions",
                      json={"model": "tight", "prompt": prompt, "max_tokens": 2}, timeout=10)
    assert_openai_error(r, 429, message_contains="20 ms budget")
    assert r.headers.get("Retry-After")
    assert router_state(cluster.base)["refused_over_deadline"] == 1
    # The same prompt with a 5 s budget is served.
    r = requests.post(f"{cluster.base}/v1/completions",
                      json={"model": "roomy", "prompt": prompt, "max_tokens": 2}, timeout=20)
    assert r.status_code == 200, r.text
    rep = next(x for x in router_state(cluster.base)["replicas"] if x["model"] == "roomy")
    assert rep["prefill_tokens_per_s"] > 0, rep
