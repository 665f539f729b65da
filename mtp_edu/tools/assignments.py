"""Student versions of the classroom assignments, made by nbgrader's own preprocessors.

Each `notebooks/assignments/<name>_solution.ipynb` carries nbgrader cell metadata: solution cells,
autograded test cells with points (some with hidden tests), read-only cells. Its student version
`<name>.ipynb`, written beside it, is what `nbgrader generate_assignment` writes to release/: the same
preprocessors in the same order (GENERATE_STEPS), without the two that need a course (the optional
header and footer, and saving the cells to the gradebook). tests/test_nbgrader.py runs nbgrader on a
real course directory and checks that its release equals the committed student versions.

    mtp-edu assignments [--repo DIR]                  write the student versions
    mtp-edu assignments --course DIR [--repo DIR]     also set up an nbgrader course directory: the
                                                      solutions as DIR/source/<name>/<name>.ipynb, and
                                                      DIR/nbgrader_config.py if there is none
                                                      (docs/teaching-nbgrader.md)

(or: python -m mtp_edu.tools.assignments ...). nbgrader is a dev dependency: `pip install nbgrader`.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

import nbformat

from ..cli import UserError
from . import find_repo

# nbgrader's GenerateAssignment.preprocessors (0.9), less IncludeHeaderFooter (no header is configured),
# InstantiateTests (for "### AUTOTEST" lines, which these notebooks do not use) and SaveCells (the
# gradebook database of a course).
GENERATE_STEPS = ("LockCells", "ClearSolutions", "ClearOutput", "CheckCellMetadata", "ComputeChecksums",
                  "ClearHiddenTests", "ClearMarkScheme", "ComputeChecksums", "CheckCellMetadata")

COURSE_CONFIG = '''\
# nbgrader configuration of an mtp-edu course (written by `mtp-edu assignments --course`).
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "mtp-edu"
# The checks run the students' functions thousands of times (the sampling rules are tested by their
# statistics) and stop each call after 5 s; nbgrader's default limit of 30 s per cell is tight on a slow
# machine, so allow 120 s.
c.Execute.timeout = 120
'''


def _preprocessors():
    try:
        from nbgrader import preprocessors
    except ImportError:
        raise UserError("the student versions are made by nbgrader's own preprocessors, and nbgrader is not "
                        "installed: pip install nbgrader (or pip install -e '.[dev]')") from None
    return preprocessors


def student_version(solution: nbformat.NotebookNode, name: str = "the notebook") -> nbformat.NotebookNode:
    """The release version of a solution notebook, as `nbgrader generate_assignment` makes it: solution regions
    replaced by nbgrader's stub, outputs cleared, hidden tests removed, cells locked, checksums computed.
    A notebook that nbgrader would refuse (e.g. a solution region outside a solution cell) raises UserError."""
    pre = _preprocessors()
    nb, resources = nbformat.from_dict(copy.deepcopy(solution)), {}
    for step in GENERATE_STEPS:
        try:
            nb, resources = getattr(pre, step)().preprocess(nb, resources)
        except Exception as err:  # nbgrader's own message says what is wrong with the notebook
            raise UserError(f"{name}: nbgrader refuses it ({step}): {err}") from None
    return nb


def student_path(solution_path: Path) -> Path:
    return solution_path.with_name(solution_path.name.replace("_solution.ipynb", ".ipynb"))


def solutions(repo: Path) -> list[Path]:
    """The solution notebooks of a repository checkout, sorted."""
    return sorted((repo / "notebooks" / "assignments").glob("*_solution.ipynb"))


def regenerate(repo: Path) -> list[Path]:
    """Write the student version of every solution notebook in `repo`; returns the paths written."""
    written = []
    for src in solutions(repo):
        nb = student_version(nbformat.read(src, as_version=4), src.name)
        dst = student_path(src)
        nbformat.write(nb, dst)
        written.append(dst)
    return written


def assignment_name(solution_path: Path) -> str:
    """'a1_shift_table' for a1_shift_table_solution.ipynb: the assignment's name in an nbgrader course."""
    return solution_path.name.removesuffix("_solution.ipynb")


def setup_course(repo: Path, course: Path) -> list[Path]:
    """Copy every solution notebook to course/source/<name>/<name>.ipynb (nbgrader's layout) and write
    course/nbgrader_config.py unless there is one; returns the paths written."""
    course = course.expanduser().resolve()
    written = []
    config = course / "nbgrader_config.py"
    if not config.exists():
        course.mkdir(parents=True, exist_ok=True)
        config.write_text(COURSE_CONFIG.format(root=str(course)))
        written.append(config)
    for src in solutions(repo):
        name = assignment_name(src)
        dst = course / "source" / name / f"{name}.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mtp-edu assignments",
                                 description="Write the student versions of the assignments with nbgrader's "
                                             "preprocessors; with --course, also set up an nbgrader course.")
    ap.add_argument("--repo", metavar="DIR", help="the repository checkout (default: found from the current directory)")
    ap.add_argument("--course", metavar="DIR",
                    help="an nbgrader course directory to set up: the solutions are copied (overwritten) to "
                         "DIR/source/<name>/<name>.ipynb, and DIR/nbgrader_config.py is written if missing")
    args = ap.parse_args(argv)
    repo = find_repo(args.repo, "mtp-edu assignments")
    written = regenerate(repo)
    if not written:
        raise UserError(f"no *_solution.ipynb in {repo / 'notebooks' / 'assignments'}")
    if args.course:
        written += setup_course(repo, Path(args.course))
    for path in written:
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    if args.course:
        print(f"next: cd {args.course} && nbgrader generate_assignment a1_shift_table (see docs/teaching-nbgrader.md)")
    return 0


if __name__ == "__main__":
    from mtp_edu.cli import main as cli
    sys.exit(cli(["assignments", *sys.argv[1:]]))
