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
    ([f"t{j}" for j in range(1, 8)], 2),          # the DeepSeek-V3 MTP figure's table
    ([f"x{j}" for j in range(1, 9)], 3),          # the 'Complete Guide' tutorial's targets matrix
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


# ---- assignment 3: the acceptance rules of speculative decoding ------------------------------------
GREEDY_CASES = [
    # (drafts d_1..d_D, main_argmax after x_(n+1), d_1, .., d_D (D + 1 entries), accepted)
    ([5, 7, 1], [5, 7, 1, 9], 3),             # every draft agrees: all kept (the 4th argmax is the bonus)
    ([5, 7, 1], [4, 7, 1, 9], 0),             # the first draft is wrong: nothing kept, although 7 and 1 match
    ([5, 7, 1], [5, 2, 1, 9], 1),             # a match AFTER a mismatch does not count
    ([3, 3, 3, 3], [3, 3, 8, 3, 3], 2),
    ([6], [6, 0], 1),
    ([], [2], 0),                             # nothing drafted (D = 0): nothing to accept
    ([1, 2, 3], [2, 3, 4, 5], 0),             # the argmaxes shifted by one place: no draft matches its own position
]


def check_greedy_accept(fn: Callable[[list, list], int]) -> bool:
    """fn(drafts, main_argmax) -> a, the number of drafts the greedy rule keeps.

    drafts: [d_1, .., d_D]; main_argmax: D + 1 token ids, main_argmax[j] = the main model's argmax at the
    position of d_(j+1) (the last one is the bonus token's). a = the length of the longest prefix of
    drafts that equals main_argmax."""
    for drafts, argmax, want in GREEDY_CASES:
        got = _call(fn, "greedy_accept", list(drafts), list(argmax))
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, int):
            raise CheckFailed(f"greedy_accept should return how many drafts are accepted, an int; for drafts={drafts}, "
                              f"main_argmax={argmax} it returned {got!r} ({type(got).__name__}).")
        if got == want:
            continue
        matches = sum(d == m for d, m in zip(drafts, argmax))
        shifted = next((j for j, (d, m) in enumerate(zip(drafts, argmax[1:])) if d != m), len(drafts))
        if got > len(drafts):
            hint = (f"a can be at most the number of drafts ({len(drafts)}); the last entry of main_argmax is the "
                    f"bonus token the main model adds, not a draft")
        elif got == matches and matches != want:
            hint = ("you counted every matching draft; only a PREFIX counts: after the first mismatch the later "
                    "drafts were conditioned on a wrong token, so they are discarded even when they happen to match")
        elif got == shifted and shifted != want:
            hint = ("main_argmax[j] is the main model's choice for the position of drafts[j] (both index the same "
                    "position); compare drafts[j] with main_argmax[j], not main_argmax[j + 1]")
        elif got == want + 1:
            hint = "off by one: count the drafts that were kept, not the tokens emitted (that is a + 1)"
        else:
            hint = ("keep drafts while drafts[j] == main_argmax[j], stop at the first difference, "
                    "return how many you kept")
        raise CheckFailed(f"drafts={drafts}, main_argmax={argmax}: expected a = {want}, got {got}; {hint}.")
    return _passed("greedy_accept", len(GREEDY_CASES))


# Each case: (name, p, q, draws). p, q over a small vocabulary; drafts are drawn from q.
REJECTION_CASES = [
    ("p == q", [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], 300),
    ("overlapping p and q", [0.40, 0.25, 0.15, 0.10, 0.06, 0.04], [0.10, 0.35, 0.30, 0.05, 0.15, 0.05], 6000),
    ("a one-hot q (a deterministic drafter)", [0.30, 0.45, 0.10, 0.10, 0.05], [0.0, 1.0, 0.0, 0.0, 0.0], 3000),
    ("top-k p (zeros where q is not)", [0.5, 0.3, 0.2, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1], 4000),
]
_Z = 5.0                                    # per-test threshold: |z| > 5 (false alarm ~ 6e-7 per test)


def _chi2_critical(df: int, z: float = _Z) -> float:
    """Upper quantile of chi-square(df) at the normal quantile z (Wilson-Hilferty approximation)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom; cells with expected count < 5 are pooled.
    A count on a zero-probability cell gives infinity."""
    n = float(counts.sum())
    if n == 0:
        return 0.0, 0
    if bool(((probs <= 0) & (counts > 0)).any()):
        return math.inf, 1
    expected = n * probs
    big = expected >= 5
    obs = counts[big].tolist() + ([float(counts[~big].sum())] if bool((~big & (probs > 0)).any()) else [])
    exp = expected[big].tolist() + ([float(expected[~big].sum())] if bool((~big & (probs > 0)).any()) else [])
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
    return stat, max(len(exp) - 1, 1)


def _fmt(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(x):.3f}" for x in v) + "]"


def _rejection_runs(fn: Callable, p: torch.Tensor, q: torch.Tensor, draws: int, seed: int):
    """Draw d ~ q and call fn(p, q, d, g) `draws` times; returns (drafts, accepted, tokens) lists."""
    import random
    draft_g = torch.Generator().manual_seed(1000 + seed)
    student_g = torch.Generator().manual_seed(2000 + seed)
    drafts = torch.multinomial(q, draws, replacement=True, generator=draft_g).tolist()
    out_drafts, out_acc, out_tok = [], [], []
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):  # students who ignore the generator still get repeatable draws
        torch.manual_seed(3000 + seed)
        random.seed(3000 + seed)
        try:
            for d in drafts:
                got = _call(fn, "rejection_step", p.clone(), q.clone(), d, student_g)
                if not isinstance(got, (tuple, list)) or len(got) != 2:
                    raise CheckFailed(f"rejection_step should return a pair (accepted, token); for p={_fmt(p)}, "
                                      f"q={_fmt(q)}, draft={d} it returned {got!r}.")
                acc, tok = got
                try:
                    acc, tok = bool(acc), tok.item() if isinstance(tok, torch.Tensor) else tok
                    tok = int(tok) if float(tok) == int(tok) else None
                except (TypeError, ValueError, RuntimeError):
                    tok = None
                if tok is None or isinstance(got[1], bool):
                    raise CheckFailed(f"the token you return should be a token id (an int); for draft={d} you "
                                      f"returned {got[1]!r}.")
                if not 0 <= tok < len(p):
                    raise CheckFailed(f"p={_fmt(p)}, q={_fmt(q)}, draft={d}: you returned token {tok}, outside the "
                                      f"vocabulary 0..{len(p) - 1}. If you sample the correction with the CDF "
                                      f"(cumsum + a uniform number), normalise max(0, p - q) first: its sum is less "
                                      f"than 1, so an unnormalised CDF never reaches the uniform number.")
                out_drafts.append(d)
                out_acc.append(acc)
                out_tok.append(tok)
        finally:
            random.setstate(py_state)
    return out_drafts, out_acc, out_tok


def _acceptance_hint(p, q, drafts, accepted) -> str | None:
    """Which acceptance rule the student's accept decisions look like, if not min(1, p/q)."""
    V = len(p)
    n = torch.zeros(V, dtype=torch.float64)
    k = torch.zeros(V, dtype=torch.float64)
    for d, a in zip(drafts, accepted):
        n[d] += 1
        k[d] += a
    ratio = torch.where(q > 0, p / q.clamp_min(1e-300), torch.zeros_like(p))
    inverse = torch.where(p > 0, q / p.clamp_min(1e-300), torch.ones_like(p))
    candidates = {
        "right": ratio.clamp(max=1.0),
        "always": torch.ones_like(p),
        "never": torch.zeros_like(p),
        "p": p.clone(),
        "inverted": inverse.clamp(max=1.0),
        "argmax": (torch.arange(V) == p.argmax()).to(p.dtype),
    }
    seen = n > 0

    def worst_z(rate):
        var = (n * rate * (1 - rate)).clamp_min(0.25)
        return float(((k - n * rate).abs() / var.sqrt())[seen].max())
    scores = {name: worst_z(rate) for name, rate in candidates.items()}
    if scores["right"] <= _Z:
        return None
    best = min(scores, key=scores.get)
    observed = ", ".join(f"draft {x}: {float(k[x] / n[x]):.2f} (should be {float(candidates['right'][x]):.2f})"
                         for x in range(V) if n[x] > 0)
    hints = {
        "always": "you accept every draft. A draft the main model finds less likely than the drafter did "
                  "(p[draft] < q[draft]) must sometimes be rejected: accept with probability "
                  "min(1, p[draft] / q[draft])",
        "never": "you never accept a draft; accept with probability min(1, p[draft] / q[draft]) "
                 "(draw r uniform in [0, 1) with the generator and accept when r < p[draft] / q[draft])",
        "p": "you accept with probability p[draft]; divide by the drafter's q[draft]: min(1, p[draft] / q[draft])",
        "inverted": "you accept with probability q/p, the ratio upside down: min(1, p[draft] / q[draft])",
        "argmax": "you accept only the main model's most likely token (the greedy rule); with sampled drafts accept "
                  "with probability min(1, p[draft] / q[draft])",
    }
    hint = hints.get(best, "accept with probability min(1, p[draft] / q[draft]): draw r uniform in [0, 1) with "
                           "the generator and accept when r < p[draft] / q[draft]")
    return f"{hint}. Your acceptance rate per draft token: {observed}"


def _residual_hint(p, q, drafts, accepted, tokens) -> str | None:
    """What the student's correction tokens (after a rejection) are sampled from, if not norm(max(0, p - q))."""
    V = len(p)
    rejected = [t for a, t in zip(accepted, tokens) if not a]
    if not rejected:
        return None
    counts = torch.bincount(torch.tensor(rejected), minlength=V).to(torch.float64)
    residual = (p - q).clamp_min(0)
    if float(residual.sum()) <= 0:
        return None
    residual = residual / residual.sum()
    stat, df = _chi2(counts, residual)
    if stat <= _chi2_critical(df):
        return None
    empirical = counts / counts.sum()
    unnormalised_cdf = torch.zeros(V, dtype=torch.float64)         # searchsorted on an unnormalised cumsum, clipped
    raw = (p - q).clamp_min(0)
    cdf = raw.cumsum(0)
    prev = 0.0
    for x in range(V):
        unnormalised_cdf[x] = min(float(cdf[x]), 1.0) - prev
        prev = min(float(cdf[x]), 1.0)
    unnormalised_cdf[V - 1] += 1.0 - prev
    candidates = {"p": p, "q": q, "abs": (p - q).abs() / (p - q).abs().sum(), "cdf": unnormalised_cdf,
                  "uniform": torch.full((V,), 1.0 / V, dtype=torch.float64)}
    tv = {name: 0.5 * float((empirical - c).abs().sum()) for name, c in candidates.items()}
    best = min(tv, key=tv.get)
    same_as_draft = sum(1 for d, a, t in zip(drafts, accepted, tokens) if not a and t == d)
    if same_as_draft == len(rejected):
        return (f"after a rejection you returned the rejected draft itself; the correction is a NEW token "
                f"sampled from norm(max(0, p - q)) = {_fmt(residual)} (the draft has p < q, so it gets probability 0)")
    hints = {
        "p": "after a rejection you sampled from p. The accepted drafts already supplied min(p, q) of every "
             "token's probability; the correction must supply only what is missing: sample from "
             "norm(max(0, p - q)) = max(0, p - q) / sum(max(0, p - q))",
        "q": "after a rejection you sampled from q (the drafter); sample from norm(max(0, p - q))",
        "abs": "after a rejection you sampled from |p - q|; use max(0, p - q): tokens the drafter over-proposed "
               "(q > p) must get no extra probability",
        "cdf": "after a rejection your correction is not normalised: max(0, p - q) sums to less than 1, divide it "
               "by its sum before sampling",
        "uniform": "after a rejection you sampled uniformly; sample from norm(max(0, p - q))",
    }
    hint = hints[best] if tv[best] < 0.08 else "after a rejection, sample the correction from norm(max(0, p - q))"
    if same_as_draft and best not in ("p", "q"):
        hint += (f"; also, {same_as_draft} times you emitted the rejected draft itself: it has p < q, so "
                 f"max(0, p - q) gives it probability 0")
    return (f"{hint}. Your correction tokens: {_fmt(empirical)}; they should follow norm(max(0, p - q)) = "
            f"{_fmt(residual)}")


REJECTION_HINT = "accept with probability min(1, p[draft] / q[draft]); otherwise sample from norm(max(0, p - q))"


def check_rejection_step(fn: Callable) -> bool:
    """fn(p, q, draft, generator) -> (accepted, token): one step of speculative sampling
    (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    p, q: float64 probability vectors (V,) of the main model and the drafter; draft ~ q (an int).
    Accept with probability min(1, p[draft] / q[draft]) (then token = draft); otherwise token ~
    norm(max(0, p - q)). Use `generator` for every random number (torch.rand(..., generator=generator),
    torch.multinomial(..., generator=generator)).

    Statistical: for each case, many drafts are drawn from q with fixed seeds and passed through fn;
    the emitted tokens must be distributed as p (Pearson chi-square test at a fixed threshold,
    false-alarm rate below 1e-6 per test, so a right answer passes and, with fixed seeds, always does).
    """
    for seed, (name, p_list, q_list, draws) in enumerate(REJECTION_CASES):
        p = torch.tensor(p_list, dtype=torch.float64)
        q = torch.tensor(q_list, dtype=torch.float64)
        try:
            drafts, accepted, tokens = _rejection_runs(fn, p, q, draws, seed)
        except CheckFailed as err:
            text = str(err)
            if "p_in" in text or "p > 1" in text or "upper_bound=1" in text:
                raise CheckFailed(f"case '{name}': the acceptance probability p[draft] / q[draft] can exceed 1 "
                                  f"(e.g. p={_fmt(p)}, q={_fmt(q)}); a probability cannot: use "
                                  f"min(1, p[draft] / q[draft]).\n  ({text})") from None
            if "sum of probabilities" in text:
                raise CheckFailed(f"case '{name}': you rejected a draft with p[draft] >= q[draft]: then "
                                  f"min(1, p[draft] / q[draft]) = 1 and it must always be accepted (max(0, p - q) is "
                                  f"0 there, and can even be 0 everywhere, as when p == q). Accept with probability "
                                  f"min(1, p[draft] / q[draft]).\n  ({text})") from None
            if "sum to 1" in text:
                raise CheckFailed(f"case '{name}': max(0, p - q) does not sum to 1; normalise it (divide by its "
                                  f"sum) before sampling the correction.\n  ({text})") from None
            raise
        wrong = next(((d, t) for d, a, t in zip(drafts, accepted, tokens) if a and t != d), None)
        if wrong is not None:
            raise CheckFailed(f"case '{name}': you accepted draft {wrong[0]} but returned token {wrong[1]}; "
                              f"an accepted draft IS the emitted token (return (True, draft)).")
        hint = _acceptance_hint(p, q, drafts, accepted) or _residual_hint(p, q, drafts, accepted, tokens)
        counts = torch.bincount(torch.tensor(tokens), minlength=len(p)).to(torch.float64)
        stat, df = _chi2(counts, p)
        if hint is None and stat <= _chi2_critical(df):
            continue
        empirical = counts / counts.sum()
        tv = 0.5 * float((empirical - p).abs().sum())
        raise CheckFailed(f"case '{name}', p={_fmt(p)}, q={_fmt(q)}: over {draws} drafts d ~ q your emitted "
                          f"tokens are distributed as {_fmt(empirical)}, not as p (total-variation distance "
                          f"{tv:.3f}); {hint or REJECTION_HINT}.")
    return _passed("rejection_step", len(REJECTION_CASES))
