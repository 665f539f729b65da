"""Run the guided notebooks top to bottom, in a fresh kernel each, and report how long each took.

    mtp-edu notebooks                 execute and report, leave the files as they are
    mtp-edu notebooks --write         also write the fresh outputs into the notebooks (commit them)
    mtp-edu notebooks 03_losses       only the notebooks whose name contains this
    mtp-edu notebooks --repo DIR      the repository checkout (default: found from the current directory)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from ..cli import UserError
from . import find_repo

BUDGET_S = 90.0                     # every walkthrough notebook in <= 90 s on a 2-core CPU


def walkthroughs(folder: Path) -> list[Path]:
    """The numbered walkthrough notebooks in `folder` (a checkout's notebooks/), in order (00_..., 01_...)."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, write: bool = False, timeout: int = 600) -> float:
    """Run one notebook in a fresh kernel with its folder as working directory; returns seconds."""
    nb = nbformat.read(path, as_version=4)
    if "MPLCONFIGDIR" not in os.environ:          # matplotlib's cache, out of the user's home; made once
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mtp-edu-mpl-")
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    if write:
        nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mtp-edu notebooks", description="Run the guided notebooks headlessly.")
    ap.add_argument("match", nargs="?", default="", help="only notebooks whose file name contains this")
    ap.add_argument("--write", action="store_true", help="write the fresh outputs into the notebooks")
    ap.add_argument("--repo", metavar="DIR", help="the repository checkout (default: found from the current directory)")
    args = ap.parse_args(argv)
    folder = find_repo(args.repo, "mtp-edu notebooks") / "notebooks"
    paths = [p for p in walkthroughs(folder) if args.match in p.name]
    if not paths:
        raise UserError(f"no walkthrough notebook matches {args.match!r} in {folder}")
    slow = []
    for path in paths:
        seconds = execute(path, write=args.write)
        flag = "" if seconds <= BUDGET_S else f"  (over the {BUDGET_S:.0f} s budget)"
        print(f"{path.name:<45} {seconds:6.1f} s{flag}", flush=True)
        slow += [path.name] if flag else []
    return 1 if slow else 0


if __name__ == "__main__":
    from mtp_edu.cli import main as cli
    sys.exit(cli(["notebooks", *sys.argv[1:]]))
