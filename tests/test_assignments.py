"""Assignments: the solution notebooks are valid nbgrader source notebooks, the student versions are up to
date, an untouched student version fails its first check, and the checks catch typical mistakes, broken
functions and calls of the package's own answer, each with one specific message. (The solutions run
under nbmake; tests/test_nbgrader.py runs the whole nbgrader loop.)"""

import re
import threading
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import mtp_edu
from mtp_edu import grading, shift_table
from mtp_edu.cli import UserError
from mtp_edu.grading import (
    CheckFailed,
    check_depth_loss,
    check_greedy_accept,
    check_mtp_module,
    check_rejection_step,
    check_shift_inputs,
    check_shift_targets,
    check_tree_attention_mask,
    check_tree_position_ids,
    check_verify_greedy,
    check_verify_sample,
    check_verify_sample_at_temperature_0,
)
from mtp_edu.losses import depth_loss
from mtp_edu.tools.assignments import solutions, student_path, student_version

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = solutions(ROOT)


def test_there_are_five_assignments():
    assert [p.name.removesuffix("_solution.ipynb") for p in SOLUTIONS] == [
        "a1_shift_table", "a2_mtp_module", "a3_acceptance_rules", "a4_verify_and_accept", "a5_tree_attention"]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_student_version_is_up_to_date(solution):
    committed = nbformat.read(student_path(solution), as_version=4)
    fresh = student_version(nbformat.read(solution, as_version=4))
    assert nbformat.writes(committed) == nbformat.writes(fresh), "stale student version: run `mtp-edu assignments`"
    assert "BEGIN SOLUTION" not in str(committed) and "BEGIN HIDDEN TESTS" not in str(committed)
    assert "NotImplementedError" in str(committed)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_notebooks_carry_nbgrader_metadata(solution):
    """Every cell is a solution, an autograded check or read-only; each check's points are stated in its first
    line and its task's heading; every check has hidden tests; every solution cell is followed by a check."""
    nb = nbformat.read(solution, as_version=4)
    kinds, headings = [], {}
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        assert meta["schema_version"] == 3 and meta["grade_id"] == cell.get("id")
        if meta["solution"]:
            assert cell.cell_type == "code" and not meta["grade"] and not meta["locked"]
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
            kinds.append("solution")
        elif meta["grade"]:
            points = int(re.match(r"# (\d+) points?: ", cell.source).group(1))
            assert meta["locked"] and meta["points"] == points, meta["grade_id"]
            assert "### BEGIN HIDDEN TESTS" in cell.source and "hidden=True" in cell.source
            assert "BEGIN SOLUTION" not in cell.source
            kinds.append(points)
        else:
            assert meta["locked"] and "BEGIN SOLUTION" not in cell.source and "HIDDEN" not in cell.source
            heading = re.search(r"^## Task \d+: .*\((\d+) points?\)$", cell.source, re.M)
            if heading:
                headings[len(kinds)] = int(heading.group(1))
            kinds.append("read-only")
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells]
    assert len(ids) == len(set(ids))
    for i, kind in enumerate(kinds):
        if kind == "solution":
            assert isinstance(kinds[i + 1], int), "a solution cell without a check right after it"
    # the points of the checks that follow a task's heading add up to the heading's
    starts = sorted(headings)
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(kinds)
        assert sum(k for k in kinds[start:end] if isinstance(k, int)) == headings[start]
    assert sum(k for k in kinds if isinstance(k, int)) == sum(headings.values()) > 0


def test_nbgraders_generation_keeps_indentation_and_refuses_a_solution_outside_a_solution_cell():
    meta = {"grade": False, "grade_id": "f", "locked": False, "schema_version": 3, "solution": True, "task": False}
    cell = nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n",
                                     metadata={"nbgrader": meta})
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                     "display_name": "Python 3"}})
    out = student_version(nb)
    assert out.cells[0].source == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert out.cells[0].metadata["nbgrader"]["checksum"]
    del cell.metadata["nbgrader"]                                  # the markers in a plain cell: nbgrader refuses
    with pytest.raises(UserError, match="Solution region detected in a non-solution cell"):
        student_version(nb, "demo.ipynb")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_untouched_student_version_fails_its_first_check(solution, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(student_path(solution), as_version=4)
    with pytest.raises(CellExecutionError) as err:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "CheckFailed" in str(err.value) and "is not implemented yet" in str(err.value)


# ---- the harness: what every check does with the student's function ---------------------------
def shift_right(tokens, depth):
    T = len(tokens) - 1
    return [[tokens[i + k] if i + k <= T else None for i in range(1, T + 1)] for k in range(depth + 1)]


def test_a_passing_check_prints_a_tick_and_returns_nothing(capsys):
    assert check_shift_targets(shift_right) is None            # no output for nbgrader to read as a score
    assert capsys.readouterr().out == "\u2714 shift_targets: all 4 cases pass\n"


def test_a_failure_shows_its_message_and_no_traceback_in_a_notebook():
    err = CheckFailed("what was wrong, on which input")
    assert err._render_traceback_() == ["CheckFailed: what was wrong, on which input"]    # what IPython shows


def test_a_crash_is_reported_with_its_input_and_the_students_line():
    def crashes(tokens, depth):
        return tokens[0] / 0
    with pytest.raises(CheckFailed, match=r"raised TypeError: .* \(in `crashes`, line \d+: `return tokens\[0\] / 0`\), "
                                          r"on tokens \['t1', .*depth=2\.$") as err:
        check_shift_targets(crashes)
    assert err.value.__suppress_context__                      # the student's traceback is not chained


def test_an_endless_loop_is_stopped(monkeypatch):
    monkeypatch.setattr(grading, "TIME_LIMIT", 0.2)

    def loops(tokens, depth):
        while True:
            pass
    with pytest.raises(CheckFailed, match=r"did not return within 0.2 s on tokens .*: does a loop never end\?"):
        check_shift_targets(loops)


def test_an_endless_loop_is_stopped_outside_the_main_thread_too(monkeypatch):
    monkeypatch.setattr(grading, "TIME_LIMIT", 0.2)
    stop, caught = threading.Event(), []

    def loops(tokens, depth):
        while not stop.is_set():
            pass

    def run():
        try:
            check_shift_targets(loops)
        except CheckFailed as err:
            caught.append(str(err))
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    stop.set()                                                  # let the abandoned call end
    assert caught and "did not return within 0.2 s" in caught[0]


def test_wrong_types_get_one_sentence_each():
    with pytest.raises(CheckFailed, match=r"row k=0 should be a list .* it is 1 \(an int\)"):
        check_shift_targets(lambda tokens, depth: [1] * (depth + 1))
    with pytest.raises(CheckFailed, match=r"should return a list of depth \+ 1 = 3 rows .* it returned None\."):
        check_shift_targets(lambda tokens, depth: None)


# ---- assignment 1 -----------------------------------------------------------------------------------
def test_the_references_are_the_packages_tables():
    for tokens, depth in grading.SHIFT_CASES + grading.SHIFT_HIDDEN[1:]:
        table = shift_table(tokens, depth)
        assert grading._ref_shift_targets(tokens, depth) == table.targets
        assert grading._ref_shift_inputs(tokens, depth) == table.inputs
    with pytest.raises(ValueError, match="too short"):        # the first hidden case: the package refuses it
        shift_table(*grading.SHIFT_HIDDEN[0])


def test_shift_checks_pass_right_answers_and_name_the_mistakes():
    def inputs_right(tokens, depth):
        T = len(tokens) - 1
        return [[tokens[i + k - 1] if i <= T - k else None for i in range(1, T + 1)] for k in range(depth + 1)]
    for hidden in (False, True):
        check_shift_targets(shift_right, hidden)
        check_shift_inputs(inputs_right, hidden)
    off_by_one = lambda tokens, depth: [[None] + row[:-1] for row in shift_right(tokens, depth)]
    with pytest.raises(CheckFailed, match=r"position i=1 predicts t_\(i\+k\+1\) = t_2 = 't2'; you gave None"):
        check_shift_targets(off_by_one)
    no_pad = lambda tokens, depth: [[x for x in row if x is not None] for row in shift_right(tokens, depth)]
    with pytest.raises(CheckFailed, match="row k=1 should have one cell per position i = 1..T"):
        check_shift_targets(no_pad)
    with pytest.raises(CheckFailed, match=r"the main model \(k=0\) reads t_i = t_1 = 't1'"):
        check_shift_inputs(shift_right)                         # the targets where the inputs are asked


def test_a_slice_and_pad_answer_passes_the_visible_cases_and_fails_a_hidden_one():
    slice_and_pad = lambda tokens, depth: [tokens[k + 1:] + [None] * k for k in range(depth + 1)]
    check_shift_targets(slice_and_pad)
    with pytest.raises(CheckFailed, match=r"tokens \[7, 8, 9\], depth=3: row k=3 should have one cell"):
        check_shift_targets(slice_and_pad, hidden=True)


def test_calling_the_package_is_refused_however_it_is_reached():
    via_module = lambda tokens, depth: mtp_edu.shifts.shift_table(tokens, depth).targets
    via_package = lambda tokens, depth: mtp_edu.shift_table(tokens, depth).targets
    space = {"shift_table": shift_table}                        # `from mtp_edu import shift_table` in the notebook
    exec("def via_global(tokens, depth):\n    return shift_table(tokens, depth).targets\n", space)
    via_reference = lambda tokens, depth: grading._ref_shift_targets(tokens, depth)
    for fn in (via_module, via_package, space["via_global"], via_reference):
        with pytest.raises(CheckFailed, match="that is mtp_edu's own answer to this exercise"):
            check_shift_targets(fn)
    assert space["shift_table"] is shift_table and mtp_edu.shift_table is shift_table   # all restored
    assert mtp_edu.shifts.shift_table is shift_table and grading._ref_shift_targets.__name__ == "_ref_shift_targets"


# ---- assignment 2 -----------------------------------------------------------------------------------
def module_right(model, k, h_prev, ids):
    m, T = model.mtp[k - 1], ids.shape[1]
    x = torch.cat([m.enorm(model.embed(ids[:, k:])), m.hnorm(h_prev[:, :T - k])], dim=-1)
    return m.block(m.eh_proj(x), model.rope)


def with_(change):
    """module_right with one thing changed: a typical mistake."""
    def fn(model, k, h_prev, ids):
        m, T = model.mtp[k - 1], ids.shape[1]
        e, h = model.embed(ids[:, k - 1:T - 1] if change == "tokens" else ids[:, k:]), h_prev[:, :T - k]
        parts = {"order": [m.hnorm(h), m.enorm(e)], "norms": [m.hnorm(e), m.enorm(h)], "none": [e, h]}
        x = torch.cat(parts.get(change, [m.enorm(e), m.hnorm(h)]), dim=-1)
        return m.eh_proj(x) if change == "block" else m.block(m.eh_proj(x), model.rope)
    return fn


def test_the_module_reference_is_the_model_and_the_check_models_have_distinct_gains():
    for model, k, h_prev, ids in grading._module_cases(False) + grading._module_cases(True):
        with torch.no_grad():
            assert torch.allclose(grading._ref_module(model, k, h_prev, ids), model(ids).hidden[k], rtol=0, atol=1e-12)
        m = model.mtp[k - 1]
        assert not torch.equal(m.enorm.weight, m.hnorm.weight) and not torch.equal(m.enorm.weight,
                                                                                   torch.ones_like(m.enorm.weight))


def test_module_check_passes_a_right_answer_and_names_each_mistake():
    check_mtp_module(module_right)
    check_mtp_module(module_right, hidden=True)
    for change, message in [("order", "the concatenation order is reversed"),
                            ("norms", "enorm and hnorm are swapped"),       # caught: the gains differ
                            ("none", "the two RMSNorms are missing"),
                            ("block", "the transformer block is missing"),
                            ("tokens", "off by one in the tokens")]:
        with pytest.raises(CheckFailed, match=message):
            check_mtp_module(with_(change))


def test_module_check_refuses_the_package_and_reports_broken_answers():
    def calls_module(model, k, h_prev, ids):
        T = ids.shape[1]
        return model.mtp[k - 1](h_prev[:, :T - k], model.embed(ids[:, k:]), model.rope)
    with pytest.raises(CheckFailed, match=r"called `SequentialMTP.forward`"):
        check_mtp_module(calls_module)
    with pytest.raises(CheckFailed, match=r"called `MTPModel.forward`"):
        check_mtp_module(lambda model, k, h_prev, ids: model(ids).hidden[k])
    with pytest.raises(CheckFailed, match=r"float32 tensor .* Apart from that, your values are right"):
        check_mtp_module(lambda *args: module_right(*args).float())     # was "Float did not match Double"
    with pytest.raises(CheckFailed, match=r"returned a numpy array"):   # was "shape (2, 11, 16); got (2, 11, 16)"
        check_mtp_module(lambda *args: module_right(*args).numpy())
    with pytest.raises(CheckFailed, match=r"should return shape \(2, 11, 16\) .* yours has shape \(2, 12, 16\)"):
        check_mtp_module(lambda model, k, h_prev, ids: h_prev)
    with pytest.raises(CheckFailed, match=r"returned NaN or infinite values"):
        check_mtp_module(lambda *args: module_right(*args) * float("nan"))

    def zeroes_the_weights(model, k, h_prev, ids):                      # was "concatenation order is reversed"
        model.mtp[k - 1].eh_proj.weight.zero_()
        return module_right(model, k, h_prev, ids)
    with pytest.raises(CheckFailed, match=r"changed its argument `model` in place \(the model's `mtp.0.eh_proj"):
        check_mtp_module(zeroes_the_weights)

    def no_slice(model, k, h_prev, ids):
        m = model.mtp[k - 1]
        return m.block(m.eh_proj(torch.cat([m.enorm(model.embed(ids[:, k:])), m.hnorm(h_prev)], -1)), model.rope)
    with pytest.raises(CheckFailed, match=r"raised RuntimeError: .* \(Here h_prev holds h\^\(k-1\) at its T-k\+1 = "
                                          r"12 positions and ids all T = 12 tokens; module k=1 has the positions"):
        check_mtp_module(no_slice)


def test_a_crash_message_stays_short_even_when_the_error_shows_the_model():
    def raises(model, k, h_prev, ids):
        raise ValueError(f"cannot use {model}")                          # a 1 KB repr, several lines
    with pytest.raises(CheckFailed) as err:
        check_mtp_module(raises)
    assert len(str(err.value)) < 600 and "eh_proj" not in str(err.value)


def loss_right(logits_k, targets, k, ignore_index=-100):
    return F.cross_entropy(logits_k.flatten(0, 1), targets[:, k:].flatten(), ignore_index=ignore_index)


def test_the_loss_reference_is_the_packages_and_the_padding_matters():
    for logits, targets, k, ignore_index in grading._loss_cases(False) + grading._loss_cases(True):
        want = depth_loss(logits, targets[:, k:], ignore_index=ignore_index)
        assert torch.allclose(grading._ref_depth_loss(logits, targets, k, ignore_index), want, rtol=1e-12)
        padded = targets[:, k:] == ignore_index
        assert padded.any() and not padded.all()
        everything = F.cross_entropy(logits.flatten(0, 1), targets[:, k:].flatten(), reduction="none",
                                     ignore_index=ignore_index).mean()
        assert not torch.isclose(everything, want)                     # the divisor is checked in every case


def test_loss_check_passes_a_right_answer_and_names_each_mistake():
    check_depth_loss(loss_right)
    check_depth_loss(loss_right, hidden=True)
    ce = lambda logits, t, **kw: F.cross_entropy(logits.flatten(0, 1), t.flatten(), **kw)
    mistakes = [
        (lambda lg, t, k, ig=-100: ce(lg, t[:, :t.shape[1] - k], ignore_index=ig), r"targets\[:, k:\]"),
        (lambda lg, t, k, ig=-100: ce(lg, t[:, k:], ignore_index=ig, reduction="sum") / t.numel(),
         r"you divided by B\*T = 22"),
        (lambda lg, t, k, ig=-100: ce(lg, t[:, k:], ignore_index=ig, reduction="none").mean(),
         r"all B\*\(T-k\) = 20 positions of depth k, padding included"),
        (lambda lg, t, k, ig=-100: ce(lg, t[:, k:], ignore_index=ig, reduction="sum"), "you returned the sum"),
        (lambda lg, t, k, ig=-100: ce(lg, t[:, k + 1:], ignore_index=ig), r"raised ValueError: .*\(Here logits_k has"),
    ]
    for fn, message in mistakes:
        with pytest.raises(CheckFailed, match=message):
            check_depth_loss(fn)


def test_padding_that_the_default_ignore_index_does_not_handle_is_caught_by_the_hidden_tests():
    default_only = lambda logits, t, k, ignore_index=-100: F.cross_entropy(logits.flatten(0, 1), t[:, k:].flatten())
    check_depth_loss(default_only)                             # -100 is F.cross_entropy's default: it passes
    with pytest.raises(CheckFailed, match="scored the padding positions .* as if 0 were a real token"):
        check_depth_loss(default_only, hidden=True)


def test_loss_check_refuses_the_package_and_reports_broken_answers():
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.losses.depth_loss`"):
        check_depth_loss(lambda lg, t, k, ig=-100: depth_loss(lg, t[:, k:], ignore_index=ig))

    def mutates(logits_k, targets, k, ignore_index=-100):      # used to print "all 6 cases pass"
        out = F.cross_entropy(logits_k.flatten(0, 1), targets[:, :targets.shape[1] - k].flatten())
        targets.fill_(-100)
        return out
    with pytest.raises(CheckFailed, match=r"changed its argument `targets` in place"):
        check_depth_loss(mutates)
    with pytest.raises(CheckFailed, match="returned a complex tensor"):
        check_depth_loss(lambda *args: loss_right(*args) * (1 + 0j))
    with pytest.raises(CheckFailed, match="returned a Python number"):
        check_depth_loss(lambda *args: loss_right(*args).item())
    with pytest.raises(CheckFailed, match="not connected to logits_k"):
        check_depth_loss(lambda *args: loss_right(*args).detach())


# ---- assignment 3 -----------------------------------------------------------------------------------
def greedy_right(drafts, main_argmax):
    a = 0
    while a < len(drafts) and drafts[a] == main_argmax[a]:
        a += 1
    return a


def test_greedy_check_passes_a_right_answer():
    check_greedy_accept(greedy_right)
    check_greedy_accept(greedy_right, hidden=True)
    for drafts, argmax, want in grading.GREEDY_CASES + grading.GREEDY_HIDDEN:
        assert greedy_right(drafts, argmax) == want and len(argmax) == len(drafts) + 1


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
        check_rejection_step(fn)
    check_rejection_step(rejection_right, hidden=True)


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
    if _keep(p, q, d, g):
        return True, d
    return False, int(np.random.default_rng(0).choice(len(p), p=(p - q).clamp_min(0).numpy()))


def _accept_with_p(p, q, d, g):
    if torch.rand((), generator=g, dtype=p.dtype) < p[d]:
        return True, d
    r = (p - q).clamp_min(0)
    return False, int(torch.multinomial(r if r.sum() > 0 else p, 1, generator=g))


def _rejects_when_p_equals_q(p, q, d, g):                 # keeps only drafts with p < q
    if p[d] < q[d] and torch.rand((), generator=g, dtype=p.dtype) < p[d] / q[d]:
        return True, d
    r = (p - q).clamp_min(0)
    return False, int(torch.multinomial(r, 1, generator=g))


def _return_the_draft(p, q, d, g):
    return (True, d) if _keep(p, q, d, g) else (False, d)


def _returns_infinity(p, q, d, g):
    return True, float("inf")


def _subtracts_in_place(p, q, d, g):
    if _keep(p, q, d, g):
        return True, d
    p -= q
    return False, int(torch.multinomial(p.clamp_min(0), 1, generator=g))


@pytest.mark.parametrize("wrong, message", [
    (_always, "you accept every draft"),
    (_resample_from_p, "you sampled from p"),
    (_bernoulli_without_min, r"must be capped, min\(1, p\[draft\] / q\[draft\]\)"),
    (_unnormalised_cdf, "normalise max"),
    (_unnormalised_numpy, r"raised ValueError: .*the correction is then sampled from max\(0, p - q\) divided by its "
                          r"sum"),
    (_accept_with_p, r"you accept with probability p\[draft\]"),
    (_rejects_when_p_equals_q, r"case 'p == q' .*max\(0, p - q\) is zero everywhere"),
    (_return_the_draft, "returned the rejected draft itself"),
    (_returns_infinity, r"should be a token id \(an int\); .* you returned inf \(a float\)"),   # was a raw crash
    (_subtracts_in_place, r"changed its argument `p` in place"),
], ids=["always-accepts", "resamples-from-p", "bernoulli-without-min", "unnormalised-cdf", "unnormalised-numpy",
        "accepts-with-p", "rejects-when-p-equals-q", "returns-the-draft", "returns-inf", "mutates-p"])
def test_rejection_check_names_the_mistake(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_rejection_step(wrong)


# ---- assignment 4 -----------------------------------------------------------------------------------
def verify_greedy_right(drafts, main_logits):
    best = main_logits.argmax(-1).tolist()
    return greedy_right(drafts, best), best[greedy_right(drafts, best)]


def verify_sample_right(drafts, p, q, g):
    for j, d in enumerate(drafts):
        if not _keep(p[j], q[j], d, g):
            r = (p[j] - q[j]).clamp_min(0)
            return j, int(torch.multinomial(r / r.sum(), 1, generator=g))
    return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=g))


def test_the_traces_cover_every_outcome_and_the_laws_are_distributions():
    for hidden in (False, True):
        steps = grading._greedy_traces(hidden)
        kept = {(len(drafts), a) for drafts, _, a, _, _ in steps}
        depth = 2 if hidden else 3
        assert {(depth, a) for a in range(depth + 1)} <= kept    # every outcome of a full step, the bonus among them
        assert len(steps) >= 15
    assert (0, 0) in {(len(d), a) for d, _, a, _, _ in grading._greedy_traces(False)}          # a step with no drafts
    for name, p, q, _ in grading.VERIFY_SAMPLE_CASES + grading.VERIFY_SAMPLE_HIDDEN:
        p, q = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64).view(len(q), len(p[0]))
        assert torch.allclose(p.sum(-1), torch.ones(len(p), dtype=torch.float64))
        drafts = [int(row.argmax()) for row in q]
        for rule in grading.VERIFY_RULES:
            if rule in ("right", "always", "from_p"):
                assert abs(float(grading._verify_law(p, q, drafts, rule).sum()) - 1) < 1e-12, (name, rule)


def test_the_speculative_sampling_law_gives_every_first_token_its_probability_p0():
    """The exact law the check tests against: summed over the drafts, the first emitted token follows p[0]."""
    name, p, q, _ = grading.VERIFY_SAMPLE_CASES[0]
    p, q = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
    first = torch.zeros(p.shape[1], dtype=torch.float64)
    for d1 in range(p.shape[1]):
        for d2 in range(p.shape[1]):
            law = q[0, d1] * q[1, d2] * grading._verify_law(p, q, [d1, d2])
            first[d1] += law[1:].sum()
            first += law[0]
    assert torch.allclose(first, p[0], atol=1e-12)


def test_verify_checks_pass_right_answers():
    for hidden in (False, True):
        check_verify_greedy(verify_greedy_right, hidden)
        check_verify_sample_at_temperature_0(verify_sample_right, hidden)
        check_verify_sample(verify_sample_right, hidden)


def test_verify_greedy_check_names_each_mistake():
    def no_bonus(drafts, main_logits):
        a, token = verify_greedy_right(drafts, main_logits)
        return a, token if a < len(drafts) else None

    def next_row(drafts, main_logits):
        best = main_logits.argmax(-1).tolist()
        a = greedy_right(drafts, best[1:])
        return a, best[a]

    def rejected_draft(drafts, main_logits):
        a, token = verify_greedy_right(drafts, main_logits)
        return a, drafts[a] if a < len(drafts) else token

    def always(drafts, main_logits):
        return len(drafts), int(main_logits[-1].argmax())
    for fn, message in [(no_bonus, r"the bonus token, from argmax\(main_logits\[D\]\)"),
                        (next_row, r"not main_logits\[j \+ 1\]"),
                        (rejected_draft, "is discarded"),
                        (always, "you kept every draft")]:
        with pytest.raises(CheckFailed, match=message):
            check_verify_greedy(fn)
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.decoding.speculative_generate`"):
        check_verify_greedy(lambda drafts, logits: mtp_edu.decoding.speculative_generate(None, [1], 1))


def test_verify_sample_checks_name_each_mistake():
    def variant(accept=None, correction=None, bonus=True):
        def fn(drafts, p, q, g):
            for j, d in enumerate(drafts):
                keep = accept(p[j], q[j], d, g) if accept else _keep(p[j], q[j], d, g)
                if not keep:
                    r = correction(p[j], q[j]) if correction else (p[j] - q[j]).clamp_min(0)
                    return j, int(torch.multinomial(r / r.sum(), 1, generator=g))
            return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=g)) if bonus else None
        return fn
    always = variant(accept=lambda p, q, d, g: True)
    from_p = variant(correction=lambda p, q: p)
    no_min = variant(accept=lambda p, q, d, g: bool(torch.bernoulli(p[d] / q[d], generator=g)))
    with pytest.raises(CheckFailed, match=r"min\(1, p/q\) = 0 and it is always rejected"):
        check_verify_sample_at_temperature_0(always)
    with pytest.raises(CheckFailed, match="You accept every draft"):
        check_verify_sample(always)
    check_verify_sample_at_temperature_0(from_p)                 # one-hot p: the same as the residual
    with pytest.raises(CheckFailed, match=r"you sampled the correction from p\[j\]"):
        check_verify_sample(from_p)
    check_verify_sample_at_temperature_0(no_min)                 # one-hot: p/q is 0 or 1
    with pytest.raises(CheckFailed, match=r"raised RuntimeError: .* = 4 > 1: used as a probability it must be "
                                          r"capped, min\(1, p/q\)"):
        check_verify_sample(no_min)
    with pytest.raises(CheckFailed, match=r"the bonus token, from p\[D\]"):
        check_verify_sample(variant(bonus=False))
    with pytest.raises(CheckFailed, match=r"You keep a draft with probability p\[j\]\[d\]"):
        check_verify_sample(variant(accept=lambda p, q, d, g: bool(torch.rand((), generator=g) < p[d])))

    def returns_the_draft(drafts, p, q, g):
        a, token = verify_sample_right(drafts, p, q, g)
        return a, drafts[a] if a < len(drafts) else token
    with pytest.raises(CheckFailed, match="you returned the rejected draft itself"):
        check_verify_sample(returns_the_draft)


# ---- assignment 5 -----------------------------------------------------------------------------------
def positions_right(parents):
    depth = []
    for parent in parents:
        depth.append(0 if parent < 0 else depth[parent] + 1)
    return torch.tensor(depth)


def mask_right(parents):                          # reachability by matrix powers: not the check's walk up the tree
    n = len(parents)
    step = torch.zeros(n, n)
    for i, p in enumerate(parents):
        if p >= 0:
            step[i, p] = 1.0                          # node i -> its parent
    return torch.linalg.matrix_power(torch.eye(n) + step, n) > 0


def test_the_tree_fixtures_follow_the_definition():
    assert grading.TREE_CASES[0][1:3] == ([-1, 0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 1, 2, 2, 2, 2, 2, 2])  # Medusa's
    for name, parents, positions, rows in grading.TREE_CASES + grading._hidden_trees():
        assert all(p < i for i, p in enumerate(parents)) and parents[0] == -1
        assert positions_right(parents).tolist() == positions
        assert torch.equal(mask_right(parents), grading._mask_of(rows)), name


def test_tree_checks_pass_right_answers_and_name_each_mistake():
    for hidden in (False, True):
        check_tree_position_ids(positions_right, hidden)
        check_tree_attention_mask(mask_right, hidden)
    for fn, message in [(lambda p: torch.arange(len(p)), "not node indices"),
                        (lambda p: positions_right(p) + 1, r"the root \(the pending token\) has position 0"),
                        (lambda p: positions_right(p).tolist(), "return a tensor"),
                        (lambda p: positions_right(p).float(), "position ids are integers")]:
        with pytest.raises(CheckFailed, match=message):
            check_tree_position_ids(fn)

    def parent_only(parents):
        n = len(parents)
        mask = torch.eye(n, dtype=torch.bool)
        for i, p in enumerate(parents):
            if p >= 0:
                mask[i, p] = True
        return mask
    for fn, message in [(parent_only, "not only to its parent"),
                        (lambda p: mask_right(p).T, "the mask is transposed"),
                        (lambda p: torch.ones(len(p), len(p), dtype=torch.bool).tril(), "the causal mask of a chain"),
                        (lambda p: mask_right(p) & ~torch.eye(len(p), dtype=torch.bool), "the diagonal is True"),
                        (lambda p: mask_right(p).float(), "return dtype torch.bool")]:
        with pytest.raises(CheckFailed, match=message):
            check_tree_attention_mask(fn)


def test_the_tree_references_agree_with_the_packages_tree_drafting():
    from mtp_edu.tree import tree_depths, tree_mask  # an independent implementation (notebook 09)
    for _, parents, positions, rows in grading.TREE_CASES + grading._hidden_trees():
        assert tree_depths(parents) == positions and torch.equal(tree_mask(parents), grading._mask_of(rows))


def test_the_packages_tree_functions_are_refused(monkeypatch):
    import mtp_edu.tree
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.tree.tree_mask`"):
        check_tree_attention_mask(lambda parents: mtp_edu.tree.tree_mask(parents))
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.tree.verify_layout`"):
        check_tree_attention_mask(lambda parents: mtp_edu.tree.verify_layout(parents, 0)[1])
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.tree.tree_depths`"):
        check_tree_position_ids(lambda parents: torch.tensor(mtp_edu.tree.tree_depths(parents)))
    assert mtp_edu.tree.tree_mask([-1, 0]).tolist() == [[True, False], [True, True]]      # restored afterwards

    def a_future_tree_helper(parents):                          # a tree function added to another module later
        return mask_right(parents)
    monkeypatch.setattr(mtp_edu.decoding, "build_tree_mask", a_future_tree_helper, raising=False)
    monkeypatch.setattr(a_future_tree_helper, "__module__", "mtp_edu.decoding")
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.decoding.build_tree_mask`"):
        check_tree_attention_mask(lambda parents: mtp_edu.decoding.build_tree_mask(parents))


def test_the_tree_decoders_acceptance_walk_is_refused_in_the_verify_checks():
    import mtp_edu.tree
    with pytest.raises(CheckFailed, match=r"called `mtp_edu.tree.walk`"):
        check_verify_greedy(lambda drafts, logits: mtp_edu.tree.walk(None, logits, None, [], None))
