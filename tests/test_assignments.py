"""Assignments: student versions are up to date, the checks catch typical mistakes with a specific
message, and an untouched student version fails its first check. (Solutions run under nbmake.)"""

from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from mtp_edu.grading import (
    CheckFailed,
    check_depth_loss,
    check_greedy_accept,
    check_mtp_module,
    check_rejection_step,
    check_shift_targets,
)
from mtp_edu.tools.assignments import solutions, strip_solutions, student_path, student_version

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = solutions(ROOT)


def test_there_are_assignments():
    assert len(SOLUTIONS) >= 3


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_student_version_is_up_to_date(solution):
    committed = nbformat.read(student_path(solution), as_version=4)
    fresh = student_version(nbformat.read(solution, as_version=4))
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], \
        "stale student version: run `mtp-edu assignments`"
    assert "BEGIN SOLUTION" not in str(committed) and "NotImplementedError" in str(committed)


def test_strip_keeps_indentation_and_refuses_unbalanced_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert strip_solutions(src) == 'def f(x):\n    raise NotImplementedError("your code here")\n'
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_untouched_student_version_fails_its_first_check(solution, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(student_path(solution), as_version=4)
    with pytest.raises(CellExecutionError) as err:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "CheckFailed" in str(err.value) and "is not implemented yet" in str(err.value)


# ---- the checks themselves -------------------------------------------------------------------
def test_shift_check_catches_an_off_by_one():
    def off_by_one(tokens, depth):                  # t_{i+k} instead of t_{i+k+1}
        T = len(tokens) - 1
        return [[tokens[i + k - 1] if i + k <= T else None for i in range(1, T + 1)] for k in range(depth + 1)]
    with pytest.raises(CheckFailed, match=r"predicts t_\(i\+k\+1\)"):
        check_shift_targets(off_by_one)


def test_shift_check_catches_missing_padding():
    def no_pad(tokens, depth):
        T = len(tokens) - 1
        return [[tokens[i + k] for i in range(1, T + 1) if i + k < len(tokens)] for k in range(depth + 1)]
    with pytest.raises(CheckFailed, match="one cell per position"):
        check_shift_targets(no_pad)


def test_module_check_names_the_swapped_concatenation():
    def paper_order(model, k, h_prev, tokens):
        m = model.mtp[k - 1]
        return m.block(m.eh_proj(torch.cat([m.hnorm(h_prev), m.enorm(model.embed(tokens))], -1)), model.rope)
    with pytest.raises(CheckFailed, match="concatenation order is reversed"):
        check_mtp_module(paper_order)


def test_loss_check_names_the_unshifted_targets():
    def unshifted(logits_k, targets, k):
        return F.cross_entropy(logits_k.flatten(0, 1), targets[:, :targets.shape[1] - k].flatten(), ignore_index=-100)
    with pytest.raises(CheckFailed, match=r"targets\[:, k:\]"):
        check_depth_loss(unshifted)


def test_a_crash_in_student_code_is_reported_with_its_input():
    with pytest.raises(CheckFailed, match="raised ZeroDivisionError"):
        check_shift_targets(lambda tokens, depth: 1 / 0)



# ---- assignment 3: acceptance rules ----------------------------------------------------------------
def greedy_right(drafts, main_argmax):
    a = 0
    while a < len(drafts) and drafts[a] == main_argmax[a]:
        a += 1
    return a


def test_greedy_check_passes_a_right_answer():
    assert check_greedy_accept(greedy_right)


@pytest.mark.parametrize("wrong, message", [
    (lambda d, m: sum(x == y for x, y in zip(d, m)), "only a PREFIX counts"),                 # every match counted
    (lambda d, m: greedy_right(d, m[1:]), r"not main_argmax\[j \+ 1\]"),                     # shifted by one
    (lambda d, m: greedy_right(d, m) + (greedy_right(d, m) == len(d)), "at most the number of drafts"),  # bonus counted
    (lambda d, m: [x == y for x, y in zip(d, m)], "should return how many"),                  # a list, not a count
], ids=["counts-all-matches", "shifted", "counts-the-bonus", "returns-a-list"])
def test_greedy_check_names_the_mistake(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_greedy_accept(wrong)


def _keep(p, q, d, g):
    return bool(torch.rand((), generator=g, dtype=p.dtype) < p[d] / q[d])


def rejection_right(p, q, d, g):
    if _keep(p, q, d, g):
        return True, d
    r = (p - q).clamp_min(0)
    return False, int(torch.multinomial(r / r.sum(), 1, generator=g))


def rejection_ignoring_the_generator(p, q, d, g):        # global RNGs: the check still repeats exactly
    import random
    if random.random() < min(1.0, float(p[d] / q[d])):
        return True, d
    return False, int(torch.multinomial((p - q).clamp_min(0), 1))


def test_rejection_check_passes_right_answers_repeatably():
    for fn in (rejection_right, rejection_ignoring_the_generator, rejection_ignoring_the_generator):
        assert check_rejection_step(fn)


def _always(p, q, d, g):
    return True, d


def _resample_from_p(p, q, d, g):
    return (True, d) if _keep(p, q, d, g) else (False, int(torch.multinomial(p, 1, generator=g)))


def _bernoulli_without_min(p, q, d, g):
    if torch.bernoulli(p[d] / q[d], generator=g):
        return True, d
    return False, int(torch.multinomial((p - q).clamp_min(0), 1, generator=g))


def _unnormalised_cdf(p, q, d, g):
    if _keep(p, q, d, g):
        return True, d
    cdf = (p - q).clamp_min(0).cumsum(0)
    return False, int(torch.searchsorted(cdf, torch.rand((), generator=g, dtype=p.dtype)))


def _unnormalised_numpy(p, q, d, g):
    import numpy as np
    if _keep(p, q, d, g):
        return True, d
    return False, int(np.random.default_rng(0).choice(len(p), p=(p - q).clamp_min(0).numpy()))


def _accept_with_p(p, q, d, g):
    if torch.rand((), generator=g, dtype=p.dtype) < p[d]:
        return True, d
    r = (p - q).clamp_min(0)
    return False, int(torch.multinomial(r if r.sum() > 0 else p, 1, generator=g))


def _return_the_draft(p, q, d, g):
    return (True, d) if _keep(p, q, d, g) else (False, d)


@pytest.mark.parametrize("wrong, message", [
    (_always, "you accept every draft"),
    (_resample_from_p, "you sampled from p"),
    (_bernoulli_without_min, r"can exceed 1.*min\(1, p\[draft\] / q\[draft\]\)"),
    (_unnormalised_cdf, "normalise max"),
    (_unnormalised_numpy, "normalise it"),
    (_accept_with_p, r"you accept with probability p\[draft\]"),
    (_return_the_draft, "returned the rejected draft itself"),
], ids=["always-accepts", "resamples-from-p", "bernoulli-without-min", "unnormalised-cdf", "unnormalised-numpy",
        "accepts-with-p", "returns-the-draft"])
def test_rejection_check_names_the_mistake(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_rejection_step(wrong)
