"""Limits at the edge: body size (413), queue limit (429) and request deadline (504,
and a step past it keeps its KV until it returns), on `llmux serve --config` with a
deliberately slow sim unit (time_scale 2000: a llama-7b prefill step of ~4 ms is
held ~8 s) and tiny limits."""

from __future__ import annotations

import threading
import time

import pytest
import requests

import json
from types import SimpleNamespace

from conftest import (
    admin_state_http,
    run_llmux,
    assert_openai_error,
    chat_body,
    free_port,
    one_state,
    solo_config,
    start_serve,
    wait_until,
)

ADMIN = "adm-limits"


@pytest.fixture(scope="module")
def slow_edge(llmux_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "limits.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"\nmax_body_bytes = 2048') + f"""
[timeouts]
request_ms = 5000

[[models]]
name = "slow"
backend = "sim"
architecture = "llama-7b"

[[units]]
name = "u"
node = "solo"
time_scale = 2000.0
max_running = 1
max_waiting = 1
models = [ {{ name = "slow", share = 1.0 }} ]
""")
    proc, base = start_serve(["--config", cfg], d, "serve-limits", __name__, http)
    try:
        yield SimpleNamespace(base=base, config=cfg)
    finally:
        proc.cleanup()


def _scheduler(base):
    return one_state(admin_state_http(base, ADMIN, timeout=3), "scheduler")["state"]


def test_body_too_large_is_413(slow_edge):
    body = chat_body("slow", max_tokens=1)
    body["messages"][0]["content"] = "x" * 4096  # the body is > max_body_bytes = 2048
    r = requests.post(f"{slow_edge.base}/v1/chat/completions", json=body, timeout=10)
    assert_openai_error(r, 413, message_contains="too large")
    # The official client has no class of its own for 413: its APIStatusError.
    import openai
    with pytest.raises(openai.APIStatusError) as e:
        openai.OpenAI(base_url=f"{slow_edge.base}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model="slow", messages=body["messages"], max_tokens=1)
    assert e.value.status_code == 413 and "too large" in e.value.message


def test_queue_full_is_429_and_deadline_is_504(slow_edge):
    results = {}

    def post(name):
        t = time.monotonic()
        r = requests.post(f"{slow_edge.base}/v1/chat/completions", json=chat_body("slow", max_tokens=2),
                          timeout=30)
        results[name] = (r, time.monotonic() - t)

    def post_with_client(name):
        # The official client: a 504 is its InternalServerError (5xx).
        import openai
        t = time.monotonic()
        try:
            openai.OpenAI(base_url=f"{slow_edge.base}/v1", api_key="unused", max_retries=0,
                          timeout=30).chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            results[name] = (None, time.monotonic() - t)
        except openai.APIError as e:
            results[name] = (e, time.monotonic() - t)

    # A runs (max_running 1), B waits (max_waiting 1): the queue is then full.
    a = threading.Thread(target=post_with_client, args=("a",))
    a.start()
    wait_until(lambda: _scheduler(slow_edge.base)["running"] == 1, 5, "request A to run")
    b = threading.Thread(target=post, args=("b",))
    b.start()
    wait_until(lambda: _scheduler(slow_edge.base)["waiting"] == 1, 5, "request B to wait")

    t = time.monotonic()
    c = requests.post(f"{slow_edge.base}/v1/chat/completions", json=chat_body("slow", max_tokens=2),
                      timeout=30)
    assert time.monotonic() - t < 3, "a full queue must refuse at once, not wait"
    assert_openai_error(c, 429, message_contains="overloaded")
    assert c.headers.get("Retry-After"), c.headers
    metrics = requests.get(f"{slow_edge.base}/metrics", timeout=10).text
    assert 'llmux:queue_rejections_total{model="slow"} 1\n' in metrics, metrics
    assert 'llmux:num_requests_waiting{model="slow"} 1\n' in metrics, metrics
    # The official client sees the same refusal as its RateLimitError.
    import openai
    with pytest.raises(openai.RateLimitError) as refused:
        openai.OpenAI(base_url=f"{slow_edge.base}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert refused.value.status_code == 429 and refused.value.response.headers.get("Retry-After") == "1"

    # A's first step is held ~8 s, past request_ms = 5000: both end with 504,
    # at the deadline rather than when the step finally returns.
    a.join(timeout=30)
    b.join(timeout=30)
    err, took = results["a"]
    import openai
    assert isinstance(err, openai.InternalServerError) and err.status_code == 504, repr(err)
    assert err.body["type"] == "timeout_error", err.body
    assert 4.0 < took < 7.5, f"request a took {took:.1f}s; the deadline is 5 s"
    r, took = results["b"]
    assert_openai_error(r, 504)
    assert 4.0 < took < 7.5, f"request b took {took:.1f}s; the deadline is 5 s"

    # A's step is still computing (it returns at ~8 s): the scheduler gave up
    # on it at its deadline but keeps its KV blocks, which the engine may
    # still be writing, until the unit answers.
    held = wait_until(lambda: (lambda s: s if s["abandoned_steps"] == 1 else None)(_scheduler(slow_edge.base)),
                      2, "the scheduler to give up on A's step at its deadline")
    assert held["kv_token_blocks_held"] > 0, held
    # Then the deadline has cancelled both all the way down: nothing runs or waits, no KV is held.
    st = wait_until(lambda: (lambda s: s if s["running"] == 0 and s["waiting"] == 0
                             and s["kv_token_blocks_held"] == 0 else None)(_scheduler(slow_edge.base)),
                    15, "the scheduler to drop both timed-out requests")
    assert st["finished"] == 0  # neither completed: they were cancelled, not finished


def test_admin_cli_reaches_a_served_config(slow_edge):
    # `serve --config F` opens F's admin port, so `llmux admin --config F` works as for `node`.
    out = run_llmux(["admin", "--config", slow_edge.config, "state", "scheduler", "--json"])
    assert out.returncode == 0, out.stderr
    states = json.loads(out.stdout)
    assert [(s["node"], s["kind"], s["name"]) for s in states] == [("solo", "scheduler", "u/slow")]
