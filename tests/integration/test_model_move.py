"""The controller moves a model from one node to another while it serves (issue 16):
a two-node cluster of real CPU units (SmolLM2-135M-Instruct), the model awake on
node "edge" and listed asleep (`awake = false`) on node "n1". `llmux admin move`
in the middle of greedy streams: the target wakes, the source stops taking
requests and hands its sequences back to the gateway, which continues them on the
target; the source goes to sleep. Every stream ends with exactly the text of an
undisturbed run, no request fails, new requests go to the target, and the move
back works the same way.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import (
    LLMUX_BIN,
    SMOLLM2_GGUF,
    CompletionStreams,
    admin_state_http,
    find_states,
    free_port,
    launch_node_pids,
    one_state,
    router_replica,
    start_llmux,
    undisturbed_texts,
    wait_until,
)

PROMPTS = ["Once upon a time, in a small village by the sea,", "The recipe for a good bread starts with"]
MAX_TOKENS = 64
MODEL = "smol"


def _body(prompt: str, stream: bool) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream}


@pytest.fixture(scope="module")
def cluster(llmux_bin, tmp_path_factory):
    if not SMOLLM2_GGUF.is_file():
        pytest.skip(f"needs {SMOLLM2_GGUF} (scripts/setup fetches it)")
    d = tmp_path_factory.mktemp("move")
    http, p0, a0, p1, a1 = (free_port() for _ in range(5))
    cfg = d / "move.toml"
    cfg.write_text(f"""
[[nodes]]
name = "edge"
port = {p0}
admin_port = {a0}

[[nodes]]
name = "n1"
port = {p1}
admin_port = {a1}

[gateway]
node = "edge"
port = {http}

[timeouts]
request_ms = 120000

[[models]]
name = "{MODEL}"
backend = "cpu"
file = "{SMOLLM2_GGUF}"

[[units]]
name = "cpu0"
node = "edge"
backend = "cpu"
threads = 1
kv_cache_mib = 64
models = [ {{ name = "{MODEL}" }} ]

[[units]]
name = "cpu1"
node = "n1"
backend = "cpu"
threads = 1
kv_cache_mib = 64
models = [ {{ name = "{MODEL}", awake = false }} ]
""")
    launch = start_llmux(["launch", "--config", cfg], d, "launch", owner=__name__, stop_signal=signal.SIGINT)
    base = f"http://127.0.0.1:{http}"
    try:
        launch_node_pids(launch, count=2, timeout=30)
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 60, "the cluster ready",
                   proc=launch)
        wait_until(lambda: all(router_replica(admin_state_http(base, None), r) for r in ("cpu0/smol", "cpu1/smol")),
                   60, "both replicas known to the router", proc=launch)
        yield base, cfg
    finally:
        launch.cleanup()


def _admin(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLMUX_BIN), "admin", "--config", str(cfg), *args], capture_output=True, text=True,
                          timeout=300)


def _sched(base: str, replica: str) -> dict:
    return one_state(admin_state_http(base, None), "scheduler", name=replica)["state"]


def _reference(base: str) -> dict[str, str]:
    return undisturbed_texts(base, PROMPTS, lambda p: _body(p, False), MAX_TOKENS)


def _move_under_load(base: str, cfg: Path, ref: dict, src: str, dst: str) -> dict:
    streams = CompletionStreams(base, PROMPTS * 2, lambda p: _body(p, True))
    wait_until(lambda: min(streams.chunks) >= 3, 60, "every stream under way on the source")
    r = _admin(cfg, "move", MODEL, src, dst)
    assert r.returncode == 0, r.stderr
    assert f"{MODEL}: moved from unit {src} to unit {dst}" in r.stdout
    for prompt, text, error in streams.join():
        assert error is None, error
        assert text == ref[prompt], f"text of {prompt!r} differs from the undisturbed run"
    ctrl = one_state(admin_state_http(base, None), "controller")["state"]
    return ctrl["recent_model_moves"][-1]


def test_move_under_load_loses_nothing_and_new_requests_follow(cluster):
    base, cfg = cluster
    assert _sched(base, "cpu1/smol")["residency"] == "sleeping"
    ref = _reference(base)  # served by cpu0: cpu1 sleeps and the router prefers the awake replica
    assert _sched(base, "cpu1/smol")["residency"] == "sleeping"

    move = _move_under_load(base, cfg, ref, "cpu0", "cpu1")
    assert move["error"] == "" and move["from"] == "cpu0" and move["to"] == "cpu1", move
    assert move["handed_over"] >= 1, move  # sequences left cpu0 mid-stream
    states = admin_state_http(base, None)
    assert one_state(states, "scheduler", name="cpu0/smol")["state"]["residency"] == "sleeping"
    assert one_state(states, "scheduler", name="cpu1/smol")["state"]["residency"] == "ready"
    gw = find_states(states, "gateway")[0]["state"]
    assert gw["failed"] == 0 and gw["handed_off"] >= move["handed_over"], gw
    assert one_state(states, "controller")["state"]["model_moves"] == 1

    # New requests go to the target; the source stays asleep.
    wait_until(lambda: router_replica(admin_state_http(base, None), "cpu0/smol")["residency"] == "sleeping", 10,
               "the router to hear that cpu0/smol sleeps")
    before = router_replica(admin_state_http(base, None), "cpu1/smol")["dispatched"]
    assert _reference(base) == ref
    after = admin_state_http(base, None)
    assert router_replica(after, "cpu1/smol")["dispatched"] == before + len(PROMPTS)
    assert one_state(after, "scheduler", name="cpu0/smol")["state"]["residency"] == "sleeping"

    # And back, under load again.
    move = _move_under_load(base, cfg, ref, "cpu1", "cpu0")
    assert move["error"] == "" and move["handed_over"] >= 1, move
    states = admin_state_http(base, None)
    assert one_state(states, "scheduler", name="cpu1/smol")["state"]["residency"] == "sleeping"
    assert one_state(states, "scheduler", name="cpu0/smol")["state"]["residency"] == "ready"
    assert find_states(states, "gateway")[0]["state"]["failed"] == 0


def test_bad_moves_are_refused_with_why(cluster):
    base, cfg = cluster
    for args, rc, why in [
        (["move", MODEL, "cpu0", "cpu0"], 1, "is on unit 'cpu0' already"),
        (["move", "ghost", "cpu0", "cpu1"], 2, "no model named 'ghost'"),
        (["move", MODEL, "cpu0", "nowhere"], 2, "no unit named 'nowhere'"),
        (["move", MODEL, "cpu0"], 2, "needs MODEL FROM_UNIT TO_UNIT"),
    ]:
        r = _admin(cfg, *args)
        assert r.returncode == rc and why in r.stderr, (args, r.returncode, r.stderr)
    assert one_state(admin_state_http(base, None), "controller")["state"]["model_moves"] == 2
