"""A frozen node (SIGSTOP): only the middleman heartbeat can tell it is gone.

Its own cluster on ports that cannot collide with examples/cluster-3node.toml
(middleman 7501-7503, admin 7601-7603, HTTP 18090). gpu1's unit runs the sim ten
times slower than real time so a stream on it is still running when it freezes.
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
    admin_state_http,
    assert_openai_error,
    auth,
    chat_body,
    check_chat_stream,
    controller_node,
    launch_node_pids,
    models_ready,
    parse_sse,
    pid_alive,
    require_ports_free,
    router_replica,
    start_llmux,
    stream_post,
    wait_until,
)

pytestmark = pytest.mark.story

HTTP_PORT = 18090
BASE = f"http://127.0.0.1:{HTTP_PORT}"
KEY = "sk-frozen"
ADMIN_TOKEN = "admin-frozen"
HEARTBEAT_MS = 500
CONNECTION_TIMEOUT_MS = 3000
DETECT_LIMIT_S = 10.0  # connection_timeout + margin (heartbeat period, polling, scheduling)

CONFIG = f"""
[cluster]
name = "frozen-node-test"
scheduler_threads = 2

[timeouts]
request_ms = 30000
heartbeat_ms = {HEARTBEAT_MS}
connection_timeout_ms = {CONNECTION_TIMEOUT_MS}
reconnect_ms = 500

[[nodes]]
name = "edge"
host = "127.0.0.1"
port = 7501
admin_port = 7601

[[nodes]]
name = "gpu0"
host = "127.0.0.1"
port = 7502
admin_port = 7602

[[nodes]]
name = "gpu1"
host = "127.0.0.1"
port = 7503
admin_port = 7603

[gateway]
node = "edge"
host = "127.0.0.1"
port = {HTTP_PORT}
api_keys = ["{KEY}"]
admin_token = "{ADMIN_TOKEN}"

[router]
node = "edge"

[controller]
node = "edge"

[[models]]
name = "tiny-a"
backend = "sim"
architecture = "llama-7b"

[[models]]
name = "tiny-b"
backend = "sim"
architecture = "llama-8b"

[[units]]
name = "gpu0"
node = "gpu0"
backend = "sim"
gpu = "h100"
models = [ {{ name = "tiny-a", share = 1.0 }} ]

[[units]]
name = "gpu1"
node = "gpu1"
backend = "sim"
gpu = "h100"
time_scale = 10.0
models = [ {{ name = "tiny-b", share = 1.0 }} ]
"""

PORTS = [HTTP_PORT, 7501, 7502, 7503, 7601, 7602, 7603]


class Frozen:
    def __init__(self, launch, pids):
        self.launch = launch
        self.pids = pids


@pytest.fixture(scope="module")
def frozen_cluster(llmux_bin, tmp_path_factory):
    require_ports_free(PORTS, "the frozen-node test cluster needs its ports")
    d = tmp_path_factory.mktemp("frozen")
    cfg = d / "frozen.toml"
    cfg.write_text(CONFIG)
    launch = start_llmux(["launch", "--config", cfg], d, "launch-frozen", owner=__name__,
                         stop_signal=signal.SIGINT)
    c = None
    try:
        pids = launch_node_pids(launch, count=3)
        wait_until(lambda: models_ready(BASE, KEY, ["tiny-a", "tiny-b"]), 30,
                   "GET /v1/models to list tiny-a and tiny-b with replicas >= 1", interval=0.1, proc=launch)
        c = Frozen(launch, pids)
        yield c
    finally:
        if c is not None and pid_alive(c.pids["gpu1"]):
            try:
                os.kill(c.pids["gpu1"], signal.SIGCONT)
            except ProcessLookupError:
                pass
        launch.cleanup()


def _gpu1_state(want_up: bool):
    def check():
        states = admin_state_http(BASE, ADMIN_TOKEN, timeout=2)
        rep = router_replica(states, "gpu1/tiny-b")
        node = controller_node(states, "gpu1")
        ok = (rep is not None and rep["up"] is want_up and node is not None
              and node["status"] == ("up" if want_up else "down"))
        return states if ok else None
    return check


def _scheduler(states, node):
    found = [x for x in states if x["kind"] == "scheduler" and x["node"] == node]
    assert len(found) == 1, [(x["node"], x["kind"], x["name"]) for x in states]
    return found[0]["state"]


def _gpu1_idle():
    """gpu1's scheduler state once nothing runs or waits there and no KV block is held."""
    st = _scheduler(admin_state_http(BASE, ADMIN_TOKEN, timeout=2), "gpu1")
    return st if st["running"] == 0 and st["waiting"] == 0 and st["kv_token_blocks_held"] == 0 else None


def test_client_disconnect_cancels_generation(frozen_cluster):
    # docs/architecture.md: a client that disconnects mid-stream -> cancel -> the
    # scheduler drops the sequence and frees its KV blocks. At 10x time scale the
    # 260-token request below would run for 10+ s on gpu1.
    before = _scheduler(admin_state_http(BASE, ADMIN_TOKEN), "gpu1")
    body = chat_body("tiny-b", max_tokens=260, seed=36, stream=True)
    with requests.post(f"{BASE}/v1/chat/completions", json=body, headers=auth(KEY), stream=True,
                       timeout=(2, 10)) as resp:
        assert resp.status_code == 200, resp.text
        got = b""
        for chunk in resp.iter_content(chunk_size=None):
            got += chunk
            if got.count(b"\n\n") >= 3:
                break
    # The connection is closed now (the with-block ended mid-stream).
    t0 = time.monotonic()

    st = wait_until(_gpu1_idle, 5, "gpu1's scheduler to drop the abandoned sequence and free its KV blocks",
                    interval=0.1)
    generated = st["generated_tokens"] - before["generated_tokens"]
    assert generated < 200, (f"the scheduler generated {generated} tokens for a stream abandoned after 2; "
                             f"it was not cancelled (dropped after {time.monotonic() - t0:.1f}s)")


def test_client_disconnect_cancels_a_non_streaming_request(frozen_cluster):
    # The same without streaming: the client sends its request over a raw socket
    # and closes the connection while the answer is being generated. The edge
    # notices (it polls the connection while it waits) and cancels down to the
    # scheduler; otherwise the sequence runs to its end and counts as finished
    # (checked: with the poll disabled, this test fails on that).
    import socket
    from urllib.parse import urlparse
    before = _scheduler(admin_state_http(BASE, ADMIN_TOKEN), "gpu1")
    body = json.dumps(chat_body("tiny-b", max_tokens=260, seed=37)).encode()
    url = urlparse(BASE)
    sock = socket.create_connection((url.hostname, url.port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    def running():
        st = _scheduler(admin_state_http(BASE, ADMIN_TOKEN, timeout=2), "gpu1")
        return st if st["generated_tokens"] > before["generated_tokens"] and st["running"] == 1 else None

    wait_until(running, 5, "the request to be generating on gpu1", interval=0.05)
    sock.close()
    t0 = time.monotonic()

    st = wait_until(_gpu1_idle, 5, "gpu1's scheduler to drop the abandoned request and free its KV blocks",
                    interval=0.1)
    generated = st["generated_tokens"] - before["generated_tokens"]
    assert generated < 200, (f"the scheduler generated {generated} tokens for a request whose client left; "
                             f"it was not cancelled (dropped after {time.monotonic() - t0:.1f}s)")
    assert st["finished"] == before["finished"], "the abandoned request must be cancelled, not finished"
    metrics = requests.get(f"{BASE}/metrics", timeout=5).text
    assert 'llmux:requests_total{model="tiny-b",status="499"} 1' in metrics


def test_frozen_node_detected_and_requests_fail_fast(frozen_cluster):
    c = frozen_cluster
    # Healthy first: tiny-b answers.
    payloads = stream_post(f"{BASE}/v1/chat/completions",
                           chat_body("tiny-b", max_tokens=4, stream=True, stream_options={"include_usage": True}),
                           KEY, timeout=HTTP_TIMEOUT)
    check_chat_stream(payloads, "tiny-b", max_tokens=4)

    # A stream on tiny-b is in flight when gpu1 freezes: 20 tokens at 10x time scale
    # take ~1 s, and we freeze gpu1 right after the second one.
    body = chat_body("tiny-b", max_tokens=20, seed=36, stream=True)
    resp = requests.post(f"{BASE}/v1/chat/completions", json=body, headers=auth(KEY), stream=True,
                         timeout=(2, 20))
    pid = c.pids["gpu1"]
    try:
        assert resp.status_code == 200, resp.text
        it = resp.iter_content(chunk_size=None)
        head = b""
        while head.count(b"\n\n") < 3:  # role chunk + two tokens: generation is running
            head += next(it)

        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        states = wait_until(_gpu1_state(False), DETECT_LIMIT_S,
                            "router replica gpu1/tiny-b up=false and controller node gpu1 status=down "
                            "after SIGSTOP (middleman heartbeat / connection_timeout)",
                            interval=0.1, proc=c.launch)
        detected = time.monotonic() - t0
        assert router_replica(states, "gpu0/tiny-a")["up"] is True
        # Not much sooner than connection_timeout: that would mean healthy nodes flap.
        assert detected >= (CONNECTION_TIMEOUT_MS - HEARTBEAT_MS) / 1000 - 0.5, \
            f"gpu1 reported down after {detected:.2f}s, before connection_timeout_ms={CONNECTION_TIMEOUT_MS}"

        # The in-flight stream ends (error event + [DONE]); it does not hang.
        rest = b"".join(it)
        payloads = parse_sse(head + rest)
        last = json.loads(payloads[-2])
        assert "error" in last, f"in-flight stream on the frozen node ended without an error event: {last}"
        assert last["error"]["type"] == "service_unavailable_error", last
        stream_end = time.monotonic() - t0
        assert stream_end < DETECT_LIMIT_S + 5, f"in-flight stream took {stream_end:.1f}s to end"

        # New tiny-b requests: 503 quickly; tiny-a: fine.
        t = time.monotonic()
        r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-b", max_tokens=4),
                          headers=auth(KEY), timeout=HTTP_TIMEOUT)
        assert_openai_error(r, 503, type_="service_unavailable_error", message_contains="no live replica")
        assert time.monotonic() - t < 10
        # The official client: a 5xx is its InternalServerError, Retry-After kept.
        import openai
        with pytest.raises(openai.InternalServerError) as e:
            openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=HTTP_TIMEOUT) \
                .chat.completions.create(model="tiny-b", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=4)
        assert e.value.status_code == 503 and e.value.response.headers.get("Retry-After") == "1"
        assert e.value.body["type"] == "service_unavailable_error", e.value.body
        r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-a", max_tokens=4),
                          headers=auth(KEY), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
    finally:
        resp.close()
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)


def test_thawed_node_rejoins(frozen_cluster):
    # docs/architecture.md: "controller reconnects when it returns".
    c = frozen_cluster
    assert pid_alive(c.pids["gpu1"])
    wait_until(_gpu1_state(True), 15, "gpu1 to rejoin (router replica up, controller node up) after SIGCONT",
               interval=0.1, proc=c.launch)
    wait_until(lambda: models_ready(BASE, KEY, ["tiny-b"]), 5, "/v1/models to show tiny-b live again")


def test_thawed_node_drops_orphaned_stream(frozen_cluster):
    # The stream that was running on gpu1 when it froze was failed at the edge
    # (503 event). After the thaw gpu1's scheduler sees its gateway link gone
    # (down_msg) and must cancel that sequence, not compute it to the end for
    # nobody: `orphaned` counts it, and its KV blocks come back.
    st = wait_until(lambda: (lambda st: st if st["orphaned"] >= 1 and st["running"] == 0
                             and st["kv_token_blocks_held"] == 0 else None)(
        _scheduler(admin_state_http(BASE, ADMIN_TOKEN, timeout=2), "gpu1")), 10,
        "gpu1's scheduler to cancel the orphaned stream after the thaw", interval=0.1)
    assert st["orphaned"] >= 1


def test_thawed_node_serves_again(frozen_cluster):
    # After the rejoin the router sends tiny-b requests to gpu1 again; they must complete.
    # First let gpu1 finish the sequence that was in flight when it froze (the edge
    # failed it with 503, but gpu1 resumes it after SIGCONT), so the counters below
    # show this request alone.
    before = wait_until(lambda: (lambda st: st if st["running"] == 0 and st["waiting"] == 0 else None)(
        _scheduler(admin_state_http(BASE, ADMIN_TOKEN, timeout=2), "gpu1")), 10,
        "gpu1's scheduler to be idle after the thaw", interval=0.1)
    t = time.monotonic()
    r = None
    try:
        r = requests.post(f"{BASE}/v1/chat/completions", json=chat_body("tiny-b", max_tokens=4),
                          headers=auth(KEY), timeout=HTTP_TIMEOUT)
    except requests.ReadTimeout:
        pass
    if r is None:
        after = _scheduler(admin_state_http(BASE, ADMIN_TOKEN), "gpu1")
        pytest.fail(
            f"BUG: a 4-token tiny-b request to the rejoined gpu1 got no answer within {HTTP_TIMEOUT:.0f}s, "
            f"although admin state shows gpu1/tiny-b up (the edge only answers 504 when request_ms=30000 "
            f"runs out). gpu1's scheduler did the work: finished {before['finished']} -> {after['finished']}, "
            f"generated_tokens {before['generated_tokens']} -> {after['generated_tokens']}, "
            f"gateways={after['gateways']}; its token batches never reach the gateway.", pytrace=False)
    assert r.status_code == 200, f"tiny-b after rejoin: HTTP {r.status_code} after {time.monotonic() - t:.1f}s: {r.text}"
    assert r.json()["usage"]["completion_tokens"] == 4


@pytest.mark.after_failure
def test_frozen_cluster_stops_cleanly(frozen_cluster):
    c = frozen_cluster
    c.launch.signal(signal.SIGINT)
    rc = c.launch.wait(timeout=15)
    assert rc == 0, f"launch exited {rc}"
    assert not [n for n, p in c.pids.items() if pid_alive(p)], "node processes survived launch"
