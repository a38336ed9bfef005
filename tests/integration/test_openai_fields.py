"""Every request field of OpenAI's completions and chat APIs (and vLLM's sampling
extras) against a real `llmux serve` of SmolLM2-135M-Instruct on the CPU backend:
each is either honoured — checked here by what it does to the answer — or refused
with a 400 that names it. Nothing is accepted and silently ignored.

Expected texts are never written down: each extra is checked against the same
greedy request without it."""

from __future__ import annotations

import pytest
import requests

from conftest import HTTP_TIMEOUT, json_events, stream_post

MODEL = "SmolLM2-135M-Instruct"
CHAT = [{"role": "user", "content": "Say hi."}]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def base(smollm2_url):
    return smollm2_url


def post(base, kind, body, timeout=HTTP_TIMEOUT):
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    lead = {"messages": CHAT} if kind == "chat" else {"prompt": PROMPT}
    return requests.post(f"{base}{path}", json={"model": MODEL, **lead, **body}, timeout=timeout)


def ok(base, kind, body, timeout=HTTP_TIMEOUT):
    r = post(base, kind, body, timeout)
    assert r.status_code == 200, r.text
    return r.json()


def text_of(resp):
    c = resp["choices"][0]
    return c["message"]["content"] if "message" in c else c["text"]


def tokenize(base, text):
    r = requests.post(f"{base}/tokenize", json={"model": MODEL, "prompt": text, "add_special_tokens": False},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


# Taken from OpenAI's API reference (chat: audio … web_search_options; completions:
# best_of, suffix) and vLLM's extras, with a value that asks for something llmux does
# not do. Each must be a 400 naming the field.
REFUSED = [
    ("completions", "best_of", 3),
    ("completions", "suffix", " and that is all."),
    ("chat", "audio", {"voice": "alloy", "format": "wav"}),
    ("chat", "modalities", ["text", "audio"]),
    ("chat", "prediction", {"type": "content", "content": "Hello"}),
    ("chat", "web_search_options", {}),
    ("chat", "functions", [{"name": "get_weather", "parameters": {}}]),
    ("chat", "function_call", {"name": "get_weather"}),
    ("completions", "use_beam_search", True),
    ("completions", "prompt_logprobs", 1),
    ("completions", "allowed_token_ids", [1, 2, 3]),
    ("chat", "chat_template", "{{ messages[0].content }}"),
    ("chat", "add_generation_prompt", False),
    ("chat", "continue_final_message", True),
    ("chat", "echo", True),
]

# Fields whose value here changes nothing a client can observe, or is the default:
# accepted with a 200.
ACCEPTED = [
    ("chat", {"store": False, "metadata": {"run": "ci"}, "service_tier": "auto", "parallel_tool_calls": True,
              "user": "u-1", "prompt_cache_key": "k", "safety_identifier": "s", "modalities": ["text"],
              "tool_choice": "none", "tools": [], "response_format": {"type": "text"}, "audio": None}),
    ("completions", {"best_of": 1, "suffix": "", "echo": False, "use_beam_search": False}),
    ("completions", {"n": 2, "best_of": 2}),
]


@pytest.mark.parametrize("kind,field,value", REFUSED, ids=[f"{k}-{f}" for k, f, _ in REFUSED])
def test_refused_fields_name_themselves(base, kind, field, value):
    r = post(base, kind, {field: value, "max_tokens": 4})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"], err
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("kind,fields", ACCEPTED)
def test_neutral_values_are_accepted(base, kind, fields):
    resp = ok(base, kind, {**fields, "max_tokens": 4, "temperature": 0})
    assert len(resp["choices"]) == fields.get("n", 1)


def test_unknown_fields_are_ignored(base):
    plain = ok(base, "completions", {"max_tokens": 6, "temperature": 0})
    extra = ok(base, "completions", {"max_tokens": 6, "temperature": 0, "x_vendor_field": {"a": 1}})
    assert text_of(extra) == text_of(plain)


@pytest.fixture(scope="module")
def stops_early(base):
    """The greedy chat answer, which must end on EOS well before its limit."""
    resp = ok(base, "chat", {"max_tokens": 120, "temperature": 0})
    if resp["choices"][0]["finish_reason"] != "stop":
        pytest.skip("the model did not end this answer with EOS within 120 tokens")
    return resp


def test_ignore_eos_runs_to_max_tokens(base, stops_early):
    n = stops_early["usage"]["completion_tokens"] + 10
    resp = ok(base, "chat", {"max_tokens": n, "temperature": 0, "ignore_eos": True})
    assert resp["choices"][0]["finish_reason"] == "length"
    assert resp["usage"]["completion_tokens"] == n
    assert text_of(resp).startswith(text_of(stops_early))


def test_skip_special_tokens_off_shows_the_eos_text(base, stops_early):
    n = stops_early["usage"]["completion_tokens"] + 3
    shown = ok(base, "chat", {"max_tokens": n, "temperature": 0, "ignore_eos": True,
                              "skip_special_tokens": False})
    hidden = ok(base, "chat", {"max_tokens": n, "temperature": 0, "ignore_eos": True})
    assert text_of(shown).startswith(text_of(stops_early) + "<|im_end|>")
    assert "<|im_end|>" not in text_of(hidden)


def test_min_tokens_masks_eos(base, stops_early):
    k = stops_early["usage"]["completion_tokens"]
    resp = ok(base, "chat", {"max_tokens": k + 40, "temperature": 0, "min_tokens": k + 8})
    assert resp["usage"]["completion_tokens"] >= k + 8
    # Greedy, the mask changes nothing before the point where EOS won.
    assert text_of(resp).startswith(text_of(stops_early))
    assert "<|im_end|>" not in text_of(ok(base, "chat", {"max_tokens": k + 40, "temperature": 0,
                                                          "min_tokens": k + 8, "skip_special_tokens": False}))


def test_min_tokens_without_max_tokens_raises_the_default(base):
    # The default max_tokens (256 here) gives way to a larger min_tokens; the
    # context still bounds it.
    resp = ok(base, "completions", {"temperature": 0, "min_tokens": 300}, timeout=120)
    assert resp["usage"]["completion_tokens"] >= 300
    models = requests.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()["data"]
    ctx = next(m for m in models if m["id"] == MODEL)["max_model_len"]
    r = post(base, "completions", {"min_tokens": ctx})
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens"


def test_stop_token_ids_end_the_answer_after_min_tokens(base):
    # Force one token with logit_bias; it is also a stop token, masked for the first 3.
    forced = tokenize(base, " banana")["tokens"][0]
    resp = ok(base, "completions", {"max_tokens": 12, "temperature": 0, "min_tokens": 3,
                                    "stop_token_ids": [forced], "logit_bias": {str(forced): 100}})
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["completion_tokens"] == 3
    assert "banana" not in text_of(resp)
    # Without the stop token, the bias alone repeats it.
    rep = ok(base, "completions", {"max_tokens": 4, "temperature": 0, "logit_bias": {str(forced): 100}})
    assert text_of(rep) == " banana" * 4
    bad = post(base, "completions", {"stop_token_ids": [10 ** 9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stop_token_ids"


def test_include_stop_str_in_output(base):
    plain = text_of(ok(base, "completions", {"max_tokens": 24, "temperature": 0}))
    words = plain.split()
    assert len(words) >= 4, plain
    stop = " " + words[2]
    at = plain.find(stop)
    assert at > 0
    cut = ok(base, "completions", {"max_tokens": 24, "temperature": 0, "stop": [stop]})
    kept = ok(base, "completions", {"max_tokens": 24, "temperature": 0, "stop": [stop],
                                    "include_stop_str_in_output": True})
    assert text_of(cut) == plain[:at]
    assert text_of(kept) == plain[:at + len(stop)]
    assert kept["choices"][0]["finish_reason"] == "stop"


def test_continuous_usage_stats(base):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    events = json_events(stream_post(f"{base}/v1/completions", body, None))
    assert events and all("usage" in e for e in events)
    done = [e["usage"]["completion_tokens"] for e in events]
    assert done == sorted(done)
    assert events[-1]["choices"] == [] and done[-1] == 8
    assert len({e["usage"]["prompt_tokens"] for e in events}) == 1
    # Without the option only the final chunk has usage.
    plain = json_events(stream_post(f"{base}/v1/completions",
                                    {**body, "stream_options": {"include_usage": True}}, None))
    assert [("usage" in e) for e in plain] == [False] * (len(plain) - 1) + [True]


def test_max_tokens_beyond_the_context_is_a_400(base):
    models = requests.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()["data"]
    ctx = next(m for m in models if m["id"] == MODEL)["max_model_len"]
    n_prompt = len(tokenize(base, PROMPT)["tokens"]) + 1  # + BOS where the vocabulary adds one
    prompt_len = ok(base, "completions", {"max_tokens": 1})["usage"]["prompt_tokens"]
    assert prompt_len in (n_prompt - 1, n_prompt)
    r = post(base, "completions", {"max_tokens": ctx - prompt_len + 1})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded"
    assert f"maximum context length is {ctx} tokens" in err["message"]
    assert f"{ctx + 1} tokens ({prompt_len} in the prompt" in err["message"]


def test_truncate_prompt_tokens_keeps_the_tail(base):
    long_prompt = "one two three four five six seven eight nine ten. " * 4
    full = ok(base, "completions", {"prompt": long_prompt, "max_tokens": 1})["usage"]["prompt_tokens"]
    short = ok(base, "completions", {"prompt": long_prompt, "max_tokens": 1, "truncate_prompt_tokens": 7})
    assert full > 7 and short["usage"]["prompt_tokens"] == 7
