"""Structured outputs on the real engine: `llmux serve` of SmolLM2-135M-Instruct (CPU)
answers with `response_format` (json_object, json_schema), vLLM's guided_choice and
guided_grammar, and every answer is checked by an independent validator — Python's
`json` and the `jsonschema` package, or a regular expression written here — never by
llmux's own grammar code.

The schemas are bounded (string lengths, item counts, enums), so every answer must
end with finish_reason "stop" within max_tokens: a sampled answer that ran off the
grammar could not end that way. (A recursive schema, or a map of any number of keys,
has no such bound — a model at temperature 1 may go on until max_tokens — so those
are checked in the grammar's unit tests, tests/engine/grammar_test.cpp, not here.)"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
import pytest
import requests

from conftest import HTTP_TIMEOUT, json_events, stream_post

jsonschema = pytest.importorskip("jsonschema", reason="scripts/setup installs jsonschema")

MODEL = "SmolLM2-135M-Instruct"
TIMEOUT = 120

SCHEMAS = {
    "person": {"type": "object",
               "properties": {"name": {"type": "string", "maxLength": 24},
                              "age": {"type": "integer", "minimum": 0},
                              "email": {"type": "string", "maxLength": 30}},
               "required": ["name", "age"]},
    "enums": {"type": "object",
              "properties": {"color": {"enum": ["red", "green", "blue"]},
                             "size": {"type": "string", "enum": ["S", "M", "L"]},
                             "ok": {"type": "boolean"}},
              "required": ["color", "size", "ok"]},
    "list": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 5},
    "nested": {"type": "object",
               "properties": {"title": {"type": "string", "maxLength": 20},
                              "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                       "maxItems": 3},
                              "meta": {"type": "object",
                                       "properties": {"views": {"type": "number"}, "draft": {"type": "null"}},
                                       "required": ["views"]}},
               "required": ["title", "tags", "meta"]},
    "union": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 10},
                        {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}]},
    "patterns": {"type": "object",
                 "properties": {"phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"},
                                "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2,4}$"}},
                 "required": ["phone", "code"]},
    "optional_only": {"type": "object",
                      "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 5},
                                     "c": {"type": "boolean"}}},
}


@pytest.fixture(scope="module")
def base(smollm2_url):
    return smollm2_url


def chat(base, content, **body):
    r = requests.post(f"{base}/v1/chat/completions",
                      json={"model": MODEL, "messages": [{"role": "user", "content": content}], **body},
                      timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_sampled_answer_validates_against_its_schema(base, name):
    schema = SCHEMAS[name]
    # Several seeds at temperature 1 (the model wanders; the grammar holds it),
    # as n choices of one request: one batch, each sequence its own matcher.
    resp = chat(base, f"Answer with JSON ({name}).", temperature=1.0, seed=11, n=4, max_tokens=600,
                response_format=schema_format(schema))
    assert len(resp["choices"]) == 4
    for c in resp["choices"]:
        text = c["message"]["content"]
        assert c["finish_reason"] == "stop", f"did not end: {text!r}"
        jsonschema.validate(json.loads(text), schema)


def test_greedy_answer_keeps_the_schemas_property_order(base):
    schema = {"type": "object", "properties": {"zeta": {"type": "string", "maxLength": 10},
                                               "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"]}
    resp = chat(base, "Give me zeta and alpha as JSON.", temperature=0, max_tokens=100,
                response_format=schema_format(schema))
    doc = json.loads(resp["choices"][0]["message"]["content"])
    assert list(doc) == ["zeta", "alpha"]


def test_json_object_is_an_object(base):
    for seed in (1, 2, 3):
        resp = chat(base, "Reply with a JSON object with one key.", temperature=0.7, seed=seed, max_tokens=300,
                    response_format={"type": "json_object"})
        c = resp["choices"][0]
        text = c["message"]["content"]
        assert text.lstrip().startswith("{")
        if c["finish_reason"] == "stop":
            assert isinstance(json.loads(text), dict)


def test_guided_choice_and_grammar(base):
    choices = ["positive", "negative", "neutral"]
    for seed in range(6):
        resp = chat(base, "Sentiment of 'I love it'?", temperature=1.0, seed=seed, max_tokens=10,
                    guided_choice=choices)
        c = resp["choices"][0]
        assert c["finish_reason"] == "stop" and c["message"]["content"] in choices
    gbnf = 'root ::= "(" [0-9]{1,3} " + " [0-9]{1,3} ")" " = " [0-9]{1,4}\n'
    pattern = re.compile(r"\([0-9]{1,3} \+ [0-9]{1,3}\) = [0-9]{1,4}")
    for seed in range(4):
        r = requests.post(f"{base}/v1/completions",
                          json={"model": MODEL, "prompt": "Arithmetic: ", "temperature": 1.0, "seed": seed,
                                "max_tokens": 40, "guided_grammar": gbnf}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        c = r.json()["choices"][0]
        assert c["finish_reason"] == "stop" and pattern.fullmatch(c["text"]), c


def test_guided_regex_answers_match_in_full(base):
    patterns = [r"(yes|no), because [a-z ]{1,20}\.", r"[0-9]{1,3}(\.[0-9]{1,2})? (kg|lb)",
                r"#[0-9a-f]{6}", r"[A-Z][a-z]{1,10} [A-Z][a-z]{1,10}"]
    for i, pattern in enumerate(patterns):
        for seed in range(3):
            r = requests.post(f"{base}/v1/completions",
                              json={"model": MODEL, "prompt": "Answer: ", "temperature": 1.0, "seed": 10 * i + seed,
                                    "max_tokens": 60, "guided_regex": pattern}, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
            c = r.json()["choices"][0]
            assert c["finish_reason"] == "stop" and re.fullmatch(pattern, c["text"]), (pattern, c)


def test_stream_equals_the_whole_answer(base):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "A person as JSON."}], "temperature": 0,
            "max_tokens": 120, "response_format": schema_format(SCHEMAS["person"])}
    whole = requests.post(f"{base}/v1/chat/completions", json=body, timeout=TIMEOUT).json()
    events = json_events(stream_post(f"{base}/v1/chat/completions", {**body, "stream": True}, None))
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert streamed == whole["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(streamed), SCHEMAS["person"])


def test_concurrent_requests_each_follow_their_own_schema(base):
    names = sorted(SCHEMAS) * 2

    def one(i_name):
        i, name = i_name
        resp = chat(base, f"JSON please ({i}).", temperature=0.9, seed=100 + i, max_tokens=600,
                    response_format=schema_format(SCHEMAS[name]))
        return name, resp["choices"][0]

    # Four at a time: under ASan on an AVX2-only 2-vCPU machine, eight at
    # once (up to 600 tokens each) ran one request past the 30 s deadline.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for name, c in pool.map(one, enumerate(names)):
            assert c["finish_reason"] == "stop", c
            jsonschema.validate(json.loads(c["message"]["content"]), SCHEMAS[name])


def test_constraints_llmux_cannot_express_are_400s_naming_them(base):
    def error(body):
        r = requests.post(f"{base}/v1/chat/completions",
                          json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], **body},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 400, r.text
        return r.json()["error"]

    e = error({"response_format": schema_format({"type": "string", "format": "date"})})
    assert e["param"] == "response_format" and e["code"] == "unsupported_schema" and "'format'" in e["message"]
    e = error({"guided_regex": "(a)\\1"})
    assert e["param"] == "guided_regex" and "backreferences" in e["message"]
    e = error({"guided_json": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5}}}})
    assert e["param"] == "guided_json" and "minimum" in e["message"] and "#/properties/n" in e["message"]
    e = error({"guided_grammar": "root ::= missing\n"})
    assert e["param"] == "guided_grammar" and e["code"] == "invalid_grammar" and "missing" in e["message"]
    e = error({"guided_choice": ["a"], "response_format": {"type": "json_object"}})
    assert "give one" in e["message"]
