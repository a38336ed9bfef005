"""The OpenAI surface through the official `openai` Python client (and raw HTTP where
the client hides something), against a real `llmux serve` of SmolLM2-135M-Instruct on
the CPU backend: completions and chat, streaming and not, n > 1, stop strings, echo,
log-probabilities, seed reproducibility, usage, and each error status as the client's
exception type.

Expected texts are never written down here: a stop-string request is checked against
the same request without the stop string, echo against the prompt plus the plain
completion, a stream against the non-streamed answer."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import requests

from conftest import (
    HTTP_TIMEOUT,
    admin_state_http,
    find_states,
    free_port,
    json_events,
    start_serve,
    stream_post,
    wait_until,
)

MODEL = "SmolLM2-135M-Instruct"
KEY = "sk-llmux-test"
CACHED = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def served(llmux_bin, tmp_path_factory):
    if not CACHED.exists():
        pytest.skip(f"{CACHED} is missing: scripts/setup fetches it")
    port = free_port()
    proc, url = start_serve(["--port", port, "--api-key", KEY], tmp_path_factory.mktemp("openai"),
                            "serve-openai", __name__, port, timeout=60)
    try:
        yield proc, url
    finally:
        proc.cleanup()


@pytest.fixture(scope="module")
def base(served):
    return served[1]


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)


def raw(base, path, body):
    return requests.post(f"{base}{path}", json=body, timeout=HTTP_TIMEOUT,
                         headers={"Authorization": f"Bearer {KEY}"})


def stream_texts(base, path, body):
    """Streams `body` and returns ({index: text}, {index: finish_reason}, events)."""
    events = json_events(stream_post(f"{base}{path}", {**body, "stream": True}, KEY))
    texts, finish = {}, {}
    for ev in events:
        for c in ev["choices"]:
            piece = c.get("text") if "text" in c else c["delta"].get("content", "")
            texts[c["index"]] = texts.get(c["index"], "") + (piece or "")
            if c["finish_reason"] is not None:
                assert c["index"] not in finish, f"two finish chunks for choice {c['index']}"
                finish[c["index"]] = c["finish_reason"]
    return texts, finish, events


def scheduler_totals(base):
    sched = find_states(admin_state_http(base, None), "scheduler")
    return {k: sum(s["state"][k] for s in sched) for k in ("finished", "generated_tokens")}


def no_running_sequences(base):
    states = admin_state_http(base, None)
    sched = find_states(states, "scheduler")
    return all(s["state"]["running"] == 0 and s["state"]["waiting"] == 0 for s in sched) or None


# ------------------------------------------------------------------------------------------
# Through the official client
# ------------------------------------------------------------------------------------------

def test_client_completion(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.system_fingerprint == "llmux-cpu"


def test_client_chat_and_its_stream_agree(client):
    msgs = [{"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    text = r.choices[0].message.content
    assert text
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_client_completion_stream(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_client_n_choices_and_seed_reproducibility(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=1234, n=3)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    # Each choice samples on its own (seed + index): not three copies of one text.
    assert len({c.text for c in a.choices}) > 1
    assert a.usage.completion_tokens <= 3 * 8 and a.usage.completion_tokens >= 3
    # Greedy choices are all the same text.
    g = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0, n=2)
    assert g.choices[0].text == g.choices[1].text


def test_client_stop_string(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    text = plain.choices[0].text
    assert len(text) > 8, text
    stop = text[5:8]  # inside the text, wherever its token boundaries fall
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].text == text[:text.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < plain.usage.completion_tokens


def test_client_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert e.logprob == pytest.approx(e.top_logprobs[0].logprob, abs=1e-5)
    assert "".join(e.token for e in content) == r.choices[0].message.content


def test_client_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert lp.text_offset[0] == 0 and all(len(t) <= 2 for t in lp.top_logprobs)


def test_client_errors_map_to_exception_types(base, client):
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).completions.create(
            model=MODEL, prompt="x", max_tokens=1)
    assert e.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", max_tokens=1, temperature=7)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", max_tokens=1, n=99)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=1)
    assert e.value.body["code"] == "context_length_exceeded"


# ------------------------------------------------------------------------------------------
# Raw HTTP: what the client hides
# ------------------------------------------------------------------------------------------

def test_stop_strings_stream_and_never_leak(base):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 24, "temperature": 0}
    text = raw(base, "/v1/completions", body).json()["choices"][0]["text"]
    stops = [text[9:12], text[4:6]]  # the earlier one wins, whatever the list order
    cut = min(text.index(s) for s in stops)
    texts, finish, _ = stream_texts(base, "/v1/completions", {**body, "stop": stops})
    assert texts == {0: text[:cut]} and finish == {0: "stop"}
    # A stop string that never occurs changes nothing.
    texts, finish, _ = stream_texts(base, "/v1/completions", {**body, "stop": "\u2603\u2603"})
    assert texts[0] == text
    # The stopped sequence is cancelled at the unit, not run to max_tokens:
    # the scheduler generates fewer than 24 tokens for it and never counts
    # it as finished (finished counts stop/length ends, not cancels).
    wait_until(lambda: no_running_sequences(base), 10, "no sequence left running")
    before = scheduler_totals(base)
    texts, finish, _ = stream_texts(base, "/v1/completions", {**body, "stop": text[4:6]})
    assert finish == {0: "stop"}
    wait_until(lambda: no_running_sequences(base), 10, "no sequence left running")
    after = scheduler_totals(base)
    assert after["finished"] == before["finished"], (before, after)
    assert after["generated_tokens"] - before["generated_tokens"] < body["max_tokens"], (before, after)


def test_stop_string_in_chat(base):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}],
            "max_tokens": 20, "temperature": 0}
    text = raw(base, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    stop = text[6:9]
    r = raw(base, "/v1/chat/completions", {**body, "stop": stop}).json()
    assert r["choices"][0]["message"]["content"] == text[:text.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"


def test_n_choices_stream_each_with_its_index(base):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0.9,
            "seed": 77, "n": 2}
    plain = raw(base, "/v1/completions", body).json()
    texts, finish, events = stream_texts(base, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert texts == {c["index"]: c["text"] for c in plain["choices"]}
    assert finish == {c["index"]: c["finish_reason"] for c in plain["choices"]}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == plain["usage"]
    # Chat: each choice opens with the assistant role.
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "n": 3}
    _, finish, events = stream_texts(base, "/v1/chat/completions", chat)
    roles = [c["index"] for ev in events for c in ev["choices"] if c["delta"].get("role") == "assistant"]
    assert sorted(roles) == [0, 1, 2] and sorted(finish) == [0, 1, 2]


def test_echo_prepends_the_prompt(base):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    plain = raw(base, "/v1/completions", body).json()["choices"][0]["text"]
    echoed = raw(base, "/v1/completions", {**body, "echo": True}).json()["choices"][0]["text"]
    assert echoed == PROMPT + plain
    texts, _, _ = stream_texts(base, "/v1/completions", {**body, "echo": True})
    assert texts[0] == PROMPT + plain
    # Token-id prompts echo their text.
    ids = requests.post(f"{base}/tokenize", json={"model": MODEL, "prompt": PROMPT},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=HTTP_TIMEOUT).json()["tokens"]
    r = raw(base, "/v1/completions", {**body, "prompt": ids, "echo": True}).json()
    assert r["choices"][0]["text"] == PROMPT + plain
    bad = raw(base, "/v1/completions", {**body, "echo": True, "logprobs": 1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "echo"


def test_slow_reader_gets_every_event(base):
    # A client that reads one small piece at a time still gets the whole stream.
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    plain = raw(base, "/v1/completions", body).json()["choices"][0]["text"]
    with requests.post(f"{base}/v1/completions", json={**body, "stream": True}, stream=True,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=HTTP_TIMEOUT) as r:
        data = b""
        for piece in r.iter_content(chunk_size=7):
            data += piece
    events = [json.loads(line[6:]) for line in data.decode().split("\n\n")
              if line.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == plain
    assert data.decode().endswith("data: [DONE]\n\n")


def test_api_keys_never_reach_the_log(served, client):
    proc, base = served
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong-key-123", max_retries=0).models.list()
    log = proc.log_path.read_text(errors="replace")
    assert "request cmpl-" in log  # the per-request line was written
    assert KEY not in log and "sk-wrong-key-123" not in log
