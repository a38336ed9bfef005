"""Small Llama-family GGUF files with random weights, and llama.cpp's view of
them, for tests/engine/arch_vs_llama_cpp_test.cpp.

    ~/.cache/llmux/venv/bin/python tests/data/make_arch_models.py

Real Qwen2, Llama 3 and Mistral files are gigabytes, so each architecture
variant the engine claims is built here at toy size (2-3 layers, hidden 64)
with deterministic random weights (numpy seed), F32 or F16, and a small but
valid vocabulary cut from a real one:

  - gpt2 (byte-level BPE): the 256 byte tokens of SmolLM2's vocabulary, its
    first merges whose pieces are already kept, and the variant's special
    tokens as control tokens;
  - llama (SentencePiece): stories260K's 512-token vocabulary plus two
    control tokens.

Variants (tests/data/arch/<name>.gguf):

  qwen2    arch qwen2: q/k/v biases, NEOX RoPE, 4 heads / 2 KV heads, RoPE
           base 1e6, untied output, pre-tokenizer "qwen2", F32 matrices.
  llama3   arch llama: pre-tokenizer "llama-bpe" (which adds BOS when the
           file does not say), RoPE base 500000, 4 heads / 2 KV heads,
           untied output, F32 matrices.
  mistral  arch llama, SentencePiece vocabulary, 8 heads / 2 KV heads, RoPE
           base 1e6, head size 16 from attention.key_length (not 64/8),
           tied embeddings, F16 matrices.

And three files llama.cpp runs but llmux must refuse (it would compute
something else), each with the evidence that llama.cpp's result changes:

  llama_rope_freqs  Llama 3.1 RoPE frequency factors (rope_freqs.weight)
  llama_rope_linear linear RoPE scaling from llama.rope.scaling.factor with no
                    scaling type (llama.cpp's default type is linear)
  llama_attn_bias   q/k/v/output biases on arch llama (llama.cpp adds them)

For every runnable variant llama.cpp (through llama-cpp-python, 2 threads,
no flash attention) gives: token ids of a few tokenizer-only strings; per
prompt, the prompt ids, 16 greedy tokens generated one at a time, the top-20
log-probabilities at every generated position and all log-probabilities at
the last prompt position; and its own spread, the largest log-probability
difference between token-by-token decoding and one batch over the same
tokens. Written to tests/data/arch/reference.json.
"""

import json
import math
import os
import sys
import tempfile

import numpy as np

import gguf
import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "arch")
SMOLLM2 = os.path.expanduser("~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf")
STORIES = os.path.join(HERE, "..", "..", "..", "shared", "models", "stories260K", "stories260K.gguf")

STEPS = 16
TOP_K = 20
N_MERGES = 600


# ---- vocabularies ----------------------------------------------------------

def read_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def read_numbers(reader, key):
    f = reader.fields[key]
    return [f.parts[i][0].item() for i in f.data]


def byte_level_chars():
    """GPT-2's printable stand-ins for the 256 bytes (bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def gpt2_vocab(specials):
    """SmolLM2's byte tokens, its first N_MERGES usable merges, then `specials`
    (control tokens) at the end, as Qwen2 and Llama 3 place theirs."""
    r = gguf.GGUFReader(SMOLLM2)
    tokens = read_strings(r, "tokenizer.ggml.tokens")
    merges = read_strings(r, "tokenizer.ggml.merges")
    kept = set(byte_level_chars())
    kept_merges = []
    for m in merges:
        a, b = m.split(" ")
        if a in kept and b in kept:
            kept_merges.append(m)
            kept.add(a + b)
            if len(kept_merges) == N_MERGES:
                break
    # Ids in SmolLM2's order, so the vocabulary reads like a real one; the
    # byte tokens SmolLM2 lacks (bytes that never occur in UTF-8) after them.
    normal = [t for t in tokens if t in kept]
    normal += sorted(kept - set(normal))
    return {
        "tokens": normal + specials,
        "types": [1] * len(normal) + [3] * len(specials),
        "merges": kept_merges,
    }


def spm_vocab(extra_controls):
    r = gguf.GGUFReader(STORIES)
    tokens = read_strings(r, "tokenizer.ggml.tokens")
    return {
        "tokens": tokens + extra_controls,
        "scores": read_numbers(r, "tokenizer.ggml.scores") + [0.0] * len(extra_controls),
        "types": [int(t) for t in read_numbers(r, "tokenizer.ggml.token_type")] + [3] * len(extra_controls),
    }


# ---- variants --------------------------------------------------------------

QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]

GPT2_TOKENIZE = [
    "Hello world",
    "I'm sure it's 12345 or 3.14159, isn't it?",
    "  two  spaces\tand a tab\n\nnew lines\r\n",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600",
    "def f(x):\n    return x**2 + 1",
    "THE END. the end! The End?",
]

VARIANTS = {
    "qwen2": dict(
        arch="qwen2", vocab=lambda: gpt2_vocab(QWEN2_SPECIALS), tok_model="gpt2", pre="qwen2",
        special={"bos": "<|endoftext|>", "eos": "<|im_end|>", "pad": "<|endoftext|>"}, add_bos=False,
        n_embd=64, n_layer=3, n_head=4, n_head_kv=2, head_dim=16, n_ff=160, rope_base=1e6,
        norm_eps=1e-6, biases=True, tied=False, dtype=np.float32, seed=1,
        prompts=[
            "The capital of France is",
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            "Once upon a time, in 1999, there were 3 cats.",
            "for i in range(10):\n    print(i)",
        ],
        tokenize=GPT2_TOKENIZE + ["<|im_start|>system\nBe brief.<|im_end|>"],
    ),
    "llama3": dict(
        arch="llama", vocab=lambda: gpt2_vocab(LLAMA3_SPECIALS), tok_model="gpt2", pre="llama-bpe",
        special={"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}, add_bos=None,
        n_embd=64, n_layer=3, n_head=4, n_head_kv=2, head_dim=16, n_ff=192, rope_base=500000.0,
        norm_eps=1e-5, biases=False, tied=False, dtype=np.float32, seed=2,
        prompts=[
            "The capital of France is",
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "Once upon a time, in 1999, there were 3 cats.",
            "for i in range(10):\n    print(i)",
        ],
        tokenize=GPT2_TOKENIZE + ["<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"],
    ),
    "mistral": dict(
        arch="llama", vocab=lambda: spm_vocab(["[INST]", "[/INST]"]), tok_model="llama", pre=None,
        special={"bos": "<s>", "eos": "</s>", "unk": "<unk>"}, add_bos=True,
        n_embd=64, n_layer=2, n_head=8, n_head_kv=2, head_dim=16, n_ff=192, rope_base=1e6,
        norm_eps=1e-5, biases=False, tied=True, dtype=np.float16, seed=3,
        prompts=[
            "Once upon a time, there was a little girl",
            "[INST] Tell me a story about a cat. [/INST]",
            "The sun was shining and the birds",
            "Lily and Tom went to the park.",
        ],
        tokenize=["Hello world", "  two  spaces\tand a tab\n\nnew lines", "caf\u00e9 na\u00efve 12345",
                  "[INST] hi [/INST] bye", "Lily said, \"I'm happy!\""],
    ),
}

# Files llmux must refuse; each is `base` (a tiny llama on the stories
# vocabulary) plus one feature llama.cpp applies.
TINY = dict(
    arch="llama", vocab=lambda: spm_vocab([]), tok_model="llama", pre=None,
    special={"bos": "<s>", "eos": "</s>", "unk": "<unk>"}, add_bos=True,
    n_embd=32, n_layer=1, n_head=4, n_head_kv=2, head_dim=8, n_ff=64, rope_base=500000.0,
    norm_eps=1e-5, biases=False, tied=True, dtype=np.float32, seed=4,
    prompts=["Once upon a time, there was a little girl named Lily. She liked to play"],
)
REJECTS = {
    "llama_rope_freqs": dict(TINY, rope_freqs=True),
    "llama_rope_linear": dict(TINY, rope_scale_factor=4.0),
    "llama_attn_bias": dict(TINY, biases=True, out_bias=True),
}


# ---- weights and file ------------------------------------------------------

def write_model(path, v):
    rng = np.random.default_rng(v["seed"])
    bias_rng = np.random.default_rng(v["seed"] + 1000)  # so a file without biases has the same weights
    vocab = v["vocab"]()
    n_vocab = len(vocab["tokens"])
    E, H, HKV, D, F = v["n_embd"], v["n_head"], v["n_head_kv"], v["head_dim"], v["n_ff"]

    def mat(rows, cols, gain):
        # Gains well above the usual 1/sqrt(fan_in) keep the logits peaked, so
        # greedy choices are rarely near ties.
        return (rng.standard_normal((rows, cols)) * gain / math.sqrt(cols)).astype(v["dtype"])

    def vec(n, mean, std, r=rng):
        return (mean + std * r.standard_normal(n)).astype(np.float32)

    w = gguf.GGUFWriter(path, v["arch"])
    a = v["arch"]
    w.add_name(os.path.basename(path)[:-5])
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_block_count(v["n_layer"])
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    if D * H != E:
        w.add_key_length(D)
        w.add_value_length(D)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(v["rope_base"])
    if "rope_scale_factor" in v:
        w.add_rope_scaling_factor(v["rope_scale_factor"])
    w.add_layer_norm_rms_eps(v["norm_eps"])
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if v["dtype"] == np.float16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model(v["tok_model"])
    if v["pre"]:
        w.add_tokenizer_pre(v["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    if "scores" in vocab:
        w.add_token_scores(vocab["scores"])
    if "merges" in vocab:
        w.add_token_merges(vocab["merges"])
    ids = {t: i for i, t in enumerate(vocab["tokens"])}
    sp = v["special"]
    w.add_bos_token_id(ids[sp["bos"]])
    w.add_eos_token_id(ids[sp["eos"]])
    if "pad" in sp:
        w.add_pad_token_id(ids[sp["pad"]])
    if "unk" in sp:
        w.add_unk_token_id(ids[sp["unk"]])
    if v["add_bos"] is not None:  # else the tokenizer's default (llama-bpe: add BOS)
        w.add_add_bos_token(v["add_bos"])

    # Tied, the embedding is also the output head: smaller, so its logits are
    # as peaked as an untied head's (std ~4). Untied, it is only looked up, so
    # F16 costs no precision (both engines decode it exactly) and half the bytes.
    embd_std = 0.5 if v["tied"] else 1.0
    embd_type = v["dtype"] if v["tied"] else np.float16
    w.add_tensor("token_embd.weight", (embd_std * rng.standard_normal((n_vocab, E))).astype(embd_type))
    w.add_tensor("output_norm.weight", vec(E, 1.0, 0.1))
    if not v["tied"]:
        w.add_tensor("output.weight", mat(n_vocab, E, 4.0))
    if v.get("rope_freqs"):
        # Llama 3.1's factors: 1 for fast dims, up to 8 for slow ones.
        w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, D // 2).astype(np.float32))
    for i in range(v["n_layer"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", vec(E, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", mat(H * D, E, 2.0))
        w.add_tensor(p + "attn_k.weight", mat(HKV * D, E, 2.0))
        w.add_tensor(p + "attn_v.weight", mat(HKV * D, E, 1.0))
        w.add_tensor(p + "attn_output.weight", mat(E, H * D, 1.0))
        if v["biases"]:
            w.add_tensor(p + "attn_q.bias", vec(H * D, 0.0, 0.5, bias_rng))
            w.add_tensor(p + "attn_k.bias", vec(HKV * D, 0.0, 0.5, bias_rng))
            w.add_tensor(p + "attn_v.bias", vec(HKV * D, 0.0, 0.5, bias_rng))
        if v.get("out_bias"):
            w.add_tensor(p + "attn_output.bias", vec(E, 0.0, 0.5, bias_rng))
        w.add_tensor(p + "ffn_norm.weight", vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", mat(F, E, 1.5))
        w.add_tensor(p + "ffn_up.weight", mat(F, E, 1.5))
        w.add_tensor(p + "ffn_down.weight", mat(E, F, 1.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- llama.cpp -------------------------------------------------------------

def open_llama(path):
    return llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, flash_attn=False,
                           verbose=False, seed=0)


def log_softmax(logits):
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def greedy(llm, prompt_ids):
    """16 greedy tokens, one eval per token; log-probs of every position."""
    llm.reset()
    llm.eval(prompt_ids)
    out, lps = [], []
    for _ in range(STEPS):
        lp = log_softmax(llm.scores[llm.n_tokens - 1])
        best = int(max(range(len(lp)), key=lambda i: (lp[i], -i)))
        out.append(best)
        lps.append(lp)
        llm.eval([best])
    return out, lps


def batch_spread(llm, prompt_ids, completion, lps):
    """Largest |log-prob| difference between token-by-token decoding and the
    same tokens evaluated as one batch: llama.cpp against itself."""
    llm.reset()
    llm.eval(prompt_ids + completion[:-1])
    worst = 0.0
    for step in range(len(completion)):
        lp = log_softmax(llm.scores[len(prompt_ids) + step - 1])
        worst = max(worst, float(np.abs(lp - lps[step]).max()))
    return worst


def run_variant(name, v):
    path = os.path.join(OUT_DIR, name + ".gguf")
    write_model(path, v)
    llm = open_llama(path)
    n_vocab = llm.n_vocab()
    tokenize = [{"text": t, "tokens": [int(x) for x in llm.tokenize(t.encode(), add_bos=True, special=True)]}
                for t in v["tokenize"]]
    cases, spread, gaps = [], 0.0, []
    for prompt in v["prompts"]:
        ids = [int(x) for x in llm.tokenize(prompt.encode(), add_bos=True, special=True)]
        out, lps = greedy(llm, ids)
        tops = []
        for lp in lps:
            order = np.argsort(-lp, kind="stable")[:TOP_K]
            tops.append([[int(i), round(float(lp[i]), 6)] for i in order])
            gaps.append(float(lp[order[0]] - lp[order[1]]))
        spread = max(spread, batch_spread(llm, ids, out, lps))
        cases.append({"prompt": prompt, "prompt_tokens": ids, "completion_tokens": out,
                      "completion_text": llm.detokenize(out).decode("utf-8", "replace"),
                      "top_logprobs": tops,
                      "prompt_last_logprobs": [round(float(x), 6) for x in lps[0]]})
    gaps.sort()
    print(f"{name}: n_vocab {n_vocab}, {os.path.getsize(path)} bytes; top-1/top-2 gaps: min "
          f"{gaps[0]:.3f}, median {gaps[len(gaps) // 2]:.3f}, {sum(g < 0.1 for g in gaps)}/{len(gaps)} under 0.1; "
          f"batch vs token by token {spread:.2e}", file=sys.stderr)
    for c in cases:
        print("  " + json.dumps(c["completion_text"]), file=sys.stderr)
    return {"file": name + ".gguf", "arch": v["arch"], "n_vocab": n_vocab, "n_layer": v["n_layer"],
            "n_embd": v["n_embd"], "n_head": v["n_head"], "n_head_kv": v["n_head_kv"],
            "head_dim": v["head_dim"], "rope_base": v["rope_base"], "rope_neox": v["arch"] == "qwen2",
            "tied": v["tied"], "weights": "F16" if v["dtype"] == np.float16 else "F32",
            "batch_vs_token_by_token": round(spread, 8), "tokenize": tokenize, "cases": cases}


def prompt_logprobs(path, prompt):
    llm = open_llama(path)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    return np.stack([log_softmax(llm.scores[i]) for i in range(len(ids))])


def run_reject(name, v):
    """Writes the file and measures how far llama.cpp's log-probs move
    against the same weights without the feature (position 0 excluded where
    RoPE is the identity)."""
    path = os.path.join(OUT_DIR, name + ".gguf")
    write_model(path, v)
    base = {k: x for k, x in v.items() if k not in ("rope_freqs", "rope_scale_factor", "biases", "out_bias")}
    base["biases"] = False
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain.gguf")
        write_model(plain, base)
        with_feature = prompt_logprobs(path, v["prompts"][0])
        without = prompt_logprobs(plain, v["prompts"][0])
    change = float(np.abs(with_feature - without).max())
    print(f"{name}: {os.path.getsize(path)} bytes; llama.cpp log-probs move by up to {change:.3f}",
          file=sys.stderr)
    return {"file": name + ".gguf", "llama_cpp_max_logprob_change": round(change, 4)}


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    doc = {"generator": f"llama-cpp-python {llama_cpp.__version__}",
           "steps": STEPS, "top_k": TOP_K, "variants": {}, "rejected": {}}
    for name, v in VARIANTS.items():
        doc["variants"][name] = run_variant(name, v)
    for name, v in REJECTS.items():
        doc["rejected"][name] = run_reject(name, v)
    with open(os.path.join(OUT_DIR, "reference.json"), "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
