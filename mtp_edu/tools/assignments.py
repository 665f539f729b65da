"""Student versions of the classroom assignments, generated from the solution notebooks.

Code between `### BEGIN SOLUTION` and `### END SOLUTION` (nbgrader's markers) is replaced by
`raise NotImplementedError`, outputs are cleared, and the file is written as `<name>.ipynb` beside
`<name>_solution.ipynb`:

    mtp-edu assignments            (or: python -m mtp_edu.assignments)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'
ASSIGNMENTS = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"


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


def regenerate(folder: Path = ASSIGNMENTS) -> list[Path]:
    """Write the student version of every `*_solution.ipynb` in `folder`; returns the paths written."""
    written = []
    for src in sorted(folder.glob("*_solution.ipynb")):
        nb = student_version(nbformat.read(src, as_version=4))
        dst = student_path(src)
        nbformat.write(nb, dst)
        written.append(dst)
    return written


def main(argv=None) -> int:
    for path in regenerate():
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
