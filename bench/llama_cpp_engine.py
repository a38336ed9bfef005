"""llama.cpp (through llama-cpp-python, the build `scripts/setup` installs) on
the same shapes as `llmux bench engine`: prefill of one 512-token prompt, and
batch-1 decode, at 1 and 2 threads. Prints the same table.

    ~/.cache/llmux/venv/bin/python bench/llama_cpp_engine.py MODEL.gguf
"""

import sys
import time

import llama_cpp

model = sys.argv[1]
prompt_tokens = 512
steps = 32
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
    print(f"{'prefill':8} {threads:<7} {1:<6} {prompt_tokens / s:14.1f} {s * 1e3:12.2f}")
    llm.reset()
    llm.eval(toks[:16])
    t0 = time.perf_counter()
    for _ in range(steps):
        llm.eval([toks[0]])
    s = time.perf_counter() - t0
    print(f"{'decode':8} {threads:<7} {1:<6} {steps / s:14.1f} {s * 1e3 / steps:12.2f}")
