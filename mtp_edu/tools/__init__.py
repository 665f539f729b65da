"""Tools for working on mtp-edu itself, apart from what the package teaches.

    notebooks.py    runs the walkthrough notebooks (mtp-edu notebooks)          needs a repository checkout
    assignments.py  writes the student versions of the assignments             needs a repository checkout
    bench.py        decoding speed (mtp-edu bench)
    bench_train.py  training step time vs FLOPs, and peak memory (mtp-edu bench train)

The core package never imports this one. A tool that works on the repository's files finds the
checkout with `find_repo`: the folder given as `--repo`, or the nearest one above the current
directory that holds the project's pyproject.toml and notebooks/.
"""
from __future__ import annotations

from pathlib import Path

from ..cli import UserError


def is_repo(folder: Path) -> bool:
    """True if `folder` is a checkout of the mtp-edu repository."""
    pyproject = folder / "pyproject.toml"
    return (folder / "notebooks").is_dir() and pyproject.is_file() and 'name = "mtp-edu"' in pyproject.read_text()


def find_repo(repo: str | Path | None = None, tool: str = "this tool") -> Path:
    """The repository checkout: `repo` if given, else the nearest one at or above the current directory.

    Raises UserError (one line, exit status 2 from the CLI) that says what is needed when there is none.
    """
    if repo is not None:
        folder = Path(repo).expanduser().resolve()
        if not is_repo(folder):
            raise UserError(f"--repo {repo}: not a checkout of the mtp-edu repository "
                            "(needs its pyproject.toml and notebooks/)")
        return folder
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if is_repo(folder):
            return folder
    raise UserError(f"{tool} works on a checkout of the mtp-edu repository (its pyproject.toml and notebooks/), "
                    f"and none was found at or above {here}: run it inside the checkout or pass --repo DIR")
