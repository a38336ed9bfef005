"""The edge at real concurrency, on `llmux serve --config` with sim units:

* a few hundred streams at once beside a few hundred idle keep-alive
  connections: every stream is served, all of them are open together (each
  has its first token before any finishes), and the idle connections still
  answer afterwards;
* admission: past `gateway.max_in_flight`, or a model's `max_in_flight`, an
  immediate 429 with Retry-After in OpenAI's shape;
* a client that goes away at each stage (mid-request, waiting in the queue,
  before its first token, mid-stream) gives back its edge slot and its
  sequence (seen in admin state);
* a 429 from one replica is retried on the model's other replica.

Clients are asyncio sockets speaking HTTP/1.1 by hand, so hundreds of them
cost one thread."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from types import SimpleNamespace

import pytest
import requests

from conftest import (
    admin_state_http,
    assert_openai_error,
    free_port,
    one_state,
    solo_config,
    start_llmux,
    start_serve,
    wait_until,
)

ADMIN = "adm-edge"
STREAMS = 300
IDLE = 300


def _request_bytes(port: int, body: dict, path: str = "/v1/completions") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _stream(port: int, body: dict, first_token_at: list, done_at: list, results: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request_bytes(port, body))
    await writer.drain()
    got = b""
    first = None
    while not (b"data: [DONE]" in got and got.endswith(b"\r\n0\r\n\r\n")):
        chunk = await asyncio.wait_for(reader.read(65536), timeout=60)
        if not chunk:
            break
        got += chunk
        if first is None and b'"text"' in got:
            first = time.monotonic()
    writer.close()
    first_token_at.append(first)
    done_at.append(time.monotonic())
    results.append(got)


def _events(raw: bytes) -> list[dict]:
    """SSE payloads of a chunked response (chunk framing stripped by finding the data lines)."""
    out = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            out.append(json.loads(line[6:]))
    return out


@pytest.fixture(scope="module")
def edge(llmux_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "edge.toml"
    # "wide": many streams at once, each a few hundred ms long. "slow": one
    # running, two waiting, a long prefill (the stages of a disconnect).
    # "capped": at most 2 in flight at the edge. "hold": one running, the
    # rest queued behind it for a long time (fills the edge). The edge
    # takes 350 at once.
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"\nmax_in_flight = 350') + """
[timeouts]
request_ms = 60000

[[models]]
name = "wide"
backend = "sim"
architecture = "tiny"

[[models]]
name = "slow"
backend = "sim"
architecture = "llama-7b"

[[models]]
name = "capped"
backend = "sim"
architecture = "llama-7b"
max_in_flight = 2

[[units]]
name = "w"
node = "solo"
time_scale = 2000.0
max_running = 512
models = [ { name = "wide", share = 1.0 } ]

[[units]]
name = "s"
node = "solo"
time_scale = 500.0
max_running = 1
max_waiting = 2
models = [ { name = "slow", share = 1.0 } ]

[[units]]
name = "c"
node = "solo"
time_scale = 500.0
models = [ { name = "capped", share = 1.0 } ]

[[models]]
name = "hold"
backend = "sim"
architecture = "llama-7b"

[[units]]
name = "h"
node = "solo"
time_scale = 500.0
max_running = 1
max_waiting = 1000
models = [ { name = "hold", share = 1.0 } ]
""")
    proc, base = start_serve(["--config", cfg], d, "serve-edge", __name__, http)
    try:
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 20,
                   "every model to have a replica", proc=proc)
        yield SimpleNamespace(base=base, port=http, proc=proc, admin_port=admin)
    finally:
        proc.cleanup()


def _gateway(base) -> dict:
    return one_state(admin_state_http(base, ADMIN, timeout=5), "gateway")["state"]


def _edge_idle(base) -> bool:
    g = _gateway(base)
    return g["edge"]["in_flight"] == 0 and g["in_flight"] == 0 and g["open_streams"] == 0


def _unit_idle(base, scheduler_name: str) -> bool:
    states = admin_state_http(base, ADMIN, timeout=5)
    s = one_state(states, "scheduler", name=scheduler_name)["state"]
    return s["waiting"] == 0 and s["running"] == 0


def test_hundreds_of_streams_beside_idle_connections_are_all_served(edge):
    # Idle keep-alive connections: each asks once, then holds its connection.
    idle = []
    for _ in range(IDLE):
        s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.append(s)
    for s in idle:
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK"), "idle connection's first answer"
    wait_until(lambda: _gateway(edge.base)["edge"]["connections"] >= IDLE, 10, "idle connections held")

    first, done, results = [], [], []

    async def run_all():
        await asyncio.gather(*[
            _stream(edge.port, {"model": "wide", "prompt": [1, 2, 3, 4, 5, i % 50 + 6], "max_tokens": 24,
                                "stream": True, "seed": i, "stream_options": {"include_usage": True}},
                    first, done, results)
            for i in range(STREAMS)])

    asyncio.run(run_all())
    assert len(results) == STREAMS
    for raw in results:
        assert raw.startswith(b"HTTP/1.1 200 OK"), raw[:200]
        assert raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), raw[-200:]  # the last chunk
        events = _events(raw)
        usage = events[-1]["usage"]
        assert 1 <= usage["completion_tokens"] <= 24, usage
        assert events[-2]["choices"][0]["finish_reason"] in ("length", "stop"), events[-2]
    # All were open together: every stream had its first token before any finished.
    assert all(f is not None for f in first)
    assert max(first) < min(done), "streams were served one after another, not together"
    # The idle connections were held, not dropped: each answers again.
    for s in idle:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in idle:
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
        s.close()
    wait_until(lambda: _edge_idle(edge.base), 10, "every slot back after the streams")


def test_overload_is_429_at_once_with_retry_after(edge):
    # The per-model limit: two requests of "capped" in flight, the third is refused.
    held = []
    for i in range(2):
        s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        s.sendall(_request_bytes(edge.port, {"model": "capped", "prompt": "hi", "max_tokens": 2000,
                                             "stream": True}))
        held.append(s)
    wait_until(lambda: _gateway(edge.base)["edge"]["models"]["capped"]["in_flight"] == 2, 10,
               "two capped requests in flight")
    t = time.monotonic()
    r = requests.post(f"{edge.base}/v1/completions", json={"model": "capped", "prompt": "hi", "max_tokens": 1},
                      timeout=10)
    assert time.monotonic() - t < 2, "the refusal must not wait"
    assert_openai_error(r, 429, message_contains="capped")
    assert r.headers.get("Retry-After") == "1"
    # Other models are not affected by one model's limit.
    ok = requests.post(f"{edge.base}/v1/completions", json={"model": "wide", "prompt": "hi", "max_tokens": 2},
                       timeout=30)
    assert ok.status_code == 200, ok.text
    # The edge limit: fill the edge (350) with requests that wait long for
    # their first token ("hold"), then one more is refused.
    more = []
    for i in range(348):
        s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
        s.sendall(_request_bytes(edge.port, {"model": "hold", "prompt": "hi", "max_tokens": 5,
                                             "stream": True}))
        more.append(s)
    wait_until(lambda: _gateway(edge.base)["edge"]["in_flight"] == 350, 15, "the edge full")
    r = requests.post(f"{edge.base}/v1/chat/completions",
                      json={"model": "wide", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert_openai_error(r, 429, message_contains="max_in_flight")
    assert r.headers.get("Retry-After") == "1"
    assert _gateway(edge.base)["edge"]["rejected"] >= 1
    # Nothing is lost: closing the held clients gives every slot back.
    for s in held + more:
        s.close()
    wait_until(lambda: _edge_idle(edge.base), 15, "every slot back after the clients left")
    wait_until(lambda: _unit_idle(edge.base, "c/capped") and _unit_idle(edge.base, "h/hold"), 15,
               "the units' sequences cancelled")


def test_a_client_leaving_at_any_stage_frees_its_slot_and_sequence(edge):
    base, port = edge.base, edge.port
    gw0 = _gateway(base)

    # Mid-request: half a body, then gone. Nothing was admitted.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"model\":")
    wait_until(lambda: _gateway(base)["edge"]["connections"] >= gw0["edge"]["connections"] + 1, 5,
               "the half request's connection")
    s.close()
    wait_until(lambda: _gateway(base)["edge"]["connections"] <= gw0["edge"]["connections"], 5,
               "the half request's connection closed")

    body = {"model": "slow", "prompt": "tell me a long story", "max_tokens": 400, "stream": True}
    # Running: a stream with its first tokens; waiting: one behind it in the queue (max_running 1).
    running = socket.create_connection(("127.0.0.1", port), timeout=10)
    running.sendall(_request_bytes(port, body))
    got = b""
    while b'"text"' not in got:
        got += running.recv(65536)
    waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
    waiting.sendall(_request_bytes(port, dict(body, stream=False)))
    wait_until(lambda: one_state(admin_state_http(base, ADMIN), "scheduler", name="s/slow")["state"]["waiting"] == 1,
               10, "the second request to wait")
    # Gone while queued, before its first token: its place in the queue is freed.
    waiting.close()
    wait_until(lambda: one_state(admin_state_http(base, ADMIN), "scheduler", name="s/slow")["state"]["waiting"] == 0,
               10, "the queued request cancelled")
    # Gone mid-stream: the running sequence is cancelled.
    running.close()
    wait_until(lambda: _unit_idle(base, "s/slow"), 10, "the running sequence cancelled")
    wait_until(lambda: _edge_idle(base), 10, "every slot back")
    # No KV block is held by a live sequence (the prefix cache may keep
    # unreferenced blocks: those are evictable, not leaked).
    kv = [a for a in admin_state_http(base, ADMIN) if a["kind"] == "kv_manager"]
    assert kv
    wait_until(lambda: all(
        a["state"]["models"]["slow"]["used"] == 0 and a["state"]["models"]["slow"]["sequences"] == 0 for a in admin_state_http(base, ADMIN)
        if a["kind"] == "kv_manager" and "slow" in a["state"].get("models", {})), 10, "no KV block held")
    # The queued request counts as 499 (nobody read its answer); the stream had its 200.
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert 'llmux:requests_total{model="slow",status="499"} 1' in metrics, metrics
    # Both are counted as aborted, by where they were, with their prompt
    # tokens: the queued one before its first token, the stream while decoding.
    assert 'llmux:requests_aborted_total{model="slow",stage="prefill"} 1' in metrics, metrics
    assert 'llmux:requests_aborted_total{model="slow",stage="decode"} 1' in metrics, metrics
    prompt = [l for l in metrics.splitlines() if l.startswith('llmux:aborted_prompt_tokens_total{model="slow"}')]
    assert prompt and int(float(prompt[0].split()[-1])) >= 2 * len("tell me a long story"), prompt


@pytest.fixture(scope="module")
def two_replicas(llmux_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("retry")
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "retry.toml"
    # One model on two units; round robin would send every other request to
    # "small" (room for 2: one running, one waiting), "big" has room for 6.
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + """
[router]
policy = "round_robin"

[timeouts]
request_ms = 60000

[[models]]
name = "two"
backend = "sim"
architecture = "llama-7b"

[[units]]
name = "small"
node = "solo"
time_scale = 500.0
max_running = 1
max_waiting = 1
models = [ { name = "two", share = 1.0 } ]

[[units]]
name = "big"
node = "solo"
time_scale = 500.0
max_running = 1
max_waiting = 5
models = [ { name = "two", share = 1.0 } ]
""")
    proc, base = start_serve(["--config", cfg], d, "serve-retry", __name__, http)
    try:
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 20,
                   "both replicas up", proc=proc)
        yield SimpleNamespace(base=base, port=http, proc=proc)
    finally:
        proc.cleanup()


def test_a_full_replica_is_skipped_for_another_before_the_client_sees_429(two_replicas):
    base, port = two_replicas.base, two_replicas.port

    def held():
        states = admin_state_http(base, ADMIN)
        return sum(one_state(states, "scheduler", name=f"{u}/two")["state"][k]
                   for u in ("small", "big") for k in ("running", "waiting"))

    socks = []
    for i in range(8):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(_request_bytes(port, {"model": "two", "prompt": f"story {i}", "max_tokens": 50,
                                        "stream": True}))
        socks.append(s)
        # One at a time, so round robin's order is the order sent.
        wait_until(lambda: held() == i + 1, 10, f"request {i} accepted by a replica")
    states = admin_state_http(base, ADMIN)
    small = one_state(states, "scheduler", name="small/two")["state"]
    big = one_state(states, "scheduler", name="big/two")["state"]
    assert small["running"] + small["waiting"] == 2 and big["running"] + big["waiting"] == 6
    router = one_state(states, "router")["state"]
    assert router["retried"] >= 2, router  # requests 5 and 7 found "small" full
    # Both full: now the client sees 429, naming both.
    r = requests.post(f"{base}/v1/completions", json={"model": "two", "prompt": "x", "max_tokens": 2}, timeout=10)
    assert_openai_error(r, 429, message_contains="all 2 replicas are full")
    assert r.headers.get("Retry-After") == "1"
    for s in socks:
        s.close()
    wait_until(lambda: held() == 0, 15, "every sequence cancelled")


def test_bench_serve_counts_429s_apart_and_holds_idle_connections(edge):
    # The load generator: one event-loop thread for every client, idle
    # connections beside them, text prompts, and 429s told apart from faults.
    from conftest import run_llmux
    r = run_llmux(["bench", "serve", "--url", edge.base, "--model", "capped", "--requests", "12",
                   "--concurrency", "6", "--prompt-text", "hello there", "--output-len", "2",
                   "--idle-connections", "50", "--json"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr  # 429s are the edge's defined answer, not a failure
    row = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")][0]
    assert row["requests"] == 12 and row["ok"] + row["rejected_429"] == 12, row
    assert row["rejected_429"] > 0 and row["ok"] > 0, row  # capped admits 2 at once: some of 6 are refused
    assert "429 (overloaded)" in r.stdout and "text of 11 bytes" in r.stdout, r.stdout
    assert "idle connections: 50 of 50 held open through the sweep and answered again" in r.stdout, r.stdout
    wait_until(lambda: _edge_idle(edge.base), 15, "every slot back after the bench")


def test_api_key_from_the_environment_is_required_and_never_logged(llmux_bin, tmp_path, monkeypatch):
    # LLMUX_API_KEY (as vLLM's VLLM_API_KEY): the key need not sit in a config
    # file. Requests without it or with a wrong one get 401; nothing the
    # clients sent as a key shows up in the log.
    secret, wrong = "sk-env-4f1c9a2e7b", "sk-wrong-0d3e8c61"
    monkeypatch.setenv("LLMUX_API_KEY", secret)
    port = free_port()
    proc, base = start_serve(["--sim", "--time-scale", "0", "--port", port], tmp_path, "serve-envkey",
                             __name__, port)
    try:
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
        assert_openai_error(requests.post(f"{base}/v1/completions", json=body, timeout=10), 401,
                            message_contains="Missing API key")
        assert_openai_error(requests.post(f"{base}/v1/completions", json=body, timeout=10,
                                          headers={"Authorization": f"Bearer {wrong}"}), 401,
                            message_contains="Incorrect API key")
        r = requests.post(f"{base}/v1/completions", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
        r = requests.post(f"{base}/v1/completions", json=dict(body, stream=True), timeout=10,
                          headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and b"[DONE]" in r.content
    finally:
        proc.cleanup()
    log = proc.log()
    assert "request cmpl-" in log, log[-2000:]  # requests were logged, just not their keys
    assert secret not in log and wrong not in log


def test_metrics_and_admin_move_to_the_ops_address(llmux_bin, tmp_path):
    # gateway.ops_port: /metrics and /admin/* are served there and no longer
    # on the public port; /health and /ready answer on both.
    http, ops, node, admin = free_port(), free_port(), free_port(), free_port()
    cfg = tmp_path / "ops.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"\nops_port = {ops}') + """
[[models]]
name = "tiny"
backend = "sim"
architecture = "tiny"

[[units]]
name = "u"
node = "solo"
time_scale = 0
models = [ { name = "tiny", share = 1.0 } ]
""")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-ops", __name__, http)
    ops_base = f"http://127.0.0.1:{ops}"
    try:
        wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 20, "ready")
        r = requests.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2},
                          timeout=10)
        assert r.status_code == 200, r.text
        m = requests.get(f"{ops_base}/metrics", timeout=10)
        assert m.status_code == 200 and 'llmux:requests_total{model="tiny",status="200"} 1' in m.text, m.text
        assert one_state(admin_state_http(ops_base, ADMIN), "gateway")["state"]["completed"] == 1
        assert_openai_error(requests.get(f"{ops_base}/admin/state", timeout=10), 401)  # still guarded
        for path in ("/metrics", "/admin/state"):
            assert_openai_error(requests.get(f"{base}{path}", timeout=10), 404, message_contains="Unknown path")
        for b in (base, ops_base):
            assert requests.get(f"{b}/health", timeout=10).status_code == 200
            assert requests.get(f"{b}/ready", timeout=10).status_code == 200
        # The ops address serves no generation.
        assert_openai_error(requests.post(f"{ops_base}/v1/completions", json={"model": "tiny", "prompt": "x"},
                                          timeout=10), 404)
    finally:
        proc.cleanup()


def test_the_admin_port_checks_its_token_before_anything_else(edge):
    # The admin wire port: a wrong token is answered, logged with the peer's
    # address (not the token), and the connection closed; the right one works.
    import msgpack
    import struct

    def call(req: dict):
        s = socket.create_connection(("127.0.0.1", edge.admin_port), timeout=10)
        body = msgpack.packb(req)
        s.sendall(struct.pack(">I", len(body)) + body)
        head = s.recv(4, socket.MSG_WAITALL)
        n = struct.unpack(">I", head)[0]
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
        closed = s.recv(1) == b""  # the server hung up after answering
        s.close()
        return msgpack.unpackb(data), closed

    wrong = "adm-guess-77d1"
    rep, closed = call({"cmd": "state", "token": wrong})
    assert rep == {"ok": False, "error": "bad admin token"} and closed
    edge.proc.wait_for_log(r"admin port: bad admin token from 127\.0\.0\.1:\d+", 10)
    assert wrong not in edge.proc.log()
    s = socket.create_connection(("127.0.0.1", edge.admin_port), timeout=10)
    body = msgpack.packb({"cmd": "state", "token": ADMIN})
    s.sendall(struct.pack(">I", len(body)) + body)
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    s.close()
    assert msgpack.unpackb(data)["ok"] is True


def _two_node_config(path, http, edge_port, edge_admin, unit_port, unit_admin, request_ms):
    path.write_text(f"""
[timeouts]
request_ms = {request_ms}

[[nodes]]
name = "edge"
port = {edge_port}
admin_port = {edge_admin}

[[nodes]]
name = "gpu0"
port = {unit_port}
admin_port = {unit_admin}

[gateway]
node = "edge"
port = {http}
admin_token = "{ADMIN}"

[[models]]
name = "late"
backend = "sim"
architecture = "tiny"

[[units]]
name = "u"
node = "gpu0"
time_scale = 0
models = [ {{ name = "late", share = 1.0 }} ]
""")


def test_a_request_before_the_first_replica_joins_waits_for_it(llmux_bin, tmp_path):
    # A cluster still starting: the edge node is up, the unit node is not.
    # A request for the model waits for its first replica (within its
    # deadline) instead of a 503 "none has joined yet".
    http, ep, ea, up, ua = (free_port() for _ in range(5))
    cfg = tmp_path / "late.toml"
    _two_node_config(cfg, http, ep, ea, up, ua, request_ms=60000)
    base = f"http://127.0.0.1:{http}"
    edge_node = start_llmux(["node", "--config", cfg, "--name", "edge"], tmp_path, "edge-first", owner=__name__)
    unit_node = None
    try:
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).status_code == 200, 20, "the edge",
                   proc=edge_node)
        assert requests.get(f"{base}/ready", timeout=5).status_code == 503
        result = {}

        def ask():
            result["r"] = requests.post(f"{base}/v1/completions", timeout=60,
                                        json={"model": "late", "prompt": "hi", "max_tokens": 3})

        import threading
        t = threading.Thread(target=ask)
        t.start()
        wait_until(lambda: one_state(admin_state_http(base, ADMIN), "router")["state"]["waiting_for_replica"] == 1,
                   10, "the request to wait for a replica")
        unit_node = start_llmux(["node", "--config", cfg, "--name", "gpu0"], tmp_path, "unit-later", owner=__name__)
        t.join(60)
        assert not t.is_alive()
        assert result["r"].status_code == 200, result["r"].text
        assert result["r"].json()["usage"]["completion_tokens"] >= 1
        router = one_state(admin_state_http(base, ADMIN), "router")["state"]
        assert router["waited_for_replica"] == 1 and router["waiting_for_replica"] == 0
    finally:
        for p in (unit_node, edge_node):
            if p:
                p.cleanup()


def test_a_replica_that_never_joins_is_an_error_at_the_deadline(llmux_bin, tmp_path):
    http, ep, ea, up, ua = (free_port() for _ in range(5))
    cfg = tmp_path / "never.toml"
    _two_node_config(cfg, http, ep, ea, up, ua, request_ms=1500)
    base = f"http://127.0.0.1:{http}"
    edge_node = start_llmux(["node", "--config", cfg, "--name", "edge"], tmp_path, "edge-alone", owner=__name__)
    try:
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).status_code == 200, 20, "the edge",
                   proc=edge_node)
        r = requests.post(f"{base}/v1/completions", json={"model": "late", "prompt": "hi", "max_tokens": 3},
                          timeout=30)
        assert r.status_code in (503, 504), r.text  # the router's or the edge's deadline, whichever first
        assert r.json()["error"]["message"], r.text
        wait_until(lambda: one_state(admin_state_http(base, ADMIN), "router")["state"]["waiting_for_replica"] == 0,
                   5, "the waiting request dropped")
    finally:
        edge_node.cleanup()
