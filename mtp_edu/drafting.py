"""Drafters for speculative decoding: the model's own MTP modules, and prompt lookup (n-gram copy).

A drafter proposes the next few tokens cheaply; `speculative_generate` (decoding.py) verifies them
with one main-model forward. Both share a `DecodeState`:

    tokens[:n]   accepted tokens x_1..x_n (0-based here: position i holds x_{i+1}), in the main KV cache
    tokens[n]    the pending token: the main model's next token, not yet in the main cache
    tokens[n+k]  draft d_k, written by the drafter (k = 1..depth)
    h0[:, :n]    h^0 at the accepted positions (the main model's final-normed states)

A drafter has four methods: `check_depth(model, depth)` (validates, resolves None), `start(model,
state, depth)` once, `draft(state, depth, pick, min_confidence)` per step (writes its drafts into
`tokens`, returns how many and their logits, or None for a deterministic drafter whose q is one-hot),
and `rollback(state)` after the verifier has moved `state.n` on. `forwards` counts the last draft's
forward passes (for the trace).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import check_int
from .model import KVCache, MTPModel

Pick = Callable[[torch.Tensor], torch.Tensor]      # logits (V,) -> the drafted token (0-d tensor)


@dataclass
class DecodeState:
    tokens: torch.Tensor       # (capacity,) prompt, then generated tokens, then this step's drafts
    h0: torch.Tensor           # (1, max_seq_len, d)
    n: int                     # accepted tokens; tokens[n] is pending


class MTPDrafter:
    """Drafts with the MTP modules, conditioned exactly as in training (docs/design.md).

    Sequential (DeepSeek-V3): module k at position i reads (h^{k-1}_i, Emb(x_{i+k})) and predicts
    x_{i+k+1} (eq. 21); with this file's 0-based buffers, (h^{k-1}[i], tokens[i+k]) -> tokens[i+k+1].
    At the frontier i = n-1 the token it reads is the pending token (k = 1) or draft d_{k-1}, so the
    drafts chain exactly as the modules did in training.
    Parallel (Meta): head k reads h^0[i] only. Linear (Medusa-like): h^0[n-1] through a residual map.

    Caching: each module with a block keeps its own KV cache plus a buffer of its outputs h^k (the
    next module reads them), so one step runs each module once over the positions it has not seen.
    Module k's entry at position i read tokens[i+k]; after verification it stays true only if that
    token was accepted, i.e. i + k < n_new (sequential) -- parallel heads read h^0 alone, which is
    true at every accepted position. `rollback` cuts each cache to its true entries.

    experimental_reuse_modules: EXPERIMENT. Allow draft depths beyond D by reusing module
    ((k-1) mod D) + 1 for depth k (vLLM's cyclic reuse; sequential style only). No module was trained
    for those offsets: the output stays exact (every draft is verified), but whether the extra drafts
    are ever accepted is what the experiment measures (Trace.acceptance_per_depth).
    """
    name = "mtp"

    def __init__(self, experimental_reuse_modules: bool = False):
        self.reuse = experimental_reuse_modules

    def check_depth(self, model: MTPModel, depth: int | None) -> int:
        cfg = model.config
        if cfg.mtp_depth == 0:
            raise ValueError("this model has no MTP modules (mtp_depth=0): use generate(), or "
                             "drafter='prompt_lookup' for a training-free drafter")
        depth = check_int("draft_depth", cfg.mtp_depth if depth is None else depth, minimum=0, note="None = D")
        if depth > cfg.mtp_depth:
            if not self.reuse:
                raise ValueError(f"draft_depth={depth} exceeds the model's D={cfg.mtp_depth} MTP modules; "
                                 f"allowed: 0..{cfg.mtp_depth} (or experimental_reuse_modules=True, "
                                 f"sequential style only, to reuse modules cyclically as vLLM does)")
            if cfg.mtp_style != "sequential":
                raise ValueError(f"experimental_reuse_modules needs mtp_style='sequential' (a {cfg.mtp_style} "
                                 f"head k always predicts offset k+1, so reusing it adds nothing)")
        return depth

    def start(self, model: MTPModel, state: DecodeState, depth: int) -> None:
        cfg, p = model.config, next(model.parameters())
        self.model, self.sequential = model, cfg.mtp_style == "sequential"
        self.module = [(k - 1) % cfg.mtp_depth + 1 for k in range(1, depth + 1)]   # depth k -> module
        has_block = hasattr(model.mtp[0], "block")
        hd = cfg.d_model // cfg.n_heads
        self.caches = [KVCache(1, cfg.n_heads, hd, cfg.max_seq_len, p.device, p.dtype) if has_block else None
                       for _ in range(depth)]
        # inputs[k-1] is the hidden state depth k reads: h^{k-1} (sequential) or h^0 (parallel, linear)
        self.inputs = [state.h0] + [torch.empty_like(state.h0) if self.sequential else state.h0
                                    for _ in range(depth - 1)]

    def draft(self, state: DecodeState, depth: int, pick: Pick,
              min_confidence: float = 0.0) -> tuple[int, torch.Tensor]:
        """Draft d_1..d_depth; with min_confidence > 0, stop after d_k once q(d_1)...q(d_k) (softmax
        probabilities) falls below it: a draft that will likely be rejected is not worth a forward."""
        n, tokens = state.n, state.tokens
        logits, confidence = [], 1.0
        for k in range(1, depth + 1):
            cache = self.caches[k - 1]
            start = n - 1 if cache is None else cache.length             # first position not yet seen
            h = self.model.mtp_hidden(self.module[k - 1], self.inputs[k - 1][:, start:n],
                                      tokens[start + k:n + k].view(1, -1), cache)     # (1, n-start, d)
            if self.sequential and k < len(self.inputs):
                self.inputs[k][:, start:n] = h                             # h^k, read by depth k+1
            logits.append(self.model.head_logits(self.module[k - 1], h[0, -1]))    # (V,)
            tokens[n + k] = pick(logits[-1])                               # d_k, predicting tokens[n+k]
            if min_confidence > 0 and k < depth:
                confidence *= float(logits[-1].softmax(-1)[tokens[n + k]])
                if confidence < min_confidence:
                    break
        self.forwards = len(logits)
        return len(logits), torch.stack(logits) if logits else None

    def rollback(self, state: DecodeState) -> None:
        for k, cache in enumerate(self.caches, 1):
            if cache is not None:
                true_entries = state.n - k if self.sequential else state.n
                cache.rollback(min(cache.length, max(true_entries, 0)))


class PromptLookupDrafter:
    """Prompt lookup decoding (Saxena 2023; Hugging Face `prompt_lookup_num_tokens`): find the most
    recent earlier occurrence of the context's last `ngram` tokens (longest first, down to
    `min_ngram`) and draft the tokens that followed it. Training-free and forward-free; a
    deterministic drafter, so q is one-hot. Drafts nothing when the n-gram never occurred before."""
    name = "prompt_lookup"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, depth: int = 3):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram; got min_ngram={min_ngram}, max_ngram={max_ngram}")
        self.max_ngram, self.min_ngram, self.default_depth = max_ngram, min_ngram, depth

    def check_depth(self, model: MTPModel, depth: int | None) -> int:
        return check_int("draft_depth", self.default_depth if depth is None else depth, minimum=0,
                         note=f"None = {self.default_depth}")

    def start(self, model: MTPModel, state: DecodeState, depth: int) -> None:
        self.forwards = 0

    def draft(self, state: DecodeState, depth: int, pick: Pick, min_confidence: float = 0.0) -> tuple[int, None]:
        n, tokens = state.n, state.tokens
        context = tokens[:n + 1]                                           # accepted + pending
        for size in range(min(self.max_ngram, n), self.min_ngram - 1, -1):
            windows = context[:n].unfold(0, size, 1)                      # every n-gram that has a successor
            hits = (windows == context[n + 1 - size:]).all(1).nonzero()
            if len(hits):
                follow = int(hits[-1]) + size                              # the latest occurrence's successor
                count = min(depth, n + 1 - follow)
                tokens[n + 1:n + 1 + count] = context[follow:follow + count].clone()
                return count, None
        return 0, None

    def rollback(self, state: DecodeState) -> None:
        pass


DRAFTERS = {"mtp": MTPDrafter, "prompt_lookup": PromptLookupDrafter}
