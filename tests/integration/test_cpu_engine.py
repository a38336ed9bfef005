"""The real CPU engine end to end: `llmux serve --model stories260K.gguf` must
produce llama.cpp's greedy continuations (shared/golden/stories260K_greedy.json)
through the HTTP edge, the actors and the CPU forward pass — streamed or not,
alone or with every case in flight at once."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
import requests

from conftest import (
    SOURCE_DIR,
    admin_state_http,
    auth,
    free_port,
    json_events,
    metric,
    models_ready,
    one_state,
    require_ports_free,
    run_llmux,
    scrape_metrics,
    solo_config,
    start_llmux,
    start_serve,
    stream_post,
    wait_until,
)

SHARED = SOURCE_DIR.parent / "shared"
MODEL = SHARED / "models" / "stories260K" / "stories260K.gguf"
GOLDEN = json.loads((SHARED / "golden" / "stories260K_greedy.json").read_text())


@pytest.fixture(scope="module")
def stories(llmux_bin, tmp_path_factory):
    port = free_port()
    d = tmp_path_factory.mktemp("cpu")
    proc, base = start_serve(["--model", MODEL, "--port", port], d, "serve-stories", __name__, port)
    try:
        yield base
    finally:
        proc.cleanup()


def _complete(base, case, **extra):
    body = {"model": "stories260K", "prompt": case["prompt"],
            "max_tokens": len(case["completion_tokens"]), "temperature": 0, **extra}
    return requests.post(f"{base}/v1/completions", json=body, timeout=60)


def test_models_lists_the_file_on_cpu(stories):
    cards = requests.get(f"{stories}/v1/models", timeout=10).json()["data"]
    assert [(c["id"], c["backend"]) for c in cards] == [("stories260K", "cpu")]


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["prompt"] for c in GOLDEN["cases"]])
def test_greedy_completion_equals_llama_cpp(stories, case):
    r = _complete(stories, case)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == case["completion_text"]
    assert body["usage"]["prompt_tokens"] == len(case["prompt_tokens"])
    assert body["usage"]["completion_tokens"] == len(case["completion_tokens"])
    assert body["choices"][0]["finish_reason"] == "length"


def test_streamed_text_equals_non_streamed(stories):
    case = GOLDEN["cases"][0]
    events = json_events(stream_post(f"{stories}/v1/completions",
                                     {"model": "stories260K", "prompt": case["prompt"],
                                      "max_tokens": len(case["completion_tokens"]),
                                      "temperature": 0, "stream": True}, None))
    text = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
    assert text == case["completion_text"]


def _scheduler_counts(base):
    st = one_state(admin_state_http(base, None), "scheduler")["state"]
    return st["steps"], st["generated_tokens"]


def test_all_cases_at_once_are_unchanged_by_batching(stories):
    # Continuous batching: every case in flight together shares steps. The
    # cases are sent at once (a barrier); stories260K answers one in a few
    # ms, so a round may still run them one after another: up to 5 rounds,
    # every text checked in each, until one round shared steps.
    shared = []
    for _ in range(5):
        results = {}
        steps0, tokens0 = _scheduler_counts(stories)
        go = threading.Barrier(len(GOLDEN["cases"]))

        def run(i, case):
            go.wait(timeout=30)
            results[i] = _complete(stories, case)

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(GOLDEN["cases"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, case in enumerate(GOLDEN["cases"]):
            assert results[i].status_code == 200, results[i].text
            assert results[i].json()["choices"][0]["text"] == case["completion_text"], case["prompt"]
        # A step samples at most one token per sequence it holds: more tokens
        # than steps means some steps held two sequences or more, so the texts
        # above came out of shared batches.
        steps, tokens = _scheduler_counts(stories)
        assert tokens - tokens0 == sum(len(c["completion_tokens"]) for c in GOLDEN["cases"])
        shared.append((steps - steps0, tokens - tokens0))
        if tokens - tokens0 > steps - steps0:
            break
    assert shared[-1][1] > shared[-1][0], f"no round shared a step: (steps, tokens) per round {shared}"


def test_seeded_sampling_is_reproducible(stories):
    case = GOLDEN["cases"][2]
    a = _complete(stories, case, temperature=1.0, seed=1234).json()["choices"][0]["text"]
    b = _complete(stories, case, temperature=1.0, seed=1234).json()["choices"][0]["text"]
    c = _complete(stories, case, temperature=1.0, seed=4321).json()["choices"][0]["text"]
    assert a == b
    assert a != c  # 48 sampled tokens from two seeds: equal only by a vanishing chance


def test_logit_bias_and_penalties_reach_the_engine(stories):
    case = GOLDEN["cases"][0]  # greedy: ", there was a little girl named Lily. ..."
    first = str(case["completion_tokens"][0])  # the "," token
    banned = _complete(stories, case, logit_bias={first: -100}).json()["choices"][0]["text"]
    assert not banned.startswith(","), banned
    forced = _complete(stories, case, max_tokens=4, logit_bias={"263": 100}).json()
    assert forced["usage"]["completion_tokens"] == 4
    # Token 263 every time: the text is its piece four times over.
    piece = forced["choices"][0]["text"]
    assert len(piece) > 0 and piece == piece[: len(piece) // 4] * 4, piece
    penalized = _complete(stories, case, frequency_penalty=2.0).json()["choices"][0]["text"]
    assert penalized != case["completion_text"]
    r = _complete(stories, case, logit_bias={"512": 1})  # vocab is 0..511
    assert r.status_code == 400 and "logit_bias" in r.json()["error"]["message"]


def test_logprobs_equal_llama_cpps_through_http(stories):
    # /v1/completions logprobs=3 against the golden top-3 log-probs (llama.cpp).
    case = GOLDEN["cases"][1]
    r = _complete(stories, case, logprobs=3)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    n = len(case["completion_tokens"])
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n
    assert "".join(lp["tokens"]) == case["completion_text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0].encode())
    # The margin of tests/engine/llama_forward_test.cpp: llama.cpp's printed
    # values and ours differ by up to 2.2e-3 on an AVX2-only CPU (summation
    # order and exp of the SIMD paths), under 1e-3 on AVX-512.
    margin = 4e-3
    for step, golden_top in enumerate(case["top_probs"]):
        # Greedy: the chosen token is the most likely one.
        assert lp["token_logprobs"][step] == pytest.approx(golden_top[0][1], abs=margin)
        ours = sorted(lp["top_logprobs"][step].values(), reverse=True)
        assert len(ours) == 3
        for got, (_, want) in zip(ours, golden_top):
            assert got == pytest.approx(want, abs=margin), (step, lp["top_logprobs"][step], golden_top)


def test_chat_logprobs_have_openais_shape_streamed_and_not(stories):
    body = {"model": "stories260K", "messages": [{"role": "user", "content": "Tell a story"}],
            "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    r = requests.post(f"{stories}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 5
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert item["bytes"] == list(item["token"].encode())
        assert len(item["top_logprobs"]) == 2
        assert item["logprob"] == pytest.approx(item["top_logprobs"][0]["logprob"])  # greedy
    assert "".join(i["token"] for i in content) == r.json()["choices"][0]["message"]["content"]
    events = json_events(stream_post(f"{stories}/v1/chat/completions", {**body, "stream": True}, None))
    streamed = [i for e in events if e.get("choices") and e["choices"][0].get("logprobs")
                for i in e["choices"][0]["logprobs"]["content"]]
    assert [i["token"] for i in streamed] == [i["token"] for i in content]
    bad = requests.post(f"{stories}/v1/chat/completions", json={**body, "logprobs": False}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"


def test_tokenizer_endpoints_and_model_lookup(stories):
    case = GOLDEN["tokenize"][0]  # "Hello world", llama.cpp's ids and detokenized text
    r = requests.post(f"{stories}/tokenize", timeout=10, json={
        "model": "stories260K", "prompt": case["text"], "add_special_tokens": False})
    assert r.status_code == 200, r.text
    assert r.json()["tokens"] == case["tokens"]
    assert r.json()["count"] == len(case["tokens"]) and r.json()["max_model_len"] == 128
    with_bos = requests.post(f"{stories}/tokenize", timeout=10,
                             json={"model": "stories260K", "prompt": case["text"]}).json()["tokens"]
    assert with_bos == [1] + case["tokens"]
    r = requests.post(f"{stories}/detokenize", timeout=10,
                      json={"model": "stories260K", "tokens": case["tokens"]})
    assert r.status_code == 200 and r.json()["prompt"] == case["detokenized"]
    bad = requests.post(f"{stories}/detokenize", timeout=10, json={"model": "stories260K", "tokens": [512]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    assert requests.post(f"{stories}/tokenize", timeout=10,
                         json={"model": "nope", "prompt": "x"}).status_code == 404
    card = requests.get(f"{stories}/v1/models/stories260K", timeout=10).json()
    assert card["id"] == "stories260K" and card["backend"] == "cpu" and card["object"] == "model"
    assert requests.get(f"{stories}/v1/models/nope", timeout=10).status_code == 404
    # Readiness follows the router's replica table (refreshed every 500 ms).
    ready, = wait_until(lambda: (lambda r: (r,) if r.status_code == 200 else None)(
        requests.get(f"{stories}/ready", timeout=10)), 10, "/ready to answer 200")
    assert ready.json() == {"ready": True, "models_without_replica": []}


def test_default_serve_is_smollm2_and_answers(llmux_bin, tmp_path):
    # `llmux serve` with no model arguments: SmolLM2-135M-Instruct on the CPU,
    # from the cache scripts/setup fills.
    cached = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not cached.exists():
        pytest.skip(f"{cached} is missing: scripts/setup fetches it")
    port = free_port()
    proc, base = start_serve(["--port", port], tmp_path, "serve-default", __name__, port, timeout=60)
    try:
        cards = requests.get(f"{base}/v1/models", timeout=10).json()["data"]
        assert [(c["id"], c["backend"]) for c in cards] == [("SmolLM2-135M-Instruct", "cpu")]
        # "Answer in one word.": to the bare question, this 135M Q4_1 model's
        # greedy answer (llama.cpp's too) rambles about "L'Étoile".
        r = requests.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": "SmolLM2-135M-Instruct", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]})
        assert r.status_code == 200, r.text
        answer = r.json()["choices"][0]["message"]["content"]
        assert "Paris" in answer, answer
        assert r.json()["choices"][0]["finish_reason"] == "stop"  # <|im_end|> ends the turn
    finally:
        proc.cleanup()


def test_cluster_3node_cpu_example_serves_both_real_models(llmux_bin, tmp_path):
    # examples/cluster-3node-cpu.toml: stories260K on node gpu0, SmolLM2 on gpu1,
    # the edge on its own node; requests cross processes to real CPU engines.
    cached = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not cached.exists():
        pytest.skip(f"{cached} is missing: scripts/setup fetches it")
    require_ports_free([8080, 7311, 7312, 7313, 7411, 7412, 7413], "examples/cluster-3node-cpu.toml")
    proc = start_llmux(["launch", "--config", SOURCE_DIR / "examples" / "cluster-3node-cpu.toml"],
                       tmp_path, "launch-3node-cpu", owner=__name__, stop_signal=signal.SIGINT)
    base, key = "http://127.0.0.1:8080", "sk-llmux-dev"
    try:
        wait_until(lambda: models_ready(base, key, ["stories260K", "SmolLM2-135M-Instruct"]), 60,
                   "both models to have a live replica", proc=proc)
        case = GOLDEN["cases"][0]
        r = requests.post(f"{base}/v1/completions", headers=auth(key), timeout=60, json={
            "model": "stories260K", "prompt": case["prompt"], "temperature": 0,
            "max_tokens": len(case["completion_tokens"])})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == case["completion_text"]
        r = requests.post(f"{base}/v1/chat/completions", headers=auth(key), timeout=60, json={
            "model": "SmolLM2-135M-Instruct", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]})
        assert r.status_code == 200, r.text
        assert "Paris" in r.json()["choices"][0]["message"]["content"]
    finally:
        proc.cleanup()


def test_dummy_weights_serve_through_the_cluster(llmux_bin, tmp_path):
    # load_format = "dummy": a llama-shaped model with random Q8_0 weights,
    # served by the real CPU engine (for speed runs at real sizes without files).
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "dummy.toml"
    cfg.write_text(solo_config(http, node, admin) + f"""
[[models]]
name = "dummy-tiny"
backend = "cpu"
load_format = "dummy"
dtype = "q8_0"
architecture = "tiny"
[[units]]
name = "u"
node = "solo"
backend = "cpu"
models = [ {{ name = "dummy-tiny", share = 1.0 }} ]
""")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-dummy", __name__, http)
    try:
        r = requests.post(f"{base}/v1/completions", timeout=60, json={
            "model": "dummy-tiny", "prompt": "hello", "max_tokens": 8, "temperature": 0,
            "logit_bias": {"257": -100}})  # the stand-in tokenizer's EOS: never stop early
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
        assert "building random q8_0 weights" in proc.log()
    finally:
        proc.cleanup()


def test_colocated_cpu_example_shares_one_unit_and_one_pool(llmux_bin, tmp_path):
    # examples/colocated-cpu.toml: stories260K and SmolLM2 on ONE CPU unit, one
    # head-wise KV pool, half the threads each (a quarter per job: prefill and
    # decode run split). Both answer at once, correctly.
    cached = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not cached.exists():
        pytest.skip(f"{cached} is missing: scripts/setup fetches it")
    require_ports_free([8082, 7321, 7421], "examples/colocated-cpu.toml")
    proc, base = start_serve(["--config", SOURCE_DIR / "examples" / "colocated-cpu.toml"], tmp_path,
                             "serve-colocated", __name__, 8082)
    try:
        wait_until(lambda: models_ready(base, None, ["stories260K", "SmolLM2-135M-Instruct"]), 30,
                   "both models to have a live replica", proc=proc)
        results = {}
        case = GOLDEN["cases"][1]

        def stories():
            results["stories"] = requests.post(f"{base}/v1/completions", timeout=60, json={
                "model": "stories260K", "prompt": case["prompt"], "temperature": 0,
                "max_tokens": len(case["completion_tokens"])})

        def smol():
            results["smol"] = requests.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": "SmolLM2-135M-Instruct", "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]})

        threads = [threading.Thread(target=f) for f in (stories, smol)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
        assert results["stories"].status_code == 200, results["stories"].text
        assert results["stories"].json()["choices"][0]["text"] == case["completion_text"]
        assert results["smol"].status_code == 200, results["smol"].text
        assert "Paris" in results["smol"].json()["choices"][0]["message"]["content"]

        states = requests.get(f"{base}/admin/state", timeout=10).json()
        units = [s for s in states if s["kind"] == "gpu_unit"]
        kvs = [s for s in states if s["kind"] == "kv_manager"]
        assert len(units) == 1 and len(kvs) == 1, [(s["kind"], s["name"]) for s in states]
        models = units[0]["state"]["models"]
        assert {m: models[m]["share"] for m in models} == {"stories260K": 0.5, "SmolLM2-135M-Instruct": 0.5}
        assert all(models[m]["steps"] > 0 for m in models), models
        pool = kvs[0]["state"]
        # One pool, two shapes: 5 layers x 4 KV heads and 30 x 3 head-blocks per token-block.
        assert {m: v["blocks_per_token_block"] for m, v in pool["models"].items()} == \
            {"stories260K": 20, "SmolLM2-135M-Instruct": 90}
        # Nothing held: no block used; the prefix cache's unreferenced blocks
        # count as free (evictable), as vLLM counts them.
        assert pool["blocks_used"] == 0, pool
        assert pool["blocks_free"] == pool["blocks_total"], pool
        assert pool["blocks_evictable"] > 0, pool
        # Blocks are sized for the larger head (SmolLM2's 64); stories260K's
        # heads of 8 leave 7/8 of each of its blocks empty, in admin state.
        assert pool["block_head_dim"] == 64, pool
        assert {m: v["head_dim"] for m, v in pool["models"].items()} == \
            {"stories260K": 8, "SmolLM2-135M-Instruct": 64}
        cached = {m: v["cached"] for m, v in pool["models"].items()}
        assert cached["stories260K"] > 0 and cached["SmolLM2-135M-Instruct"] > 0, pool
        assert pool["slot_padding"] == pytest.approx(cached["stories260K"] * 7 / 8 / sum(cached.values())), pool
        assert all(v["sequences"] == 0 and v["used"] == 0 for v in pool["models"].values()), pool
        schedulers = {s["state"]["model"] for s in states if s["kind"] == "scheduler"}
        assert schedulers == {"stories260K", "SmolLM2-135M-Instruct"}

        # Compute shares move as messages while requests run, and lose none:
        # every golden case at once on stories260K and a SmolLM2 chat, and
        # meanwhile stories260K goes to a quarter of the unit, SmolLM2 to 3/4.
        config = SOURCE_DIR / "examples" / "colocated-cpu.toml"
        before = {m: models[m]["share_moves"] for m in models}
        results = {}

        def story(i, c):
            results[i] = requests.post(f"{base}/v1/completions", timeout=120, json={
                "model": "stories260K", "prompt": c["prompt"], "temperature": 0,
                "max_tokens": len(c["completion_tokens"])})

        long_body = {"model": "SmolLM2-135M-Instruct", "prompt": "Once upon a time, in a quiet village,",
                     "max_tokens": 160, "temperature": 0}

        def long_smol():
            results["long"] = requests.post(f"{base}/v1/completions", timeout=120, json=long_body)

        threads = [threading.Thread(target=story, args=(i, c)) for i, c in enumerate(GOLDEN["cases"])]
        threads += [threading.Thread(target=smol), threading.Thread(target=long_smol)]
        for t in threads:
            t.start()
        # The moves below happen while SmolLM2 sequences run.
        wait_until(lambda: any(s["kind"] == "scheduler" and s["state"]["model"] == "SmolLM2-135M-Instruct"
                               and s["state"]["running"] > 0
                               for s in requests.get(f"{base}/admin/state", timeout=10).json()),
                   30, "SmolLM2 requests to run", interval=0.01)
        r = run_llmux(["admin", "--config", config, "set-share", "cpu0", "SmolLM2-135M-Instruct", "0.75"])
        assert r.returncode == 1 and "sum" in r.stderr, r.stderr  # 0.5 + 0.75 > 1: refused
        r = run_llmux(["admin", "--config", config, "set-share", "cpu0", "stories260K", "0.25"])
        assert r.returncode == 0, r.stderr
        r = run_llmux(["admin", "--config", config, "set-share", "cpu0", "SmolLM2-135M-Instruct", "0.75"])
        assert r.returncode == 0, r.stderr
        for t in threads:
            t.join(timeout=120)
        for i, c in enumerate(GOLDEN["cases"]):
            assert results[i].status_code == 200, results[i].text
            assert results[i].json()["choices"][0]["text"] == c["completion_text"], c["prompt"]
        assert results["smol"].status_code == 200 and "Paris" in results["smol"].json()["choices"][0]["message"]["content"]
        # The long one ran across the move and still generated what it generates alone.
        assert results["long"].status_code == 200, results["long"].text
        alone = requests.post(f"{base}/v1/completions", timeout=120, json=long_body)
        assert results["long"].json()["choices"][0]["text"] == alone.json()["choices"][0]["text"]
        assert results["long"].json()["usage"]["completion_tokens"] == 160
        units = [s for s in requests.get(f"{base}/admin/state", timeout=10).json() if s["kind"] == "gpu_unit"]
        after = units[0]["state"]["models"]
        assert {m: after[m]["share"] for m in after} == {"stories260K": 0.25, "SmolLM2-135M-Instruct": 0.75}
        # Each job of each model steps on its own partition thread (the
        # example splits prefill and decode): steps overlapped.
        assert units[0]["state"]["partitions"] == 4
        assert units[0]["state"]["concurrent_steps_max"] >= 2, units[0]["state"]
        # A model's move keeps its jobs' proportion: half each.
        assert {m: {j: v["share"] for j, v in after[m]["jobs"].items()} for m in after} == {
            "stories260K": {"prefill": 0.125, "decode": 0.125},
            "SmolLM2-135M-Instruct": {"prefill": 0.375, "decode": 0.375}}
        assert all(after[m]["share_moves"] == before[m] + 1 for m in after), after
        # Clear refusals: an unknown model, an unknown unit, a share out of range.
        r = run_llmux(["admin", "--config", config, "set-share", "cpu0", "nope", "0.1"])
        assert r.returncode == 1 and "not on this unit" in r.stderr, r.stderr
        r = run_llmux(["admin", "--config", config, "set-share", "gpu9", "stories260K", "0.1"])
        assert r.returncode == 2 and "no unit named 'gpu9'" in r.stderr, r.stderr
        r = run_llmux(["admin", "--config", config, "set-share", "cpu0", "stories260K", "1.5"])
        assert r.returncode == 1 and "(0, 1]" in r.stderr, r.stderr

        _prefix_hits_change_no_output(base)
    finally:
        proc.cleanup()


def _prefix_hits_change_no_output(base):
    """Prefix caching on the real CPU engine: the unit's kv_manager hands a
    request the blocks another request computed for the same prompt prefix
    (SmolLM2 and stories260K keep their KV in the unit's one arena), the
    request prefills only the rest, and its greedy output is exactly what the
    first, cache-missing run produced, while the other model runs beside it."""
    smol, story = "SmolLM2-135M-Instruct", "stories260K"
    system = ("You are a careful assistant for a small library. Answer in short, plain sentences. "
              "The library opens at nine and closes at five, every day but Sunday. Members may borrow "
              "six books at a time for three weeks, and renew them twice unless someone has reserved "
              "them. Late books cost ten cents a day. The reading room is quiet; the children's corner "
              "has story time on Saturday mornings.")
    chat = {"model": smol, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": "When does the library close?"}]}
    tale = {"model": story, "temperature": 0, "max_tokens": 40,
            "prompt": "In a small town by the sea, a boy called Tom found an old map under his bed. "
                      "He showed it to his sister, and they walked to the beach to dig"}

    def kv_model(name):
        kv = one_state(requests.get(f"{base}/admin/state", timeout=10).json(), "kv_manager")["state"]
        return kv["models"][name]

    # Prompts no earlier phase sent or generated (the cache also holds
    # generated tokens' blocks), so these runs miss.
    before = {m: kv_model(m) for m in (smol, story)}
    first_chat = requests.post(f"{base}/v1/chat/completions", timeout=120, json=chat)
    first_tale = requests.post(f"{base}/v1/completions", timeout=120, json=tale)
    assert first_chat.status_code == 200 and first_tale.status_code == 200, (first_chat.text, first_tale.text)
    missed = {m: kv_model(m) for m in (smol, story)}
    assert missed[smol]["prefix_hits"] == before[smol]["prefix_hits"], (before, missed)
    assert missed[story]["prefix_hits"] == before[story]["prefix_hits"], (before, missed)

    # Again, both models at once: each hits its own model's cached blocks.
    again = {}

    def send(key, path, body):
        again[key] = requests.post(f"{base}{path}", timeout=120, json=body)

    hits_metric = metric(scrape_metrics(base), "llmux:prefix_cache_hits_total", model=smol)
    threads = [threading.Thread(target=send, args=("chat", "/v1/chat/completions", chat)),
               threading.Thread(target=send, args=("tale", "/v1/completions", tale))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert again["chat"].status_code == 200 and again["tale"].status_code == 200
    assert again["chat"].json()["choices"][0]["message"]["content"] == \
        first_chat.json()["choices"][0]["message"]["content"]
    assert again["tale"].json()["choices"][0]["text"] == first_tale.json()["choices"][0]["text"]
    hit = {m: kv_model(m) for m in (smol, story)}
    # Every whole 16-token block of the prompt but the one holding its last
    # token was found (the prompt is never taken whole: one token is computed).
    for name, resp in ((smol, first_chat), (story, first_tale)):
        prompt_tokens = resp.json()["usage"]["prompt_tokens"]
        expect = (prompt_tokens - 1) // 16  # token-blocks, in admin state
        assert expect >= 2, (name, prompt_tokens)
        assert hit[name]["prefix_hits"] - missed[name]["prefix_hits"] == expect, (name, hit[name], missed[name])
    hits_now = metric(scrape_metrics(base), "llmux:prefix_cache_hits_total", model=smol)
    assert hits_now - hits_metric == ((first_chat.json()["usage"]["prompt_tokens"] - 1) // 16) * 16
