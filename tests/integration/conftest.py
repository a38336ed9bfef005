"""Shared helpers for the integration suite: real llmux processes, driven over HTTP,
the admin CLI and signals.

Rules every test here follows:
  * every process is started through `start_llmux` (own process group, output to a
    log file under pytest's tmp dir, printed with the failure report);
  * nothing sleeps and hopes: conditions are polled with a deadline (`wait_until`);
  * teardown stops processes with the signal their command expects (SIGINT for
    `launch`, SIGTERM for `serve`/`node`), waits, and SIGKILLs the whole process
    group as a last resort, so no node outlives the suite;
  * every HTTP call has a timeout, so no test can hang on a stuck server.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests

# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------

SOURCE_DIR = Path(os.environ.get("LLMUX_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()


def _resolve_bin() -> Path:
    raw = os.environ.get("LLMUX_BIN", "build/llmux")
    p = Path(raw)
    if not p.is_absolute():
        # Relative to where pytest runs first (the documented invocation is from the
        # source dir), then to the source dir.
        cand = Path.cwd() / p
        p = cand if cand.exists() else SOURCE_DIR / p
    return p.resolve()


LLMUX_BIN = _resolve_bin()

HTTP_TIMEOUT = 10.0  # seconds; every request in the suite is bounded by this (or less)


# Modules run cheapest and most fundamental first; within a module, file order (the
# cluster modules tell one story, step by step).
_MODULE_ORDER = ["test_serve", "test_cluster", "test_frozen_node"]


def pytest_configure(config):
    config.addinivalue_line("markers", "story: the module's tests are steps of one story against one "
                                       "cluster; after a failed step the later ones are skipped")
    config.addinivalue_line("markers", "after_failure: a story step that runs even if an earlier one failed")


_FAILED_STEP: dict[str, str] = {}  # story module -> the first step that failed


def pytest_runtest_setup(item):
    if item.get_closest_marker("story") and not item.get_closest_marker("after_failure"):
        failed = _FAILED_STEP.get(item.module.__name__)
        if failed:
            pytest.skip(f"depends on an earlier step that failed: {failed}")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.module.__name__ if item.module else ""
        return _MODULE_ORDER.index(name) if name in _MODULE_ORDER else len(_MODULE_ORDER)

    items.sort(key=rank)  # stable: keeps file order inside each module


@pytest.fixture(scope="session")
def llmux_bin() -> Path:
    if not LLMUX_BIN.is_file() or not os.access(LLMUX_BIN, os.X_OK):
        pytest.fail(f"llmux binary not found at {LLMUX_BIN} (set LLMUX_BIN or build it)", pytrace=False)
    return LLMUX_BIN


# --------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    pass


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
               proc: Optional["LlmuxProcess"] = None) -> Any:
    """Polls `predicate` until it returns something truthy; returns that value.

    Exceptions raised by the predicate count as "not yet" (the last one is reported).
    If `proc` is given and it exits while we wait, fail at once with its log.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: Optional[BaseException] = None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - polled condition, reported on timeout
            last_exc = e
        if proc is not None and proc.poll() is not None:
            raise WaitTimeout(f"while waiting for {what}: {proc.name} exited with status "
                              f"{proc.returncode}\n--- log ---\n{proc.log_tail()}")
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what} ({detail})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

_STARTED: list["LlmuxProcess"] = []


@atexit.register
def _kill_leftovers() -> None:
    """Last resort if a fixture's teardown never ran (e.g. pytest was interrupted)."""
    for p in _STARTED:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass
            p.kill_group()


@dataclass
class LlmuxProcess:
    name: str
    args: list[str]
    log_path: Path
    stop_signal: int
    owner: str  # module (or node id) that started it; its failures print this log
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS] (it execs: same pid)
    proc: subprocess.Popen = field(init=False)
    _log_file: Any = field(init=False, default=None)

    def start(self, cwd: Path) -> "LlmuxProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            [*self.prefix, str(LLMUX_BIN), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            start_new_session=True,  # own process group: children of `launch` join it
        )
        _STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 200) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> list[re.Match]:
        """Waits until `pattern` matches at least `count` lines of the log."""
        rx = re.compile(pattern, re.M)

        def matches():
            found = list(rx.finditer(self.log()))
            return found if len(found) >= count else None

        return wait_until(matches, timeout, f"{count} line(s) matching {pattern!r} in {self.name}'s log",
                          proc=self)

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self, grace: float = 15.0) -> None:
        """Stops the process (and every process of its group) no matter what."""
        try:
            if self.poll() is None:
                # A stopped member would ignore SIGTERM/SIGINT until continued.
                try:
                    os.killpg(self.pid, signal.SIGCONT)
                except (ProcessLookupError, PermissionError):
                    pass
                self.signal(self.stop_signal)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self.kill_group()  # last resort; also catches orphaned children
            if self.poll() is None:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def start_llmux(args: list[str], log_dir: Path, name: str, owner: str,
                stop_signal: int = signal.SIGTERM, cwd: Optional[Path] = None,
                prefix: Optional[list[str]] = None) -> LlmuxProcess:
    p = LlmuxProcess(name=name, args=[str(a) for a in args], log_path=Path(log_dir) / f"{name}.log",
                     stop_signal=stop_signal, owner=owner, prefix=list(prefix or []))
    return p.start(cwd or SOURCE_DIR)


def start_serve(args: list, log_dir: Path, name: str, owner: str, port: int,
                timeout: float = 30.0) -> tuple[LlmuxProcess, str]:
    """Starts `llmux serve ARGS` (listening on `port`) and waits until GET /health
    answers; returns the process and its base URL. Cleans up if it never does."""
    proc = start_llmux(["serve", *args], log_dir, name, owner=owner, stop_signal=signal.SIGTERM)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).status_code == 200, timeout,
                   f"{name} to answer GET {base}/health", proc=proc)
    except BaseException:
        proc.cleanup()
        raise
    return proc, base


SMOLLM2_GGUF = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_url(request, llmux_bin, tmp_path_factory):
    """The base URL of a `llmux serve` of the embedded default (SmolLM2-135M-Instruct
    on the CPU backend, no API key) for the requesting module; skips when the model
    file is missing."""
    if not SMOLLM2_GGUF.exists():
        pytest.skip(f"{SMOLLM2_GGUF} is missing: scripts/setup fetches it")
    tag = request.module.__name__.rsplit(".", 1)[-1]
    port = free_port()
    proc, url = start_serve(["--port", port], tmp_path_factory.mktemp(tag), f"serve-{tag}",
                            request.module.__name__, port, timeout=60)
    try:
        yield url
    finally:
        proc.cleanup()


def run_llmux(args: list[str], timeout: float = 30.0, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Runs a short-lived llmux command (admin, bad configs) to completion."""
    return subprocess.run([str(LLMUX_BIN), *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd or SOURCE_DIR), stdin=subprocess.DEVNULL)


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live (non-zombie) llmux process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        return b"llmux" in cmdline  # a recycled pid is not ours
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the log of every llmux process started by the failing test's module."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    module = item.module.__name__ if item.module else ""
    if item.get_closest_marker("story") and rep.when in ("setup", "call"):
        _FAILED_STEP.setdefault(module, item.name)
    for p in _STARTED:
        if p.owner in (module, item.nodeid):
            rep.sections.append((f"llmux log: {p.name} ({p.log_path})", p.log_tail()))


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------


def solo_config(http: int, node: int, admin: int, gateway: str = "") -> str:
    """The [[nodes]] and [gateway] sections of a one-node config (node "solo",
    gateway on it); `gateway` adds lines to the [gateway] table."""
    return f"""
[[nodes]]
name = "solo"
port = {node}
admin_port = {admin}

[gateway]
node = "solo"
port = {http}
{gateway}
"""


def serve_cpu_unit(tmp_path: Path, name: str, owner: str, files: dict, models: str, unit_keys: str = "",
                   timeout: float = 30.0):
    """`llmux serve` of one 2-thread CPU unit "cpu0" (64 MiB of KV) hosting
    `files` (model name -> GGUF), with `unit_keys` and the unit's `models`
    list; returns the process, its base URL and the config's path."""
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / f"{name}.toml"
    text = solo_config(http, node, admin) + "\n[timeouts]\nrequest_ms = 120000\n"
    for model, path in files.items():
        text += f'\n[[models]]\nname = "{model}"\nbackend = "cpu"\nfile = "{path}"\n'
    text += f"""
[[units]]
name = "cpu0"
node = "solo"
backend = "cpu"
threads = 2
kv_cache_mib = 64
{unit_keys}
models = [ {models} ]
"""
    cfg.write_text(text)
    proc, base = start_serve(["--config", cfg], tmp_path, f"serve-{name}", owner, http, timeout=timeout)
    return proc, base, cfg


def sim_models(*names: str, architecture: str = "tiny") -> str:
    """[[models]] tables for sim-backend models of one architecture."""
    return "".join(f'\n[[models]]\nname = "{n}"\nbackend = "sim"\narchitecture = "{architecture}"\n'
                   for n in names)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()
_port_rng = random.Random()


def _bindable(port: int) -> bool:
    if port in _handed_out or port_in_use(port):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(span: int) -> int:
    """The first of `span` consecutive free ports, below the kernel's ephemeral
    range: a port asked of the kernel (bind to 0) is an ephemeral one, which any
    outbound connection on the machine may take before the server binds it, and
    servers under test hold theirs while clients open thousands of connections.
    Ports handed out once are not handed out again in this session."""
    high = max(_ephemeral_low() - span, 10000 + span)
    for _ in range(500):
        base = _port_rng.randrange(10000, high)
        if all(_bindable(base + i) for i in range(span)):
            _handed_out.update(range(base, base + span))
            return base
    raise RuntimeError(f"no run of {span} free ports below {high}")


def free_port() -> int:
    return free_ports(1)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def require_ports_free(ports: list[int], why: str) -> None:
    busy = [p for p in ports if port_in_use(p)]
    if busy:
        pytest.fail(f"{why}: ports {busy} on 127.0.0.1 are already in use by another process; "
                    f"stop it (another llmux?) and re-run", pytrace=False)


# --------------------------------------------------------------------------------------
# HTTP / OpenAI helpers
# --------------------------------------------------------------------------------------


def scrape_metrics(base: str) -> dict:
    """/metrics through prometheus_client's parser: {(name, frozenset(labels)): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    r = requests.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(scrape: dict, name: str, **labels) -> float:
    """One sample of a `scrape_metrics` result; 0 when absent."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


def auth(key: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def parse_sse(raw: bytes) -> list[str]:
    """Splits a complete SSE body into its `data:` payloads, checking the framing:
    every event is exactly `data: <payload>\\n\\n` and the last one is `data: [DONE]`."""
    text = raw.decode("utf-8")
    assert text, "empty SSE body"
    assert text.endswith("\n\n"), f"SSE body does not end with a blank line: {text[-80:]!r}"
    events = text[:-2].split("\n\n")
    payloads = []
    for i, ev in enumerate(events):
        assert ev.startswith("data: "), f"SSE event {i} is not 'data: ...': {ev[:120]!r}"
        assert "\n" not in ev and "\r" not in ev, f"SSE event {i} spans several lines: {ev[:200]!r}"
        payloads.append(ev[len("data: "):])
    assert payloads[-1] == "[DONE]", f"last SSE event is {payloads[-1][:200]!r}, not [DONE]"
    assert payloads.count("[DONE]") == 1, "[DONE] appears more than once"
    return payloads


def read_sse(resp: requests.Response) -> list[str]:
    """Reads a streamed response to the end and returns its `data:` payloads (framing checked)."""
    assert resp.status_code == 200, f"stream answered HTTP {resp.status_code}: {resp.text[:500]}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("text/event-stream"), f"stream Content-Type is {ctype!r}"
    raw = b"".join(resp.iter_content(chunk_size=None))
    return parse_sse(raw)


def json_events(payloads: list[str]) -> list[dict]:
    """The JSON events of a payload list (everything but the final [DONE])."""
    return [json.loads(p) for p in payloads[:-1]]


def stream_post(url: str, body: dict, key: Optional[str], timeout: float = HTTP_TIMEOUT) -> list[str]:
    with requests.post(url, json=body, headers=auth(key), stream=True, timeout=timeout) as r:
        return read_sse(r)


def assert_openai_error(resp: requests.Response, status: int, *, param: Any = ..., type_: Optional[str] = None,
                        code: Any = ..., message_contains: Optional[str] = None) -> dict:
    assert resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, f"error body has keys {sorted(body)}: {body}"
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, f"error object keys: {sorted(err)}"
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if type_ is not None:
        assert err["type"] == type_, err
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    if message_contains is not None:
        assert message_contains.lower() in err["message"].lower(), err
    return err


def chat_body(model: str, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a story."}]}
    body.update(extra)
    return body


def check_chat_stream(payloads: list[str], model: str, max_tokens: int, finish: str = "length") -> dict:
    """Checks one streamed chat completion (with include_usage); returns the usage object."""
    events = json_events(payloads)
    assert events, "no JSON events before [DONE]"
    ids = {e.get("id") for e in events}
    assert len(ids) == 1, f"chunks carry different ids: {ids}"
    (cid,) = ids
    assert isinstance(cid, str) and cid.startswith("chatcmpl-"), cid
    for e in events:
        assert e.get("object") == "chat.completion.chunk", e
        assert e.get("model") == model, e
        assert isinstance(e.get("created"), int), e
    *chunks, usage_ev = events
    assert usage_ev["choices"] == [], f"usage chunk must have empty choices: {usage_ev}"
    usage = usage_ev.get("usage")
    assert usage, f"last JSON event carries no usage: {usage_ev}"
    for e in chunks:
        assert "usage" not in e or e["usage"] is None, f"usage before the last chunk: {e}"
        assert len(e["choices"]) == 1 and e["choices"][0]["index"] == 0, e
    first = chunks[0]["choices"][0]
    assert first["delta"].get("role") == "assistant", f"first delta: {first}"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert finishes == [finish], f"finish_reasons across chunks: {finishes}"
    assert chunks[-1]["choices"][0]["finish_reason"] == finish, "finish_reason is not on the last chunk"
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    content_pieces = [p for p in pieces if p]
    assert all(isinstance(p, str) for p in content_pieces)
    assert usage["completion_tokens"] == max_tokens, usage
    assert usage["prompt_tokens"] > 0, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage
    # The sim vocabulary is whole words and every step delivers one token per
    # request, so each token is its own chunk.
    assert len(content_pieces) == usage["completion_tokens"], \
        f"{len(content_pieces)} content chunks for {usage['completion_tokens']} tokens: {content_pieces}"
    return usage


def admin_state_http(base: str, token: Optional[str], timeout: float = HTTP_TIMEOUT) -> list[dict]:
    r = requests.get(f"{base}/admin/state", headers=auth(token), timeout=timeout)
    assert r.status_code == 200, f"/admin/state answered {r.status_code}: {r.text[:300]}"
    states = r.json()
    assert isinstance(states, list), states
    return states


def find_states(states: list[dict], kind: str, node: Optional[str] = None, name: Optional[str] = None) -> list[dict]:
    return [s for s in states if s.get("kind") == kind and (node is None or s.get("node") == node)
            and (name is None or s.get("name") == name)]


def one_state(states: list[dict], kind: str, node: Optional[str] = None, name: Optional[str] = None) -> dict:
    found = find_states(states, kind, node, name)
    assert len(found) == 1, f"expected one {kind} on {node or 'any node'}, found {len(found)}: " \
                            f"{[(s.get('node'), s.get('kind'), s.get('name')) for s in states]}"
    return found[0]


def router_replica(states: list[dict], replica: str) -> Optional[dict]:
    router = one_state(states, "router")
    for r in (router.get("state") or {}).get("replicas", []):
        if r.get("replica") == replica:
            return r
    return None


def controller_node(states: list[dict], node: str) -> Optional[dict]:
    ctrl = one_state(states, "controller")
    for n in (ctrl.get("state") or {}).get("nodes", []):
        if n.get("node") == node:
            return n
    return None


def models_ready(base: str, key: Optional[str], models: list[str]) -> Optional[dict]:
    """The /v1/models cards when every model in `models` has a live replica, else None."""
    r = requests.get(f"{base}/v1/models", headers=auth(key), timeout=2)
    if r.status_code != 200:
        return None
    cards = {m["id"]: m for m in r.json().get("data", [])}
    if all(m in cards and cards[m].get("replicas", 0) >= 1 for m in models):
        return cards
    return None


LAUNCH_NODE_RX = r"^llmux launch: node (\S+) \(pid (\d+)\) on (\S+):(\d+)$"


def launch_node_pids(proc: LlmuxProcess, count: int, timeout: float = 10.0) -> dict[str, int]:
    """Parses `llmux launch: node NAME (pid N) on HOST:PORT` lines from launch's output."""
    found = proc.wait_for_log(LAUNCH_NODE_RX, timeout, count=count)
    return {m.group(1): int(m.group(2)) for m in found[:count]}


class CompletionStreams:
    """Streamed completions on threads (`body(prompt)` is each request's JSON, with
    "stream": true); each keeps its text or its error, for tests that disturb the
    cluster mid-stream and compare the texts with an undisturbed run."""

    def __init__(self, base: str, prompts: list[str], body: Callable[[str], dict], timeout: float = 120):
        import threading
        self.results: list[tuple[str, Optional[str], Optional[str]]] = [("", None, None)] * len(prompts)
        self.chunks = [0] * len(prompts)
        self.timeout = timeout
        self.threads = [threading.Thread(target=self._run, args=(base, i, p, body(p))) for i, p in enumerate(prompts)]
        for t in self.threads:
            t.start()

    def _run(self, base: str, i: int, prompt: str, body: dict):
        text, error = [], None
        try:
            with requests.post(f"{base}/v1/completions", json=body, stream=True, timeout=self.timeout) as r:
                if r.status_code != 200:
                    error = f"HTTP {r.status_code}: {r.text[:300]}"
                else:
                    for line in r.iter_lines():
                        if not line.startswith(b"data: ") or line == b"data: [DONE]":
                            continue
                        ev = json.loads(line[6:])
                        if "error" in ev:
                            error = json.dumps(ev["error"])
                            break
                        if ev["choices"] and ev["choices"][0].get("text"):
                            text.append(ev["choices"][0]["text"])
                            self.chunks[i] += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            error = repr(e)
        self.results[i] = (prompt, "".join(text), error)

    def join(self, timeout: float = 120):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "a stream did not end"
        return self.results


def undisturbed_texts(base: str, prompts: list[str], body: Callable[[str], dict], max_tokens: int) -> dict[str, str]:
    """Each prompt's completion (`body(prompt)`, not streamed, max_tokens long), one after the other: the
    texts a disturbed run must reproduce."""
    out = {}
    for p in prompts:
        r = requests.post(f"{base}/v1/completions", json=body(p), timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == max_tokens
        out[p] = r.json()["choices"][0]["text"]
    return out
