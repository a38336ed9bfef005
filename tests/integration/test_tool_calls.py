"""Tool calling against a real `llmux serve` of SmolLM2-135M-Instruct (CPU, ChatML: the
Hermes-style format), through the official `openai` client and raw HTTP: tools reach
the prompt, a required or named call is held to the tools' schemas by the grammar and
comes back as `tool_calls` (finish_reason "tool_calls"), streamed as deltas that add
up to the same calls, and a history with calls and tool results is accepted.

Arguments are validated with `jsonschema` against the schema the test sent, never by
llmux's own code."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from conftest import HTTP_TIMEOUT, json_events, stream_post

jsonschema = pytest.importorskip("jsonschema", reason="scripts/setup installs jsonschema")

MODEL = "SmolLM2-135M-Instruct"
WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 30},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 20}}, "required": ["tz"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Local time in a time zone",
                                            "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def base(smollm2_url):
    return smollm2_url


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)


def chat(base, **body):
    r = requests.post(f"{base}/v1/chat/completions", json={"model": MODEL, **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def check_calls(calls, only=None):
    assert calls, "no tool calls"
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("call_")
        name = c["function"]["name"]
        assert name in SCHEMAS and (only is None or name == only)
        jsonschema.validate(json.loads(c["function"]["arguments"]), SCHEMAS[name])


def test_required_calls_follow_the_schemas(base):
    for seed in range(4):
        resp = chat(base, messages=ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed,
                    max_tokens=200, parallel_tool_calls=False)
        c = resp["choices"][0]
        assert c["finish_reason"] == "tool_calls", c
        assert len(c["message"]["tool_calls"]) == 1
        check_calls(c["message"]["tool_calls"])
        assert c["message"]["content"] is None


def test_named_function_through_the_official_client(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Time in Tokyo?"}],
                                       tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       temperature=0, max_tokens=100)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME)


def test_streamed_calls_add_up_to_the_same(base):
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": "required", "temperature": 0,
            "max_tokens": 200}
    whole = chat(base, **{k: v for k, v in body.items() if k != "model"})["choices"][0]
    events = json_events(stream_post(f"{base}/v1/chat/completions", {**body, "stream": True}, None))
    calls, finish = {}, None
    for e in events:
        for c in e["choices"]:
            for tc in c["delta"].get("tool_calls", []):
                calls[tc["index"]] = tc
            finish = c["finish_reason"] or finish
    assert finish == "tool_calls"
    streamed = [calls[i] for i in sorted(calls)]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in streamed] == \
           [(c["function"]["name"], c["function"]["arguments"]) for c in whole["message"]["tool_calls"]]


def test_auto_answers_with_text_or_calls(base):
    resp = chat(base, messages=ASK, tools=TOOLS, temperature=0, max_tokens=80)
    c = resp["choices"][0]
    if c["finish_reason"] == "tool_calls":
        check_calls(c["message"]["tool_calls"])
    else:
        assert c["message"].get("tool_calls") is None and c["message"]["content"]
    # tool_choice "none": the tools are not offered, and nothing is parsed as a call.
    none = chat(base, messages=ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40)
    assert none["choices"][0]["finish_reason"] in ("stop", "length")
    assert none["usage"]["prompt_tokens"] < resp["usage"]["prompt_tokens"]  # no tool block in the prompt


def test_a_history_with_calls_and_results(base):
    history = ASK + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    resp = chat(base, messages=history, tools=TOOLS, temperature=0, max_tokens=40)
    assert resp["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    plain = chat(base, messages=ASK, tools=TOOLS, temperature=0, max_tokens=1)
    assert resp["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]  # the call and result are in the prompt


def test_bad_tool_requests_are_400s(base):
    def error(body):
        r = requests.post(f"{base}/v1/chat/completions", json={"model": MODEL, "messages": ASK, **body},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 400, r.text
        return r.json()["error"]

    assert error({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}})["param"] == "tool_choice"
    assert error({"tool_choice": "required"})["param"] == "tool_choice"
    e = error({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "email"}}}}}], "tool_choice": "required"})
    assert e["param"] == "tools" and "format" in e["message"]
    assert error({"messages": [{"role": "tool", "content": "x"}]})["param"] == "messages[0].tool_call_id"
