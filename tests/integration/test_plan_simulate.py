"""`llmux plan` then `llmux simulate`, end to end, on a small case (seconds).

A spec of 2 nodes x 4 A100s (the built-in MuxServe profile) and five models
of three sizes is planned three ways (llmux, spatial, temporal); each written
config is simulated on the same workload, and the invariants the issue names
are checked, not the figures:
  * every request is accounted for exactly once (completed, refused or
    unfinished), per model and in all, against the workload's own trace;
  * no broken invariant is reported (shares <= 1 per GPU, the KV pools
    consistent and never over their size, no KV held once every request ended);
  * attainment grows with the SLO scale and stays within [0, 1].
Then the llmux config is launched as a real cluster (`llmux launch`, sim
units in real time) and every model answers a request: the plan is a config
the runtime runs, not only the simulator.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
import requests

from conftest import (
    HTTP_TIMEOUT,
    chat_body,
    free_ports,
    models_ready,
    run_llmux,
    start_llmux,
    wait_until,
)

SPEC = """
[cluster]
nodes = 2
gpus_per_node = 4
gpu = "a100"

[gpus.a100]
profile = "builtin:a100"

[[models]]
name = "chat-7b-a"
architecture = "llama-7b"

[[models]]
name = "chat-7b-b"
architecture = "llama-7b"

[[models]]
name = "chat-7b-c"
architecture = "llama-7b"

[[models]]
name = "code-13b"
architecture = "llama-13b"

[[models]]
name = "big-30b"
architecture = "llama-30b"
"""

WORKLOAD = """
duration_s = 20
seed = 3
prompt = "lognormal:161:1.0:4:1024"
output = "lognormal:120:1.0:4:512"
models = ["chat-7b-a", "code-13b", "chat-7b-b", "big-30b", "chat-7b-c"]
total_rate = 12
alpha = 0.9
"""

MODELS = ["chat-7b-a", "code-13b", "chat-7b-b", "big-30b", "chat-7b-c"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    (d / "spec.toml").write_text(SPEC)
    (d / "workload.toml").write_text(WORKLOAD)
    http = free_ports(1)
    node = free_ports(2)
    admin = node + 100
    r = run_llmux(["plan", "--spec", d / "spec.toml", "--workload", d / "workload.toml", "--baselines",
                   "--out", d / "planned.toml", "--http-port", http, "--base-port", node], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return d, http, node, admin, r.stdout


def test_plan_prints_three_systems_and_writes_three_configs(planned):
    d, _, _, _, out = planned
    for system in ["llmux", "spatial", "temporal"]:
        assert f"{system}:" in out, out
    for name in ["planned.toml", "planned-spatial.toml", "planned-temporal.toml"]:
        text = (d / name).read_text()
        assert "[[units]]" in text
        for m in MODELS:
            assert f'name = "{m}"' in text, f"{name} does not host {m}"


@pytest.mark.parametrize("config", ["planned.toml", "planned-spatial.toml", "planned-temporal.toml"])
def test_simulate_accounts_for_every_request(planned, config):
    d = planned[0]
    trace = d / f"trace-{config}.jsonl"
    r = run_llmux(["simulate", "--config", d / config, "--workload", d / "workload.toml", "--json",
                   "--trace-out", trace], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["simulated"] is True
    assert rep["violations"] == []
    sent = Counter(json.loads(line)["model"] for line in trace.read_text().splitlines())
    assert sum(sent.values()) > 100  # 20 s at 12 req/s: the case is not empty
    per_model = {m["name"]: m for m in rep["models"]}
    assert set(per_model) == set(sent)
    for name, m in per_model.items():
        assert m["requests"] == sent[name], name
        assert m["ok"] + m["failed"] + m["unfinished"] == m["requests"], name
    a = rep["all"]
    assert a["requests"] == sum(sent.values())
    assert a["ok"] + a["failed"] + a["unfinished"] == a["requests"]
    att = a["slo_attainment"]
    assert all(0 <= x <= 1 for x in att)
    assert att == sorted(att), "attainment must not fall as the SLO loosens"


def test_the_planned_config_launches_and_serves_every_model(planned, tmp_path):
    d, http, node, admin, _ = planned
    launch = start_llmux(["launch", "--config", d / "planned.toml"], tmp_path, "planned-launch",
                         owner=__name__, stop_signal=signal.SIGINT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_until(lambda: models_ready(base, None, MODELS), 60, "every planned model to have a live replica",
                   proc=launch)
        for m in MODELS:
            resp = requests.post(f"{base}/v1/chat/completions", json=chat_body(m, max_tokens=4),
                                 timeout=HTTP_TIMEOUT)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model"] == m
            assert body["usage"]["completion_tokens"] == 4
    finally:
        launch.cleanup()
