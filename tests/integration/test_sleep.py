"""Models put to sleep and woken by messages: more models configured than a unit's
memory_mib holds at once, idle_sleep_s, a wake that cannot happen in time (503 with
Retry-After), `llmux admin sleep|wake`, and on the real CPU engine the memory given
back and the same greedy text after every wake.

The sim backend (labelled: simulated) models a wake as its weights copied at the GPU
type's load_gbs; its tokens depend only on the seed and the position, so a request
answered after a wake must read exactly as before it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import requests

from conftest import (
    SMOLLM2_GGUF,
    SOURCE_DIR,
    CompletionStreams,
    admin_state_http,
    find_states,
    free_port,
    one_state,
    require_ports_free,
    run_llmux,
    serve_cpu_unit,
    solo_config,
    start_serve,
    wait_until,
)

STORIES = SOURCE_DIR.parent / "shared" / "models" / "stories260K" / "stories260K.gguf"

# A 7B-shaped sim model holds 12.85 GiB of f16 weights; 30000 MiB holds two of them.
SIM_7B_MIB = 13161


def _sim_config(tmp_path: Path, name: str, models: dict, unit_keys: str, time_scale: float = 1.0,
                request_ms: int = 30000) -> tuple[Path, int]:
    """One node, one sim unit "gpu0" hosting `models` (name -> extra [[models]] lines)."""
    http, node, admin = free_port(), free_port(), free_port()
    text = solo_config(http, node, admin) + f"\n[timeouts]\nrequest_ms = {request_ms}\n"
    for model, extra in models.items():
        text += f'\n[[models]]\nname = "{model}"\nbackend = "sim"\narchitecture = "llama-7b"\n{extra}\n'
    shares = ", ".join(f'{{ name = "{m}", share = {0.9 / len(models):.3f} }}' for m in models)
    text += f"""
[[units]]
name = "gpu0"
node = "solo"
backend = "sim"
time_scale = {time_scale}
{unit_keys}
models = [ {shares} ]
"""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text)
    return cfg, http


def _complete(base: str, model: str, prompt: str, max_tokens: int = 8, timeout: float = 30, **extra):
    return requests.post(f"{base}/v1/completions", timeout=timeout,
                         json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "seed": 7,
                               "temperature": 0, **extra})


def _unit_models(base: str) -> dict:
    return one_state(admin_state_http(base, None), "gpu_unit")["state"]["models"]


def _scheduler(base: str, model: str) -> dict:
    for s in find_states(admin_state_http(base, None), "scheduler"):
        if s["state"]["model"] == model:
            return s["state"]
    raise AssertionError(f"no scheduler of {model}")


def _card_states(base: str) -> dict:
    r = requests.get(f"{base}/v1/models", timeout=5)
    assert r.status_code == 200
    return {c["id"]: c.get("state") for c in r.json()["data"]}


def test_more_models_than_memory_every_request_served(llmux_bin, tmp_path):
    cfg, http = _sim_config(tmp_path, "three", {"a": "", "b": "", "c": ""}, "memory_mib = 30000")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-three", __name__, http)
    try:
        assert "c starts asleep on unit gpu0" in proc.log_path.read_text()
        models = _unit_models(base)
        assert [models[m]["state"] for m in "abc"] == ["ready", "ready", "sleeping"]
        # Still listed while asleep (a request wakes it), with its state.
        wait_until(lambda: _card_states(base) == {"a": "ready", "b": "ready", "c": "sleeping"}, 10,
                   "/v1/models to list c as sleeping")

        first = {}
        for round_ in range(3):
            for m in ["c", "a", "b"]:
                r = _complete(base, m, f"the {m} model, round one")
                assert r.status_code == 200, r.text
                text = r.json()["choices"][0]["text"]
                if round_ == 0:
                    first[m] = text
                # The same request reads the same after every sleep and wake.
                assert text == first[m], (m, round_)
                awake = one_state(admin_state_http(base, None), "gpu_unit")["state"]["memory_awake_mib"]
                assert awake <= 30000, awake
        models = _unit_models(base)
        # Three models round-robin over room for two: every request but the
        # first two woke its model, each wake put the least recently used to sleep.
        assert sum(models[m]["wakes"] for m in "abc") >= 7
        assert sum(models[m]["sleeps"] for m in "abc") >= 7
        for m in "abc":
            assert models[m]["wakes"] >= 2, (m, models[m])
            # The modelled wake: 12.85 GiB over the h100's 50 GB/s is 0.276 s.
            assert 0.25 < models[m]["wake_seconds_last"] < 2.0, models[m]
            sched = _scheduler(base, m)
            assert sched["wake_refusals"] == 0 and sched["refused_asleep"] == 0, sched

        # Concurrent requests for all three: each waits its turn for memory, none fails.
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(6) as pool:
            futs = [pool.submit(_complete, base, m, f"the {m} model, round one") for m in "abcabc"]
            for f, m in zip(futs, "abcabc"):
                r = f.result()
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["text"] == first[m]
    finally:
        proc.cleanup()


def test_idle_model_sleeps_frees_its_kv_and_wakes_on_a_request(llmux_bin, tmp_path):
    cfg, http = _sim_config(tmp_path, "idle", {"a": "idle_sleep_s = 1", "b": ""}, "")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-idle", __name__, http)
    try:
        prompt = "a prompt long enough to fill two whole blocks of sixteen tokens in the KV cache " * 2
        r = _complete(base, "a", prompt)
        assert r.status_code == 200, r.text
        before = r.json()["choices"][0]["text"]
        t_done = time.monotonic()
        wait_until(lambda: _scheduler(base, "a")["residency"] == "sleeping", 10, "a to fall asleep when idle")
        slept_after = time.monotonic() - t_done
        assert slept_after >= 0.9, slept_after  # not before idle_sleep_s
        sched = _scheduler(base, "a")
        assert sched["sleeps"] == 1
        # Its cached prompt blocks went back to the unit's pool.
        assert sched["kv_blocks_freed_asleep"] > 0, sched
        assert _unit_models(base)["a"]["state"] == "sleeping"
        assert _scheduler(base, "b")["residency"] == "ready"  # b has no idle_sleep_s
        wait_until(lambda: _card_states(base)["a"] == "sleeping", 10, "/v1/models to show a asleep")
        # The router still counts it: the model is served, only asleep.
        assert requests.get(f"{base}/ready", timeout=5).status_code == 200

        t0 = time.monotonic()
        r = _complete(base, "a", prompt)
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == before
        assert took >= 0.25, took  # the wake (0.276 s modelled) is in its time
        sched = _scheduler(base, "a")
        assert sched["wakes"] == 1 and sched["residency"] == "ready"
        assert 0.25 < sched["wake_seconds_last"] < 2.0
        # The log tells the story.
        log = proc.log_path.read_text()
        for line in ("unit gpu0: a is asleep", "unit gpu0: waking a (12852 MiB of weights",
                     "unit gpu0: a is awake ("):
            assert line in log, line
    finally:
        proc.cleanup()


def test_a_wake_that_cannot_happen_in_time_is_a_503_with_retry_after(llmux_bin, tmp_path):
    # Room for one model; a streams a long answer, so b cannot wake: a is busy.
    cfg, http = _sim_config(tmp_path, "busy", {"a": "", "b": "ttft_slo_ms = 1500"}, "memory_mib = 14000",
                            time_scale=4.0)
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-busy", __name__, http)
    try:
        stream = requests.post(f"{base}/v1/completions", stream=True, timeout=60,
                               json={"model": "a", "prompt": "go on and on", "max_tokens": 300, "stream": True,
                                     "ignore_eos": True})
        assert stream.status_code == 200
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith(b"data:"))  # a is running
        t0 = time.monotonic()
        r = _complete(base, "b", "wake up")
        took = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After") == "1"
        err = r.json()["error"]
        assert "asleep" in err["message"] and "could not be woken in time" in err["message"], err
        assert "cannot sleep now: a (ready, busy" in err["message"], err  # why: a is busy
        assert 1.0 < took < 5.0, took  # its TTFT budget, not the whole request deadline
        assert _scheduler(base, "b")["refused_asleep"] == 1
        # Nothing of a was lost meanwhile: its stream ends normally.
        rest = [line for line in lines if line.startswith(b"data:")]
        assert rest[-1] == b"data: [DONE]"
        # Now a is idle: b's next request puts a to sleep and wakes b.
        r = _complete(base, "b", "wake up")
        assert r.status_code == 200, r.text
        models = _unit_models(base)
        assert models["a"]["state"] == "sleeping" and models["b"]["state"] == "ready"
    finally:
        proc.cleanup()


def test_admin_sleep_and_wake(llmux_bin, tmp_path):
    cfg, http = _sim_config(tmp_path, "admin", {"a": "", "b": ""}, "", time_scale=4.0)
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-admin", __name__, http)
    try:
        out = run_llmux(["admin", "--config", cfg, "sleep", "a"])
        assert out.returncode == 0, out.stderr
        assert "unit gpu0: a is asleep" in out.stdout
        assert _unit_models(base)["a"]["state"] == "sleeping"
        out = run_llmux(["admin", "--config", cfg, "sleep", "a"])  # asleep already: fine
        assert out.returncode == 0, out.stderr
        out = run_llmux(["admin", "--config", cfg, "wake", "a"])
        assert out.returncode == 0, out.stderr
        assert "unit gpu0: a is awake" in out.stdout
        assert _unit_models(base)["a"]["state"] == "ready"
        assert _scheduler(base, "a")["wakes"] == 1

        # A busy model is not put to sleep under its requests: refused, with why.
        stream = requests.post(f"{base}/v1/completions", stream=True, timeout=60,
                               json={"model": "b", "prompt": "go on", "max_tokens": 200, "stream": True,
                                     "ignore_eos": True})
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith(b"data:"))
        out = run_llmux(["admin", "--config", cfg, "sleep", "b"])
        assert out.returncode == 1
        assert "is busy" in out.stderr and "run" in out.stderr, out.stderr
        assert [line for line in lines if line.startswith(b"data:")][-1] == b"data: [DONE]"
        assert _unit_models(base)["b"]["state"] == "ready"

        for bad, why in [(["sleep", "ghost"], "no model named 'ghost'"), (["sleep"], "needs MODEL"),
                         (["wake", "a", "nounit"], "no unit named 'nounit' hosts model 'a'")]:
            out = run_llmux(["admin", "--config", cfg, *bad])
            assert out.returncode == 2 and why in out.stderr, (bad, out.stderr)
    finally:
        proc.cleanup()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_cpu_engine_models_over_a_memory_cap_all_served_and_memory_given_back(llmux_bin, tmp_path):
    if not SMOLLM2_GGUF.exists():
        pytest.skip(f"{SMOLLM2_GGUF} is missing: scripts/setup fetches it")
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is missing (the shared model folder)")
    # Two copies of SmolLM2 (94 MiB each, separate files: separate mappings)
    # and stories260K under 150 MiB: one SmolLM2 awake at a time.
    files = {"smol-a": tmp_path / "smol-a.gguf", "smol-b": tmp_path / "smol-b.gguf", "stories": STORIES}
    for m in ("smol-a", "smol-b"):
        shutil.copyfile(SMOLLM2_GGUF, files[m])
    proc, base, cfg = serve_cpu_unit(
        tmp_path, "cpu-sleep", __name__, files,
        '{ name = "smol-a", share = 0.5 }, { name = "smol-b", share = 0.25 }, { name = "stories", share = 0.25 }',
        "memory_mib = 150", timeout=60)
    try:
        assert "smol-b starts asleep on unit cpu0" in proc.log_path.read_text()
        answers = {}
        for round_ in range(2):
            for m in ("smol-a", "stories", "smol-b"):
                r = requests.post(f"{base}/v1/completions", timeout=120,
                                  json={"model": m, "prompt": "Once upon a time", "max_tokens": 12,
                                        "temperature": 0})
                assert r.status_code == 200, r.text
                answers.setdefault(m, r.json()["choices"][0]["text"])
                assert r.json()["choices"][0]["text"] == answers[m], (m, round_)
        # Same weights, same greedy text, whichever copy answered after its wakes.
        assert answers["smol-a"] == answers["smol-b"]
        models = _unit_models(base)
        assert models["smol-a"]["wakes"] >= 1 and models["smol-b"]["wakes"] >= 2, models
        assert models["stories"]["sleeps"] == 0  # small enough to stay beside either
        assert one_state(admin_state_http(base, None), "gpu_unit")["state"]["memory_awake_mib"] <= 150

        # Both SmolLM2 copies asleep: their mapped weights leave the process.
        awake = "smol-a" if models["smol-a"]["state"] == "ready" else "smol-b"
        rss_awake = _rss_mib(proc.pid)
        out = run_llmux(["admin", "--config", cfg, "sleep", awake])
        assert out.returncode == 0, out.stderr
        rss_asleep = _rss_mib(proc.pid)
        assert rss_awake - rss_asleep > 60, (rss_awake, rss_asleep)
        # And it comes back on the next request, reading the same.
        r = requests.post(f"{base}/v1/completions", timeout=120,
                          json={"model": awake, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == answers[awake]
        print(f"RSS with {awake} awake {rss_awake:.0f} MiB, asleep {rss_asleep:.0f} MiB; "
              f"wake {_unit_models(base)[awake]['wake_seconds_last'] * 1e3:.1f} ms")

        # A model whose file went away while it slept: its request learns why at once
        # (a 503 naming the load failure), not after the 120 s deadline; the others serve on.
        assert run_llmux(["admin", "--config", cfg, "sleep", awake]).returncode == 0
        files[awake].unlink()
        t0 = time.monotonic()
        r = requests.post(f"{base}/v1/completions", timeout=120,
                          json={"model": awake, "prompt": "Once upon a time", "max_tokens": 4})
        assert r.status_code == 503, r.text
        assert "failed" in r.json()["error"]["message"] and awake in r.json()["error"]["message"], r.text
        assert time.monotonic() - t0 < 10
        other = "smol-b" if awake == "smol-a" else "smol-a"
        r = requests.post(f"{base}/v1/completions", timeout=120,
                          json={"model": other, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == answers[other]
        assert f"waking {awake} failed" in proc.log_path.read_text()
    finally:
        proc.cleanup()


def test_plan_and_apply_plan_wake_the_popular_model_back(llmux_bin, tmp_path):
    # Room for two of three; a is popular, then a rare request for c puts a
    # (the least recently used) to sleep. The controller's plan puts it back.
    cfg, http = _sim_config(tmp_path, "replan", {"a": "", "b": "", "c": ""}, "memory_mib = 30000")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-replan", __name__, http)
    try:
        out = run_llmux(["admin", "--config", cfg, "plan"])
        assert out.returncode == 0, out.stderr
        assert "every unit holds the models it should awake" in out.stdout  # no traffic yet
        for i in range(30):
            assert _complete(base, "a", f"popular {i}", max_tokens=2).status_code == 200
        assert _complete(base, "b", "now and then", max_tokens=2).status_code == 200
        assert _complete(base, "c", "rarely", max_tokens=2).status_code == 200
        models = _unit_models(base)
        assert models["a"]["state"] == "sleeping" and models["c"]["state"] == "ready", models

        def planned():
            p = run_llmux(["admin", "--config", cfg, "plan", "--json"])
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout)
        plan = wait_until(lambda: (lambda p: p if p["moves"] else None)(planned()), 10,
                          "the controller to plan a's wake")
        assert len(plan["moves"]) == 1, plan
        mv = plan["moves"][0]
        assert mv["wake"] == "a" and mv["unit"] == "gpu0" and len(mv["sleep"]) == 1, mv
        assert mv["sleep"][0] in ("gpu0/b", "gpu0/c")
        rates = {r["model"]: r["rate"] for r in plan["replicas"]}
        assert rates["a"] >= 2 * max(rates["b"], rates["c"]), rates
        # `plan` only shows: nothing changed.
        assert _unit_models(base)["a"]["state"] == "sleeping"

        out = run_llmux(["admin", "--config", cfg, "apply-plan"], timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        assert "unit gpu0: wake a" in out.stdout and ": done" in out.stdout, out.stdout
        models = _unit_models(base)
        assert models["a"]["state"] == "ready", models
        assert sum(models[m]["state"] == "ready" for m in "abc") == 2
        ctrl = one_state(admin_state_http(base, None), "controller")["state"]["replan"]
        assert ctrl["plans_applied"] == 1 and ctrl["wakes"] == 1 and ctrl["failures"] == 0, ctrl
        assert "controller: re-placement on gpu0: wake a" in proc.log_path.read_text()
    finally:
        proc.cleanup()


def test_the_placement_planner_moves_a_busy_model_to_the_idle_gpu(llmux_bin, tmp_path):
    # Two sim A100s that each list a and b and hold both; both awake on gpu0,
    # asleep on gpu1. With traffic for both, a twice b's, the placement
    # planner (MuxServe's greedy on the units that exist, in order of demand)
    # keeps a where it is and gives b the other GPU. A move is made only
    # while gpu0 does not keep up (requests waiting: at most 2 run per model
    # here; a's wait, b's do not), so the plan is made and applied under
    # load, mid-stream, and no request fails.
    from concurrent.futures import ThreadPoolExecutor
    http, node, admin = free_port(), free_port(), free_port()
    text = solo_config(http, node, admin) + "\n[timeouts]\nrequest_ms = 60000\n"
    text += '\n[gpus.a100]\nprofile = "builtin:a100"\n'
    for model in ("a", "b"):
        text += f'\n[[models]]\nname = "{model}"\nbackend = "sim"\narchitecture = "llama-7b"\n'
    for unit, device, awake in (("gpu0", 0, "true"), ("gpu1", 1, "false")):
        text += f"""
[[units]]
name = "{unit}"
node = "solo"
backend = "sim"
gpu = "a100"
devices = [{device}]
memory_mib = 30000
max_running = 2
models = [ {{ name = "a", share = 0.45, awake = {awake} }}, {{ name = "b", share = 0.45, awake = {awake} }} ]
"""
    cfg = tmp_path / "planner.toml"
    cfg.write_text(text)
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-planner", __name__, http)
    try:
        assert "re-placement plans with the placement planner" in proc.log_path.read_text()
        body = lambda p: {"model": "b" if p.startswith("moved") else "a", "prompt": p, "max_tokens": 320,
                          "seed": 7, "temperature": 0, "stream": True}
        prompts = [f"moved {i}" for i in range(2)] + [f"stays {i}" for i in range(4)]

        def undisturbed(p):
            r = requests.post(f"{base}/v1/completions", json={**body(p), "stream": False}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]
        with ThreadPoolExecutor(len(prompts)) as pool:
            ref = dict(zip(prompts, pool.map(undisturbed, prompts)))
        for i in range(10):
            for m in "aab":
                assert _complete(base, m, f"busy {i}", max_tokens=2).status_code == 200

        def planned():
            p = run_llmux(["admin", "--config", cfg, "plan", "--json"])
            assert p.returncode == 0, p.stderr
            plan = json.loads(p.stdout)
            # A move (b's own requests not waiting: for a moment after the
            # streams start they do, and b would get a second replica).
            return plan if any("from" in m for m in plan["moves"]) else None
        # Served well on gpu0 (nothing waiting now): nothing moves.
        idle_plan = run_llmux(["admin", "--config", cfg, "plan", "--json"])
        assert json.loads(idle_plan.stdout)["moves"] == [], idle_plan.stdout

        streams = CompletionStreams(base, prompts, body)
        plan = wait_until(planned, 30, "the controller to plan a move while requests wait on gpu0")
        assert plan["target"] == "placement planner", plan
        moves = [m for m in plan["moves"] if "from" in m]
        assert len(moves) == 1, plan
        mv = moves[0]
        assert mv["wake"] == "b" and mv["unit"] == "gpu1" and mv["replica"] == "gpu1/b", mv
        assert mv["from"] == "gpu0/b" and mv["sleep"] == [], mv  # gpu1 has room
        # a's own requests wait on gpu0: beside the planner's target, a second
        # replica of it on gpu1 (a scale-out), if any.
        for other in plan["moves"]:
            assert other is mv or (other["wake"] == "a" and other["replica"] == "gpu1/a" and "from" not in other), plan
        out = run_llmux(["admin", "--config", cfg, "apply-plan"], timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        assert "unit gpu1: move b" in out.stdout and ": done" in out.stdout, out.stdout
        for prompt, got, error in streams.join():
            assert error is None, error
            assert got == ref[prompt], f"text of {prompt!r} differs from the undisturbed run"

        states = admin_state_http(base, None)
        units = {u["name"]: u["state"]["models"] for u in find_states(states, "gpu_unit")}
        assert units["gpu1"]["b"]["state"] == "ready", units
        assert units["gpu0"]["b"]["state"] == "sleeping", units
        assert units["gpu0"]["a"]["state"] == "ready", units
        gw = find_states(states, "gateway")[0]["state"]
        assert gw["failed"] == 0, gw
        ctrl = one_state(states, "controller")["state"]
        assert ctrl["replan"]["moves"] == 1 and ctrl["replan"]["failures"] == 0, ctrl["replan"]
        assert ctrl["replan"]["wakes"] <= 1, ctrl["replan"]  # a's scale-out, if planned
        assert ctrl["replan"]["target"] == "placement planner", ctrl["replan"]
        assert ctrl["recent_model_moves"][-1]["handed_over"] >= 1, ctrl["recent_model_moves"]
        assert "controller: re-placement on gpu1: move b" in proc.log_path.read_text()
        # New requests for b now go to gpu1.
        assert _complete(base, "b", "after", max_tokens=2).status_code == 200
        assert one_state(admin_state_http(base, None), "scheduler", name="gpu1/b")["state"]["residency"] == "ready"
    finally:
        proc.cleanup()


def test_the_many_models_example_serves_every_model(llmux_bin, tmp_path):
    cfg = SOURCE_DIR / "examples" / "many-models-sim.toml"
    require_ports_free([7326, 7426, 8086], "examples/many-models-sim.toml needs its ports")
    proc, base = start_serve(["--config", cfg, "--time-scale", "0"], tmp_path, "serve-example", __name__, 8086)
    try:
        states = wait_until(lambda: (lambda c: c if None not in c.values() else None)(_card_states(base)), 10,
                            "/v1/models to show every model's state")
        assert sorted(states) == [f"m{i}" for i in range(8)]
        assert sorted(states.values()).count("sleeping") == 4, states  # two of four asleep on each GPU
        for m in sorted(states):
            r = _complete(base, m, "hello", max_tokens=4)
            assert r.status_code == 200, (m, r.text)
        out = run_llmux(["admin", "--config", cfg, "plan"])
        assert out.returncode == 0, out.stderr
        assert "gpu0/m0" in out.stdout and "gpu1/m7" in out.stdout
    finally:
        proc.cleanup()
