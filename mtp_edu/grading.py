"""Checks for the classroom assignments (notebooks/assignments/; the teacher's guide is
docs/teaching-nbgrader.md).

Each `check_*` runs a student's function on a few cases and compares its answers with a reference
written in this file, independently of the package's own implementation. On a wrong answer it raises
`CheckFailed` with one friendly paragraph: what was wrong, on which input and, for the usual
mistakes, why. In a notebook that paragraph is all that is shown, never a traceback. When every case
passes, a check prints a tick and returns None, so a notebook cell that ends with a check has no
output that nbgrader could read as a partial-credit score.

Every call of the student's function
- gets copies of its inputs, compared with the originals afterwards: changing an input in place is
  reported;
- runs under a time limit of `TIME_LIMIT` seconds: an endless loop is reported;
- runs while the package's own implementation of the exercise, and this file's references, raise when
  called: a submission that calls them is reported, it cannot pass.

`hidden=True` runs the extra cases that the assignments' nbgrader hidden tests add. They are hidden
from the notebook, not secret: they are written out below.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import linecache
import math
import os
import pkgutil
import random
import signal
import sys
import sysconfig
import threading
import types
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from . import decoding
from .config import MTPConfig
from .model import MTPModel

TIME_LIMIT = 5.0                 # seconds for one call of a student's function


class CheckFailed(AssertionError):
    """A student's function gave a wrong answer (the message says which case and why)."""

    def _render_traceback_(self) -> list[str]:
        """IPython (Jupyter, nbgrader) shows these lines instead of a traceback."""
        return [f"CheckFailed: {self}"]


class _Timeout(BaseException):
    """Raised inside a student's function that ran past the time limit. A BaseException, so that an
    `except Exception` in the student's code does not swallow it."""


class _UsedLibrary(BaseException):
    """Raised by a package function that the student's code must not call (a BaseException, as above)."""


# ---- calling the student's function -----------------------------------------------------------
def _short(x: Any, width: int = 70) -> str:
    """A value as a message shows it: tensors and models by their shape or type, long values cut."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {x.shape}"
    if isinstance(x, torch.nn.Module):
        return f"a {type(x).__name__}"
    text = repr(x)
    return text if len(text) <= width else text[:width - 4] + " ..."


def _what(x: Any) -> str:
    """A returned value with its type: '2.5 (a float)', '1 (an int)', 'None', 'a tensor of shape ...'."""
    if x is None or isinstance(x, (torch.Tensor, np.ndarray, torch.nn.Module)):
        return _short(x)
    kind = type(x).__name__
    return f"{_short(x)} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


# code that is not the student's: the standard library, installed packages, and mtp_edu itself
_NOT_STUDENT = tuple({os.path.join(path, "") for key, path in sysconfig.get_paths().items()
                      if key in ("stdlib", "platstdlib", "purelib", "platlib")}
                     | {os.path.join(os.path.dirname(__file__), "")})


def _student_line(err: BaseException) -> str:
    """' (in `f`, line 3: `x = y`)': the last frame of the traceback in the student's own code."""
    last, tb = None, err.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if not path.startswith(_NOT_STUDENT) and not path.startswith("<frozen"):
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    code = last.tb_frame.f_code
    line = linecache.getline(code.co_filename, last.tb_lineno).strip()
    line = line if len(line) <= 80 else line[:77].rstrip() + "..."
    return f" (in `{code.co_name}`, line {last.tb_lineno}" + (f": `{line}`)" if line else ")")


def _copy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (torch.nn.Module, list, tuple, dict)):
        return copy.deepcopy(x)
    return x


def _changed(original: Any, given: Any) -> str | None:
    """None if the copy handed to the student still equals the original; else what changed."""
    if isinstance(original, torch.Tensor):
        same = (isinstance(given, torch.Tensor) and given.shape == original.shape and given.dtype == original.dtype
                and torch.equal(given, original))
        return None if same else "its values"
    if isinstance(original, torch.nn.Module):
        mine, theirs = original.state_dict(), given.state_dict()
        for key, value in mine.items():
            if key not in theirs or theirs[key].shape != value.shape or not torch.equal(theirs[key], value):
                return f"the model's `{key}`"
        return None
    try:
        return None if bool(original == given) else "its contents"
    except Exception:
        return "its contents"


def _run_limited(call: Callable[[], Any], seconds: float) -> Any:
    """call() under a time limit: SIGALRM in the main thread (Jupyter kernels, pytest); elsewhere (Windows,
    other threads) in a helper thread that is abandoned, still running, when it overstays."""
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def alarm(signum, frame):
            raise _Timeout
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return call()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
    box: dict[str, Any] = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as err:  # handed to the caller below
            box["error"] = err
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Timeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def _call(fn: Callable, name: str, args: dict[str, Any], where: str | Callable[[], str],
          on_error: str | Callable[[], str] = "") -> Any:
    """fn(*args.values()) on copies of the arguments, under the time limit. Every way it can go wrong becomes
    one CheckFailed sentence that says on which input: `where` (or a function that returns it, for checks that
    call fn thousands of times). `on_error` is added when fn raises: what about this input may explain it."""
    given = {key: _copy(value) for key, value in args.items()}
    place = lambda: where() if callable(where) else where
    try:
        got = _run_limited(lambda: fn(*given.values()), TIME_LIMIT)
    except NotImplementedError:
        raise CheckFailed(f"`{name}` is not implemented yet: replace the `raise NotImplementedError()` line with "
                          f"your code, run that cell, then run this check again.") from None
    except _Timeout:
        raise CheckFailed(f"`{name}` did not return within {TIME_LIMIT:g} s on {place()}: does a loop never "
                          f"end?") from None
    except _UsedLibrary as used:
        raise CheckFailed(f"`{name}` called `{used}` (on {place()}): that is mtp_edu's own answer to this "
                          f"exercise, and the exercise is to write it yourself, so the check refuses it.") from None
    except CheckFailed:
        raise
    except Exception as err:
        lines = str(err).strip().splitlines()
        text = lines[0].split("  (Could this error message be improved?")[0] if lines else ""   # torch's appeal
        text = text if len(text) <= 160 else text[:157] + "..."
        hint = on_error() if callable(on_error) else on_error
        raise CheckFailed(f"`{name}` raised {type(err).__name__}" + (f": {text}" if text else "")
                          + f"{_student_line(err)}, on {place()}." + (f" {hint}" if hint else "")) from None
    for key, value in args.items():
        what = _changed(value, given[key])
        if what is not None:
            raise CheckFailed(f"`{name}` changed its argument `{key}` in place ({what}), on {place()}. The caller "
                              f"still needs it: build new tensors or lists instead of writing into the inputs "
                              f"(`+=`, `.fill_()`, `x[...] = ...`), or work on a copy (`x = x.clone()`).")
    return got


@contextlib.contextmanager
def _guard(fn: Callable, forbidden: Iterable[tuple[Any, str]]):
    """While active, each `(owner, name)` in `forbidden` (a module or class and one of its attributes) raises
    _UsedLibrary when called, however the student's code reaches it: through its module or class, as
    re-exported by another mtp_edu module, or bound to a name in the student's globals."""
    restore: list[Callable[[], None]] = []
    space = getattr(fn, "__globals__", None)
    try:
        for owner, name in forbidden:
            original = vars(owner)[name]
            label = (f"{owner.__name__}.{name}" if isinstance(owner, types.ModuleType) else
                     f"{owner.__qualname__}.{name}")

            def refuse(*args, _label=label, **kwargs):
                raise _UsedLibrary(_label)
            homes = [owner] + [module for key, module in list(sys.modules.items())
                               if key.startswith("mtp_edu") and module is not None and module is not owner]
            for home in homes:
                for key, value in list(vars(home).items()):
                    if value is original:
                        setattr(home, key, refuse)
                        restore.append(functools.partial(setattr, home, key, value))
            if isinstance(space, dict):
                for key, value in list(space.items()):
                    if value is original:
                        space[key] = refuse
                        restore.append(functools.partial(space.__setitem__, key, value))
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _this() -> types.ModuleType:
    return sys.modules[__name__]


def _forbid(*paths: str) -> list[tuple[Any, str]]:
    """(owner, attribute) for each path 'module.name' or 'module.Class.name' under mtp_edu, or under this
    module for 'grading.name', that exists: a renamed internal of the package leaves the checks working."""
    found = []
    for path in paths:
        *owner_path, name = path.split(".")
        owner: Any = importlib.import_module(f"mtp_edu.{owner_path[0]}")
        for part in owner_path[1:]:
            owner = getattr(owner, part, None)
        if owner is not None and name in vars(owner):
            found.append((owner, name))
    return found


def _int_or_none(x: Any) -> int | None:
    """x as an int if it is an integer (an int, a numpy integer or a one-element integer tensor); else None."""
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not (x.is_floating_point() or x.is_complex()
                                                                or x.dtype == torch.bool):
        return int(x.item())
    return None


def _tensor_result(got: Any, name: str, where: str, shape: tuple, dtype: torch.dtype, meaning: str) -> torch.Tensor:
    """The student's tensor, after checking its type, shape, dtype and finiteness (one message for each)."""
    if isinstance(got, np.ndarray):
        raise CheckFailed(f"`{name}` returned a numpy array on {where}; return a torch tensor (stay in torch, or "
                          f"convert with torch.from_numpy).")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"`{name}` should return a tensor ({meaning}); on {where} it returned {_what(got)}.")
    if tuple(got.shape) != tuple(shape):
        raise CheckFailed(f"`{name}` should return shape {tuple(shape)} ({meaning}) on {where}; yours has shape "
                          f"{tuple(got.shape)}.")
    if got.dtype != dtype:
        raise CheckFailed(f"`{name}` returned a {got.dtype} tensor on {where}; the inputs are {dtype}: keep their "
                          f"dtype (a tensor made by torch.tensor(...) or torch.zeros(...) without dtype=, or a "
                          f".float(), is float32).")
    if got.is_floating_point() and not bool(torch.isfinite(got).all()):
        raise CheckFailed(f"`{name}` returned NaN or infinite values on {where}.")
    return got


def _passed(name: str, n: int) -> None:
    print(f"\u2714 {name}: all {n} cases pass")


# ---- assignment 1: the token-shift table ---------------------------------------------------------
SHIFT_CASES = [
    ([f"t{j}" for j in range(1, 8)], 2),          # the DeepSeek-V3 MTP figure's table
    ([f"x{j}" for j in range(1, 9)], 3),          # the 'Complete Guide' tutorial's targets matrix
    (list("MTP!"), 0),                            # D = 0: next-token prediction only
    (list(range(10, 16)), 4),                     # D = T - 1: the last depth has one position
]
SHIFT_HIDDEN = [                                  # the hidden tests' cases
    ([7, 8, 9], 3),                               # more depths than positions (D > T = 2): rows of padding only
    ([0, 3, 1, 4, 2], 2),                         # token ids, 0 among them
    ([f"w{j}" for j in range(1, 13)], 5),
]


def _ref_shift_targets(tokens: list, depth: int) -> list[list]:
    """targets[k][i-1] = t_(i+k+1) = tokens[i+k] for i + k <= T, else None; i = 1..T, k = 0..depth."""
    T = len(tokens) - 1
    return [[tokens[i + k] if i + k <= T else None for i in range(1, T + 1)] for k in range(depth + 1)]


def _ref_shift_inputs(tokens: list, depth: int) -> list[list]:
    """inputs[k][i-1] = t_(i+k) = tokens[i+k-1] for i + k <= T, else None; i = 1..T, k = 0..depth."""
    T = len(tokens) - 1
    return [[tokens[i + k - 1] if i + k <= T else None for i in range(1, T + 1)] for k in range(depth + 1)]


def _same_cell(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if isinstance(got, bool) != isinstance(want, bool):
        return False
    try:
        return bool(got == want)
    except Exception:
        return False


def _cell_meaning(tokens: list, k: int, i: int, want: Any, reads: bool) -> str:
    T = len(tokens) - 1
    if want is None and T - k <= 0:
        return (f"depth k={k} has no position at all (T-k = {T - k} <= 0): its whole row is padding (None)")
    if want is None:
        return (f"depth k={k} has positions i = 1..T-k = 1..{T - k} only (at i={i} its target t_{i + k + 1} would "
                f"lie past the last token t_{T + 1}), so the cell at i={i} is padding (None)")
    if not reads:
        return f"at depth k={k}, position i={i} predicts t_(i+k+1) = t_{i + k + 1} = {want!r}"
    if k == 0:
        return f"the main model (k=0) reads t_i = t_{i} = {want!r} at position i={i}"
    return f"at depth k={k}, position i={i} reads Emb(t_(i+k)) = t_{i + k} = {want!r}"


def _check_table(fn: Callable, name: str, cases: list, reference: Callable, reads: bool) -> None:
    where = lambda tokens, depth: f"tokens {_short(tokens)}, depth={depth}"
    wants = [reference(tokens, depth) for tokens, depth in cases]          # before the references are locked
    forbid = _forbid("shifts.shift_table", "shifts.depth_inputs", "shifts.depth_targets",
                     "grading._ref_shift_targets", "grading._ref_shift_inputs")
    with _guard(fn, forbid):
        for (tokens, depth), want in zip(cases, wants):
            got = _call(fn, name, {"tokens": list(tokens), "depth": depth}, where(tokens, depth))
            _compare_table(name, tokens, depth, got, want, reads, where(tokens, depth))


def _compare_table(name: str, tokens: list, depth: int, got: Any, want: list, reads: bool, where: str) -> None:
    T = len(tokens) - 1
    if not isinstance(got, (list, tuple)) or len(got) != depth + 1:
        raise CheckFailed(f"`{name}` should return a list of depth + 1 = {depth + 1} rows (one per depth "
                          f"k = 0..{depth}); on {where} it returned {_what(got)}.")
    for k in range(depth + 1):
        if not isinstance(got[k], (list, tuple)):
            raise CheckFailed(f"row k={k} should be a list with one cell per position; on {where} it is "
                              f"{_what(got[k])}.")
        row = list(got[k])
        if len(row) != T:
            raise CheckFailed(f"on {where}: row k={k} should have one cell per position i = 1..T, with "
                              f"T = len(tokens) - 1 = {T}; yours has {len(row)}: {_short(row)}.")
        for i, (g, w) in enumerate(zip(row, want[k]), 1):
            if not _same_cell(g, w):
                raise CheckFailed(f"on {where}: {_cell_meaning(tokens, k, i, w, reads)}; you gave {_short(g)}.")


def check_shift_targets(fn: Callable[[list, int], list], hidden: bool = False) -> None:
    """fn(tokens, depth) -> targets, with targets[k][i-1] = t_(i+k+1), or None past the end, k = 0..depth.

    tokens holds t_1..t_(T+1); positions i = 1..T (T = len(tokens) - 1)."""
    cases = SHIFT_HIDDEN if hidden else SHIFT_CASES
    _check_table(fn, "shift_targets", cases, _ref_shift_targets, reads=False)
    _passed("shift_targets" + (" (hidden tests)" if hidden else ""), len(cases))


def check_shift_inputs(fn: Callable[[list, int], list], hidden: bool = False) -> None:
    """fn(tokens, depth) -> inputs, with inputs[k][i-1] = t_(i+k) (t_i for the main model, k = 0) for
    i = 1..T-k, and None for the positions i > T-k that depth k does not have."""
    cases = SHIFT_HIDDEN if hidden else SHIFT_CASES
    _check_table(fn, "shift_inputs", cases, _ref_shift_inputs, reads=True)
    _passed("shift_inputs" + (" (hidden tests)" if hidden else ""), len(cases))


# ---- assignment 2: a sequential MTP module and its loss -------------------------------------------
def _check_model(seed: int, d_model: int = 16, mtp_depth: int = 2, vocab_size: int = 23) -> MTPModel:
    """A float64 model in which every parameter is random. The RMSNorm gains are drawn from [0.5, 1.5), so
    enorm and hnorm differ (a freshly built model has all gains 1 and could not tell them apart)."""
    cfg = MTPConfig(vocab_size=vocab_size, d_model=d_model, n_layers=1, n_heads=2, max_seq_len=16,
                    mtp_depth=mtp_depth, init_seed=seed)
    model = MTPModel(cfg).double().eval()
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(p.shape[-1]))
    return model.requires_grad_(False)


def _rms(x: torch.Tensor, norm: torch.nn.RMSNorm) -> torch.Tensor:
    """RMSNorm written out: x / sqrt(mean(x^2) + eps) * gain."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


MODULE_HINTS = {
    "paper_order": "the concatenation order is reversed: the paper prints [hnorm(h) ; enorm(Emb)], but the "
                   "released weights (eh_proj) take the normalised EMBEDDING first, then the normalised hidden state",
    "norms_swapped": "enorm and hnorm are swapped: enorm normalises the embedding Emb(t_(i+k)), hnorm the hidden "
                     "state h^(k-1)_i (the check's model gives the two norms different gains)",
    "no_norms": "the two RMSNorms are missing: normalise the embedding with module.enorm and h^(k-1) with "
                "module.hnorm before concatenating",
    "no_block": "the transformer block is missing: h^k = module.block(eh_proj(...), model.rope)",
    "tokens_off_by_one": "off by one in the tokens: position i reads Emb(t_(i+k)); ids[:, j] holds t_(j+1), so that "
                         "is ids[:, k:], and you embedded t_(i+k-1)",
    "hidden_off_by_one": "off by one in the hidden state: position i reads h^(k-1)_i, the first T-k rows of h_prev "
                         "(h_prev[:, :T-k]); you used h^(k-1)_(i+1)",
}
MODULE_HINT = ("check each step: enorm on Emb(t_(i+k)), hnorm on h^(k-1)_i, concatenate on the last dimension "
               "(embedding first), eh_proj, then module.block(x, model.rope)")


def _ref_module(model: MTPModel, k: int, h_prev: torch.Tensor, ids: torch.Tensor, variant: str = "right"):
    """h^k of sequential module k (eqs. 21-22), written out, from the full h^(k-1) (B, T-k+1, d) and ids (B, T).
    A `variant` (a key of MODULE_HINTS) computes a typical mistake instead, so that the check can name it."""
    m, T = model.mtp[k - 1], ids.shape[1]
    tokens = ids[:, k - 1:T - 1] if variant == "tokens_off_by_one" else ids[:, k:]       # t_(i+k), i = 1..T-k
    h = h_prev[:, 1:T - k + 1] if variant == "hidden_off_by_one" else h_prev[:, :T - k]    # h^(k-1)_i
    e = model.embed.weight[tokens]                                                         # Emb(t_(i+k))
    e_norm, h_norm = (m.hnorm, m.enorm) if variant == "norms_swapped" else (m.enorm, m.hnorm)
    if variant != "no_norms":
        e, h = _rms(e, e_norm), _rms(h, h_norm)
    x = torch.cat([h, e] if variant == "paper_order" else [e, h], dim=-1) @ m.eh_proj.weight.T   # (B, T-k, d)
    return x if variant == "no_block" else m.block(x, model.rope)


@functools.lru_cache(maxsize=None)
def _module_cases(hidden: bool) -> tuple:
    """(model, k, h_prev, ids) per case; h_prev is h^(k-1) over all of its positions."""
    specs = ([(2, 3, 9, 12, 3, 3), (3, 1, 5, 16, 2, 1)] if hidden else        # seed, B, T, d_model, D, k
             [(seed, 2, 12, 16, 2, k) for seed in (0, 1) for k in (1, 2)])
    cases = []
    for seed, B, T, d_model, D, k in specs:
        model = _check_model(seed, d_model, D)
        ids = torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            h = model.trunk(ids)                                                           # h^0: (B, T, d)
            for j in range(1, k):
                h = _ref_module(model, j, h, ids)                                          # h^j: (B, T-j, d)
        cases.append((model, k, h, ids))
    return tuple(cases)


def check_mtp_module(fn: Callable, hidden: bool = False) -> None:
    """fn(model, k, h_prev, ids) -> h^k of sequential MTP module k (DeepSeek-V3 eqs. 21-22):

        h'^k_i = eh_proj([enorm(Emb(t_(i+k))) ; hnorm(h^(k-1)_i)]),   h^k = block(h'^k),   i = 1..T-k

    h_prev: h^(k-1) at ALL of its positions, (B, T-k+1, d) (for k = 1 the trunk's output h^0, (B, T, d));
    ids: (B, T), the model's input t_1..t_T. Returns h^k, (B, T-k, d): the student does the shift."""
    cases = _module_cases(hidden)
    forbid = _forbid("model.SequentialMTP.forward", "model.MTPModel.forward", "model.MTPModel.mtp_hidden",
                     "shifts.depth_inputs", "grading._ref_module")
    describe = lambda model, k, h, ids: (f"module k={k} of a check model (d_model={model.config.d_model}, "
                                         f"D={model.config.mtp_depth}) with ids of shape {tuple(ids.shape)} and "
                                         f"h_prev of shape {tuple(h.shape)}")
    facts = lambda k, h, ids: (f"(Here h_prev holds h^(k-1) at its T-k+1 = {h.shape[1]} positions and ids all "
                               f"T = {ids.shape[1]} tokens; module k={k} has the positions i = 1..T-k = "
                               f"1..{ids.shape[1] - k}: slice both to those.)")
    with torch.no_grad():                              # the answers and the typical mistakes, before the lock
        answers = [{v: _ref_module(model, k, h, ids, v) for v in ("right", *MODULE_HINTS)}
                   for model, k, h, ids in cases]
    with torch.no_grad(), _guard(fn, forbid):
        for (model, k, h, ids), variants in zip(cases, answers):
            where = describe(model, k, h, ids)
            got = _call(fn, "mtp_module_forward", {"model": model, "k": k, "h_prev": h, "ids": ids}, where,
                        functools.partial(facts, k, h, ids))
            _compare_module(got, variants, where)
    _passed("mtp_module_forward" + (" (hidden tests)" if hidden else ""), len(cases))


def _compare_module(got: Any, variants: dict[str, torch.Tensor], where: str) -> None:
    want = variants["right"]
    if (isinstance(got, torch.Tensor) and got.shape == want.shape and got.is_floating_point()
            and got.dtype != want.dtype):
        right = torch.allclose(got.double(), want, rtol=0, atol=1e-4)
        raise CheckFailed(f"`mtp_module_forward` returned a {got.dtype} tensor on {where}; the check's model and "
                          f"h_prev are float64: keep their dtype (a tensor made by torch.tensor(...) or "
                          f"torch.zeros(...) without dtype=, or a .float(), is float32)."
                          + (" Apart from that, your values are right to float32 precision." if right else ""))
    got = _tensor_result(got, "mtp_module_forward", where, tuple(want.shape), want.dtype, "h^k: (B, T-k, d)")
    if torch.allclose(got, want, rtol=0, atol=1e-9):
        return
    found = next((v for v in MODULE_HINTS if torch.allclose(got, variants[v], rtol=0, atol=1e-9)), None)
    raise CheckFailed(f"on {where}: your h^k differs from the reference by up to "
                      f"{float((got - want).abs().max()):.3g}; {MODULE_HINTS.get(found, MODULE_HINT)}.")


def _ref_depth_loss(logits_k: torch.Tensor, targets: torch.Tensor, k: int, ignore_index: int) -> torch.Tensor:
    """L^k: the cross-entropy of depth k, summed over its valid targets and divided by their number."""
    t = targets[:, k:]                                                   # t_(i+k+1), i = 1..T-k: (B, T-k)
    valid = t != ignore_index
    ce = -logits_k.log_softmax(-1).gather(-1, torch.where(valid, t, 0).unsqueeze(-1)).squeeze(-1)   # (B, T-k)
    return (ce * valid).sum() / valid.sum()


def _loss_variants(logits_k: torch.Tensor, targets: torch.Tensor, k: int, ignore_index: int) -> dict[str, float]:
    """The right value ("right") and that of each typical mistake (a key of LOSS_HINTS) on one case."""
    B, T = targets.shape
    with torch.no_grad():
        s, n = float(_ref_depth_loss(logits_k, targets, k, ignore_index)), int((targets[:, k:] != ignore_index).sum())
        out = {"right": s, "sum": s * n, "divided_by_BT": s * n / (B * T), "all_positions": s * n / (B * (T - k))}
        if k:
            out["unshifted"] = float(_ref_depth_loss(logits_k, targets[:, :T - k], 0, ignore_index))
        if ignore_index >= 0:                        # a real token id marks the padding: scored as a token
            out["padding_scored"] = float(F.cross_entropy(logits_k.flatten(0, 1), targets[:, k:].flatten()))
    return out


LOSS_HINTS = {
    "unshifted": lambda B, T, k, n, ig: (
        "you scored depth k against targets[:, :T-k]; position i of depth k predicts t_(i+k+1), and targets[:, j] "
        "holds t_(j+2), so its targets are targets[:, k:]"),
    "padding_scored": lambda B, T, k, n, ig: (
        f"you scored the padding positions (target == ignore_index = {ig}) as if {ig} were a real token: pass "
        f"ignore_index=ignore_index to F.cross_entropy (its default is -100), or leave those positions out yourself"),
    "all_positions": lambda B, T, k, n, ig: (
        f"you divided by all B*(T-k) = {B * (T - k)} positions of depth k, padding included (as .mean() over "
        f"reduction='none' does); divide by the N_k = {n} valid targets only"),
    "divided_by_BT": lambda B, T, k, n, ig: (
        f"you divided by B*T = {B * T} (the paper's 1/T of eq. 24, over a batch); this function asks for the mean "
        f"over the N_k = {n} valid targets of depth k (Megatron-core's reduction)"),
    "sum": lambda B, T, k, n, ig: f"you returned the sum; divide it by the number of valid targets, N_k = {n}",
}
LOSS_HINT = "average -log P^k[t_(i+k+1)] over the valid targets of depth k, targets[:, k:] != ignore_index"


@functools.lru_cache(maxsize=None)
def _loss_cases(hidden: bool) -> tuple:
    """(logits_k, targets, k, ignore_index) per case; logits_k requires grad."""
    g = torch.Generator().manual_seed(7 if hidden else 5)
    if not hidden:
        B, T, V = 2, 11, 23
        targets = torch.randint(0, V, (B, T), generator=g)
        targets[0, -3:] = -100                       # a document that ends three tokens early
        targets[1, 4] = -100                         # one masked target
        specs = [(targets, k, -100) for k in (1, 2, 3, 0)]     # k = 0 last: there, B*T = B*(T-k)
    else:
        B, T, V = 3, 7, 23
        targets = torch.randint(1, V, (B, T), generator=g)
        targets[0, -2:] = 0                          # token 0 is the padding token here
        targets[2, :3] = 0
        specs = [(targets, 0, 0), (targets, 2, 0), (targets.masked_fill(targets == 0, -1), 1, -1)]
    return tuple(((2 * torch.randn(B, T - k, V, generator=g, dtype=torch.float64)).requires_grad_(), t, k, ig)
                 for t, k, ig in specs)


def _loss_result(got: Any, where: str, logits_k: torch.Tensor) -> torch.Tensor:
    name = "depth_k_loss"
    if isinstance(got, (float, int, np.floating, np.integer)) and not isinstance(got, bool):
        raise CheckFailed(f"`{name}` returned a Python number on {where}; return the 0-d tensor itself: float() or "
                          f".item() cut the loss off from the graph, and training could not back-propagate through it.")
    if isinstance(got, np.ndarray):
        raise CheckFailed(f"`{name}` returned a numpy array on {where}; stay in torch, so that the loss keeps its "
                          f"gradient.")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"`{name}` should return a 0-d tensor (the loss); on {where} it returned {_what(got)}.")
    if got.is_complex():
        raise CheckFailed(f"`{name}` returned a complex tensor on {where}; a cross-entropy is a real number.")
    if got.dim() != 0:
        raise CheckFailed(f"`{name}` should return a 0-d tensor (one number) on {where}; yours has shape "
                          f"{tuple(got.shape)}.")
    if got.dtype != logits_k.dtype:
        raise CheckFailed(f"`{name}` returned a {got.dtype} loss on {where}; logits_k is {logits_k.dtype}: keep "
                          f"its dtype.")
    if not bool(torch.isfinite(got)):
        raise CheckFailed(f"`{name}` returned {float(got)} on {where}: the log of a softmax is finite, so look for "
                          f"a division by zero or a log of 0 (log_softmax or F.cross_entropy avoid the latter).")
    if logits_k.requires_grad and not got.requires_grad:
        raise CheckFailed(f"`{name}`'s result on {where} is not connected to logits_k (requires_grad is False): "
                          f"build it from logits_k with torch operations, without .item(), .detach(), .numpy() or "
                          f"torch.tensor(...) of a result.")
    return got


def check_depth_loss(fn: Callable, hidden: bool = False) -> None:
    """fn(logits_k, targets, k, ignore_index) -> L^k, the mean cross-entropy of depth k over its valid targets
    (eq. 24 with Megatron-core's normaliser, the number of valid targets).

    logits_k: (B, T-k, V), depth k at positions i = 1..T-k; targets: (B, T) = t_2..t_(T+1), equal to
    ignore_index where a target is padding. Depth k at position i predicts t_(i+k+1) = targets[:, i+k-1]."""
    forbid = _forbid("losses.depth_loss", "losses.mtp_loss", "losses.mtp_loss_backward", "shifts.depth_targets",
                     "shifts.depth_inputs", "grading._ref_depth_loss", "grading._loss_variants")
    cases = _loss_cases(hidden)
    describe = lambda logits, t, k, ig: (f"depth k={k} with logits_k of shape {tuple(logits.shape)} and targets of "
                                         f"shape {tuple(t.shape)}, {int((t == ig).sum())} of them padding "
                                         f"(ignore_index={ig})")
    facts = lambda logits, t, k, ig: (f"(Here logits_k has T-k = {logits.shape[1]} positions and targets all "
                                      f"T = {t.shape[1]} columns; padding targets equal ignore_index = {ig}.)")
    answers = [_loss_variants(logits, t, k, ig) for logits, t, k, ig in cases]     # before the lock
    with _guard(fn, forbid):
        for (logits, t, k, ig), variants in zip(cases, answers):
            where = describe(logits, t, k, ig)
            got = _call(fn, "depth_k_loss", {"logits_k": logits, "targets": t, "k": k, "ignore_index": ig}, where,
                        functools.partial(facts, logits, t, k, ig))
            got = float(_loss_result(got, where, logits).detach())
            if math.isclose(got, variants["right"], rel_tol=1e-9, abs_tol=1e-12):
                continue
            found = next((v for v in LOSS_HINTS if v in variants
                          and math.isclose(got, variants[v], rel_tol=1e-9, abs_tol=1e-12)), None)
            B, T = t.shape
            n = int((t[:, k:] != ig).sum())
            hint = LOSS_HINTS[found](B, T, k, n, ig) if found else LOSS_HINT
            raise CheckFailed(f"on {where}: expected L^k = {variants['right']:.6f}, got {got:.6f}; {hint}.")
    _passed("depth_k_loss" + (" (hidden tests)" if hidden else ""), len(cases))


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
GREEDY_HIDDEN = [
    ([0, 0, 0], [0, 0, 0, 0], 3),             # token 0 everywhere
    ([9, 4], [9, 5, 4], 1),
    ([2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 3, 2], 5),
]
_DECODING = ("decoding._Rule.accept", "decoding._speculative_step", "decoding.speculative_generate", "tree.walk",
             "tree.try_children", "tree.tree_generate")


def check_greedy_accept(fn: Callable[[list, list], int], hidden: bool = False) -> None:
    """fn(drafts, main_argmax) -> a, the number of drafts the greedy rule keeps.

    drafts: [d_1, .., d_D]; main_argmax: D + 1 token ids, main_argmax[j] = the main model's argmax at the
    position of d_(j+1) (the last one is the bonus token's). a = the length of the longest prefix of
    drafts that equals main_argmax."""
    cases = GREEDY_HIDDEN if hidden else GREEDY_CASES
    where = lambda drafts, argmax: f"drafts={drafts}, main_argmax={argmax}"
    with _guard(fn, _forbid(*_DECODING)):
        for drafts, argmax, want in cases:
            got = _call(fn, "greedy_accept", {"drafts": list(drafts), "main_argmax": list(argmax)},
                        where(drafts, argmax))
            _compare_greedy_accept(got, drafts, argmax, want, where(drafts, argmax))
    _passed("greedy_accept" + (" (hidden tests)" if hidden else ""), len(cases))


def _compare_greedy_accept(got: Any, drafts: list, argmax: list, want: int, where: str) -> None:
    a = _int_or_none(got)
    if a is None:
        raise CheckFailed(f"greedy_accept should return how many drafts are accepted, an int; on {where} it "
                          f"returned {_what(got)}.")
    if a == want:
        return
    matches = sum(d == m for d, m in zip(drafts, argmax))
    shifted = next((j for j, (d, m) in enumerate(zip(drafts, argmax[1:])) if d != m), len(drafts))
    if a > len(drafts):
        hint = (f"a can be at most the number of drafts ({len(drafts)}); the last entry of main_argmax is the "
                f"bonus token the main model adds, not a draft")
    elif a == matches and matches != want:
        hint = ("you counted every matching draft; only a PREFIX counts: after the first mismatch the later "
                "drafts were conditioned on a wrong token, so they are discarded even when they happen to match")
    elif a == shifted and shifted != want:
        hint = ("main_argmax[j] is the main model's choice for the position of drafts[j] (both index the same "
                "position); compare drafts[j] with main_argmax[j], not main_argmax[j + 1]")
    elif a == want + 1:
        hint = "off by one: count the drafts that were kept, not the tokens emitted (that is a + 1)"
    else:
        hint = ("keep drafts while drafts[j] == main_argmax[j], stop at the first difference, "
                "return how many you kept")
    raise CheckFailed(f"{where}: expected a = {want}, got {a}; {hint}.")


# Each case: (name, p, q, draws). p, q over a small vocabulary; drafts are drawn from q.
REJECTION_CASES = [
    ("p == q", [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], 300),
    ("overlapping p and q", [0.40, 0.25, 0.15, 0.10, 0.06, 0.04], [0.10, 0.35, 0.30, 0.05, 0.15, 0.05], 6000),
    ("a one-hot q (a deterministic drafter)", [0.30, 0.45, 0.10, 0.10, 0.05], [0.0, 1.0, 0.0, 0.0, 0.0], 3000),
    ("top-k p (zeros where q is not)", [0.5, 0.3, 0.2, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1], 4000),
]
REJECTION_HIDDEN = [
    ("a token that only the drafter proposes", [0.0, 0.5, 0.5], [0.6, 0.2, 0.2], 3000),
    ("eight tokens", [0.30, 0.20, 0.15, 0.10, 0.10, 0.08, 0.05, 0.02],
     [0.05, 0.10, 0.15, 0.20, 0.20, 0.15, 0.10, 0.05], 5000),
]
_Z = 5.0                                    # per-test threshold: |z| > 5 (false alarm ~ 6e-7 per test)


def _chi2_critical(df: int, z: float = _Z) -> float:
    """Upper quantile of chi-square(df) at the normal quantile z (Wilson-Hilferty approximation)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def _chi2_groups(groups: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom over independent multinomial groups, each given as
    (counts, probabilities); within a group, cells with expected count < 5 are pooled. A count on a
    zero-probability cell gives infinity."""
    stat, df = 0.0, 0
    for counts, probs in groups:
        n = float(counts.sum())
        if n == 0:
            continue
        if bool(((probs <= 0) & (counts > 0)).any()):
            return math.inf, 1
        expected = n * probs
        big, small = expected >= 5, (expected < 5) & (probs > 0)
        obs = counts[big].tolist() + ([float(counts[small].sum())] if bool(small.any()) else [])
        exp = expected[big].tolist() + ([float(expected[small].sum())] if bool(small.any()) else [])
        stat += sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
        df += len(exp) - 1
    return stat, max(df, 1)


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom of one multinomial sample (see _chi2_groups)."""
    return _chi2_groups([(counts, probs)])


def _fmt(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(x):.3f}" for x in v) + "]"


@contextlib.contextmanager
def _seeded_globals(seed: int):
    """Students who ignore the generator still get repeatable draws: torch's, Python's and numpy's global
    generators are seeded here and restored afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _rejection_facts(p: torch.Tensor, q: torch.Tensor, d: int) -> str:
    """What about this input may explain a crash (from the input alone, never from the error's text)."""
    ratio, residual = float(p[d] / q[d]), (p - q).clamp_min(0)
    if ratio > 1:
        return (f"Here p[draft] / q[draft] = {ratio:.3g} > 1: used as a probability it must be capped, "
                f"min(1, p[draft] / q[draft]).")
    if float(residual.sum()) == 0:
        return ("Here p == q, so max(0, p - q) is zero everywhere: a draft with p[draft] >= q[draft] is always "
                "accepted (min(1, p[draft] / q[draft]) = 1), and no correction is ever sampled.")
    if ratio == 1:
        return "Here p[draft] = q[draft]: min(1, p[draft] / q[draft]) = 1, so the draft is always accepted."
    return (f"Here p[draft] / q[draft] = {ratio:.3g}, so the draft may be rejected; the correction is then sampled "
            f"from max(0, p - q) divided by its sum, {_fmt(residual / residual.sum())}.")


def _rejection_runs(fn: Callable, name: str, p: torch.Tensor, q: torch.Tensor, draws: int, seed: int):
    """Draw d ~ q and call fn(p, q, d, g) `draws` times; returns the drafts and fn's answers."""
    draft_g = torch.Generator().manual_seed(1000 + seed)
    student_g = torch.Generator().manual_seed(2000 + seed)
    drafts = torch.multinomial(q, draws, replacement=True, generator=draft_g).tolist()
    where = lambda d: f"case '{name}' (p={_fmt(p)}, q={_fmt(q)}) with draft={d}"
    with _seeded_globals(3000 + seed):
        answers = [_call(fn, "rejection_step", {"p": p, "q": q, "draft": d, "generator": student_g},
                         functools.partial(where, d), functools.partial(_rejection_facts, p, q, d)) for d in drafts]
    return drafts, answers


def _as_flag(x: Any) -> bool | None:
    """x as a bool if it is True/False (a bool, 0 or 1, a one-element tensor or numpy value); else None."""
    if isinstance(x, (torch.Tensor, np.ndarray, np.generic)) and np.size(x) == 1:
        x = x.item()
    if isinstance(x, (bool, int)) and x in (0, 1):
        return bool(x)
    return None


def _rejection_answers(name: str, p: torch.Tensor, q: torch.Tensor, drafts: list, answers: list):
    """(accepted, tokens) lists from fn's answers, after checking their types."""
    accepted, tokens, shown = [], [], f"case '{name}' (p={_fmt(p)}, q={_fmt(q)})"
    for d, got in zip(drafts, answers):
        where = functools.partial("{} with draft={}".format, shown, d)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"rejection_step should return a pair (accepted, token); on {where()} it returned "
                              f"{_what(got)}.")
        acc, tok = _as_flag(got[0]), _int_or_none(got[1])
        if acc is None:
            raise CheckFailed(f"the first item you return, `accepted`, should be True or False; on {where()} it is "
                              f"{_what(got[0])}.")
        if tok is None:
            raise CheckFailed(f"the token you return should be a token id (an int); on {where()} you returned "
                              f"{_what(got[1])}.")
        if not 0 <= tok < len(p):
            raise CheckFailed(f"on {where()} you returned token {tok}, outside the vocabulary 0..{len(p) - 1}. If you "
                              f"sample the correction with the CDF (cumsum + a uniform number), normalise "
                              f"max(0, p - q) first: its sum is less than 1, so an unnormalised CDF never reaches "
                              f"the uniform number.")
        accepted.append(acc)
        tokens.append(tok)
    return accepted, tokens


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


def check_rejection_step(fn: Callable, hidden: bool = False) -> None:
    """fn(p, q, draft, generator) -> (accepted, token): one step of speculative sampling
    (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    p, q: float64 probability vectors (V,) of the main model and the drafter; draft ~ q (an int).
    Accept with probability min(1, p[draft] / q[draft]) (then token = draft); otherwise token ~
    norm(max(0, p - q)). Use `generator` for every random number (torch.rand(..., generator=generator),
    torch.multinomial(..., generator=generator)).

    Statistical: for each case, many drafts are drawn from q with fixed seeds and passed through fn;
    the emitted tokens must be distributed as p (Pearson chi-square test at a fixed threshold,
    false-alarm rate below 1e-6 per test, so a right answer passes and, with fixed seeds, always does).
    A crash is explained from the input it happened on, never from the error's text.
    """
    cases = [(name, torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64), draws)
             for name, p, q, draws in (REJECTION_HIDDEN if hidden else REJECTION_CASES)]
    with _guard(fn, _forbid(*_DECODING)):
        for seed, (name, p, q, draws) in enumerate(cases):
            drafts, answers = _rejection_runs(fn, name, p, q, draws, seed + (10 if hidden else 0))
            _judge_rejection(name, p, q, draws, drafts, *_rejection_answers(name, p, q, drafts, answers))
    _passed("rejection_step" + (" (hidden tests)" if hidden else ""), len(cases))


def _judge_rejection(name: str, p: torch.Tensor, q: torch.Tensor, draws: int, drafts: list, accepted: list,
                     tokens: list) -> None:
    wrong = next(((d, t) for d, a, t in zip(drafts, accepted, tokens) if a and t != d), None)
    if wrong is not None:
        raise CheckFailed(f"case '{name}': you accepted draft {wrong[0]} but returned token {wrong[1]}; "
                          f"an accepted draft IS the emitted token (return (True, draft)).")
    hint = _acceptance_hint(p, q, drafts, accepted) or _residual_hint(p, q, drafts, accepted, tokens)
    counts = torch.bincount(torch.tensor(tokens), minlength=len(p)).to(torch.float64)
    stat, df = _chi2(counts, p)
    if hint is None and stat <= _chi2_critical(df):
        return
    empirical = counts / counts.sum()
    tv = 0.5 * float((empirical - p).abs().sum())
    raise CheckFailed(f"case '{name}', p={_fmt(p)}, q={_fmt(q)}: over {draws} drafts d ~ q your emitted "
                      f"tokens are distributed as {_fmt(empirical)}, not as p (total-variation distance "
                      f"{tv:.3f}); {hint or REJECTION_HINT}.")


# ---- assignment 4: verify and accept --------------------------------------------------------------
VERIFY_PROMPTS = ("    def __init__(self, name):\n        self.",
                  'def copy_file(src, dst):\n    """Copy the file src to dst."""\n', "    for i in range(len(")
VERIFY_HIDDEN_PROMPTS = ("class Point:\n    def ", "        return self.")


@functools.lru_cache(maxsize=None)
def _greedy_traces(hidden: bool) -> tuple:
    """(drafts, main_logits, accepted, extra token, where) for every step of `speculative_generate`'s greedy
    traces on the shipped mtp-seq-d3 model in float64 (D = 3 drafts per step; the hidden cases draft 2).
    main_logits (m+1, V) is recomputed for each step by one plain forward over the accepted tokens, the pending
    token and the m drafts: row j holds the main model's logits after the pending token and d_1..d_j."""
    from .pretrained import load_pretrained
    model, tokenizer = load_pretrained("mtp-seq-d3")
    model = model.double().eval()
    settings = [(prompt, 2) for prompt in VERIFY_HIDDEN_PROMPTS] if hidden else [(p, None) for p in VERIFY_PROMPTS]
    steps = []
    for prompt, depth in settings:
        ids = tokenizer.encode(prompt)
        _, trace = decoding.speculative_generate(model, ids, 24, draft_depth=depth)
        seq = ids + [trace.first_token]                          # accepted tokens + the pending token x_(n+1)
        for n, step in enumerate(trace.steps, 1):
            with torch.no_grad():
                logits = model(torch.tensor([seq + step.drafted])).logits[0][0, len(seq) - 1:]     # (m+1, V)
            drafts = list(step.drafted)
            if _ref_verify_greedy(drafts, logits) == (step.accepted, step.extra_token):   # no float64 near-tie
                steps.append((drafts, logits, step.accepted, step.extra_token,
                              f"step {n} of the greedy trace for the prompt {prompt!r} (drafts {drafts})"))
            seq += step.emitted
    if not hidden:                                               # nothing drafted: only the main model's token
        drafts, logits = steps[0][0], steps[0][1]
        steps.append(([], logits[:1].clone(), 0, int(logits[0].argmax()), "a step with no drafts (D = 0)"))
    return tuple(steps)


def _ref_verify_greedy(drafts: list, main_logits: torch.Tensor) -> tuple[int, int]:
    best = main_logits.argmax(-1).tolist()
    a = 0
    while a < len(drafts) and drafts[a] == best[a]:
        a += 1
    return a, best[a]


def _verify_pair(got: Any, name: str, where: str, m: int, V: int, bonus: bool, sampled: bool) -> tuple[int, int]:
    """(a, token) from the student's answer, after checking its types and ranges."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"`{name}` should return a pair (a, token); on {where} it returned {_what(got)}.")
    a, token = _int_or_none(got[0]), _int_or_none(got[1])
    if a is None or not 0 <= a <= m:
        raise CheckFailed(f"the first item, a, is the number of drafts kept: an int from 0 to D = {m}; on {where} "
                          f"you returned {_what(got[0])}.")
    if token is None and bonus and a == m:
        source = "p[D], the last row of p (q has only D rows)" if sampled else "argmax(main_logits[D])"
        raise CheckFailed(f"on {where} every draft is kept, and you returned {_what(got[1])} as the token: the main "
                          f"model still adds one token then, the bonus token, from {source}.")
    if token is None or not 0 <= token < V:
        raise CheckFailed(f"the second item is the token the main model adds: a token id from 0 to {V - 1}; on "
                          f"{where} you returned {_what(got[1])}.")
    return a, token


def _greedy_hint(drafts: list, best: list, a: int, token: int, got_a: int, got_token: int) -> str:
    m = len(drafts)
    if got_a != a:
        shifted = 0
        while shifted < m and drafts[shifted] == best[shifted + 1]:
            shifted += 1
        if got_a == shifted:
            return ("main_logits[j] is the row that predicts drafts[j] (row 0 is the position of the pending token, "
                    "which d_1 follows): compare drafts[j] with argmax(main_logits[j]), not main_logits[j + 1]")
        if got_a == sum(d == b for d, b in zip(drafts, best)):
            return ("you counted every draft that matches; only a PREFIX counts: after the first mismatch the later "
                    "drafts were conditioned on a wrong token, so they are discarded even when they happen to match")
        if got_a == m:
            return ("you kept every draft; keep drafts only while drafts[j] == argmax(main_logits[j]): the first "
                    "mismatch ends the prefix")
        return "keep drafts while drafts[j] == argmax(main_logits[j]); a is the length of that prefix"
    if a < m and got_token == drafts[a]:
        return (f"the rejected draft d_{a + 1} is discarded: the main model's own choice at that position, "
                f"argmax(main_logits[{a}]), replaces it (the correction)")
    if a + 1 <= m and got_token == best[a + 1]:
        return (f"the token comes from row a = {a} of main_logits (the position of the first rejected draft or, when "
                f"all are kept, the one after the last draft); you took row a + 1")
    if a >= 1 and got_token == best[a - 1]:
        return (f"the token comes from row a = {a} of main_logits (the position of the first rejected draft or, when "
                f"all are kept, the one after the last draft); you took row a - 1")
    if a == m:
        return ("every draft was kept, so the token is the bonus: argmax(main_logits[D]), the main model's next token "
                "after the last draft")
    return f"the token the main model adds is argmax(main_logits[a]), here row {a}"


_VERIFY = (*_DECODING, "decoding.generate", "grading._ref_verify_greedy")


def check_verify_greedy(fn: Callable, hidden: bool = False) -> None:
    """fn(drafts, main_logits) -> (a, token): the greedy verify step, checked against `speculative_generate`.

    drafts: [d_1, .., d_D] (D >= 0); main_logits: (D + 1, V), row j = the main model's logits after the pending
    token and d_1..d_j (row 0 predicts d_1's position, row D the position after d_D). a = the longest prefix of
    drafts equal to the rows' argmax; token = argmax(main_logits[a]): the correction at the first mismatch, or
    the bonus token when a = D."""
    cases = _greedy_traces(hidden)
    with _guard(fn, _forbid(*_VERIFY)):
        for drafts, logits, a, token, where in cases:
            got = _call(fn, "verify_greedy", {"drafts": drafts, "main_logits": logits}, where)
            got_a, got_token = _verify_pair(got, "verify_greedy", where, len(drafts), logits.shape[-1], True, False)
            if (got_a, got_token) == (a, token):
                continue
            best = logits.argmax(-1).tolist()
            raise CheckFailed(f"on {where}, where the main model's argmax per row is {best}: speculative_generate "
                              f"kept a = {a} and added token {token}, you returned ({got_a}, {got_token}); "
                              f"{_greedy_hint(drafts, best, a, token, got_a, got_token)}.")
    _passed("verify_greedy" + (" (hidden tests)" if hidden else ""), len(cases))


def _one_hot(index: list, V: int) -> torch.Tensor:
    rows = torch.tensor(index, dtype=torch.long).view(-1, 1)
    return torch.zeros(len(index), V, dtype=torch.float64).scatter_(1, rows, 1.0)


def check_verify_sample_at_temperature_0(fn: Callable, hidden: bool = False) -> None:
    """fn(drafts, p, q, generator) -> (a, token) at temperature 0, where p and q are one-hot: p on the main
    model's argmax at each row, q on each draft. Speculative sampling must then reproduce the greedy trace
    exactly, as `speculative_generate(rule="sample", temperature=0)` does."""
    cases = _greedy_traces(hidden)
    with _guard(fn, _forbid(*_VERIFY)), _seeded_globals(4000):
        for n, (drafts, logits, a, token, where) in enumerate(cases):
            V = logits.shape[-1]
            p, q = _one_hot(logits.argmax(-1).tolist(), V), _one_hot(drafts, V)
            where = f"{where} at temperature 0 (p and q one-hot)"
            got = _call(fn, "verify_sample", {"drafts": drafts, "p": p, "q": q,
                                              "generator": torch.Generator().manual_seed(n)}, where,
                        functools.partial(_verify_facts, p, q, drafts))
            got_a, got_token = _verify_pair(got, "verify_sample", where, len(drafts), V, True, True)
            if (got_a, got_token) == (a, token):
                continue
            if got_a > a:
                hint = (f"you kept d_{a + 1}, which is not the main model's argmax: p[{a}][d] = 0 while q[{a}][d] = 1, "
                        f"so min(1, p/q) = 0 and it is always rejected")
            elif got_a < a:
                hint = (f"you rejected d_{got_a + 1}, the main model's argmax: p[{got_a}][d] = q[{got_a}][d] = 1, so "
                        f"min(1, p/q) = 1 and it is always kept (accept when r < p/q with r uniform in [0, 1))")
            elif a < len(drafts):
                hint = (f"after rejecting d_{a + 1} the correction is sampled from norm(max(0, p[{a}] - q[{a}])), "
                        f"here one-hot on the main model's argmax {token}")
            else:
                hint = (f"every draft was kept: the bonus token is sampled from p[D], the last row of p, here one-hot "
                        f"on {token}")
            raise CheckFailed(f"on {where}: speculative_generate kept a = {a} and added token {token}, you returned "
                              f"({got_a}, {got_token}); {hint}.")
    _passed("verify_sample at temperature 0" + (" (hidden tests)" if hidden else ""), len(cases))


# Each case: (name, p: D + 1 rows, q: D rows, draws); the drafts are drawn from q's rows by the check.
VERIFY_SAMPLE_CASES = [
    ("two drafts", [[0.40, 0.30, 0.20, 0.10], [0.25, 0.25, 0.40, 0.10], [0.10, 0.20, 0.30, 0.40]],
     [[0.10, 0.50, 0.20, 0.20], [0.50, 0.10, 0.10, 0.30]], 6000),
    ("one draft, p with zeros (top-k)", [[0.60, 0.40, 0.00, 0.00], [0.00, 0.00, 0.50, 0.50]],
     [[0.25, 0.25, 0.25, 0.25]], 3000),
    ("no drafts (D = 0): only the bonus token", [[0.10, 0.60, 0.30]], [], 600),
]
VERIFY_SAMPLE_HIDDEN = [
    ("three drafts, one with q == p", [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]],
     [[0.2, 0.3, 0.5], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2]], 6000),
]
VERIFY_RULES = ("right", "always", "from_p", "from_q", "accept_p")
VERIFY_HINTS = {
    "always": "you accept every draft; a draft with p[j][d] < q[j][d] must be rejected with probability "
              "1 - p[j][d] / q[j][d]: keep d_(j+1) with probability min(1, p[j][d] / q[j][d])",
    "from_p": "after a rejection you sampled the correction from p[j]. The kept drafts already supplied min(p, q) of "
              "each token's probability; the correction supplies only what is missing: sample it from "
              "norm(max(0, p[j] - q[j]))",
    "from_q": "after a rejection you sampled the correction from q[j], the drafter; sample it from "
              "norm(max(0, p[j] - q[j]))",
    "accept_p": "you keep a draft with probability p[j][d]; divide by the drafter's q[j][d]: min(1, p[j][d] / q[j][d])",
}
VERIFY_HINT = ("keep d_(j+1) with probability min(1, p[j][d] / q[j][d]); at the first rejection, sample the token "
               "from norm(max(0, p[j] - q[j])) and stop; when every draft is kept, sample the bonus token from p[D]")


def _verify_law(p: torch.Tensor, q: torch.Tensor, drafts: list, rule: str = "right") -> torch.Tensor:
    """P(a, token | drafts) under a rule (right, or a typical mistake), as a (D + 1, V) table: row a holds the
    probability that exactly a drafts are kept and the main model adds each token."""
    m, V = len(drafts), p.shape[-1]
    law = torch.zeros(m + 1, V, dtype=torch.float64)
    reach = 1.0                                                  # P(d_1..d_j all kept)
    for j, d in enumerate(drafts):
        ratio = float(p[j, d] / q[j, d])
        keep = {"always": 1.0, "accept_p": float(p[j, d])}.get(rule, min(1.0, ratio))
        if rule == "from_p":
            correction = p[j]
        elif rule == "from_q":
            correction = q[j]
        else:
            residual = (p[j] - q[j]).clamp_min(0)
            correction = residual / residual.sum() if float(residual.sum()) > 0 else residual
        law[j] = reach * (1 - keep) * correction
        reach *= keep
    law[m] = reach * p[m]
    return law


def _verify_facts(p: torch.Tensor, q: torch.Tensor, drafts: list) -> str:
    """What about this input may explain a crash (from the input alone)."""
    ratios = [float(p[j, d] / q[j, d]) for j, d in enumerate(drafts)]
    big = [(j, r) for j, r in enumerate(ratios) if r > 1]
    text = (f"(Here D = {len(drafts)}: p has D + 1 = {p.shape[0]} rows, q has D = {q.shape[0]}; p[D] is the bonus "
            f"token's distribution.")
    if big:
        j, r = big[0]
        text += (f" p[{j}][d_{j + 1}] / q[{j}][d_{j + 1}] = {r:.3g} > 1: used as a probability it must be capped, "
                 f"min(1, p/q).")
    return text + ")"


def _verify_runs(fn: Callable, name: str, p: torch.Tensor, q: torch.Tensor, draws: int, seed: int) -> dict:
    """Draw the drafts from q's rows `draws` times and call fn on each; returns {drafts: (D + 1, V) counts of
    (a, token)}. Raises at once when fn returns, after every one of its rejections, the rejected draft itself."""
    m, V = q.shape[0], p.shape[-1]
    draft_g, student_g = torch.Generator().manual_seed(5000 + seed), torch.Generator().manual_seed(6000 + seed)
    columns = [torch.multinomial(q[j], draws, replacement=True, generator=draft_g).tolist() for j in range(m)]
    drawn = [list(ds) for ds in zip(*columns)] if m else [[] for _ in range(draws)]
    where = lambda drafts: f"case '{name}' with drafts {drafts}"
    counts: dict[tuple, torch.Tensor] = {}
    rejections, returned_draft = 0, 0
    with _seeded_globals(7000 + seed):
        for drafts in drawn:
            got = _call(fn, "verify_sample", {"drafts": drafts, "p": p, "q": q, "generator": student_g},
                        functools.partial(where, drafts), functools.partial(_verify_facts, p, q, drafts))
            a, token = _verify_pair(got, "verify_sample", where(drafts), m, V, True, True)
            rejections += a < m
            returned_draft += a < m and token == drafts[a]
            counts.setdefault(tuple(drafts), torch.zeros(m + 1, V, dtype=torch.float64))[a, token] += 1
    if rejections >= 20 and returned_draft == rejections:
        raise CheckFailed(f"case '{name}': after each of your {rejections} rejections you returned the rejected draft "
                          f"itself; the token is a NEW one, sampled from norm(max(0, p[j] - q[j])), which gives the "
                          f"rejected draft probability 0 whenever it was rejected for p[j][d] < q[j][d].")
    return counts


def check_verify_sample(fn: Callable, hidden: bool = False) -> None:
    """fn(drafts, p, q, generator) -> (a, token): the speculative-sampling verify step over D drafts
    (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    p: (D + 1, V) float64, the main model's distribution at each drafted position and after the last draft;
    q: (D, V), the drafter's distribution each draft was drawn from. Keep d_(j+1) with probability
    min(1, p[j][d] / q[j][d]); at the first rejection return (j, t) with t ~ norm(max(0, p[j] - q[j])); when
    every draft is kept return (D, t) with the bonus t ~ p[D]. Draw every random number from `generator`.

    Statistical: for each case, the drafts are drawn from q many times with fixed seeds, and the counts of
    (drafts, a, token) are tested against the exact law of the rule (Pearson chi-square per drafts, pooled;
    false-alarm rate below 1e-6 per case). A wrong rule is named by which typical mistake fits best."""
    cases = [(name, torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64).view(len(q), len(p[0])),
              draws) for name, p, q, draws in (VERIFY_SAMPLE_HIDDEN if hidden else VERIFY_SAMPLE_CASES)]
    with _guard(fn, _forbid(*_VERIFY)):
        for seed, (name, p, q, draws) in enumerate(cases):
            counts = _verify_runs(fn, name, p, q, draws, seed + (10 if hidden else 0))
            _judge_verify(name, p, q, draws, counts)
    _passed("verify_sample" + (" (hidden tests)" if hidden else ""), len(cases))


def _judge_verify(name: str, p: torch.Tensor, q: torch.Tensor, draws: int, counts: dict) -> None:
    laws = {rule: {drafts: _verify_law(p, q, list(drafts), rule) for drafts in counts} for rule in VERIFY_RULES}
    stat, df = _chi2_groups((c.flatten(), laws["right"][d].flatten()) for d, c in counts.items())
    if stat <= _chi2_critical(df):
        return

    def loglik(rule):
        total = 0.0
        for drafts, c in counts.items():
            law = laws[rule][drafts]
            if bool(((law <= 0) & (c > 0)).any()):
                return -math.inf
            total += float((c[c > 0] * law[c > 0].log()).sum())
        return total
    best = max(VERIFY_RULES, key=loglik)
    m, V = q.shape[0], p.shape[-1]
    first = torch.zeros(V, dtype=torch.float64)                 # the first emitted token: d_1 if kept, else the token
    for drafts, c in counts.items():
        if m:
            first[drafts[0]] += float(c[1:].sum())
            first += c[0]
        else:
            first += c[0]
    first /= first.sum()
    rows = lambda t: "[" + ", ".join(_fmt(r) for r in t) + "]"
    test = ("some of them cannot occur under it" if math.isinf(stat) else
            f"chi-square {stat:.0f} on {df} degrees of freedom, limit {_chi2_critical(df):.0f}")
    hint = VERIFY_HINTS.get(best, VERIFY_HINT)
    raise CheckFailed(f"case '{name}' (p = {rows(p)}, q = {rows(q)}): over {draws} draws of the drafts, your "
                      f"outcomes (a, token) do not follow speculative sampling ({test}). Your first emitted token is "
                      f"distributed as {_fmt(first)}; it should follow p[0] = {_fmt(p[0])}. "
                      f"{hint[0].upper() + hint[1:]}.")


# ---- assignment 5: tree attention ---------------------------------------------------------------
TREE_CASES = [
    # (name, parents, position ids, what each node attends to: itself and its ancestors)
    ("Medusa's toy tree", [-1, 0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 1, 2, 2, 2, 2, 2, 2],
     [[0], [0, 1], [0, 2], [0, 1, 3], [0, 1, 4], [0, 1, 5], [0, 2, 6], [0, 2, 7], [0, 2, 8]]),
    ("a chain (one draft per depth, as in speculative_generate)", [-1, 0, 1, 2], [0, 1, 2, 3],
     [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]),
    ("the root alone", [-1], [0], [[0]]),
    ("nodes not in breadth-first order", [-1, 0, 1, 0, 3, 2, 1], [0, 1, 2, 1, 2, 3, 2],
     [[0], [0, 1], [0, 1, 2], [0, 3], [0, 3, 4], [0, 1, 2, 5], [0, 1, 6]]),
]


def _ref_tree(parents: list) -> tuple[list[int], list[list[int]]]:
    """(depth of each node, the sorted ancestors-or-self of each node), by walking up the parents."""
    depths, seen = [], []
    for i in range(len(parents)):
        chain, j = [i], i
        while parents[j] >= 0:
            j = parents[j]
            chain.append(j)
        depths.append(len(chain) - 1)
        seen.append(sorted(chain))
    return depths, seen


def _hidden_trees() -> list:
    g = random.Random(11)
    trees = [("a random tree of 20 nodes", [-1] + [g.randrange(i) for i in range(1, 20)]),
             ("a root with 12 children", [-1] + [0] * 12),
             ("two long branches", [-1, 0, 1, 2, 3, 0, 5, 6, 7])]
    return [(name, parents, *_ref_tree(parents)) for name, parents in trees]


def _tree_forbid() -> list:
    """The package's own tree code: every function and class defined in a module whose name contains 'tree'
    (mtp_edu.tree: tree_mask, tree_depths, verify_layout, ...), and every mtp_edu function or class whose
    name contains 'tree' (the tree, drafting and decoding modules are imported first)."""
    import mtp_edu
    names = [f"mtp_edu.{m.name}" for m in pkgutil.iter_modules(mtp_edu.__path__)
             if any(word in m.name for word in ("tree", "draft", "decod"))]
    for name in names:                               # a package (mtp_edu/decoding/, say): its modules too
        with contextlib.suppress(Exception):
            module = importlib.import_module(name)
            names += [f"{name}.{m.name}" for m in pkgutil.iter_modules(getattr(module, "__path__", []))]
    found = []
    for key, module in list(sys.modules.items()):
        if key.startswith("mtp_edu") and key != __name__ and module is not None:
            found += [(module, name) for name, value in vars(module).items()
                      if callable(value) and getattr(value, "__module__", "").startswith("mtp_edu")
                      and ("tree" in name.lower() or "tree" in key.rsplit(".", 1)[-1]
                           and value.__module__ == key)]
    return found + [(_this(), "_ref_tree")]


def _tree_cases(hidden: bool) -> list:
    return _hidden_trees() if hidden else TREE_CASES


def check_tree_position_ids(fn: Callable, hidden: bool = False) -> None:
    """fn(parents) -> position ids, a 1-d integer tensor: node i's depth in the draft tree (the root, the pending
    token, has depth 0). parents[0] = -1 for the root; parents[i] < i for every other node."""
    cases = _tree_cases(hidden)
    with _guard(fn, _tree_forbid()):
        for name, parents, want, _ in cases:
            where = f"{name}, parents {_short(parents)}"
            got = _call(fn, "tree_position_ids", {"parents": list(parents)}, where)
            if isinstance(got, (list, tuple)):
                raise CheckFailed(f"`tree_position_ids` returned a {type(got).__name__} on {where}; return a tensor: "
                                  f"torch.tensor(your_list).")
            if isinstance(got, torch.Tensor) and (got.is_floating_point() or got.is_complex()
                                                  or got.dtype == torch.bool):
                raise CheckFailed(f"`tree_position_ids` returned a {got.dtype} tensor on {where}; position ids are "
                                  f"integers (they index the rotary tables): torch.tensor of a list of ints is int64.")
            got = _tensor_result(got, "tree_position_ids", where, (len(parents),),
                                 got.dtype if isinstance(got, torch.Tensor) else torch.long, "one position per node")
            got = got.tolist()
            if got == want:
                continue
            if got == list(range(len(parents))):
                hint = ("position ids are depths in the tree, not node indices: siblings are alternatives for the same "
                        "next token, so they share a position")
            elif got == [w + 1 for w in want]:
                hint = "the root (the pending token) has position 0 here, its children 1, and so on"
            elif got == [max(x, 0) for x in parents]:
                hint = "you returned the parents' indices; a node's position is its depth: its parent's position + 1"
            else:
                hint = "a node's position is its depth: 0 for the root, its parent's position + 1 for every other node"
            raise CheckFailed(f"on {where}: expected position ids {want}, got {got}; {hint}.")
    _passed("tree_position_ids" + (" (hidden tests)" if hidden else ""), len(cases))


def _mask_of(rows: list[list[int]]) -> torch.Tensor:
    n = len(rows)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, row in enumerate(rows):
        mask[i, row] = True
    return mask


def check_tree_attention_mask(fn: Callable, hidden: bool = False) -> None:
    """fn(parents) -> mask, a (N, N) bool tensor: mask[i, j] is True exactly when node j is node i or one of its
    ancestors, so that each node attends to its own path from the root and to nothing else of the tree."""
    cases = _tree_cases(hidden)
    with _guard(fn, _tree_forbid()):
        for name, parents, _, rows in cases:
            where = f"{name}, parents {_short(parents)}"
            want, n = _mask_of(rows), len(parents)
            got = _call(fn, "tree_attention_mask", {"parents": list(parents)}, where)
            if isinstance(got, torch.Tensor) and got.shape == (n, n) and got.dtype != torch.bool:
                raise CheckFailed(f"`tree_attention_mask` returned a {got.dtype} tensor on {where}; return dtype "
                                  f"torch.bool (True = may attend): F.scaled_dot_product_attention ADDS a float mask "
                                  f"to the attention scores, so 0/1 floats would not hide anything.")
            got = _tensor_result(got, "tree_attention_mask", where, (n, n), torch.bool, "N x N, True = may attend")
            if torch.equal(got, want):
                continue
            parent_only = torch.eye(n, dtype=torch.bool)
            for i, j in enumerate(parents):
                if j >= 0:
                    parent_only[i, j] = True
            i, j = (got != want).nonzero()[0].tolist()
            if torch.equal(got, want.T):
                hint = ("the mask is transposed: row i says what node i may attend to, itself and its ancestors; "
                        "yours lets a node see its descendants")
            elif torch.equal(got, parent_only):
                hint = "a node attends to ALL its ancestors up to the root, not only to its parent"
            elif torch.equal(got, torch.ones(n, n, dtype=torch.bool).tril()):
                hint = ("this is the causal mask of a chain; in a tree a node must not see the other branches (its "
                        "siblings and their subtrees), even when they come earlier in the list")
            elif torch.equal(got, want & ~torch.eye(n, dtype=torch.bool)):
                hint = "a node also attends to itself: the diagonal is True"
            else:
                hint = "mask[i, j] is True exactly when j is i or an ancestor of i (follow parents[] up to the root)"
            raise CheckFailed(f"on {where}: mask[{i}, {j}] should be {bool(want[i, j])}: node {j} is "
                              f"{'' if want[i, j] else 'not '}node {i} or one of its ancestors "
                              f"(node {i} sees {rows[i]}); {hint}.")
    _passed("tree_attention_mask" + (" (hidden tests)" if hidden else ""), len(cases))
