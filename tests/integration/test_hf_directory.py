"""A Hugging Face model directory served as a vLLM user serves one: `llmux serve
--model DIR`. The directory is SmolLM2-135M-Instruct written from its GGUF by
tests/data/make_hf_directory.py (config.json, two safetensors shards in BF16/F16/F32,
tokenizer.json, tokenizer_config.json). The server lists it under the directory's
name, tokenizes as Hugging Face's own `tokenizers` library does on the same
tokenizer.json, renders the chat template the directory carries, and answers the
question of the directory's reference (computed in numpy by the script) with the
same greedy text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from conftest import SMOLLM2_GGUF, SOURCE_DIR, free_port, start_serve

tokenizers = pytest.importorskip("tokenizers", reason="scripts/setup installs tokenizers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    if not SMOLLM2_GGUF.exists():
        pytest.skip(f"{SMOLLM2_GGUF} is missing: scripts/setup fetches it")
    out = tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct"
    subprocess.run([sys.executable, str(SOURCE_DIR / "tests" / "data" / "make_hf_directory.py"), str(out),
                    str(SMOLLM2_GGUF)], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def served(llmux_bin, hf_dir, tmp_path_factory):
    port = free_port()
    proc, base = start_serve(["--model", hf_dir, "--port", port], tmp_path_factory.mktemp("hf-serve"),
                             "serve-hf-directory", __name__, port, timeout=90)
    try:
        yield base
    finally:
        proc.cleanup()


def test_listed_under_the_directory_name(served):
    cards = requests.get(f"{served}/v1/models", timeout=10).json()["data"]
    assert [c["id"] for c in cards] == ["SmolLM2-135M-Instruct"]
    assert cards[0]["max_model_len"] == 8192  # config.json's max_position_embeddings


def test_tokens_are_hugging_face_tokenizers_tokens(served, hf_dir):
    hf = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    for text in ["Hello world", "What is 12345 + 678?", "  spaces\tand\nnew lines ", "émoji 🦙 and 中文",
                 "don't won't I'll", "x" * 300]:
        r = requests.post(f"{served}/tokenize", timeout=10,
                          json={"model": "SmolLM2-135M-Instruct", "prompt": text, "add_special_tokens": False})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"] == hf.encode(text, add_special_tokens=False).ids, text


def test_answers_as_the_reference_does(served, hf_dir):
    ref = json.loads((hf_dir / "reference.json").read_text())
    # The reference's prompt as its token ids (a chat turn without the
    # system turn the template would add), greedy: its continuation.
    n = ref["prompt_tokens"]
    r = requests.post(f"{served}/v1/completions", timeout=120, json={
        "model": "SmolLM2-135M-Instruct", "prompt": ref["tokens"][:n], "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    hf = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    want = hf.decode(ref["tokens"][n:n + 6])
    assert choice["text"] == want  # "The capital of France is Paris" from numpy's float64 pass
    chat = requests.post(f"{served}/v1/chat/completions", timeout=120, json={
        "model": "SmolLM2-135M-Instruct", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    assert chat.status_code == 200, chat.text
    assert "Paris" in chat.json()["choices"][0]["message"]["content"]
