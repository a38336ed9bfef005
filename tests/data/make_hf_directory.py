#!/usr/bin/env python3
"""Writes a GGUF Llama (SmolLM2-135M-Instruct, which scripts/setup installs, by
default; stories260K for a SentencePiece vocabulary) as a Hugging Face model
directory, so the HF loader (engine/hf_model) is tested on real weights without a
download:

    ~/.cache/llmux/venv/bin/python tests/data/make_hf_directory.py OUT_DIR [GGUF]

- config.json: LlamaForCausalLM with the GGUF's sizes;
- weights dequantized (gguf-py) into two safetensors shards named by
  model.safetensors.index.json, in three dtypes so that each path is read:
  attention projections BF16, MLP and embeddings F16, norms F32 except the
  final norm (BF16); the query and key rows put back in Hugging Face's order
  (llama.cpp's converter interleaves each head's halves; this undoes it);
- tokenizer.json: for a byte-level BPE vocabulary, the GGUF's vocabulary and
  merges, the control tokens as special added tokens, and SmolLM's
  pre-tokenizer (digits one by one, then GPT-2's ByteLevel regex: llama.cpp's
  "smollm"); for a SentencePiece vocabulary, what transformers' converter
  writes for Llama 2 (Prepend "▁" and spaces to "▁", a byte_fallback BPE
  whose merges are the vocabulary's pieces split in two, ordered by score);
- tokenizer_config.json: bos/eos/unk/pad tokens, add_bos_token, chat_template;
- reference.json (not part of the format): log-probabilities of a prompt and
  its greedy continuation computed here in float64 with numpy, the way
  transformers computes a Llama (RoPE on the two halves of each head, on the
  unpermuted weights), from exactly the values the directory stores.

Exit 0 without writing when the GGUF is missing (the tests that read the
directory then skip, saying so). A directory already written from the same
inputs by the same script is kept (STAMP)."""

import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GGUF = os.path.expanduser("~/.cache/llmux/models/SmolLM2-135M-Instruct.Q4_1.gguf")


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.data) == 1 and f.types[0] != 9:  # scalar (9: array)
        part = f.parts[f.data[0]]
        return bytes(part).decode() if f.types[0] == 8 else part[0].item()
    return [bytes(f.parts[i]).decode() if f.types[-1] == 8 else f.parts[i][0].item() for i in f.data]


def bf16_bits(a):
    """float32 -> bfloat16 bits, rounding to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, numpy array of the stored bytes' element type)."""
    header, blobs, offset = {}, [], 0
    for name, (dt, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for b in blobs:
            f.write(b)


def bf16_values(a):
    return (bf16_bits(a).astype(np.uint32) << 16).view(np.float32)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def forward(W, cfg, tokens):
    """Log-probabilities after every position: transformers' LlamaForCausalLM
    in float64 over the weights W (HF names -> float arrays)."""
    E, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, eps, T = E // H, cfg["rms_norm_eps"], len(tokens)
    f64 = lambda n: W[n].astype(np.float64)  # noqa: E731
    x = f64("model.embed_tokens.weight")[tokens]
    inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D))
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(q):  # (T, heads, D)
        half = np.concatenate([-q[..., D // 2:], q[..., :D // 2]], -1)
        return q * cos[:, None, :] + half * sin[:, None, :]

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, f64(p + "input_layernorm.weight"), eps)
        q = rope((h @ f64(p + "self_attn.q_proj.weight").T).reshape(T, H, D))
        k = rope((h @ f64(p + "self_attn.k_proj.weight").T).reshape(T, KV, D))
        v = (h @ f64(p + "self_attn.v_proj.weight").T).reshape(T, KV, D)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", s, v).reshape(T, H * D)
        x = x + o @ f64(p + "self_attn.o_proj.weight").T
        h = rms_norm(x, f64(p + "post_attention_layernorm.weight"), eps)
        g = h @ f64(p + "mlp.gate_proj.weight").T
        x = x + ((g / (1 + np.exp(-g))) * (h @ f64(p + "mlp.up_proj.weight").T)) @ f64(p + "mlp.down_proj.weight").T
    x = rms_norm(x, f64("model.norm.weight"), eps)
    logits = x @ f64("lm_head.weight" if "lm_head.weight" in W else "model.embed_tokens.weight").T
    logits -= logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def unpermute(w, heads):
    """GGUF's interleaved rows of a query/key projection -> Hugging Face's halves."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    src = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_GGUF
    if not os.path.exists(src):
        print(f"make_hf_directory: {src} is missing (scripts/setup fetches it); nothing written")
        return
    with open(__file__, "rb") as f:
        stamp = hashlib.sha256(f.read() + os.path.abspath(src).encode()
                               + str(os.path.getmtime(src)).encode()).hexdigest()
    stamp_path = os.path.join(out, "STAMP")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print(f"make_hf_directory: {out} is up to date")
        return

    import gguf  # the llmux venv (scripts/setup)

    r = gguf.GGUFReader(src)
    n_head = field(r, "llama.attention.head_count")
    n_head_kv = field(r, "llama.attention.head_count_kv")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))

    hf_names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
    layer_names = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
                   "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
                   "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
                   "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                   "ffn_down.weight": "mlp.down_proj.weight"}
    shards = [{}, {}]
    stored = {}  # what the directory holds, as float32 (for the reference)
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name.startswith("blk."):
            _, layer, rest = t.name.split(".", 2)
            name = f"model.layers.{layer}.{layer_names[rest]}"
            shard = shards[int(layer) * 2 // field(r, "llama.block_count")]
        else:
            name, shard = hf_names[t.name], shards[0]
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, n_head_kv)
        if w.ndim == 1:
            shard[name] = ("BF16", bf16_bits(w)) if name == "model.norm.weight" else ("F32", w)
            stored[name] = bf16_values(w) if name == "model.norm.weight" else w
        elif ".self_attn." in name:
            shard[name] = ("BF16", bf16_bits(w))
            stored[name] = bf16_values(w)
        else:
            shard[name] = ("F16", w.astype(np.float16))
            stored[name] = w.astype(np.float16).astype(np.float32)
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for fname, shard in zip(files, shards):
        write_safetensors(os.path.join(out, fname), shard)
        weight_map.update({n: fname for n in shard})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": field(r, "llama.embedding_length"), "intermediate_size": field(r, "llama.feed_forward_length"),
        "num_attention_heads": n_head, "num_key_value_heads": n_head_kv,
        "num_hidden_layers": field(r, "llama.block_count"),
        "max_position_embeddings": field(r, "llama.context_length"),
        "rms_norm_eps": field(r, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(r, "llama.rope.freq_base") or 10000.0, "rope_scaling": None,
        "vocab_size": len(tokens), "tie_word_embeddings": "output.weight" not in [t.name for t in r.tensors],
        "torch_dtype": "bfloat16", "hidden_act": "silu",
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"), "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    spm = field(r, "tokenizer.ggml.model") == "llama"
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (tok, ty) in enumerate(zip(tokens, types)) if ty in (2, 3)]
    if spm:
        # transformers' SentencePieceExtractor: every piece split in two
        # pieces of the vocabulary is a merge; merges ordered by the piece's score.
        scores = field(r, "tokenizer.ggml.scores")
        vocab = {tok: i for i, tok in enumerate(tokens)}
        found = []
        for piece, score in zip(tokens, scores):
            local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
            local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
            found.extend((a, b, score) for a, b in local)
        found.sort(key=lambda m: m[2], reverse=True)
        tokenizer = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            "pre_tokenizer": None, "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": tokens[field(r, "tokenizer.ggml.unknown_token_id")],
                      "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                      "merges": [f"{a} {b}" for a, b, _ in found]},
        }
    else:
        tokenizer = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges},
        }
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)

    def token(key):
        i = field(r, key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None  # an id outside: none, as llama.cpp

    tok_config = {"bos_token": token("tokenizer.ggml.bos_token_id"), "eos_token": token("tokenizer.ggml.eos_token_id"),
                  "unk_token": token("tokenizer.ggml.unknown_token_id"),
                  "pad_token": token("tokenizer.ggml.padding_token_id"),
                  # llama.cpp's defaults where the GGUF has no key: BOS for SentencePiece
                  "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token")
                                        if field(r, "tokenizer.ggml.add_bos_token") is not None else spm),
                  "chat_template": field(r, "tokenizer.chat_template"), "model_max_length": config["max_position_embeddings"],
                  "tokenizer_class": "LlamaTokenizer" if spm else "GPT2Tokenizer"}
    tok_config = {k: v for k, v in tok_config.items() if v is not None}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok_config, f, ensure_ascii=False, indent=2)
    # The reference: a chat prompt (ids from Hugging Face's own tokenizers
    # library reading the tokenizer.json above) and its greedy continuation.
    from tokenizers import Tokenizer
    if spm:  # a story model: BOS, then its text
        prompt = "Once upon a time, there was a little"
        ids = [field(r, "tokenizer.ggml.bos_token_id")]
    else:
        prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        ids = []
    ids += Tokenizer.from_file(os.path.join(out, "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    n_prompt = len(ids)
    for _ in range(12):
        ids.append(int(np.argmax(forward(stored, config, ids)[-1])))
    lp = forward(stored, config, ids)
    steps = []
    for t in range(n_prompt - 1, len(ids)):
        top = np.argsort(-lp[t])[:10]
        steps.append([[int(i), float(lp[t][i])] for i in top])
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "add_bos": spm, "tokens": ids, "prompt_tokens": n_prompt,
                   "top_logprobs": steps}, f)
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print(f"make_hf_directory: wrote {out}")


if __name__ == "__main__":
    main()
