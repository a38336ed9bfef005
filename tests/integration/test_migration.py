"""Migration under a node kill, in CI: one model with a replica on each of two
unit nodes (real SmolLM2-135M-Instruct on the CPU engine), a greedy stream,
and `kill -9` of the node serving it mid-stream. The stream must go on at the
other replica (the gateway re-submits the prompt plus what was streamed) and
end with exactly the text an undisturbed run gives: no token lost, none
repeated."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import requests

from conftest import (
    admin_state_http,
    find_states,
    free_port,
    launch_node_pids,
    start_llmux,
    wait_until,
)

ADMIN = "adm-migrate"
SMOL = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
BODY = {"model": "smol", "prompt": "Once upon a time, in a small village by the sea,", "max_tokens": 120,
        "temperature": 0}


@pytest.fixture(scope="module")
def two_replicas(llmux_bin, tmp_path_factory):
    if not SMOL.is_file():
        pytest.skip(f"needs {SMOL} (scripts/setup fetches it)")
    d = tmp_path_factory.mktemp("migrate")
    http = free_port()
    ports = [free_port() for _ in range(6)]
    cfg = d / "migrate.toml"
    cfg.write_text(f"""
[timeouts]
request_ms = 120000
heartbeat_ms = 500
connection_timeout_ms = 3000

[[nodes]]
name = "edge"
port = {ports[0]}
admin_port = {ports[1]}

[[nodes]]
name = "gpu0"
port = {ports[2]}
admin_port = {ports[3]}

[[nodes]]
name = "gpu1"
port = {ports[4]}
admin_port = {ports[5]}

[gateway]
node = "edge"
port = {http}
admin_token = "{ADMIN}"

[[models]]
name = "smol"
backend = "cpu"
file = "{SMOL}"

[[units]]
name = "u0"
node = "gpu0"
backend = "cpu"
threads = 1
models = [ {{ name = "smol", share = 1.0 }} ]

[[units]]
name = "u1"
node = "gpu1"
backend = "cpu"
threads = 1
models = [ {{ name = "smol", share = 1.0 }} ]
""")
    launch = start_llmux(["launch", "--config", cfg], d, "launch-migrate", owner=__name__)
    base = f"http://127.0.0.1:{http}"
    try:
        pids = launch_node_pids(launch, 3, timeout=30)
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 60,
                   "both replicas up", proc=launch)
        yield base, pids, launch
    finally:
        launch.cleanup()


def _serving_node(base) -> str | None:
    for s in find_states(admin_state_http(base, ADMIN, timeout=5), "scheduler"):
        if s["state"]["running"] >= 1:
            return s["node"]
    return None


def test_a_stream_survives_the_kill_of_its_node_with_identical_text(two_replicas):
    base, pids, launch = two_replicas
    # The undisturbed text (greedy: the same on either replica).
    ref = requests.post(f"{base}/v1/completions", json=BODY, timeout=120)
    assert ref.status_code == 200, ref.text
    ref_text = ref.json()["choices"][0]["text"]
    ref_tokens = ref.json()["usage"]["completion_tokens"]
    assert ref_tokens >= 60, "the reference must be long enough to kill a node mid-stream"

    texts, killed, error = [], None, None
    with requests.post(f"{base}/v1/completions", json=dict(BODY, stream=True,
                                                           stream_options={"include_usage": True}),
                       stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        usage = None
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                error = ev["error"]
                break
            if ev.get("usage"):
                usage = ev["usage"]
            if ev["choices"] and ev["choices"][0].get("text"):
                texts.append(ev["choices"][0]["text"])
            if killed is None and len(texts) == 10:
                node = _serving_node(base)
                assert node in ("gpu0", "gpu1"), node
                os.kill(pids[node], signal.SIGKILL)
                killed = node
    assert error is None, error
    assert killed is not None, "the stream ended before a node could be killed"
    launch.wait_for_log(rf"^llmux launch: node {killed} \(pid {pids[killed]}\) killed by signal 9", 10)
    assert "".join(texts) == ref_text
    assert usage and usage["completion_tokens"] == ref_tokens, usage
    gw = [s for s in admin_state_http(base, ADMIN) if s["kind"] == "gateway"][0]["state"]
    assert gw["migrated"] >= 1, gw
