"""Chaos across real hosts: each node of a three-node cluster runs in its own
Linux network namespace (ip netns + veth on a bridge the test creates, one
address per node, node links over mutual TLS), and the test breaks them while
streams run: kill -9, SIGSTOP/SIGCONT, the link going down and up, netem
delay and loss (skipped, saying so, on kernels without sch_netem, as this
project's CI machines are), a slow link (tbf), a node restarted with the
same name.

After each fault: every stream completed with exactly the undisturbed text
(the gateway migrates a stream whose node is lost: no token missing or
repeated) or got a clear error before its deadline, none hung; no KV block
stays held once the cluster is idle; the cluster converges (every node up,
every replica routed to, /ready true).

The units run the sim backend (labelled simulated; its tokens depend only on
the seed and the position, so a migrated stream must match): what is under
test is the cluster, not the engine — tests/integration/test_migration.py
does the same kill with the real engine. Needs root and `ip netns`; skips
with the reason otherwise."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import (
    admin_state_http,
    controller_node,
    find_states,
    router_replica,
    run_llmux,
    start_llmux,
    wait_until,
)

pytestmark = pytest.mark.story

ADMIN = "adm-chaos"
NODES = ["edge", "gpu0", "gpu1"]
PORT, ADMIN_PORT, HTTP = 7000, 7100, 8080  # each namespace has its own ports
BODY = {"model": "m", "prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "seed": 7}
DEADLINE_S = 30  # [timeouts] request_ms below


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=check)


def _netns_usable() -> str | None:
    """None when this process can make namespaces and veth pairs, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    probe = f"llmux-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "ip", "link", "add", "v0", "type", "veth", "peer", "name",
                            "v1"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot create a veth pair: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _qdisc_missing(c: "Chaos", *spec: str) -> str | None:
    """None when the kernel has this queueing discipline (netem is a module
    some kernels lack), else tc's answer."""
    r = _ip("tc", "qdisc", "add", "dev", "lo", "root", *spec, ns=c.net.ns["edge"], check=False)
    if r.returncode != 0:
        return f"tc qdisc {spec[0]} is not available on this kernel: {r.stderr.strip()}"
    _ip("tc", "qdisc", "del", "dev", "lo", "root", ns=c.net.ns["edge"], check=False)
    return None


class Net:
    """A bridge in this namespace and one namespace per node, each with a veth
    into the bridge; only these addresses carry the cluster's traffic."""

    def __init__(self):
        self.tag = f"{random.randrange(16**4):04x}"
        self.subnet = random.randrange(16, 250)
        self.bridge = f"lxb{self.tag}"
        self.ns = {n: f"llmux-{self.tag}-{n}" for n in NODES}
        self.addr = {n: f"10.231.{self.subnet}.{10 + i}" for i, n in enumerate(NODES)}

    def up(self):
        _ip("ip", "link", "add", self.bridge, "type", "bridge")
        _ip("ip", "addr", "add", f"10.231.{self.subnet}.1/24", "dev", self.bridge)
        _ip("ip", "link", "set", self.bridge, "up")
        for i, n in enumerate(NODES):
            host, peer = f"lx{self.tag}{i}", f"lx{self.tag}{i}p"
            _ip("ip", "netns", "add", self.ns[n])
            _ip("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("ip", "link", "set", peer, "netns", self.ns[n])
            _ip("ip", "link", "set", host, "master", self.bridge)
            _ip("ip", "link", "set", host, "up")
            _ip("ip", "link", "set", peer, "name", "eth0", ns=self.ns[n])
            _ip("ip", "addr", "add", f"{self.addr[n]}/24", "dev", "eth0", ns=self.ns[n])
            _ip("ip", "link", "set", "eth0", "up", ns=self.ns[n])
            _ip("ip", "link", "set", "lo", "up", ns=self.ns[n])

    def down(self):
        for n in NODES:
            _ip("ip", "netns", "del", self.ns[n], check=False)
        _ip("ip", "link", "del", self.bridge, check=False)

    def link(self, node: str, state: str):
        _ip("ip", "link", "set", "eth0", state, ns=self.ns[node])

    def qdisc(self, node: str, *spec: str):
        _ip("tc", "qdisc", "replace", "dev", "eth0", "root", *spec, ns=self.ns[node])

    def clear_qdisc(self, node: str):
        _ip("tc", "qdisc", "del", "dev", "eth0", "root", ns=self.ns[node], check=False)


class Chaos:
    def __init__(self, net: Net, cfg: Path, d: Path):
        self.net, self.cfg, self.dir = net, cfg, d
        self.base = f"http://{net.addr['edge']}:{HTTP}"
        self.procs: dict[str, object] = {}
        self.restarts = 0
        self.reference: str | None = None

    def start(self, node: str):
        self.restarts += 1
        self.procs[node] = start_llmux(["node", "--config", self.cfg, "--name", node], self.dir,
                                       f"{node}-{self.restarts}", owner=__name__, stop_signal=signal.SIGTERM,
                                       prefix=["ip", "netns", "exec", self.net.ns[node]])

    def states(self) -> list[dict]:
        return admin_state_http(self.base, ADMIN, timeout=3)

    def converged(self) -> bool:
        s = self.states()
        return (all(controller_node(s, n)["status"] == "up" for n in ("gpu0", "gpu1"))
                and all((router_replica(s, r) or {}).get("up") for r in ("u0/m", "u1/m"))
                and requests.get(f"{self.base}/ready", timeout=3).status_code == 200)

    def kv_idle(self) -> bool:
        kvs = find_states(self.states(), "kv_manager")
        return len(kvs) == 2 and all(k["state"]["blocks_used"] == 0 for k in kvs)

    def serving_node(self) -> str | None:
        for s in find_states(self.states(), "scheduler"):
            if s["state"]["running"] >= 1:
                return s["node"]
        return None

    def migrated(self) -> int:
        return find_states(self.states(), "gateway")[0]["state"]["migrated"]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.procs.values())


@pytest.fixture(scope="module")
def chaos(llmux_bin, tmp_path_factory):
    why = _netns_usable()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("chaos")
    net = Net()
    cfg = d / "chaos.toml"
    nodes = "".join(f'\n[[nodes]]\nname = "{n}"\nhost = "{net.addr[n]}"\nport = {PORT}\nadmin_port = {ADMIN_PORT}\n'
                    for n in NODES)
    units = "".join(f'\n[[units]]\nname = "u{i}"\nnode = "gpu{i}"\nbackend = "sim"\ngpu = "h100"\ntime_scale = 4.0\n'
                    f'models = [ {{ name = "m", share = 1.0 }} ]\n' for i in range(2))
    cfg.write_text(f"""
[timeouts]
request_ms = {DEADLINE_S * 1000}
heartbeat_ms = 500
connection_timeout_ms = 3000
reconnect_ms = 300
connect_ms = 1000

[tls]
dir = "certs"
{nodes}
[gateway]
node = "edge"
host = "{net.addr['edge']}"
port = {HTTP}
admin_token = "{ADMIN}"

[[models]]
name = "m"
backend = "sim"
architecture = "llama-7b"
{units}
""")
    made = run_llmux(["certs", "--config", cfg])
    assert made.returncode == 0, made.stderr
    c = Chaos(net, cfg, d)
    try:
        net.up()
        for n in NODES:
            c.start(n)
        wait_until(c.converged, 30, "the cluster in namespaces to come up", interval=0.2)
        # The undisturbed text, from either replica (the sim's tokens depend on seed and position only).
        r = requests.post(f"{c.base}/v1/completions", json=BODY, timeout=DEADLINE_S)
        assert r.status_code == 200, r.text
        c.reference = r.json()["choices"][0]["text"]
        assert r.json()["usage"]["completion_tokens"] == BODY["max_tokens"]
        yield c
    finally:
        for p in c.procs.values():
            p.cleanup()
        net.down()


def _stream(c: Chaos, at_chunk: int | None = None, fault=None) -> dict:
    """One greedy stream; `fault(node)` runs once at chunk `at_chunk`, given the
    node serving it. Returns text, error, usage and timing."""
    t0 = time.monotonic()
    out = {"text": "", "error": None, "usage": None, "node": None, "migrated_before": c.migrated()}
    chunks = 0
    with requests.post(f"{c.base}/v1/completions", json=dict(BODY, stream=True, stream_options={"include_usage": True}),
                       stream=True, timeout=DEADLINE_S + 5) as r:
        if r.status_code != 200:
            out["error"] = f"HTTP {r.status_code}: {r.text}"
            return out
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                out["error"] = ev["error"]
                break
            if ev.get("usage"):
                out["usage"] = ev["usage"]
            if ev["choices"] and ev["choices"][0].get("text"):
                out["text"] += ev["choices"][0]["text"]
                chunks += 1
            if fault is not None and at_chunk is not None and chunks == at_chunk and out["node"] is None:
                out["node"] = c.serving_node()
                assert out["node"] in ("gpu0", "gpu1"), out["node"]
                fault(out["node"])
    out["seconds"] = time.monotonic() - t0
    return out


def _after(c: Chaos, res: dict, faulted: bool = True) -> None:
    """The invariants every fault must leave true."""
    assert res["error"] is None, res["error"]
    if faulted:
        # The fault struck mid-stream, and the stream went on elsewhere.
        assert res["node"] is not None, "the stream ended before the fault"
        assert c.migrated() > res["migrated_before"], "the stream was not migrated"
    assert res["seconds"] < DEADLINE_S, res
    assert res["text"] == c.reference, "a migrated stream lost or repeated tokens"
    assert res["usage"] and res["usage"]["completion_tokens"] == BODY["max_tokens"], res["usage"]
    wait_until(c.converged, 30, "the cluster to converge (nodes up, replicas routed, /ready)", interval=0.2)
    wait_until(c.kv_idle, 15, "every KV block to be released once idle", interval=0.2)


def test_kill9_mid_stream_then_restart_with_the_same_name(chaos):
    res = _stream(chaos, 8, lambda node: os.kill(chaos.procs[node].pid, signal.SIGKILL))
    killed = res["node"]
    chaos.procs[killed].wait(10)
    chaos.start(killed)  # same name, same address, same certificate
    _after(chaos, res)


def test_sigstop_mid_stream_then_sigcont(chaos):
    frozen = []

    def freeze(node):
        os.kill(chaos.procs[node].pid, signal.SIGSTOP)
        frozen.append(node)

    try:
        res = _stream(chaos, 8, freeze)
    finally:
        for n in frozen:
            os.kill(chaos.procs[n].pid, signal.SIGCONT)
    _after(chaos, res)


def test_link_down_mid_stream_then_up(chaos):
    cut = []

    def unplug(node):
        chaos.net.link(node, "down")
        cut.append(node)

    try:
        res = _stream(chaos, 8, unplug)
    finally:
        for n in cut:
            chaos.net.link(n, "up")
    _after(chaos, res)


def _streams_through(c: Chaos, spec: tuple[str, ...], count: int = 4) -> None:
    """`count` concurrent streams while both unit links run `tc qdisc SPEC`."""
    for n in ("gpu0", "gpu1"):
        c.net.qdisc(n, *spec)
    try:
        results = [None] * count
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _stream(c))) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S + 10)
        assert all(not t.is_alive() for t in threads), "a stream hung"
    finally:
        for n in ("gpu0", "gpu1"):
            c.net.clear_qdisc(n)
    for res in results:
        _after(c, res, faulted=False)


def test_netem_delay_and_loss_on_every_unit_link(chaos):
    # 40 ms each way and 3% loss on both unit nodes: TCP retransmits, the
    # heartbeats (500 ms, 3 s timeout) hold, and every stream is unchanged.
    spec = ("netem", "delay", "40ms", "10ms", "loss", "3%")
    why = _qdisc_missing(chaos, *spec)
    if why:
        pytest.skip(why)
    _streams_through(chaos, spec)


def test_a_slow_link_on_every_unit_link(chaos):
    # A token bucket of 200 kbit/s with a 300 ms queue: node messages wait
    # behind each other (what a congested link does) but nothing is lost.
    _streams_through(chaos, ("tbf", "rate", "200kbit", "burst", "8kb", "latency", "300ms"))


def test_no_node_was_refused_and_none_crashed(chaos):
    # Every reconnection above went through the TLS handshake with the
    # cluster's certificates: none may have been turned away.
    assert "node TLS: refused" not in chaos.logs()
    for name, p in chaos.procs.items():
        assert p.poll() is None, f"{name} exited with {p.returncode}"
