#!/usr/bin/env python3
"""Writes the tokenizer reference cases the C++ tests compare against:

    tests/data/smollm2_tokenizer_cases.json     (GPT-2 byte-level BPE, pre "smollm")
    tests/data/stories260K_tokenizer_cases.json (SentencePiece)

Every id comes from llama.cpp itself, through llama-cpp-python:

    ~/.cache/llmux/venv/bin/python tests/data/make_tokenizer_cases.py

For each text and each (add_special, parse_special) combination the file
holds llama_tokenize's ids and the concatenation of llama_token_to_piece
(special=false) over them — the bytes `tokenizer::decode` must give. Texts
and bytes are hex so that invalid UTF-8 inputs fit in JSON. "pieces" holds
llama_token_to_piece for a sample of ids (every id for small vocabularies).
"""

import ctypes
import json
import os
import sys

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MODEL_CACHE = os.path.expanduser("~/.cache/llmux/models")

CHATML = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2? Answer in one word.<|im_end|>\n"
    "<|im_start|>assistant\nFour.<|im_end|>\n"
    "<|im_start|>user\nThanks!<|im_end|>\n"
    "<|im_start|>assistant\n"
)

TEXTS = [
    # ASCII sentences
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little girl named Lily.",
    # spaces, tabs, newlines
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "tabs\tand\ttabs\t\tdouble",
    "line1\nline2\n\nline4\n",
    "\r\nwindows\r\nnewlines\r\n",
    " \n \n  \t ",
    " ",
    "    ",
    "\n",
    "\n\n\n",
    # numbers
    "123456789",
    "3.14 and 2.71828",
    "1,000,000 dollars; 42% off; 007",
    "The year 2024 was 12.5% better than 1999.",
    # contractions
    "don't",
    "I'M HERE, YOU'RE THERE, WE'LL SEE, HE'D, SHE'S",
    "they're we've it's I'd you'll can't",
    "'s 't 'quoted' ''double'' rock'n'roll",
    # punctuation runs
    "!!!???...,,,;;;",
    "Wait... what?!?! (really) [yes] {no} <maybe> -- ok",
    "email@example.com, @user #hashtag $100 ~tilde `code` a|b ^c",
    "URL: https://example.com/path?q=1&r=2#frag",
    # code
    "def foo(x):\n    return x * 2  # double\n",
    "int main() { printf(\"%d\\n\", a[i]); return 0; }",
    "for (int i = 0; i < n; ++i) {\n\tsum += v[i];\n}",
    "if x == y && !z || w != 0:\n        pass",
    # accents
    "Grüße aus München! Straße, Öl, Ärger.",
    "Voilà, un garçon français à l'école où il était.",
    "café vs cafe\u0301 (combining accent)",
    # other scripts
    "日本語のテキストです。",
    "中文测试：你好，世界！",
    "한국어 문장입니다",
    "Ελληνικά και русский текст",
    "عربي עברית",
    "Ｆｕｌｌｗｉｄｔｈ １２３",
    # emoji
    "Emoji: 🙂😀🎉 👍🏽 ❤️",
    "family 👨‍👩‍👧‍👦 flag 🇩🇪",
    "ünïcödé 日本語 🙂",
    # unusual characters
    "numbers²³ and ½ fractions, Ⅻ roman, ٣ arabic-indic",
    "zero\u200bwidth, nbsp\u00a0here, em\u2003space, \u3000ideographic\u3000",
    "mixed: abc123def 456ghi 7j",
    # special tokens in text
    CHATML,
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "text <|endoftext|> more",
    "a<|im_start|>b<|im_end|>c",
    "<|im_start|><|im_end|>",
    "<s>hello</s> and <unk>",
    # tiny and empty
    "a",
    "",
    "x" * 64,
]

# Invalid UTF-8: llama.cpp's BPE reads each bad byte as U+FFFD.
BYTE_TEXTS = [
    b"\xff\xfeabc",
    b"caf\xc3",
    b"\xc0\x80x",
    b"\xed\xa0\x80 surrogate",
    b"ab\x80cd \xe2\x82",
]

COMBOS = [(False, False), (True, False), (True, True)]


def piece(vocab, tok):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, 256, 0, False)
    assert 0 <= n <= 256, (tok, n)
    return buf.raw[:n]


def make(model_path, out_name, sample_every):
    if not os.path.exists(model_path):
        sys.exit("missing model " + model_path)
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    cases = []
    inputs = [t.encode("utf-8") for t in TEXTS] + BYTE_TEXTS
    for raw in inputs:
        for add_special, parse_special in COMBOS:
            toks = llm.tokenize(raw, add_bos=add_special, special=parse_special)
            detok = b"".join(piece(vocab, t) for t in toks)
            cases.append({
                "text_hex": raw.hex(),
                "add_special": add_special,
                "parse_special": parse_special,
                "tokens": toks,
                "detokenized_hex": detok.hex(),
            })

    ids = sorted(set(range(0, n_vocab, sample_every)) | set(range(min(n_vocab, 300))))
    pieces = [[i, piece(vocab, i).hex()] for i in ids]

    doc = {
        "model": os.path.basename(model_path),
        "generator": "tests/data/make_tokenizer_cases.py, llama-cpp-python %s" % llama_cpp.__version__,
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "cases": cases,
        "pieces": pieces,
    }
    path = os.path.join(HERE, out_name)
    with open(path, "w") as f:
        json.dump(doc, f, indent=0, ensure_ascii=True)
        f.write("\n")
    print("wrote %s: %d cases, %d pieces" % (path, len(cases), len(pieces)))


make(os.path.join(MODEL_CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"), "smollm2_tokenizer_cases.json", 37)
make(os.path.join(SHARED, "models", "stories260K", "stories260K.gguf"), "stories260K_tokenizer_cases.json", 1)
