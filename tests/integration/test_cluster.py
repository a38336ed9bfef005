"""`llmux launch --config examples/cluster-3node.toml`: three real node processes.

The tests run in file order against one cluster (module-scoped fixture) and form
one story: healthy cluster -> requests, errors, admin -> kill -9 gpu1 -> failure
handling -> restarted gpu1 rejoins -> SIGINT stops everything. Each step is its own
test, so a failure names the step; the later steps depend on the earlier ones, so
after a failed step the rest are skipped (marker "story", conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from conftest import (
    HTTP_TIMEOUT,
    SOURCE_DIR,
    admin_state_http,
    assert_openai_error,
    auth,
    chat_body,
    check_chat_stream,
    controller_node,
    find_states,
    json_events,
    launch_node_pids,
    models_ready,
    one_state,
    pid_alive,
    require_ports_free,
    router_replica,
    run_llmux,
    start_llmux,
    stream_post,
    wait_until,
)

pytestmark = pytest.mark.story

CONFIG = SOURCE_DIR / "examples" / "cluster-3node.toml"
BASE = "http://127.0.0.1:8080"
KEY = "sk-llmux-dev"
ADMIN_TOKEN = "admin-dev"
NODES = ["edge", "gpu0", "gpu1"]
MODELS = {"tiny-a": "gpu0", "tiny-b": "gpu1"}
PORTS = [8080, 7301, 7302, 7303, 7401, 7402, 7403]


class Cluster:
    def __init__(self, launch, pids):
        self.launch = launch
        self.pids = pids  # node name -> pid, from launch's output
        self.gpu1_killed_at = None
        self.tiny_b_seed5_text = None  # set by test_stream_completions


@pytest.fixture(scope="module")
def cluster(llmux_bin, tmp_path_factory):
    require_ports_free(PORTS, "examples/cluster-3node.toml needs its ports")
    log_dir = tmp_path_factory.mktemp("cluster3")
    launch = start_llmux(["launch", "--config", CONFIG], log_dir, "launch", owner=__name__,
                         stop_signal=signal.SIGINT)
    try:
        pids = launch_node_pids(launch, count=3)
        assert sorted(pids) == sorted(NODES), pids
        wait_until(lambda: models_ready(BASE, KEY, list(MODELS)), 30,
                   "GET /v1/models to list tiny-a and tiny-b with replicas >= 1", interval=0.1, proc=launch)
        yield Cluster(launch, pids)
    finally:
        launch.cleanup()


# ------------------------------------------------------------------------------------------
# 1. Healthy cluster: generation
# ------------------------------------------------------------------------------------------


def test_models_lists_both_models(cluster):
    r = requests.get(f"{BASE}/v1/models", headers=auth(KEY), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == set(MODELS), cards
    for name, card in cards.items():
        assert card["object"] == "model" and card["backend"] == "sim" and card["replicas"] == 1, card


@pytest.mark.parametrize("model", list(MODELS))
def test_stream_chat_each_model(cluster, model):
    payloads = stream_post(f"{BASE}/v1/chat/completions",
                           chat_body(model, max_tokens=8, stream=True, seed=7,
                                     stream_options={"include_usage": True}), KEY)
    check_chat_stream(payloads, model, max_tokens=8, finish="length")


@pytest.mark.parametrize("model", list(MODELS))
def test_nonstream_chat_shape(cluster, model):
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body(model, max_tokens=8, seed=11),
                      headers=auth(KEY), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["object"] == "chat.completion" and j["model"] == model, j
    assert j["id"].startswith("chatcmpl-"), j
    assert isinstance(j["created"], int)
    assert len(j["choices"]) == 1, j
    c = j["choices"][0]
    assert c["index"] == 0 and c["finish_reason"] == "length", c
    assert c["message"]["role"] == "assistant" and isinstance(c["message"]["content"], str), c
    assert c["message"]["content"].strip(), c
    u = j["usage"]
    assert u["completion_tokens"] == 8 and u["prompt_tokens"] > 0, u
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], u


def _completion(model, **extra):
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 8}
    body.update(extra)
    r = requests.post(f"{BASE}/v1/completions", json=body, headers=auth(KEY), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def test_nonstream_completions_shape(cluster):
    j = _completion("tiny-a", seed=5)
    assert j["object"] == "text_completion" and j["model"] == "tiny-a", j
    assert j["id"].startswith("cmpl-"), j
    assert len(j["choices"]) == 1, j
    c = j["choices"][0]
    assert c["index"] == 0 and c["finish_reason"] == "length" and isinstance(c["text"], str) and c["text"], c
    assert "message" not in c
    u = j["usage"]
    # "Once upon a time" is 16 bytes; the sim tokenizer is bytes + BOS.
    assert u == {"prompt_tokens": 17, "completion_tokens": 8, "total_tokens": 25}, u


def test_stream_completions(cluster):
    payloads = stream_post(f"{BASE}/v1/completions",
                           {"model": "tiny-b", "prompt": "Once upon a time", "max_tokens": 8, "seed": 5,
                            "stream": True, "stream_options": {"include_usage": True}}, KEY)
    events = json_events(payloads)
    assert len({e["id"] for e in events}) == 1
    assert all(e["object"] == "text_completion" and e["model"] == "tiny-b" for e in events), events
    *chunks, usage_ev = events
    assert usage_ev["choices"] == [] and usage_ev["usage"]["completion_tokens"] == 8, usage_ev
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert finishes == ["length"], finishes
    streamed_text = "".join(c["choices"][0]["text"] for c in chunks)
    # Same seed, same prompt, non-stream: the same text (the sim is deterministic).
    assert streamed_text == _completion("tiny-b", seed=5)["choices"][0]["text"]
    cluster.tiny_b_seed5_text = streamed_text


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_determinism_by_seed(cluster, api):
    def text(seed):
        if api == "chat":
            r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", max_tokens=8, seed=seed),
                              headers=auth(KEY), timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]
        return _completion("tiny-a", seed=seed)["choices"][0]["text"]

    a1, a2, b = text(1234), text(1234), text(98765)
    assert a1 == a2, f"same seed gave different texts: {a1!r} vs {a2!r}"
    assert a1 != b, f"different seeds gave the same text: {a1!r}"


# ------------------------------------------------------------------------------------------
# 2. Errors
# ------------------------------------------------------------------------------------------


def test_error_missing_api_key(cluster):
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", max_tokens=4), timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key")
    r = requests.get(f"{BASE}/v1/models", timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key")


def test_error_wrong_api_key(cluster):
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", max_tokens=4),
                      headers=auth("sk-wrong"), timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key", type_="invalid_request_error")


def test_error_malformed_json(cluster):
    r = requests.post(f"{BASE}/v1/chat/completions", data=b'{"model": "tiny-a", "messages": [',
                      headers={**auth(KEY), "Content-Type": "application/json"}, timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 400, type_="invalid_request_error", message_contains="json")


def test_error_bad_parameter(cluster):
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", temperature="hot"),
                      headers=auth(KEY), timeout=HTTP_TIMEOUT)
    err = assert_openai_error(r, 400, param="temperature", type_="invalid_request_error")
    assert "temperature" in err["message"], err


def test_error_unknown_model(cluster):
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("no-such-model", max_tokens=4),
                      headers=auth(KEY), timeout=HTTP_TIMEOUT)
    err = assert_openai_error(r, 404, param="model", code="model_not_found")
    assert "no-such-model" in err["message"], err


# ------------------------------------------------------------------------------------------
# 3. Admin
# ------------------------------------------------------------------------------------------

EXPECTED_ACTORS = {
    ("edge", "gateway"), ("edge", "router"), ("edge", "controller"),
    ("gpu0", "scheduler"), ("gpu0", "gpu_unit"), ("gpu0", "kv_manager"),
    ("gpu1", "scheduler"), ("gpu1", "gpu_unit"), ("gpu1", "kv_manager"),
}


def _admin_json():
    res = run_llmux(["admin", "--config", CONFIG, "state", "--json"])
    assert res.returncode == 0, f"admin state --json exited {res.returncode}: {res.stderr}"
    states = json.loads(res.stdout)
    assert isinstance(states, list), states
    return states


def test_admin_cli_json(cluster):
    states = _admin_json()
    for s in states:
        for k in ("node", "kind", "name", "mailbox", "state"):
            assert k in s, f"admin entry without {k!r}: {s}"
        assert isinstance(s["mailbox"], int) and s["mailbox"] >= 0, s
    present = {(s["node"], s["kind"]) for s in states}
    missing = EXPECTED_ACTORS - present
    assert not missing, f"admin state lacks {sorted(missing)}; has {sorted(present)}"
    for n in NODES:
        assert one_state(states, "node", node=n)["state"]["status"] == "up"

    router = one_state(states, "router", node="edge")["state"]
    reps = {r["replica"]: r for r in router["replicas"]}
    assert set(reps) == {"gpu0/tiny-a", "gpu1/tiny-b"}, reps
    assert all(r["up"] is True for r in reps.values()), reps
    assert reps["gpu0/tiny-a"]["model"] == "tiny-a" and reps["gpu0/tiny-a"]["node"] == "gpu0"
    assert reps["gpu1/tiny-b"]["model"] == "tiny-b" and reps["gpu1/tiny-b"]["node"] == "gpu1"

    for node in ("gpu0", "gpu1"):
        unit = one_state(states, "gpu_unit", node=node)
        assert unit["name"] == node, unit
        assert unit["state"]["backend"] == "sim" and unit["state"]["simulated"] is True, unit
        sched = one_state(states, "scheduler", node=node)
        model = "tiny-a" if node == "gpu0" else "tiny-b"
        assert sched["name"] == f"{node}/{model}", sched

    ctrl = one_state(states, "controller", node="edge")["state"]
    assert ctrl["nodes_up"] == 3 and ctrl["nodes_total"] == 3, ctrl
    assert {n["node"]: n["status"] for n in ctrl["nodes"]} == {n: "up" for n in NODES}, ctrl


def test_admin_cli_table(cluster):
    res = run_llmux(["admin", "--config", CONFIG, "state"])
    assert res.returncode == 0, f"admin state exited {res.returncode}: {res.stderr}"
    lines = res.stdout.splitlines()
    assert lines, "empty table"
    header = lines[0].split()
    assert header[:5] == ["NODE", "KIND", "NAME", "MAILBOX", "STATE"], lines[0]
    rows = [ln.split() for ln in lines[1:] if ln and not ln.startswith(" ")]
    for n in NODES:
        assert any(r[0] == n for r in rows), f"table has no row for node {n}:\n{res.stdout}"
    for node, kind in EXPECTED_ACTORS:
        assert any(r[0] == node and r[1] == kind for r in rows), f"table lacks {node} {kind}:\n{res.stdout}"


def test_admin_cli_filter(cluster):
    res = run_llmux(["admin", "--config", CONFIG, "state", "router", "--json"])
    assert res.returncode == 0, res.stderr
    states = json.loads(res.stdout)
    assert [s["kind"] for s in states] == ["router"], states


def test_admin_http_matches_cli(cluster):
    r = requests.get(f"{BASE}/admin/state", timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401)
    r = requests.get(f"{BASE}/admin/state", headers=auth("wrong-token"), timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401)
    r = requests.get(f"{BASE}/admin/state", headers=auth(KEY), timeout=HTTP_TIMEOUT)  # API key is not admin
    assert_openai_error(r, 401)

    http_states = admin_state_http(BASE, ADMIN_TOKEN)
    cli_states = _admin_json()
    ident = lambda states: sorted((s["node"], s["kind"], s["name"]) for s in states)  # noqa: E731
    assert ident(http_states) == ident(cli_states)


# ------------------------------------------------------------------------------------------
# 4. kill -9 gpu1
# ------------------------------------------------------------------------------------------


def _kill_gpu1(cluster):
    if cluster.gpu1_killed_at is None:
        pid = cluster.pids["gpu1"]
        assert pid_alive(pid), f"gpu1 (pid {pid}) is not running before the kill"
        os.kill(pid, signal.SIGKILL)
        cluster.gpu1_killed_at = time.monotonic()
    return cluster.gpu1_killed_at


def test_kill_gpu1_marks_replica_down_within_5s(cluster):
    t0 = _kill_gpu1(cluster)

    def gpu1_down():
        states = admin_state_http(BASE, ADMIN_TOKEN, timeout=2)
        rep = router_replica(states, "gpu1/tiny-b")
        node = controller_node(states, "gpu1")
        return states if (rep is not None and rep["up"] is False and node is not None
                          and node["status"] == "down") else None

    states = wait_until(gpu1_down, 5.0 - (time.monotonic() - t0),
                        "router replica gpu1/tiny-b up=false and controller node gpu1 status=down",
                        interval=0.1, proc=cluster.launch)
    assert router_replica(states, "gpu0/tiny-a")["up"] is True
    assert controller_node(states, "gpu0")["status"] == "up"
    assert one_state(states, "node", node="gpu1")["state"]["status"] == "down"
    # Nothing of gpu1 can answer any more.
    assert not find_states(states, "scheduler", node="gpu1"), states


def test_after_kill_tiny_a_still_serves(cluster):
    _kill_gpu1(cluster)
    payloads = stream_post(f"{BASE}/v1/chat/completions",
                           chat_body("tiny-a", max_tokens=8, stream=True, stream_options={"include_usage": True}),
                           KEY)
    check_chat_stream(payloads, "tiny-a", max_tokens=8)
    r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", max_tokens=8),
                      headers=auth(KEY), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("stream", [False, True])
def test_after_kill_tiny_b_gets_503(cluster, stream):
    _kill_gpu1(cluster)
    t = time.monotonic()
    body = chat_body("tiny-b", max_tokens=8)
    if stream:
        body["stream"] = True
    r = requests.post(f"{BASE}/v1/chat/completions", json=body, headers=auth(KEY), timeout=HTTP_TIMEOUT)
    elapsed = time.monotonic() - t
    assert_openai_error(r, 503, type_="service_unavailable_error", message_contains="no live replica")
    assert elapsed < 10.0, f"503 took {elapsed:.1f}s"


def test_after_kill_models_shows_no_replica_for_tiny_b(cluster):
    _kill_gpu1(cluster)
    cards = wait_until(lambda: (lambda c: c if c["tiny-b"]["replicas"] == 0 else None)(
        {m["id"]: m for m in requests.get(f"{BASE}/v1/models", headers=auth(KEY), timeout=2).json()["data"]}),
        5, "/v1/models to show tiny-b with 0 replicas", interval=0.1)
    assert cards["tiny-a"]["replicas"] == 1, cards


def test_after_kill_admin_cli_still_works(cluster):
    _kill_gpu1(cluster)
    states = _admin_json()
    assert one_state(states, "node", node="gpu1")["state"]["status"] == "down"
    assert router_replica(states, "gpu1/tiny-b")["up"] is False
    assert one_state(states, "gpu_unit", node="gpu0")["state"]["simulated"] is True


def test_after_kill_ready_names_the_model_without_replica(cluster):
    _kill_gpu1(cluster)
    # (a Response is falsy for 4xx/5xx, hence the tuple)
    r, = wait_until(lambda: (lambda r: (r,) if r.status_code == 503 else None)(
        requests.get(f"{BASE}/ready", timeout=2)), 5, "/ready to turn 503")
    assert r.json() == {"ready": False, "models_without_replica": ["tiny-b"]}
    assert requests.get(f"{BASE}/health", timeout=2).status_code == 200  # alive, not ready


def test_launch_reports_killed_node(cluster):
    _kill_gpu1(cluster)
    pid = cluster.pids["gpu1"]
    cluster.launch.wait_for_log(rf"^llmux launch: node gpu1 \(pid {pid}\) killed by signal 9", 5)
    assert cluster.launch.poll() is None, "launch exited after one node died"
    for n in ("edge", "gpu0"):
        assert pid_alive(cluster.pids[n]), f"node {n} died with gpu1"


def test_restarted_gpu1_rejoins(cluster, tmp_path):
    # docs/operations.md: nodes may (re)start in any order; the controller retries
    # every reconnect_ms until the node answers. A fresh `llmux node` for gpu1
    # (outside launch) must bring tiny-b back.
    _kill_gpu1(cluster)
    cluster.launch.wait_for_log(r"^llmux launch: node gpu1 \(pid \d+\) killed", 5)  # gpu1's ports are free
    node = start_llmux(["node", "--config", CONFIG, "--name", "gpu1"], tmp_path, "gpu1-restarted",
                       owner=__name__, stop_signal=signal.SIGTERM)
    try:
        wait_until(lambda: (lambda s: s if router_replica(s, "gpu1/tiny-b")["up"] is True
                            and controller_node(s, "gpu1")["status"] == "up" else None)(
                                admin_state_http(BASE, ADMIN_TOKEN, timeout=2)),
                   15, "restarted gpu1 to rejoin (router replica up, controller node up)", interval=0.1, proc=node)
        payloads = stream_post(f"{BASE}/v1/chat/completions",
                               chat_body("tiny-b", max_tokens=8, stream=True,
                                         stream_options={"include_usage": True}), KEY)
        check_chat_stream(payloads, "tiny-b", max_tokens=8)
        r = requests.post(f"{BASE}/v1/completions",
                          json={"model": "tiny-b", "prompt": "Once upon a time", "max_tokens": 8, "seed": 5},
                          headers=auth(KEY), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        # Deterministic across processes too: same text as before the kill.
        if cluster.tiny_b_seed5_text is not None:
            assert r.json()["choices"][0]["text"] == cluster.tiny_b_seed5_text
    finally:
        node.signal(signal.SIGTERM)
        try:
            rc = node.wait(timeout=15)
        finally:
            node.cleanup()
    assert rc == 0, f"restarted gpu1 exited {rc} on SIGTERM"
    wait_until(lambda: router_replica(admin_state_http(BASE, ADMIN_TOKEN, timeout=2), "gpu1/tiny-b")["up"] is False,
               10, "router to mark gpu1/tiny-b down again after the restarted node stopped", interval=0.1)


# ------------------------------------------------------------------------------------------
# 5. SIGINT stops everything
# ------------------------------------------------------------------------------------------


def test_sigint_stops_launch_and_every_node(cluster):
    launch = cluster.launch
    assert launch.poll() is None, f"launch already exited with {launch.returncode}"
    launch.signal(signal.SIGINT)
    try:
        rc = launch.wait(timeout=15)
    except Exception:  # noqa: BLE001
        pytest.fail("launch did not exit within 15 s of SIGINT")
    assert rc == 0, f"launch exited with status {rc} after SIGINT"
    leftovers = {n: p for n, p in cluster.pids.items() if pid_alive(p)}
    assert not leftovers, f"node processes still alive after launch exited: {leftovers}"
    assert "llmux launch: all nodes stopped" in launch.log()
    # The edge is gone too.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{BASE}/health", timeout=2)
