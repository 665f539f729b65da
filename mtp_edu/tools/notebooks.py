"""Run the guided notebooks top to bottom, in a fresh kernel each, and report how long each took.

    mtp-edu notebooks                 execute and report, leave the files as they are
    mtp-edu notebooks --write         also write the fresh outputs into the notebooks (commit them)
    mtp-edu notebooks 03_losses       only the notebooks whose name contains this
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

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUDGET_S = 90.0                     # DESIGN.md sec. 5: every walkthrough notebook in <= 90 s on a 2-core CPU


def walkthroughs(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered walkthrough notebooks, in order (00_..., 01_..., ...)."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, write: bool = False, timeout: int = 600) -> float:
    """Run one notebook in a fresh kernel with its folder as working directory; returns seconds."""
    nb = nbformat.read(path, as_version=4)
    env_dir = tempfile.mkdtemp(prefix="mtp-edu-mpl-")
    os.environ.setdefault("MPLCONFIGDIR", env_dir)
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
    args = ap.parse_args(argv)
    paths = [p for p in walkthroughs() if args.match in p.name]
    if not paths:
        ap.error(f"no walkthrough notebook matches {args.match!r} in {NOTEBOOKS}")
    slow = []
    for path in paths:
        seconds = execute(path, write=args.write)
        flag = "" if seconds <= BUDGET_S else f"  (over the {BUDGET_S:.0f} s budget)"
        print(f"{path.name:<45} {seconds:6.1f} s{flag}", flush=True)
        slow += [path.name] if flag else []
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
