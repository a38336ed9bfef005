#!/usr/bin/env python3
"""PyTorch on the same shapes as `llmux bench engine --backend cuda` (issue 6).

A Llama-3-8B-shaped decoder with random bf16 weights (32 layers, hidden 4096,
32 heads, 8 KV heads, FFN 14336, vocab 128256), written the plain way: cuBLAS
GEMMs through torch.matmul, RMSNorm, RoPE and SwiGLU as tensor ops, and
attention through torch's scaled_dot_product_attention over a contiguous KV
cache (no paging). It prints, in the same columns as llmux's bench:
- prefill: one prompt of --prompt-tokens in one forward, ms and tokens/s;
- decode: --steps greedy steps at each batch over --context cached tokens per
  sequence, ms per step.
Eager by default; --compile adds torch.compile (mode "max-autotune-no-cudagraphs")
for a stronger peer. Needs torch with CUDA (the GPU machine's python3 has it).

    python3 bench/torch_engine.py [--batch 1 8 64 256] [--context 512] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

ARCH = dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256, rope_base=500000.0)


class Llama(torch.nn.Module):
    def __init__(self, a, dtype, device):
        super().__init__()
        self.a = a
        h, hd = a["hidden"], a["hidden"] // a["heads"]
        self.hd = hd
        g = torch.Generator(device=device).manual_seed(5)

        def w(rows, cols):  # uniform with std 0.02, as llmux's dummy weights
            return ((torch.rand(rows, cols, generator=g, device=device, dtype=torch.float32) * 2 - 1)
                    * (0.02 * 3 ** 0.5)).to(dtype)

        self.embed = w(a["vocab"], h)
        self.layers = []
        for _ in range(a["layers"]):
            self.layers.append(dict(
                wqkv=w((a["heads"] + 2 * a["kv_heads"]) * hd, h), wo=w(h, a["heads"] * hd),
                wgu=w(2 * a["ffn"], h), wd=w(h, a["ffn"]),
                n1=torch.ones(h, device=device, dtype=dtype), n2=torch.ones(h, device=device, dtype=dtype)))
        self.norm = torch.ones(h, device=device, dtype=dtype)
        inv = 1.0 / (a["rope_base"] ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        self.inv_freq = inv

    @staticmethod
    def rms(x, w, eps=1e-5):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    def rope(self, x, pos):  # x [b, t, heads, hd], pos [b, t]
        ang = pos.float()[..., None] * self.inv_freq  # [b, t, hd/2]
        c, s = ang.cos()[:, :, None, :], ang.sin()[:, :, None, :]
        x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
        out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
        return out.to(x.dtype)

    def forward(self, tokens, pos, k_cache, v_cache, start):
        """tokens [b, t]; the cache [layers, b, kv_heads, ctx, hd]; new K/V go at start..start+t."""
        a, hd = self.a, self.hd
        b, t = tokens.shape
        x = self.embed[tokens]
        for i, L in enumerate(self.layers):
            hh = self.rms(x, L["n1"])
            qkv = hh @ L["wqkv"].T
            q, k, v = qkv.split([a["heads"] * hd, a["kv_heads"] * hd, a["kv_heads"] * hd], dim=-1)
            q = self.rope(q.view(b, t, a["heads"], hd), pos).transpose(1, 2)
            k = self.rope(k.view(b, t, a["kv_heads"], hd), pos).transpose(1, 2)
            v = v.view(b, t, a["kv_heads"], hd).transpose(1, 2)
            k_cache[i, :, :, start:start + t] = k
            v_cache[i, :, :, start:start + t] = v
            kk, vv = k_cache[i, :, :, :start + t], v_cache[i, :, :, :start + t]
            o = F.scaled_dot_product_attention(q, kk, vv, is_causal=t > 1, enable_gqa=True)
            x = x + o.transpose(1, 2).reshape(b, t, -1) @ L["wo"].T
            hh = self.rms(x, L["n2"])
            gate, up = (hh @ L["wgu"].T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ L["wd"].T
        last = self.rms(x[:, -1], self.norm)
        return (last @ self.embed.T).float().argmax(-1)


def timed(fn, reps):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dev, dtype = "cuda", torch.bfloat16
    torch.manual_seed(0)
    model = Llama(ARCH, dtype, dev)
    fwd = model.forward
    if args.compile:
        fwd = torch.compile(model.forward, mode="max-autotune-no-cudagraphs", dynamic=True)
    a, hd = ARCH, ARCH["hidden"] // ARCH["heads"]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, bf16, "
          f"{'compiled' if args.compile else 'eager'}")
    print(f"{'phase':8} {'batch':6} {'context':7} {'ms/step':>12} {'tokens/s':>12}")
    rows = []
    with torch.inference_mode():
        P = args.prompt_tokens
        kc = torch.empty(a["layers"], 1, a["kv_heads"], P, hd, device=dev, dtype=dtype)
        vc = torch.empty_like(kc)
        toks = torch.randint(100, a["vocab"], (1, P), device=dev)
        pos = torch.arange(P, device=dev)[None]
        fwd(toks, pos, kc, vc, 0)  # warm
        s, _ = timed(lambda: fwd(toks, pos, kc, vc, 0), 3)
        rows.append(dict(phase="prefill", batch=1, context=P, ms=s * 1e3, tokens_per_s=P / s))
        print(f"{'prefill':8} {1:<6} {P:<7} {s * 1e3:12.2f} {P / s:12.0f}", flush=True)
        kc = vc = None  # free the cache before the next batch
        for b in args.batch:
            ctx = args.context + args.steps + 2
            kc = torch.empty(a["layers"], b, a["kv_heads"], ctx, hd, device=dev, dtype=dtype)
            vc = torch.empty_like(kc)
            for b0 in range(0, b, max(1, 8192 // args.context)):  # prefill the contexts in chunks
                b1 = min(b, b0 + max(1, 8192 // args.context))
                toks = torch.randint(100, a["vocab"], (b1 - b0, args.context), device=dev)
                pos = torch.arange(args.context, device=dev)[None].expand(b1 - b0, -1)
                fwd(toks, pos, kc[:, b0:b1], vc[:, b0:b1], 0)
            nxt = torch.randint(100, a["vocab"], (b, 1), device=dev)
            step = [0]

            def decode():
                p = args.context + step[0]
                out = fwd(nxt, torch.full((b, 1), p, device=dev), kc, vc, p)
                step[0] += 1
                return out

            decode()
            decode()  # warm
            s, _ = timed(decode, args.steps)
            rows.append(dict(phase="decode", batch=b, context=args.context, ms=s * 1e3, tokens_per_s=b / s))
            print(f"{'decode':8} {b:<6} {args.context:<7} {s * 1e3:12.3f} {b / s:12.0f}", flush=True)
            kc = vc = None
    if args.json:
        for r in rows:
            print(json.dumps(dict(r, backend="torch", device=torch.cuda.get_device_name())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
