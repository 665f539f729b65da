"""The whole nbgrader loop on the assignments, for real (nbgrader 0.9; docs/teaching-nbgrader.md).

In a temporary course directory set up by `mtp-edu assignments --course`:
- `nbgrader generate_assignment` for every assignment: its release equals the committed student version;
- per assignment, ONE `nbgrader autograde` over several students: the solution typed into the release
  (full points), the untouched release (0 points), and typical wrong answers, each of which loses
  exactly the points of the checks it fails (the table below);
- `nbgrader generate_feedback`: each wrong answer's feedback shows its check's friendly message; a failed
  check cell shows that message and no traceback.

Cost: every submission is one notebook execution by nbgrader (a kernel start, `import torch`, the
checks: 4-10 s on a 2-core CPU). The 42 submissions are batched as the students of five autograde runs,
one per assignment, each in a course directory of its own so that two run at once (their gradebooks are
separate files).
"""
import html
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

nbgrader_api = pytest.importorskip("nbgrader.api", reason="nbgrader is a dev dependency: pip install nbgrader")

from mtp_edu.tools.assignments import assignment_name, setup_course, solutions, student_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# assignment -> [(student id, {solution cell's grade_id: (text in the solution, the student's text)},
#                 points expected, words that the feedback must show)]
WRONG = {
    "a1_shift_table": [
        ("off-by-one-shift", {"a1-shift-targets": ("tokens[i + k] if", "tokens[i + k - 1] if")},
         2, "predicts t_(i+k+1)"),
        ("no-padding", {"a1-shift-targets": ("return [[tokens[i + k] if i + k + 1 <= T + 1 else None for i in "
                                             "range(1, T + 1)]\n            for k in range(depth + 1)]",
                                             "return [tokens[k + 1:] for k in range(depth + 1)]")},
         2, "should have one cell per position"),
        ("missing-last-depth", {"a1-shift-targets": ("for k in range(depth + 1)]", "for k in range(depth)]")},
         2, "rows (one per depth k = 0.."),
        ("calls-shift-table", {"a1-shift-targets": ("T = len(tokens) - 1\n", "from mtp_edu import shift_table\n"
                                                    "    return shift_table(tokens, depth).targets\n")},
         2, "mtp_edu's own answer to this exercise"),
        ("slice-and-pad-hidden", {"a1-shift-targets": ("T = len(tokens) - 1\n", "return [tokens[k + 1:] + [None] * k "
                                                       "for k in range(depth + 1)]\n")},
         2, "row k=3 should have one cell per position"),
        ("inputs-read-the-target", {"a1-shift-inputs": ("tokens[i + k - 1] if", "tokens[i + k] if")},
         3, "the main model (k=0) reads t_i"),
    ],
    "a2_mtp_module": [
        ("paper-order", {"a2-mtp-module": ("torch.cat([module.enorm(emb), module.hnorm(h)]",
                                           "torch.cat([module.hnorm(h), module.enorm(emb)]")},
         3, "the concatenation order is reversed"),
        ("norms-swapped", {"a2-mtp-module": ("torch.cat([module.enorm(emb), module.hnorm(h)]",
                                             "torch.cat([module.hnorm(emb), module.enorm(h)]")},
         3, "enorm and hnorm are swapped"),
        ("tokens-off-by-one", {"a2-mtp-module": ("model.embed(ids[:, k:])", "model.embed(ids[:, k - 1:T - 1])")},
         3, "off by one in the tokens"),
        ("unshifted-targets", {"a2-depth-loss": ("t = targets[:, k:]", "t = targets[:, :targets.shape[1] - k]")},
         4, "its targets are targets[:, k:]"),
        ("divides-by-T", {"a2-depth-loss": ("ignore_index=ignore_index)",
                                            "ignore_index=ignore_index, reduction='sum') / targets.numel()")},
         4, "you divided by B*T"),
        ("padding-in-the-mean", {"a2-depth-loss": ("ignore_index=ignore_index)",
                                                   "ignore_index=ignore_index, reduction='none').mean()")},
         4, "padding included"),
        ("ignore-index-not-passed-hidden", {"a2-depth-loss": (", ignore_index=ignore_index)", ")")},
         4, "as if 0 were a real token"),
    ],
    "a3_acceptance_rules": [
        ("counts-every-match", {"a3-greedy-accept": ("a = 0\n", "return sum(d == m for d, m in zip(drafts, "
                                                     "main_argmax))\n")},
         4, "only a PREFIX counts"),
        ("compares-with-next-argmax", {"a3-greedy-accept": ("drafts[a] == main_argmax[a]",
                                                            "drafts[a] == main_argmax[a + 1]")},
         4, "not main_argmax[j + 1]"),
        ("always-accepts", {"a3-rejection-step": ("if r < p[draft] / q[draft]:", "if True:")},
         2, "you accept every draft"),
        ("resamples-from-p", {"a3-rejection-step": ("torch.multinomial(residual / residual.sum(), 1",
                                                    "torch.multinomial(p, 1")},
         2, "you sampled from p"),
        ("no-min-1", {"a3-rejection-step": ("if r < p[draft] / q[draft]:",
                                            "if torch.bernoulli(p[draft] / q[draft], generator=generator):")},
         2, "must be capped, min(1, p[draft] / q[draft])"),
        ("returns-the-rejected-draft", {"a3-rejection-step": ("return False, int(torch.multinomial(residual / "
                                                              "residual.sum(), 1, generator=generator))",
                                                              "return False, int(draft)")},
         2, "you returned the rejected draft itself"),
    ],
    "a4_verify_and_accept": [
        ("no-bonus-token", {"a4-verify-greedy": ("return a, best[a]", "return a, (best[a] if a < len(drafts) "
                                                 "else None)")},
         4, "the bonus token, from argmax(main_logits[D])"),
        ("compares-with-next-row", {"a4-verify-greedy": ("drafts[a] == best[a]:", "drafts[a] == best[a + 1]:")},
         4, "not main_logits[j + 1]"),
        ("emits-the-rejected-draft", {"a4-verify-greedy": ("return a, best[a]", "return a, (drafts[a] if "
                                                           "a < len(drafts) else best[a])")},
         4, "is discarded"),
        ("always-accepts", {"a4-verify-sample": ("if r < p[j, d] / q[j, d]:", "if True:")},
         3, "min(1, p/q) = 0 and it is always rejected"),
        ("resamples-from-p", {"a4-verify-sample": ("torch.multinomial(residual / residual.sum(), 1",
                                                   "torch.multinomial(p[j], 1")},
         4, "you sampled the correction from p[j]"),
        ("no-min-1", {"a4-verify-sample": ("if r < p[j, d] / q[j, d]:",
                                           "if torch.bernoulli(p[j, d] / q[j, d], generator=generator):")},
         4, "must be capped, min(1, p/q)"),
        ("no-bonus-token-sampled", {"a4-verify-sample": ("return D, int(torch.multinomial(p[D], 1, "
                                                         "generator=generator))", "return D, None")},
         3, "the bonus token, from p[D]"),
    ],
    "a5_tree_attention": [
        ("node-index-positions", {"a5-tree-positions": ("return torch.tensor(depth)",
                                                        "return torch.arange(len(parents))")},
         3, "not node indices"),
        ("root-at-1", {"a5-tree-positions": ("0 if parent < 0", "1 if parent < 0")},
         3, "the root (the pending token) has position 0"),
        ("parent-only", {"a5-tree-mask": ("j = i\n", "mask[i, i] = True\n        if parents[i] >= 0:\n"
                                          "            mask[i, parents[i]] = True\n        j = -1\n")},
         2, "not only to its parent"),
        ("transposed", {"a5-tree-mask": ("return mask", "return mask.T")},
         2, "the mask is transposed"),
        ("causal-mask", {"a5-tree-mask": ("return mask", "return torch.ones(N, N, dtype=torch.bool).tril()")},
         2, "this is the causal mask of a chain"),
        ("float-mask", {"a5-tree-mask": ("return mask", "return mask.float()")},
         2, "return dtype torch.bool"),
    ],
}
NAMES = [assignment_name(path) for path in solutions(ROOT)]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def nbgrader(course: Path, *args: str) -> str:
    """Run one nbgrader command in the course directory, with the environment's bin/ first on PATH (nbgrader
    starts `alembic` from there to create the gradebook)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def solved(release: nbformat.NotebookNode, solution: nbformat.NotebookNode, edits: dict) -> nbformat.NotebookNode:
    """The release with every solution cell filled in as in the solution, then `edits` applied."""
    nb = nbformat.from_dict(release)
    answers = {c.metadata.nbgrader.grade_id: c.source for c in solution.cells if c.metadata.nbgrader.solution}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = "\n".join(line for line in answers[grade_id].split("\n")
                                    if line.strip() not in MARKERS)
    unused = dict(edits)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in unused:
            old, new = unused.pop(grade_id)
            assert cell.source.count(old) == 1, f"{grade_id}: {old!r} is not in the solution once"
            cell.source = cell.source.replace(old, new)
    assert not unused, f"no solution cell {sorted(unused)}"
    return nb


def feedback_text(course: Path, student: str, name: str) -> str:
    page = (course / "feedback" / student / name / f"{name}.html").read_text()
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def check_outputs(folder: Path, student: str, name: str) -> dict:
    """{grade_id: the error a check cell of the autograded notebook shows, as text, or None}."""
    nb = nbformat.read(folder / "autograded" / student / name / f"{name}.ipynb", as_version=4)
    return {c.metadata.nbgrader.grade_id: next(("\n".join(o.traceback) for o in c.outputs
                                                if o.output_type == "error"), None)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def grade(folder: Path, name: str) -> dict:
    """The loop for one assignment in its own course directory:
    {student: (score, max score, feedback text, {grade_id: (points, error shown)})}."""
    start = time.perf_counter()
    setup_course(ROOT, folder)
    nbgrader(folder, "generate_assignment", name, "--force")
    release = nbformat.read(folder / "release" / name / f"{name}.ipynb", as_version=4)
    solution = nbformat.read(ROOT / "notebooks" / "assignments" / f"{name}_solution.ipynb", as_version=4)
    students = {"solution": solved(release, solution, {}), "untouched": release}
    students.update({student: solved(release, solution, edits) for student, edits, _, _ in WRONG.get(name, [])})
    for student, nb in students.items():
        target = folder / "submitted" / student / name / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    nbgrader(folder, "autograde", name, "--force")
    nbgrader(folder, "generate_feedback", name, "--force")
    with nbgrader_api.Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
        top = gradebook.find_assignment(name).max_score
        results = {}
        for student in students:
            errors = check_outputs(folder, student, name)
            cells = {grade_id: (gradebook.find_grade(grade_id, name, name, student).score, error)
                     for grade_id, error in errors.items()}
            results[student] = (gradebook.find_submission(name, student).score, top,
                                feedback_text(folder, student, name), cells)
    print(f"  {name}: {len(students)} submissions in {time.perf_counter() - start:.0f} s")
    return results


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """{assignment: (course directory, {student: (score, max score, feedback text)})} after the whole loop."""
    start = time.perf_counter()
    folders = {name: tmp_path_factory.mktemp(name) for name in NAMES}
    print()
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        done = dict(zip(NAMES, pool.map(lambda name: grade(folders[name], name), NAMES)))
    print(f"nbgrader loop: {sum(len(r) for r in done.values())} submissions of {len(NAMES)} assignments in "
          f"{time.perf_counter() - start:.0f} s")
    for name, by_student in done.items():
        for student, (score, top, _, cells) in by_student.items():
            lost = ", ".join(f"{grade_id} 0" for grade_id, (points, _) in cells.items() if points == 0)
            print(f"  {name:22s} {student:32s} {score:g} / {top:g}   {lost}")
    return {name: (folders[name], done[name]) for name in NAMES}


def test_every_assignment_has_at_least_five_typical_mistakes():
    assert set(WRONG) == set(NAMES)
    for name in NAMES:
        assert len(WRONG[name]) >= 5, name


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_release_is_the_committed_student_version(course, name):
    folder, _ = course[name]
    release = nbformat.read(folder / "release" / name / f"{name}.ipynb", as_version=4)
    committed = nbformat.read(student_path(ROOT / "notebooks" / "assignments" / f"{name}_solution.ipynb"),
                              as_version=4)
    assert release.metadata == committed.metadata
    assert [(c.cell_type, c.source, c.metadata) for c in release.cells] == \
        [(c.cell_type, c.source, c.metadata) for c in committed.cells], \
        "nbgrader's release differs from the committed student version: run `mtp-edu assignments`"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_solution_gets_full_points_and_the_untouched_release_none(course, name):
    _, results = course[name]
    score, top, _, _ = results["solution"]
    assert top > 0 and score == top
    score, _, text, _ = results["untouched"]
    assert score == 0 and "is not implemented yet" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_typical_mistake_loses_its_points_with_a_friendly_message(course, name):
    _, results = course[name]
    for student, _, points, words in WRONG[name]:
        score, top, text, cells = results[student]
        assert (score, top) == (points, results["solution"][1]), f"{student}: {score:g} / {top:g}"
        assert words in text, f"{student}: the feedback does not show {words!r}"
        failed = [error for _, error in cells.values() if error is not None]
        assert failed and all(error.startswith("CheckFailed: ") and "Traceback" not in error for error in failed), \
            f"{student}: a failed check shows a traceback, not just its message"
        assert any(words in error for error in failed)
