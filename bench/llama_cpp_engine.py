"""llama.cpp (through llama-cpp-python, the build `scripts/setup` installs) on
the same shapes as `llmux bench engine`: prefill of one 512-token prompt,
batch-1 decode, and batched decode at batch 8 and 32, at 1 and 2 threads.
Prints the same table.

    ~/.cache/llmux/venv/bin/python bench/llama_cpp_engine.py MODEL.gguf [--json]

Batched decode is the equivalent of llama.cpp's `llama-batched-bench` (which
llama-cpp-python does not ship), done with the low-level API: a separate
context on the same model with n_seq_max = B (non-unified KV cache, as
llama-batched-bench's default), each of B sequences (seq ids 0..B-1) gets a
16-token prompt, prefilled in one untimed llama_decode; then each timed step
is ONE llama_decode of B tokens, one per sequence at its own next position,
logits requested for every token. tokens/s is the aggregate B*steps/seconds,
ms/step the time of one such call. Flash attention is off everywhere.

With --json, one JSON line per table row is also printed after the table:
{"engine": "llama.cpp", "phase": ..., "threads": ..., "batch": ...,
 "tokens_per_s": ..., "ms_per_step": ...}
"""

import argparse
import json
import math
import time

import llama_cpp

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("model", help="GGUF model file")
ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
args = ap.parse_args()

model = args.model
prompt_tokens = 512
steps = 32
batched = (8, 32)       # batched-decode batch sizes
batched_prompt = 16     # per-sequence prompt, prefilled untimed
batched_steps = 16      # timed decode steps, each one llama_decode of B tokens
rows = []


def row(phase, threads, batch, tps, ms):
    rows.append(dict(engine="llama.cpp", phase=phase, threads=threads, batch=batch,
                     tokens_per_s=round(tps, 2), ms_per_step=round(ms, 3)))
    print(f"{phase:8} {threads:<7} {batch:<6} {tps:14.1f} {ms:12.2f}", flush=True)


def fill(batch, items):
    """items: (token, pos, seq, want_logits) per batch slot."""
    for i, (tok, pos, seq, lg) in enumerate(items):
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if lg else 0
    batch.n_tokens = len(items)


def decode(ctx, batch, what):
    rc = llama_cpp.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc} ({what})")


def batched_decode(llm, threads, B, toks):
    """llama-batched-bench-style: returns seconds for batched_steps steps of B tokens."""
    p = llama_cpp.llama_context_default_params()
    p.n_seq_max = B
    p.n_ctx = B * 256            # non-unified: n_ctx / n_seq_max = 256 cells per sequence
    p.n_batch = max(512, B * batched_prompt)
    p.n_ubatch = 512
    p.n_threads = threads
    p.n_threads_batch = threads
    p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.kv_unified = False
    p.no_perf = True
    ctx = llama_cpp.llama_init_from_model(llm._model.model, p)
    if not ctx:
        raise RuntimeError(f"llama_init_from_model failed (B={B})")
    batch = llama_cpp.llama_batch_init(p.n_batch, 0, 1)
    n_vocab = llm.n_vocab()
    try:
        # Prefill: every sequence's 16-token prompt in one call, logits for
        # each sequence's last token (untimed; also serves as warm-up).
        fill(batch, [(toks[(s * batched_prompt + j) % len(toks)], j, s, j == batched_prompt - 1)
                     for s in range(B) for j in range(batched_prompt)])
        decode(ctx, batch, f"prefill B={B}")
        llama_cpp.llama_synchronize(ctx)
        t0 = time.perf_counter()
        for step in range(batched_steps):
            pos = batched_prompt + step
            fill(batch, [(toks[(s * 31 + step) % len(toks)], pos, s, True) for s in range(B)])
            decode(ctx, batch, f"step {step} B={B}")
        llama_cpp.llama_synchronize(ctx)
        s = time.perf_counter() - t0
        # Sanity: every sequence has exactly prompt+steps positions in its KV
        # cache, and the last step produced finite logits for every token.
        mem = llama_cpp.llama_get_memory(ctx)
        want = batched_prompt + batched_steps - 1
        for seq in range(B):
            got = llama_cpp.llama_memory_seq_pos_max(mem, seq)
            if got != want:
                raise RuntimeError(f"seq {seq}: KV pos max {got}, expected {want}")
        for i in (0, B - 1):
            lg = llama_cpp.llama_get_logits_ith(ctx, i)
            if not all(math.isfinite(lg[k]) for k in range(0, n_vocab, 997)):
                raise RuntimeError(f"non-finite logits for batch slot {i}")
        return s
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) {model}")
print(f"{'phase':8} {'threads':7} {'batch':6} {'tokens/s':>14} {'ms/step':>12}")
for threads in (1, 2):
    llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False, flash_attn=False)
    n_vocab = llm.n_vocab()
    toks = [100 + (i * 7919 + 104729) % (n_vocab - 100) for i in range(prompt_tokens)]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(toks)
    s = time.perf_counter() - t0
    row("prefill", threads, 1, prompt_tokens / s, s * 1e3)
    llm.reset()
    llm.eval(toks[:16])
    t0 = time.perf_counter()
    for _ in range(steps):
        llm.eval([toks[0]])
    s = time.perf_counter() - t0
    row("decode", threads, 1, steps / s, s * 1e3 / steps)
    for B in batched:
        s = batched_decode(llm, threads, B, toks)
        row("decode", threads, B, B * batched_steps / s, s * 1e3 / batched_steps)
    llm.close()

if args.json:
    for r in rows:
        print(json.dumps(r))
