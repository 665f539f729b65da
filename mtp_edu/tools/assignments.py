"""Student versions of the classroom assignments, generated from the solution notebooks.

Code between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's markers) is replaced by
`raise NotImplementedError`, outputs are cleared, and the file is written as `<name>.ipynb` beside
`<name>_solution.ipynb` in the repository's notebooks/assignments/:

    mtp-edu assignments [--repo DIR]      (or: python -m mtp_edu.tools.assignments)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from ..cli import UserError
from . import find_repo

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'


def strip_solutions(source: str) -> str:
    """Replace each marked solution block by a stub at the block's indentation."""
    pattern = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}[ \t]*$", re.M | re.S)
    out = pattern.sub(lambda m: f"{m.group(1)}{STUB}", source)
    if BEGIN in out or END in out:
        raise ValueError(f"unbalanced solution markers in:\n{source}")
    return out


def student_version(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(solution)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
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
        nb = student_version(nbformat.read(src, as_version=4))
        dst = student_path(src)
        nbformat.write(nb, dst)
        written.append(dst)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mtp-edu assignments", description="Regenerate the student versions.")
    ap.add_argument("--repo", metavar="DIR", help="the repository checkout (default: found from the current directory)")
    args = ap.parse_args(argv)
    repo = find_repo(args.repo, "mtp-edu assignments")
    written = regenerate(repo)
    if not written:
        raise UserError(f"no *_solution.ipynb in {repo / 'notebooks' / 'assignments'}")
    for path in written:
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    from mtp_edu.cli import main as cli
    sys.exit(cli(["assignments", *sys.argv[1:]]))
