"""Checks for the classroom assignments: each runs a student's function against the package's own
implementation on a few cases and, on a wrong answer, says which case, what was expected and why.

Every check returns True (and prints a tick) when all cases pass, and raises `AssertionError` with a
specific, friendly message otherwise, so it works in a notebook and in an autograder alike.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .config import MTPConfig
from .losses import depth_loss
from .model import MTPModel
from .shifts import shift_table


class CheckFailed(AssertionError):
    """A student's function gave a wrong answer (the message says which case and why)."""


def _call(fn: Callable, name: str, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(f"`{name}` is not implemented yet: replace the `raise NotImplementedError` line "
                          f"with your code, run that cell, then run this check again.") from None
    except CheckFailed:
        raise
    except Exception as e:  # the student's code crashed: say on which input
        raise CheckFailed(f"`{name}` raised {type(e).__name__}: {e}\n  on input {args!r}") from e


def _passed(name: str, n: int) -> bool:
    print(f"\u2714 {name}: all {n} cases pass")
    return True


# ---- assignment 1: the token-shift table ---------------------------------------------------------
SHIFT_CASES = [
    ([f"t{j}" for j in range(1, 8)], 2),          # seed 002's table
    ([f"x{j}" for j in range(1, 9)], 3),          # seed 001's targets matrix
    (list("MTP!"), 0),                            # D = 0: next-token prediction only
    (list(range(10, 16)), 4),                     # as many depths as the chunk allows
]


def check_shift_targets(fn: Callable[[list, int], list]) -> bool:
    """fn(tokens, depth) -> targets[k][i-1] = t_{i+k+1}, or None past the end, for k = 0..depth.

    tokens holds t_1..t_{T+1}; positions i = 1..T (T = len(tokens) - 1)."""
    for tokens, depth in SHIFT_CASES:
        want = shift_table(tokens, depth).targets
        got = _call(fn, "shift_targets", list(tokens), depth)
        if not isinstance(got, (list, tuple)) or len(got) != depth + 1:
            raise CheckFailed(f"for tokens {tokens} and depth={depth}, expected a list of {depth + 1} rows "
                              f"(one per depth k = 0..{depth}); got {got!r}")
        for k in range(depth + 1):
            row = list(got[k])
            if len(row) != len(want[k]):
                raise CheckFailed(f"depth k={k} should have one cell per position i = 1..T = {len(want[k])} "
                                  f"(T = len(tokens) - 1); your row has {len(row)}: {row}")
            for i, (g, w) in enumerate(zip(row, want[k]), 1):
                if g != w:
                    why = (f"position i={i} at depth k={k} predicts t_(i+k+1) = t_{i + k + 1} = {w!r}"
                           if w is not None else
                           f"position i={i} at depth k={k} would predict t_{i + k + 1}, past the last token "
                           f"t_{len(tokens)}: the cell is padding (None)")
                    raise CheckFailed(f"tokens {tokens}, depth={depth}: {why}; you gave {g!r}.")
    return _passed("shift_targets", len(SHIFT_CASES))


# ---- assignment 2: a sequential MTP module and its loss -------------------------------------------
def _module_case(seed: int):
    cfg = MTPConfig(vocab_size=23, d_model=16, n_layers=1, n_heads=2, max_seq_len=16, mtp_depth=2,
                    init_seed=seed)
    model = MTPModel(cfg).double().eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 23, (2, 12), generator=g)
    return model, ids


def check_mtp_module(fn: Callable) -> bool:
    """fn(model, k, h_prev, tokens) -> h^k of a sequential module, eqs. 21-22:

        h'^k = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)]),   h^k = block(h'^k)

    h_prev: (B, T-k, d) = h^{k-1} at positions 1..T-k; tokens: (B, T-k) = t_{i+k}."""
    for seed in (0, 1):
        model, ids = _module_case(seed)
        with torch.no_grad():
            out = model(ids)
            T = ids.shape[1]
            for k in (1, 2):
                h_prev, tokens = out.hidden[k - 1][:, :T - k], ids[:, k:]
                got = _call(fn, "mtp_module_forward", model, k, h_prev, tokens)
                want = out.hidden[k]
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    raise CheckFailed(f"module k={k} should return h^k of shape {tuple(want.shape)} "
                                      f"(B, T-k, d); got {getattr(got, 'shape', type(got).__name__)}")
                if not torch.allclose(got, want, atol=1e-9):
                    swapped = model.mtp[k - 1].block(model.mtp[k - 1].eh_proj(torch.cat(
                        [model.mtp[k - 1].hnorm(h_prev), model.mtp[k - 1].enorm(model.embed(tokens))], -1)), model.rope)
                    hint = ("the concatenation order is reversed: the released weights (eh_proj) put the "
                            "normalised EMBEDDING first, then the normalised hidden state"
                            if torch.allclose(got, swapped, atol=1e-9) else
                            "check each step: enorm on Emb(t_(i+k)), hnorm on h^(k-1), concatenate on the "
                            "last dimension, eh_proj, then module.block(x, model.rope)")
                    raise CheckFailed(f"module k={k} (seed {seed}): h^k differs from the reference by up to "
                                      f"{float((got - want).abs().max()):.3g}; {hint}.")
    return _passed("mtp_module_forward", 4)


def check_depth_loss(fn: Callable) -> bool:
    """fn(logits_k, targets, k) -> L^k, mean cross-entropy over the valid positions of depth k.

    logits_k: (B, T-k, V) from depth k; targets: (B, T) = t_2..t_{T+1} with -100 for padding."""
    for seed in (0, 1):
        model, ids = _module_case(seed)
        targets = torch.roll(ids, -1, 1)
        targets[:, -1] = -100                      # the last target is padding
        targets[0, 3] = -100
        with torch.no_grad():
            out = model(ids)
            for k in (0, 1, 2):
                want = depth_loss(out.logits[k], targets[:, k:])
                got = _call(fn, "depth_k_loss", out.logits[k], targets, k)
                if not isinstance(got, torch.Tensor) or got.dim() != 0:
                    raise CheckFailed(f"depth_k_loss should return a scalar tensor; got {got!r}")
                if not math.isclose(float(got), float(want), rel_tol=1e-7, abs_tol=1e-9):
                    unshifted = targets[:, :targets.shape[1] - k]
                    hint = ("you scored depth k against targets[:, :T-k]; depth k at position i predicts "
                            "t_(i+k+1), i.e. targets[:, k:]"
                            if k and float(depth_loss(out.logits[k], unshifted)) == float(got) else
                            "ignore the targets equal to -100 and average over the valid ones")
                    raise CheckFailed(f"depth k={k} (seed {seed}): expected L^k = {float(want):.6f}, "
                                      f"got {float(got):.6f}; {hint}.")
    return _passed("depth_k_loss", 6)
