#!/usr/bin/env python3
"""Writes reference.json: every chat template in this folder rendered by
Python's jinja2 the way Hugging Face transformers renders chat templates
(ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
loopcontrols extension; HF's tojson, raise_exception and strftime_now), on a
set of conversations. tests/engine/jinja_test.cpp renders the same with the
C++ engine (engine/jinja) and compares byte for byte.

    ~/.cache/llmux/venv/bin/python tests/data/chat_templates/make_reference.py

The templates are the models' own (tokenizer_config.json "chat_template"):
  llama3.1_json.jinja        Meta Llama 3.1 Instruct, JSON tool calling (as vLLM ships it)
  llama3.2.jinja             meta-llama/Llama-3.2-3B-Instruct
  mistral_nemo.jinja         mistralai/Mistral-Nemo-Instruct-2407
  mistral_tools_vllm.jinja   Mistral 7B v0.3 tool template (vLLM examples)
  hermes.jinja               NousResearch Hermes 2 Pro tool use (vLLM examples)
  qwen3.jinja                Qwen/Qwen3 (ChatML, <tool_call>, thinking)
  qwen2.5_coder_tools_vllm.jinja  Qwen2.5-Coder tool template (vLLM examples)
  deepseek_r1_distill.jinja  deepseek-ai/DeepSeek-R1-Distill-Qwen-32B
  phi3.5.jinja               microsoft/Phi-3.5-mini-instruct
  smollm2.jinja              HuggingFaceTB/SmolLM2-135M-Instruct (from its GGUF)
  features.jinja             not a model's: one of each feature the others use
"""

import datetime
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1796342400  # 2026-12-04 00:00:00 UTC: the clock strftime_now reads


def environment():
    # As transformers' _compile_jinja_template (utils/chat_template_utils.py).
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city, in °C",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city's name"},
            "days": {"type": "integer", "description": "How many days ahead "},
            "units": {"type": ["string", "integer"], "description": "a name or a code",
                      "enum": ["metric", "imperial"]},
        }, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "what to look for"},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "filters"},
            "limits": {"type": "object", "additionalProperties": {"type": "number"}, "description": "caps"},
        }, "required": ["query"]}}},
]

SPECIAL = 'Quotes "double" and \'single\', a back\\slash, {{ not a tag }} {% nor this %},\ttabs,\nnew lines, émoji 🦙 and 中文.'

CASES = {
    "one_turn": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_multi_turn": {"messages": [
        {"role": "system", "content": "You are terse.  "},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"}]},
    "no_generation_prompt": {"add_generation_prompt": False, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"}]},
    "special_text": {"messages": [
        {"role": "user", "content": SPECIAL},
        {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nThe answer."},
        {"role": "user", "content": "  padded  "}]},
    "tools_offered": {"tools": TOOLS, "messages": [
        {"role": "system", "content": "Use tools when needed."},
        {"role": "user", "content": "Weather in Paris?"}]},
    "tool_round_trip": {"tools": TOOLS, "messages": [
        {"role": "user", "content": "Weather in Paris for 2 days?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "abc123XYZ", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
        {"role": "assistant", "content": "It is 21 °C and clear."},
        {"role": "user", "content": "Thanks"}]},
    "tools_without_user": {"tools": TOOLS, "messages": [{"role": "system", "content": "Only a system turn."}]},
    "roles_not_alternating": {"messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"}]},
}

BASE = {"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True, "tools": None}


def main():
    env = environment()
    out = {"now": NOW, "cases": []}
    for name in sorted(os.listdir(HERE)):
        if not name.endswith(".jinja"):
            continue
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            template = env.from_string(f.read())
        for case, extra in CASES.items():
            context = dict(BASE, **extra)
            entry = {"template": name, "case": case, "context": context}
            try:
                entry["output"] = template.render(**context)
            except jinja2.exceptions.TemplateError as e:
                # raise_exception's message (TemplateError itself), or any
                # other failure (UndefinedError, TypeError...): the C++
                # engine must fail too.
                entry["error"] = str(e) if type(e) is jinja2.exceptions.TemplateError else None
            except (TypeError, ValueError, KeyError, RecursionError):
                entry["error"] = None
            out["cases"].append(entry)
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    ok = sum("output" in c for c in out["cases"])
    print(f"{len(out['cases'])} renderings ({ok} outputs, {len(out['cases']) - ok} errors)")


if __name__ == "__main__":
    main()
