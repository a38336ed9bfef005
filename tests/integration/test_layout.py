"""A unit that changes its parallel layout while serving (issue 15), in CI:
real SmolLM2-135M-Instruct on a 2-thread CPU unit, as one replica on both
threads or two replicas of one thread each (sharing the mapped weights).

* forced by `llmux admin set-layout` in the middle of greedy streams, both
  ways: to one replica, the second replica's sequences are handed back to
  their gateway and continue on the first; every stream ends with exactly
  the text of an undisturbed run, no request fails, and admin state and
  /metrics show the switches;
* decided by the controller (layout = "dynamic"): a burst of concurrent
  streams lays the unit out as two replicas, the idle cluster goes back to
  one, with the same texts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from conftest import (LLMUX_BIN, CompletionStreams, admin_state_http, find_states, free_port, one_state,
                      scrape_metrics, metric, solo_config, start_serve, undisturbed_texts, wait_until)

ADMIN = "adm-layout"
SMOL = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["Once upon a time, in a small village by the sea,", "The recipe for a good bread starts with"]
MAX_TOKENS = 80


def _config(d: Path, layout_keys: str) -> tuple[Path, int]:
    http, node, admin = free_port(), free_port(), free_port()
    cfg = d / "layout.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + f"""
[timeouts]
request_ms = 120000

[[models]]
name = "smol"
backend = "cpu"
file = "{SMOL}"

[[units]]
name = "cpu0"
node = "solo"
backend = "cpu"
threads = 2
{layout_keys}
models = [ {{ name = "smol" }} ]
""")
    return cfg, http


def _serve(tmp_path_factory, name: str, layout_keys: str):
    if not SMOL.is_file():
        pytest.skip(f"needs {SMOL} (scripts/setup fetches it)")
    d = tmp_path_factory.mktemp(name)
    cfg, http = _config(d, layout_keys)
    proc, base = start_serve(["--config", cfg], d, f"serve-{name}", __name__, http, timeout=60)
    wait_until(lambda: requests.get(f"{base}/ready", timeout=2).status_code == 200, 60, "the unit up", proc=proc)
    return proc, base, cfg


@pytest.fixture(scope="module")
def forced(llmux_bin, tmp_path_factory):
    proc, base, cfg = _serve(tmp_path_factory, "layout-forced", 'layout = "replicas"')
    try:
        yield base, cfg
    finally:
        proc.cleanup()


def _body(prompt: str, stream: bool) -> dict:
    return {"model": "smol", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream}


def _reference(base: str) -> dict[str, str]:
    return undisturbed_texts(base, PROMPTS, lambda p: _body(p, False), MAX_TOKENS)


def Streams(base: str, prompts: list[str]) -> CompletionStreams:
    return CompletionStreams(base, prompts, lambda p: _body(p, True))


def _admin(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLMUX_BIN), "admin", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=150)


def _sched(base: str, name: str) -> dict:
    return one_state(admin_state_http(base, ADMIN), "scheduler", name=name)["state"]


def _layout(base: str) -> dict:
    return one_state(admin_state_http(base, ADMIN), "controller")["state"]["layouts"]["cpu0"]


def _check_texts(results, ref):
    for prompt, text, error in results:
        assert error is None, error
        assert text == ref[prompt], f"text of {prompt!r} differs from the undisturbed run"


def test_forced_switches_both_ways_under_load_lose_nothing(forced):
    base, cfg = forced
    lay = _layout(base)
    assert lay["layout"] == "replicas" and lay["replicas"] == 2 and not lay["dynamic"], lay
    ref = _reference(base)

    # Two replicas busy, then one: the second's streams are handed back.
    streams = Streams(base, PROMPTS * 3)
    wait_until(lambda: all(_sched(base, n)["running"] >= 1 for n in ("cpu0/smol", "cpu0/smol#1")), 60,
               "both replicas decoding")
    r = _admin(cfg, "set-layout", "cpu0", "single")
    assert r.returncode == 0, r.stderr
    _check_texts(streams.join(), ref)
    second = _sched(base, "cpu0/smol#1")
    assert second["migrated"] >= 1, second
    assert second["draining"] and second["residency"] == "draining"
    lay = _layout(base)
    assert lay["layout"] == "single" and lay["switches"] == 1 and lay["handed_back"] >= 1, lay
    gw = find_states(admin_state_http(base, ADMIN), "gateway")[0]["state"]
    assert gw["handed_off"] == lay["handed_back"] and gw["failed"] == 0, gw
    router = one_state(admin_state_http(base, ADMIN), "router")["state"]
    routable = {x["replica"]: x["routable"] for x in router["replicas"]}
    assert routable == {"cpu0/smol": True, "cpu0/smol#1": False}, routable

    # One replica busy, then two: new streams reach the second.
    before = _sched(base, "cpu0/smol#1")["finished"]
    streams = Streams(base, PROMPTS * 2)
    wait_until(lambda: _sched(base, "cpu0/smol")["running"] >= 2, 60, "the replica decoding")
    r = _admin(cfg, "set-layout", "cpu0", "replicas")
    assert r.returncode == 0, r.stderr
    more = Streams(base, PROMPTS * 2)
    _check_texts(streams.join() + more.join(), ref)
    assert _sched(base, "cpu0/smol#1")["finished"] > before, "no request reached the second replica"
    lay = _layout(base)
    assert lay["layout"] == "replicas" and lay["switches"] == 2, lay
    m = scrape_metrics(base)
    assert metric(m, "llmux:unit_layout_replicas", unit="cpu0") == 2
    assert metric(m, "llmux:unit_layout_switches_total", unit="cpu0") == 2
    # Asking for the layout it has is a no-op; an unknown one is refused by name.
    assert _admin(cfg, "set-layout", "cpu0", "replicas").returncode == 0
    bad = _admin(cfg, "set-layout", "cpu0", "sideways")
    assert bad.returncode == 2 and "unknown layout" in bad.stderr
    assert _layout(base)["switches"] == 2


def test_the_controller_switches_a_dynamic_unit_by_concurrency(llmux_bin, tmp_path_factory):
    # Two replicas above 2 concurrent requests (x 1.25), one below 1.5.
    proc, base, cfg = _serve(tmp_path_factory, "layout-dynamic",
                             'layout = "dynamic"\nlayout_switch_at = 2\nlayout_cooldown_ms = 500')
    try:
        lay = _layout(base)
        assert lay["layout"] == "single" and lay["dynamic"] and lay["switch_at"] == 2, lay
        ref = _reference(base)
        streams = Streams(base, PROMPTS * 4)
        wait_until(lambda: _layout(base)["layout"] == "replicas", 60, "the unit laid out as two replicas")
        _check_texts(streams.join(), ref)
        wait_until(lambda: _layout(base)["layout"] == "single", 30, "the idle unit back to one replica")
        lay = _layout(base)
        assert lay["switches"] >= 2 and lay["failed_switches"] == 0, lay
    finally:
        proc.cleanup()
