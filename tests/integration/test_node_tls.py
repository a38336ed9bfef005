"""Nodes that authenticate each other: a three-node cluster with `[tls]` and
certificates made by `llmux certs`. The nodes serve requests over mutual TLS;
whoever lacks the cluster's credentials (no certificate, another CA's, plain
TCP, a whole llmux node of an intruder's config) cannot complete a connection,
cannot send a message, and is logged with its address; a killed node
restarted with the same name rejoins through the same handshake."""

from __future__ import annotations

import os
import signal
import socket
import ssl
from pathlib import Path

import pytest
import requests

from conftest import (
    admin_state_http,
    controller_node,
    free_port,
    launch_node_pids,
    metric,
    router_replica,
    run_llmux,
    scrape_metrics,
    start_llmux,
    wait_until,
)

ADMIN = "adm-tls"


def _config(ports: dict, tls: str, extra_nodes: str = "", gateway_node: str = "edge", units: str = "") -> str:
    return f"""
[timeouts]
request_ms = 4000
heartbeat_ms = 300
connection_timeout_ms = 2000
reconnect_ms = 300

{tls}

[[nodes]]
name = "{gateway_node}"
port = {ports['edge']}
admin_port = {ports['edge_admin']}
{extra_nodes}

[gateway]
node = "{gateway_node}"
port = {ports['http']}
admin_token = "{ADMIN}"

[[models]]
name = "m"
backend = "sim"
architecture = "tiny"
{units}
"""


def _unit(name: str, node: str) -> str:
    return f"""
[[units]]
name = "{name}"
node = "{node}"
backend = "sim"
time_scale = 0
models = [ {{ name = "m", share = 1.0 }} ]
"""


def _node(name: str, port: int, admin: int) -> str:
    return f"""
[[nodes]]
name = "{name}"
port = {port}
admin_port = {admin}
"""


class Cluster:
    def __init__(self, d: Path, cfg: Path, ports: dict, launch, pids):
        self.dir, self.cfg, self.ports, self.launch, self.pids = d, cfg, ports, launch, pids
        self.base = f"http://127.0.0.1:{ports['http']}"


@pytest.fixture(scope="module")
def cluster(llmux_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ports = {k: free_port() for k in ("edge", "edge_admin", "gpu0", "gpu0_admin", "gpu1", "gpu1_admin", "http")}
    nodes = _node("gpu0", ports["gpu0"], ports["gpu0_admin"]) + _node("gpu1", ports["gpu1"], ports["gpu1_admin"])
    cfg = d / "tls.toml"
    cfg.write_text(_config(ports, '[tls]\ndir = "certs"', nodes, units=_unit("u0", "gpu0") + _unit("u1", "gpu1")))
    made = run_llmux(["certs", "--config", cfg])
    assert made.returncode == 0, made.stderr
    assert "made a new cluster CA" in made.stdout
    for f in ("ca.pem", "ca.key", "edge.pem", "edge.key", "gpu0.pem", "gpu0.key", "gpu1.pem", "gpu1.key"):
        assert (d / "certs" / f).is_file(), f
    launch = start_llmux(["launch", "--config", cfg], d, "launch-tls", owner=__name__)
    try:
        pids = launch_node_pids(launch, 3, timeout=30)
        c = Cluster(d, cfg, ports, launch, pids)
        wait_until(lambda: all((router_replica(admin_state_http(c.base, ADMIN, 2), r) or {}).get("up")
                               for r in ("u0/m", "u1/m")), 30, "both replicas joined over TLS", proc=launch)
        yield c
    finally:
        launch.cleanup()


PROMPT = "Once upon a time there was a little robot who lived in a quiet town by the sea. " * 3  # blocks to look up


def _complete(base: str) -> requests.Response:
    return requests.post(f"{base}/v1/completions", json={"model": "m", "prompt": PROMPT, "max_tokens": 4},
                         timeout=10)


def test_nodes_serve_over_mutual_tls(cluster):
    cluster.launch.wait_for_log(r"cluster port 127\.0\.0\.1:\d+ \(mutual TLS\)", 5, count=3)
    for _ in range(4):  # both replicas (least-loaded alternates between idle ones)
        r = _complete(cluster.base)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
    states = admin_state_http(cluster.base, ADMIN)
    for n in ("gpu0", "gpu1"):
        assert controller_node(states, n)["status"] == "up"


def _refusal_logged(cluster, port: int) -> None:
    cluster.launch.wait_for_log(rf"node TLS: refused a connection from 127\.0\.0\.1:{port} in the handshake", 10)


def _tls_client(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _try_tls(port: int, ctx: ssl.SSLContext) -> tuple[int, bool]:
    """Connects, handshakes and reads once. Returns (our source port, whether
    the connection stayed open after the server had its say)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        src = raw.getsockname()[1]
        try:
            with ctx.wrap_socket(raw) as s:
                s.settimeout(1.0)
                try:
                    # TLS 1.3: the client finishes first; the server's verdict on
                    # our certificate arrives with the next read.
                    data = s.recv(1)
                    return src, data != b""
                except socket.timeout:
                    return src, True  # accepted: the server waits for BASP's handshake
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return src, False


def test_a_client_without_a_certificate_is_refused_and_logged(cluster):
    src, open_ = _try_tls(cluster.ports["gpu0"], _tls_client())
    assert not open_
    _refusal_logged(cluster, src)


def test_a_certificate_from_another_ca_is_refused_and_logged(cluster, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(cluster.cfg.read_text().replace('dir = "certs"', 'dir = "other-certs"'))
    made = run_llmux(["certs", "--config", other])
    assert made.returncode == 0, made.stderr
    src, open_ = _try_tls(cluster.ports["gpu0"], _tls_client(tmp_path / "other-certs" / "edge.pem",
                                                             tmp_path / "other-certs" / "edge.key"))
    assert not open_
    _refusal_logged(cluster, src)
    cluster.launch.wait_for_log(rf"127\.0\.0\.1:{src} in the handshake: certificate 'edge' not accepted", 5)


def test_plain_tcp_is_refused_and_logged(cluster):
    with socket.create_connection(("127.0.0.1", cluster.ports["gpu1"]), timeout=5) as s:
        src = s.getsockname()[1]
        s.sendall(b"\x00\x00\x00\x40" + b"\x00" * 64)  # what a plain CAF node would send first
        s.settimeout(5)
        try:
            s.recv(64)  # the server hangs up (EOF or reset)
        except (ConnectionResetError, socket.timeout):
            pass
    _refusal_logged(cluster, src)


def test_the_clusters_own_certificate_is_admitted(cluster):
    # The control for the refusals above: the same client with a node's own
    # certificate completes the handshake and is not logged.
    certs = cluster.dir / "certs"
    src, open_ = _try_tls(cluster.ports["gpu0"], _tls_client(certs / "edge.pem", certs / "edge.key"))
    assert open_
    assert f"127.0.0.1:{src} in the handshake" not in cluster.launch.log()


@pytest.mark.parametrize("intruder_tls", ["none", "own-ca"])
def test_an_intruder_node_cannot_join_or_reach_a_replica(cluster, tmp_path, intruder_tls):
    """A whole llmux node whose config names gpu0 as one of its nodes: without
    the cluster's credentials its controller never gets gpu0's admin actor, so
    it learns no replica and its requests fail; gpu0 logs every attempt."""
    ports = {"edge": free_port(), "edge_admin": free_port(), "http": free_port()}
    tls = '[tls]\ndir = "intruder-certs"' if intruder_tls == "own-ca" else ""
    cfg = tmp_path / "intruder.toml"
    cfg.write_text(_config(ports, tls, _node("gpu0", cluster.ports["gpu0"], cluster.ports["gpu0_admin"]),
                           gateway_node="intruder", units=_unit("u0", "gpu0")))
    if tls:
        assert run_llmux(["certs", "--config", cfg, "--node", "intruder"]).returncode == 0
    before = len(cluster.launch.log().split("node TLS: refused a connection from"))
    node = start_llmux(["node", "--config", cfg, "--name", "intruder"], tmp_path, f"intruder-{intruder_tls}",
                       owner=__name__, stop_signal=signal.SIGTERM)
    base = f"http://127.0.0.1:{ports['http']}"
    try:
        # The intruder's controller retries every reconnect_ms; gpu0 refuses each time.
        wait_until(lambda: len(cluster.launch.log().split("node TLS: refused a connection from")) >= before + 2, 15,
                   "gpu0 to refuse the intruder twice", proc=node)
        states = admin_state_http(base, ADMIN)
        assert controller_node(states, "gpu0")["status"] != "up", states
        assert (router_replica(states, "u0/m") or {}).get("up") is not True
        r = _complete(base)
        assert r.status_code in (503, 504), r.text  # no replica joined before the deadline
        # The real cluster never noticed: still serving.
        assert _complete(cluster.base).status_code == 200
    finally:
        node.cleanup()


def _prefix_queries(base: str) -> float:
    return metric(scrape_metrics(base), "llmux:prefix_cache_queries_total", model="m")


def test_a_killed_node_restarted_with_the_same_name_rejoins_over_tls(cluster, tmp_path):
    def gpu1_has_counted():
        kv = [s for s in admin_state_http(cluster.base, ADMIN) if s["kind"] == "kv_manager" and s["node"] == "gpu1"]
        if kv and kv[0]["state"]["models"]["m"]["prefix_queries"] > 0:
            return True
        assert _complete(cluster.base).status_code == 200
        return False

    wait_until(gpu1_has_counted, 20, "gpu1 to count prefix-cache lookups")
    before = _prefix_queries(cluster.base)
    os.kill(cluster.pids["gpu1"], signal.SIGKILL)
    cluster.launch.wait_for_log(r"^llmux launch: node gpu1 \(pid \d+\) killed by signal 9", 10)
    wait_until(lambda: controller_node(admin_state_http(cluster.base, ADMIN, 2), "gpu1")["status"] == "down", 10,
               "the controller to mark gpu1 down")
    # The edge keeps what the dead node counted: its counters do not go back.
    assert _prefix_queries(cluster.base) == before
    assert _complete(cluster.base).status_code == 200  # gpu0 serves meanwhile
    node = start_llmux(["node", "--config", cluster.cfg, "--name", "gpu1"], tmp_path, "gpu1-again", owner=__name__,
                       stop_signal=signal.SIGTERM)
    try:
        wait_until(lambda: (router_replica(admin_state_http(cluster.base, ADMIN, 2), "u1/m") or {}).get("up")
                   and controller_node(admin_state_http(cluster.base, ADMIN, 2), "gpu1")["status"] == "up", 20,
                   "the restarted gpu1 to rejoin over TLS", proc=node)
        for _ in range(4):
            assert _complete(cluster.base).status_code == 200
        # The restarted gpu1 counts from zero, on top of what its first run counted.
        assert _prefix_queries(cluster.base) > before
    finally:
        node.cleanup()


def test_a_node_without_its_key_does_not_start(cluster, tmp_path):
    cfg = tmp_path / "nokey.toml"
    cfg.write_text(cluster.cfg.read_text().replace('dir = "certs"', f'dir = "{cluster.dir / "certs"}"\n'
                                                                        f'key = "{tmp_path}/missing-{{node}}.key"'))
    res = run_llmux(["node", "--config", cfg, "--name", "gpu0"], timeout=15)
    assert res.returncode != 0
    assert "missing-gpu0.key' does not exist (llmux certs CONFIG makes one)" in res.stderr, res.stderr
