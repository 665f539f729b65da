"""Where a speculative decode step spends its time, eager and compiled, plus two per-call timings
that benchmarks/README.md quotes (torch's RMSNorm vs a four-op one; a fresh vs a cached mask).

    OMP_NUM_THREADS=1 python benchmarks/decode_breakdown.py [--out benchmarks/decode_breakdown.json]

The shipped mtp-seq-d3 decodes 6 prompts x 128 tokens (greedy, D = 3), three times; the fastest
round is reported. The trunk's forwards (the verify forwards, plus one prefill per prompt) and the
drafts (`MTPDrafter.draft`) are timed with perf_counter around each call, no profiler, so the shares
are those of an ordinary run; "rest" is the decoding logic around them.
"""
from __future__ import annotations

import argparse
import json
import time
import timeit

import torch
import torch.nn.functional as F

from mtp_edu import compile_for_decoding, load_pretrained, speculative_generate
from mtp_edu.drafting import MTPDrafter
from mtp_edu.machine import hardware_description, load_average
from mtp_edu.tools.bench import make_prompts


def timed(fn, totals: dict, key: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
    return wrapper


def breakdown(compiled: bool, rounds: int = 3) -> dict:
    model, tokenizer = load_pretrained("mtp-seq-d3")
    if compiled:
        compile_for_decoding(model)
    prompts = make_prompts(tokenizer, 6, 64)
    for p in prompts[:2]:
        speculative_generate(model, p, 32)                                   # warm-up (and compile)
    totals = {"verify": 0.0, "draft": 0.0}
    trunk, draft = model.trunk, MTPDrafter.draft
    model.trunk = timed(trunk, totals, "verify")
    MTPDrafter.draft = timed(draft, totals, "draft")
    try:
        runs = []
        for _ in range(rounds):
            totals.update(verify=0.0, draft=0.0)
            start = time.perf_counter()
            for p in prompts:
                speculative_generate(model, p, 128)
            total = time.perf_counter() - start
            runs.append({"total_s": total, "verify_s": totals["verify"], "draft_s": totals["draft"],
                         "rest_s": total - totals["verify"] - totals["draft"]})
    finally:
        MTPDrafter.draft = draft
    best = min(runs, key=lambda r: r["total_s"])
    return {"runs": runs, "fastest": best,
            "shares_of_fastest": {k[:-2]: best[k] / best["total_s"] for k in ("verify_s", "draft_s", "rest_s")}}


def per_call_us(fn, number: int = 3000, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def micro_timings() -> dict:
    class FourOpRMSNorm(torch.nn.Module):             # the hand-written version used until commit 6f1e6fb
        def __init__(self, dim, eps):
            super().__init__()
            self.eps, self.weight = eps, torch.nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    x = torch.randn(1, 1, 128)
    lib, four = torch.nn.RMSNorm(128, eps=1e-6), FourOpRMSNorm(128, 1e-6)
    T, start, L = 4, 100, 256                          # a 4-position verify at cache length 100
    q = torch.randn(1, 4, T, 32)
    k, v = torch.randn(1, 4, start + T, 32), torch.randn(1, 4, start + T, 32)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    additive = torch.zeros(L, L).masked_fill(~causal, float("-inf"))
    with torch.inference_mode():
        return {
            "rmsnorm_T1_us": {"nn.RMSNorm": per_call_us(lambda: lib(x)), "four_op": per_call_us(lambda: four(x)),
                              "bit_identical": bool(torch.equal(lib(x), four(x)))},
            "attention_T4_us": {
                "fresh_bool_mask": per_call_us(lambda: F.scaled_dot_product_attention(
                    q, k, v, attn_mask=torch.ones(T, start + T, dtype=torch.bool).tril(start))),
                "cached_additive_mask": per_call_us(lambda: F.scaled_dot_product_attention(
                    q, k, v, attn_mask=additive[start:start + T, :start + T]))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = load_average()
    result = {"command": "OMP_NUM_THREADS=1 python benchmarks/decode_breakdown.py"
                         + (f" --out {args.out}" if args.out else ""),
              "hardware": hardware_description(torch.device("cpu")), "torch": torch.__version__,
              "load_average_1min": load, "eager": breakdown(False), "compiled": breakdown(True),
              "micro": micro_timings()}
    for name in ("eager", "compiled"):
        f, s = result[name]["fastest"], result[name]["shares_of_fastest"]
        print(f"{name:>8}: {f['total_s']:.3f} s for 6 x 128 tokens; verify {f['verify_s']:.3f} s ({s['verify']:.0%}), "
              f"drafts {f['draft_s']:.3f} s ({s['draft']:.0%}), rest {f['rest_s']:.3f} s ({s['rest']:.0%})")
    e, c = result["eager"]["fastest"], result["compiled"]["fastest"]
    print(f"compiled vs eager: verify {e['verify_s'] / c['verify_s']:.2f}x, drafts {e['draft_s'] / c['draft_s']:.2f}x, "
          f"whole {e['total_s'] / c['total_s']:.2f}x faster")
    m = result["micro"]
    print(f"RMSNorm at T=1: nn.RMSNorm {m['rmsnorm_T1_us']['nn.RMSNorm']:.1f} us, four-op "
          f"{m['rmsnorm_T1_us']['four_op']:.1f} us, bit-identical {m['rmsnorm_T1_us']['bit_identical']}")
    attention = m["attention_T4_us"]
    print(f"attention, 4 new positions at length 100: fresh bool mask {attention['fresh_bool_mask']:.1f} us, "
          f"cached additive mask {attention['cached_additive_mask']:.1f} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
