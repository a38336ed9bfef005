"""Chat templates on a real `llmux serve`: each model's own Jinja template renders its
conversations, as vLLM renders them.

SmolLM2-135M-Instruct is served six times, each copy's GGUF rewritten (gguf-py's
gguf-new-metadata) with another template: its own, Qwen3's (which writes tools itself
and asks for <tool_call> blocks), Llama 3.1's (tools in the first user turn, calls as
a JSON answer), Mistral Nemo's (which refuses roles that do not alternate, and asks
for a [TOOL_CALLS] array with 9-character ids), one that parses but fails to render,
and one the engine does not read; then once more with `--chat-template`. The expected
prompts are rendered here by Python's jinja2, set up as Hugging Face transformers sets
it up, from the context vLLM passes (tool-call arguments as objects), tokenized by
llama.cpp (llama-cpp-python, special tokens parsed) and compared token for token with
what the server would run (vLLM's chat form of POST /tokenize)."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import (SOURCE_DIR, free_port, models_ready, run_llmux, serve_cpu_unit, start_serve,
                      wait_until)

jinja2 = pytest.importorskip("jinja2", reason="scripts/setup installs jinja2 (with llama-cpp-python)")
llama_cpp = pytest.importorskip("llama_cpp", reason="scripts/setup installs llama-cpp-python")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

SMOL_FILE = Path.home() / ".cache" / "llmux" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATES = SOURCE_DIR / "tests" / "data" / "chat_templates"
OWN, QWEN3, LLAMA, NEMO = "smol-own", "smol-qwen3", "smol-llama31", "smol-nemo"
BROKEN, UNREAD = "smol-broken", "smol-unread"
# Parses, then fails at render: no such filter.
BROKEN_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role | no_such_filter }}{% endfor %}"
UNREAD_TEMPLATE = "{% include 'other.jinja' %}"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"]}}}]
ROUND_TRIP = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_abc", "content": "18 C, sunny"},
]


def hf_render(template: str, messages, tools=None, **kwargs) -> str:
    """The prompt transformers renders for vLLM: jinja2's sandbox with trim_blocks and
    lstrip_blocks, HF's tojson; arguments parsed to objects as vLLM does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    msgs = []
    names = {}
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [dict(c, function=dict(c["function"], arguments=json.loads(c["function"]["arguments"])))
                               for c in m["tool_calls"]]
            names.update({c["id"]: c["function"]["name"] for c in m["tool_calls"]})
        if m["role"] == "tool":
            m["name"] = names[m["tool_call_id"]]
        msgs.append(m)
    return env.from_string(template).render(messages=msgs, tools=tools, add_generation_prompt=True,
                                            bos_token="<|im_start|>", eos_token="<|im_end|>", **kwargs)


@pytest.fixture(scope="module")
def served(llmux_bin, tmp_path_factory):
    if not SMOL_FILE.exists():
        pytest.skip(f"{SMOL_FILE} is missing: scripts/setup fetches it")
    tmp = tmp_path_factory.mktemp("chat_templates")
    tool = Path(__import__("sys").executable).parent / "gguf-new-metadata"
    files = {OWN: SMOL_FILE}
    for name, template in [(QWEN3, (TEMPLATES / "qwen3.jinja").read_text()),
                           (LLAMA, (TEMPLATES / "llama3.1_json.jinja").read_text()),
                           (NEMO, (TEMPLATES / "mistral_nemo.jinja").read_text()),
                           (BROKEN, BROKEN_TEMPLATE), (UNREAD, UNREAD_TEMPLATE)]:
        tfile = tmp / f"{name}.jinja"
        tfile.write_text(template)
        out = tmp / f"{name}.gguf"
        subprocess.run([str(tool), "--force", "--chat-template-file", str(tfile), str(SMOL_FILE), str(out)],
                       check=True, capture_output=True, timeout=120)
        files[name] = out
    models = ", ".join(f'{{ name = "{m}", share = 0.15 }}' for m in files)
    proc, base, _ = serve_cpu_unit(tmp, "chat-templates", __name__, files, models, timeout=90)
    try:
        wait_until(lambda: models_ready(base, None, list(files)), 60, "every model to have a replica", proc=proc)
        yield proc, base
    finally:
        proc.cleanup()


def tokenize_chat(base, model, **body):
    r = requests.post(f"{base}/tokenize", json={"model": model, **body}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


_LLAMA = {}


def tokenize_text(_base, _model, text):
    """llama.cpp's ids for `text` in SmolLM2's vocabulary (every copy shares it),
    special tokens such as <|im_start|> parsed, no BOS added."""
    if "llm" not in _LLAMA:
        _LLAMA["llm"] = llama_cpp.Llama(model_path=str(SMOL_FILE), vocab_only=True, verbose=False)
    return _LLAMA["llm"].tokenize(text.encode(), add_bos=False, special=True)


def test_own_template_renders_as_transformers_does(served):
    _, base = served
    own = (TEMPLATES / "smollm2.jinja").read_text()
    for messages in ([{"role": "user", "content": "Hello!"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]):
        assert tokenize_chat(base, OWN, messages=messages) == tokenize_text(base, OWN, hf_render(own, messages))


def test_tools_go_through_a_template_that_writes_them(served):
    _, base = served
    qwen3 = (TEMPLATES / "qwen3.jinja").read_text()
    want = hf_render(qwen3, ROUND_TRIP, tools=TOOLS)
    assert "<tools>" in want and "<tool_response>\n18 C, sunny\n</tool_response>" in want
    assert tokenize_chat(base, QWEN3, messages=ROUND_TRIP, tools=TOOLS) == tokenize_text(base, QWEN3, want)
    # vLLM's chat_template_kwargs reach the template.
    ask = [{"role": "user", "content": "Hi"}]
    got = tokenize_chat(base, QWEN3, messages=ask, chat_template_kwargs={"enable_thinking": False})
    assert got == tokenize_text(base, QWEN3, hf_render(qwen3, ask, enable_thinking=False))
    assert got != tokenize_chat(base, QWEN3, messages=ask)


def test_a_required_call_through_that_template(served):
    _, base = served
    r = requests.post(f"{base}/v1/chat/completions", timeout=120, json={
        "model": QWEN3, "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": TOOLS,
        "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 200, "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)


def test_llama_31_json_calls(served):
    _, base = served
    llama = (TEMPLATES / "llama3.1_json.jinja").read_text()
    pin = {"date_string": "26 Jul 2024"}  # the template's date line, else today's
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    want = hf_render(llama, ask, tools=TOOLS, **pin)
    assert '"parameters": dictionary of argument name' in want and want.count("get_weather") == 1
    assert tokenize_chat(base, LLAMA, messages=ask, tools=TOOLS, chat_template_kwargs=pin) == \
        tokenize_text(base, LLAMA, want)
    # A required call is written as Llama's JSON answer and read back as tool_calls.
    r = requests.post(f"{base}/v1/chat/completions", timeout=120, json={
        "model": LLAMA, "messages": ask, "tools": TOOLS, "tool_choice": "required",
        "parallel_tool_calls": False, "max_tokens": 200, "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and not choice["message"]["content"]
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)
    # A history with that call and its result renders as jinja2 renders it.
    history = ask + ROUND_TRIP[2:]
    assert tokenize_chat(base, LLAMA, messages=history, tools=TOOLS, chat_template_kwargs=pin) == \
        tokenize_text(base, LLAMA, hf_render(llama, history, tools=TOOLS, **pin))


def test_a_template_refusal_is_a_400_with_its_words(served):
    _, base = served
    r = requests.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": NEMO, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "conversation roles must alternate" in err["message"] and err["param"] == "messages"
    # A well-formed conversation renders through it (Mistral's [INST] markers).
    assert tokenize_chat(base, NEMO, messages=[{"role": "user", "content": "a"}]) == \
        tokenize_text(base, NEMO, hf_render((TEMPLATES / "mistral_nemo.jinja").read_text(),
                                            [{"role": "user", "content": "a"}]))


def test_mistral_calls(served):
    _, base = served
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    r = requests.post(f"{base}/v1/chat/completions", timeout=120, json={
        "model": NEMO, "messages": ask, "tools": TOOLS, "tool_choice": "required", "max_tokens": 200,
        "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and len(call["id"]) == 9 and call["id"].isalnum()
    # The call and its result go back through Mistral's template, which takes
    # 9-character ids only: the id llmux made is one.
    history = ask + [choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    r = requests.post(f"{base}/v1/chat/completions", timeout=120,
                      json={"model": NEMO, "messages": history, "tools": TOOLS, "max_tokens": 8})
    assert r.status_code == 200, r.text
    # The prompt is jinja2's rendering of that history.
    want = hf_render((TEMPLATES / "mistral_nemo.jinja").read_text(),
                     [dict(m, content=m.get("content")) for m in history], tools=TOOLS)
    assert "[TOOL_CALLS][" in want and f'"call_id": "{call["id"]}"' in want
    assert tokenize_chat(base, NEMO, messages=history, tools=TOOLS) == tokenize_text(base, NEMO, want)


def test_templates_that_fail_fall_back_and_say_so(served):
    proc, base = served
    ask = [{"role": "user", "content": "Hi"}]
    # Not read at all: said once at start; the built-in ChatML renders.
    assert "is not Jinja this engine reads" in proc.log_tail() and "smol-unread" in proc.log_tail()
    assert tokenize_chat(base, UNREAD, messages=ask) == tokenize_chat(base, BROKEN, messages=ask)
    # Read, but failing at render: the request is served, and the log says why.
    r = requests.post(f"{base}/v1/chat/completions", timeout=120,
                      json={"model": BROKEN, "messages": ask, "max_tokens": 4})
    assert r.status_code == 200, r.text
    wait_until(lambda: "no filter named 'no_such_filter'" in proc.log_tail(), 10, "the fallback in the log", proc=proc)
    assert tokenize_chat(base, BROKEN, messages=ask) == tokenize_text(
        base, BROKEN, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_bad_template_kwargs_are_a_400(served):
    _, base = served
    r = requests.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": OWN, "messages": [{"role": "user", "content": "Hi"}], "chat_template_kwargs": ["x"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs", r.text


def test_serve_chat_template_replaces_the_files(llmux_bin, tmp_path):
    """vLLM's --chat-template: the file's template is replaced (the default SmolLM2
    served with Qwen3's); one the engine cannot read stops the server at start."""
    if not SMOL_FILE.exists():
        pytest.skip(f"{SMOL_FILE} is missing: scripts/setup fetches it")
    port = free_port()
    qwen3 = TEMPLATES / "qwen3.jinja"
    proc, base = start_serve(["--port", port, "--chat-template", qwen3], tmp_path, "serve-chat-template",
                             __name__, port, timeout=60)
    try:
        ask = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert tokenize_chat(base, "SmolLM2-135M-Instruct", messages=ask, tools=TOOLS) == \
            tokenize_text(base, None, hf_render(qwen3.read_text(), ask, tools=TOOLS))
    finally:
        proc.cleanup()
    r = run_llmux(["serve", "--port", free_port(), "--chat-template", "{% include 'other.jinja' %}"])
    assert r.returncode == 2 and "chat_template" in r.stderr and "not supported" in r.stderr, r.stderr
