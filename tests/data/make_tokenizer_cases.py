#!/usr/bin/env python3
"""Writes the tokenizer reference cases the C++ tests compare against:

    tests/data/smollm2_tokenizer_cases.json     (GPT-2 byte-level BPE, pre "smollm")
    tests/data/stories260K_tokenizer_cases.json (SentencePiece)
    tests/data/smollm2_pre_variants_cases.json  (SmolLM2's vocabulary under
        other tokenizer.ggml.pre names: llama-bpe, qwen2, gpt-2, default)

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
import random
import sys
import tempfile

import gguf  # both from the llmux venv (scripts/setup)
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

# Random mixtures of the characters and sequences the rules care about.
ATOMS = list("abcXYZ019 .,!?'\"-_()$+<=>|~`@#\t\n\r") + [
    " ", "  ", "\n\n", "'s", "'LL", "'re", "é", "ü", "ß", "\u0301", "日", "本", "の", "한",
    "\U0001F642", "\u00a0", "\u3000", "\u2003", "\uff11", "\u00b2", "\u0663", "\u200b",
    "<|im_start|>", "<|im_end|>", "<s>", "</s>", "hello", " world", "123",
]


def random_texts(n, seed=1234):
    rng = random.Random(seed)
    return ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 24))) for _ in range(n)]


RANDOM_TEXTS = random_texts(120)

COMBOS = [(False, False), (True, False), (True, True)]

# Where the pre-tokenizer regexes differ: newlines inside whitespace runs,
# punctuation before letters, case of contractions, digit groups.
PRE_TEXTS = [
    "x  \n\n  y\n \n z",
    "a\r\n\r\n  b\t\n\tc",
    ".hello _world -foo +bar (x) [y]",
    "I'M YOU'LL WE'RE HE'S 'S 'll",
    "\uff11\uff12\uff13\uff14 \u0663\u0664\u0665 12345678 1234567",
    "price: $1,234.56!! ~50% +/-3",
    "\u00a0\u00a0nbsp\u2003\u2003em\u3000",
    "tab\t\tsep\t",
    "a\n\n\n\nb",
    "mixed123abc456",
    "\U0001F642\U0001F642 \U0001F642\n\U0001F642",
]
PRE_NAMES = ["llama-bpe", "qwen2", "gpt-2", "default"]


def piece(vocab, tok):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, 256, 0, False)
    assert 0 <= n <= 256, (tok, n)
    return buf.raw[:n]


def write_json(doc, name):
    """One case (or piece) a line: small files, readable diffs."""
    def nested(v):
        return isinstance(v, list) and v and isinstance(v[0], (dict, list))

    def dump(value, indent):
        pad = " " * indent
        if isinstance(value, dict) and any(nested(v) for v in value.values()):
            items = [pad + "  %s: %s" % (json.dumps(k), dump(v, indent + 2)) for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if nested(value):
            items = [pad + "  " + dump(v, indent + 2) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)

    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        f.write(dump(doc, 0) + "\n")
    return path


def run_cases(llm, vocab, inputs, combos):
    cases = []
    for raw in inputs:
        for add_special, parse_special in combos:
            toks = llm.tokenize(raw, add_bos=add_special, special=parse_special)
            detok = b"".join(piece(vocab, t) for t in toks)
            cases.append({
                "text_hex": raw.hex(),
                "add_special": add_special,
                "parse_special": parse_special,
                "tokens": toks,
                "detokenized_hex": detok.hex(),
            })
    return cases


def make(model_path, out_name, sample_every):
    if not os.path.exists(model_path):
        sys.exit("missing model " + model_path)
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    inputs = [t.encode("utf-8") for t in TEXTS] + BYTE_TEXTS
    cases = run_cases(llm, vocab, inputs, COMBOS)
    randoms = [t.encode("utf-8") for t in RANDOM_TEXTS]
    cases += run_cases(llm, vocab, randoms, [(False, False), (True, True)])

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
    path = write_json(doc, out_name)
    print("wrote %s: %d cases, %d pieces" % (path, len(cases), len(pieces)))


def copy_with_pre(src, pre, out):
    """`src`'s metadata (no tensors) with tokenizer.ggml.pre set to `pre`."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch=arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = pre if name == "tokenizer.ggml.pre" else field.contents()
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def make_pre_variants(model_path, out_name):
    inputs = [t.encode("utf-8") for t in TEXTS + PRE_TEXTS + RANDOM_TEXTS] + BYTE_TEXTS
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRE_NAMES:
            path = os.path.join(tmp, "vocab.gguf")
            copy_with_pre(model_path, pre, path)
            llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            cases = run_cases(llm, llm._model.vocab, inputs, [(False, False), (True, True)])
            for c in cases:
                del c["detokenized_hex"]  # the same pieces as the main file
            variants.append({"pre": pre, "cases": cases})
            del llm
    doc = {
        "model": os.path.basename(model_path),
        "generator": "tests/data/make_tokenizer_cases.py, llama-cpp-python %s" % llama_cpp.__version__,
        "variants": variants,
    }
    path = write_json(doc, out_name)
    print("wrote %s: %d variants" % (path, len(variants)))


make(os.path.join(MODEL_CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"), "smollm2_tokenizer_cases.json", 37)
make(os.path.join(SHARED, "models", "stories260K", "stories260K.gguf"), "stories260K_tokenizer_cases.json", 1)
make_pre_variants(os.path.join(MODEL_CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf"),
                  "smollm2_pre_variants_cases.json")
