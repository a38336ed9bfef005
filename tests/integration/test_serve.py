"""`llmux serve` (one process, embedded default config) and config errors at startup."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests

from conftest import (
    HTTP_TIMEOUT,
    SOURCE_DIR,
    assert_openai_error,
    auth,
    chat_body,
    check_chat_stream,
    free_port,
    json_events,
    metric,
    run_llmux,
    scrape_metrics,
    start_llmux,
    start_serve,
    stream_post,
    wait_until,
)


def _health(base):
    r = requests.get(f"{base}/health", timeout=1)
    return r.status_code == 200 and r.json() == {"status": "ok"}


def _start_serve(tmp_path_factory, name, extra=()):
    port = free_port()
    log_dir = tmp_path_factory.mktemp(name)
    return start_serve(["--sim", "--port", port, *extra], log_dir, name, __name__, port)


@pytest.fixture(scope="module")
def served(llmux_bin, tmp_path_factory):
    proc, base = _start_serve(tmp_path_factory, "serve-open")
    try:
        yield base
    finally:
        proc.cleanup()


@pytest.fixture(scope="module")
def served_with_key(llmux_bin, tmp_path_factory):
    proc, base = _start_serve(tmp_path_factory, "serve-key", ["--api-key", "k-test-1"])
    try:
        yield proc, base
    finally:
        proc.cleanup()


# ------------------------------------------------------------------------------------------
# Open serve
# ------------------------------------------------------------------------------------------


def test_health(served):
    r = requests.get(f"{served}/health", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


def test_models_lists_tiny_sim(served):
    cards = wait_until(lambda: (lambda d: d if d.get("tiny", {}).get("replicas", 0) >= 1 else None)(
        {m["id"]: m for m in requests.get(f"{served}/v1/models", timeout=2).json()["data"]}),
        10, "/v1/models to show tiny with a live replica")
    assert set(cards) == {"tiny"}, cards
    assert cards["tiny"]["backend"] == "sim" and cards["tiny"]["object"] == "model", cards


def test_streamed_completion(served):
    payloads = stream_post(f"{served}/v1/completions",
                           {"model": "tiny", "prompt": "hello", "max_tokens": 6, "seed": 3, "stream": True,
                            "stream_options": {"include_usage": True}}, None)
    events = json_events(payloads)
    assert len({e["id"] for e in events}) == 1, events
    assert all(e["object"] == "text_completion" and e["model"] == "tiny" for e in events), events
    *chunks, usage_ev = events
    assert usage_ev["choices"] == [], usage_ev
    assert usage_ev["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}, usage_ev
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["length"]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text.strip(), "streamed no text"


def test_streamed_chat(served):
    payloads = stream_post(f"{served}/v1/chat/completions",
                           chat_body("tiny", max_tokens=5, stream=True, stream_options={"include_usage": True}),
                           None)
    check_chat_stream(payloads, "tiny", max_tokens=5)


def test_stream_without_usage_has_no_usage_chunk(served):
    payloads = stream_post(f"{served}/v1/chat/completions", chat_body("tiny", max_tokens=3, stream=True), None)
    events = json_events(payloads)
    assert all("usage" not in e for e in events), events
    assert events[-1]["choices"][0]["finish_reason"] == "length", events[-1]


def test_eos_ends_with_stop(served):
    # The sim's output length is a function of the seed; seed 3 ends well before 300 tokens.
    r = requests.post(f"{served}/v1/completions",
                      json={"model": "tiny", "prompt": "hello", "max_tokens": 300, "seed": 3}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["choices"][0]["finish_reason"] == "stop", j
    n = j["usage"]["completion_tokens"]
    assert 0 < n < 300, j
    payloads = stream_post(f"{served}/v1/completions",
                           {"model": "tiny", "prompt": "hello", "max_tokens": 300, "seed": 3, "stream": True,
                            "stream_options": {"include_usage": True}}, None)
    *chunks, usage_ev = json_events(payloads)
    assert usage_ev["usage"]["completion_tokens"] == n
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["text"] for c in chunks) == j["choices"][0]["text"]


def test_metrics_count_requests_tokens_and_latencies(served):
    before = scrape_metrics(served)
    tokens = 0
    for i in range(2):
        r = requests.post(f"{served}/v1/completions", timeout=HTTP_TIMEOUT,
                          json={"model": "tiny", "prompt": "hi", "max_tokens": 5, "seed": i})
        assert r.status_code == 200, r.text
        tokens += r.json()["usage"]["completion_tokens"]
    events = json_events(stream_post(f"{served}/v1/completions", {
        "model": "tiny", "prompt": "hi", "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}}, None))
    tokens += events[-1]["usage"]["completion_tokens"]
    assert requests.post(f"{served}/v1/completions", timeout=HTTP_TIMEOUT,
                         json={"model": "nope", "prompt": "hi"}).status_code == 404
    after = scrape_metrics(served)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("llmux:requests_total", model="tiny", status="200") == 3
    assert delta("llmux:requests_total", model="", status="404") == 1  # unknown names: no label
    assert delta("llmux:generation_tokens_total", model="tiny") == tokens
    assert delta("llmux:prompt_tokens_total", model="tiny") > 0
    assert delta("llmux:request_success_total", model="tiny", finished_reason="length") == 3
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert delta(f"llmux:{h}_count", model="tiny") == 3, h
        assert delta(f"llmux:{h}_bucket", model="tiny", le="+Inf") == 3, h
    assert delta("llmux:inter_token_latency_seconds_count", model="tiny") == tokens - 3
    # Cluster gauges: nothing left running, the unit's KV pool, every actor's mailbox.
    assert ("llmux:num_requests_running", frozenset({("model", "tiny")})) in after
    assert metric(after, "llmux:num_requests_running", model="tiny") == 0
    assert any(k[0] == "llmux:kv_blocks_free" and v > 0 for k, v in after.items())
    kinds = {dict(k[1])["kind"] for k in after if k[0] == "llmux:actor_mailbox_size"}
    assert {"gateway", "router", "scheduler", "gpu_unit", "kv_manager"} <= kinds, kinds


def test_repeated_prompt_hits_the_prefix_cache(served):
    # A long prompt sent twice: the second time its full blocks come from the
    # unit's prefix cache (sim: KV is accounting, so a hit skips that prefill).
    import uuid
    prompt = f"{uuid.uuid4()} " + " ".join(f"word{i}" for i in range(120))
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 2}
    before = scrape_metrics(served)
    r = requests.post(f"{served}/v1/completions", json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    prompt_tokens = r.json()["usage"]["prompt_tokens"]
    assert prompt_tokens > 64
    mid = scrape_metrics(served)
    assert metric(mid, "llmux:prefix_cache_hits_total", model="tiny") == \
        metric(before, "llmux:prefix_cache_hits_total", model="tiny"), "a new prompt cannot hit"
    assert metric(mid, "llmux:prefix_cache_queries_total", model="tiny") > \
        metric(before, "llmux:prefix_cache_queries_total", model="tiny")
    r = requests.post(f"{served}/v1/completions", json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    after = scrape_metrics(served)
    hits = metric(after, "llmux:prefix_cache_hits_total", model="tiny") - \
        metric(mid, "llmux:prefix_cache_hits_total", model="tiny")
    # Whole 16-token blocks of the prompt, never all of it.
    assert 0 < hits < prompt_tokens and hits % 16 == 0 and hits >= prompt_tokens - 32, hits
    kv = [a for a in requests.get(f"{served}/admin/state", timeout=HTTP_TIMEOUT).json()
          if a["kind"] == "kv_manager"][0]["state"]
    assert kv["models"]["tiny"]["prefix_hits"] * kv["block_tokens"] >= hits
    assert kv["models"]["tiny"]["sequences"] == 0  # both tables closed


def test_bench_serve_drives_the_edge(served, tmp_path):
    # `llmux bench serve` against the sim edge: an open-loop and a closed-loop point.
    port = served.rsplit(":", 1)[1]
    r = run_llmux(["bench", "serve", "--url", f"http://127.0.0.1:{port}", "--model", "tiny",
                   "--requests", "12", "--rate", "50", "--prompt-len", "uniform:4:40",
                   "--output-len", "fixed:6", "--slo-ttft-ms", "1000", "--json"], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1, r.stdout
    row = rows[0]
    assert row["mode"] == "rate" and row["requests"] == 12 and row["ok"] == 12 and row["failed"] == 0
    assert row["ttft"]["n"] == 12 and row["e2e"]["p99_ms"] >= row["e2e"]["p50_ms"] > 0
    assert row["output_tokens_per_s"] > 0 and row["slo_attainment"] == 1.0
    png = tmp_path / "sweep.png"
    r = run_llmux(["bench", "serve", "--url", f"http://127.0.0.1:{port}", "--model", "tiny",
                   "--requests", "6", "--concurrency", "1", "3", "--plot", png], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [l.split()[:4] for l in r.stdout.splitlines() if l.startswith("concurrency")] == [
        ["concurrency", "1", "6", "0"], ["concurrency", "3", "6", "0"]], r.stdout
    # The sweep's plot: a PNG (its pixels are checked by png_plot_test).
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    assert int.from_bytes(data[16:20], "big") == 1200 and f"plot: {png}" in r.stdout
    # Clear failures: an unknown model, a bad length spec.
    r = run_llmux(["bench", "serve", "--url", f"http://127.0.0.1:{port}", "--model", "nope"], timeout=30)
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    r = run_llmux(["bench", "serve", "--url", f"http://127.0.0.1:{port}", "--model", "tiny",
                   "--output-len", "uniform:9:2"], timeout=30)
    assert r.returncode == 2 and "min is above max" in r.stderr, r.stderr


def test_edge_listen_backlog_takes_a_burst(served):
    # httplib listens with a backlog of 5; a burst of new connections beyond it
    # loses SYNs that clients resend only after 1 s. The edge raises it.
    import subprocess
    port = served.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    backlog = int(out.split()[2])  # Send-Q of a listening socket: its backlog
    assert backlog >= 128, out


def test_open_serve_needs_no_key(served):
    r = requests.post(f"{served}/v1/chat/completions", json=chat_body("tiny", max_tokens=2),
                      headers=auth("anything"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text


def test_unknown_path_is_openai_404(served):
    r = requests.get(f"{served}/v1/nothing-here", timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 404)


def test_second_edge_on_same_port_fails(served, tmp_path):
    # http_edge::start() promises "cannot listen on HOST:PORT (address in use ...)"
    # and run_node exits 1. A second edge silently sharing the port would take a
    # share of the first one's connections.
    port = int(served.rsplit(":", 1)[1])
    dup = start_llmux(["serve", "--sim", "--port", port], tmp_path, "serve-same-port", owner=__name__,
                      stop_signal=signal.SIGTERM)
    try:
        exited = True
        try:
            wait_until(lambda: dup.poll() is not None, 5, "the second serve on a busy port to exit")
        except AssertionError:
            exited = False
        if not exited:
            pytest.fail(f"BUG: a second `llmux serve --port {port}` started while the first still listens on "
                        f"{port} (it did not exit within 5 s); its log:\n{dup.log_tail(10)}", pytrace=False)
        assert dup.returncode == 1, f"exit {dup.returncode}: {dup.log()}"
        assert "cannot listen" in dup.log() and str(port) in dup.log(), dup.log()
    finally:
        dup.cleanup()
    assert _health(served), "the first serve stopped answering"


# ------------------------------------------------------------------------------------------
# serve --api-key
# ------------------------------------------------------------------------------------------


def test_api_key_enforced(served_with_key):
    _, base = served_with_key
    body = chat_body("tiny", max_tokens=2)
    r = requests.post(f"{base}/v1/chat/completions", json=body, timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key")
    r = requests.post(f"{base}/v1/chat/completions", json=body, headers=auth("k-wrong"), timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key")
    r = requests.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT)
    assert_openai_error(r, 401, code="invalid_api_key")
    r = requests.post(f"{base}/v1/chat/completions", json=body, headers=auth("k-test-1"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2
    # /health stays open (load balancers probe it without credentials).
    assert requests.get(f"{base}/health", timeout=HTTP_TIMEOUT).status_code == 200


def test_serve_stops_on_sigterm(served_with_key):
    proc, base = served_with_key
    proc.signal(signal.SIGTERM)
    rc = proc.wait(timeout=15)
    assert rc == 0, f"serve exited with {rc} after SIGTERM"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=2)


# ------------------------------------------------------------------------------------------
# Config errors
# ------------------------------------------------------------------------------------------


def test_node_unknown_config_key_exits_2(llmux_bin, tmp_path):
    cfg = tmp_path / "typo.toml"
    cfg.write_text('[cluster]\nname = "x"\nschedulr_threads = 2\n\n[[nodes]]\nname = "x"\nport = 7999\n')
    t = time.monotonic()
    res = run_llmux(["node", "--config", cfg, "--name", "x"], timeout=15)
    assert time.monotonic() - t < 15
    assert res.returncode == 2, f"exit {res.returncode}; stderr={res.stderr!r} stdout={res.stdout!r}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {res.stderr!r}"
    line = lines[0]
    assert str(cfg) in line, line                 # the file
    assert "schedulr_threads" in line, line       # the key
    assert "unknown key" in line, line            # the reason
    assert f"{cfg}:3:" in line, f"error does not name line 3: {line}"


def test_launch_unit_on_unknown_node_exits_2(llmux_bin, tmp_path):
    text = (SOURCE_DIR / "examples" / "cluster-3node.toml").read_text()
    old = 'name = "gpu1"\nnode = "gpu1"'
    assert old in text, "examples/cluster-3node.toml changed shape; update this test"
    cfg = tmp_path / "badnode.toml"
    cfg.write_text(text.replace(old, 'name = "gpu1"\nnode = "gpu9"'))
    res = run_llmux(["launch", "--config", cfg], timeout=15)
    assert res.returncode == 2, f"exit {res.returncode}; stderr={res.stderr!r} stdout={res.stdout!r}"
    assert "gpu9" in res.stderr and str(cfg) in res.stderr, res.stderr
    assert "(pid" not in res.stdout, f"launch started nodes from a bad config: {res.stdout!r}"


def test_serve_rejects_multi_node_config(llmux_bin):
    res = run_llmux(["serve", "--config", SOURCE_DIR / "examples" / "cluster-3node.toml"], timeout=15)
    assert res.returncode == 2, f"exit {res.returncode}; stderr={res.stderr!r}"
    assert "single-node" in res.stderr, res.stderr
