"""Repository tools (mtp_edu.tools): they find the checkout from the current directory or from --repo,
and outside one they say in one line what they need (exit status 2)."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mtp_edu.cli import main
from mtp_edu.tools import find_repo
from mtp_edu.tools import notebooks as runner

ROOT = Path(__file__).resolve().parents[1]


def fake_repo(folder: Path) -> Path:
    """The least a checkout needs: pyproject.toml, one walkthrough notebook and one solution notebook."""
    (folder / "notebooks" / "assignments").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "mtp-edu"\n')
    nbformat.write(nbformat.v4.new_notebook(), folder / "notebooks" / "00_demo.ipynb")
    cell = nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION\n")
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": "a9-demo", "locked": False, "schema_version": 3,
                                 "solution": True, "task": False}
    solution = folder / "notebooks" / "assignments" / "a9_demo_solution.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), solution)
    return folder.resolve()


def test_the_checkout_is_found_from_a_folder_inside_it(monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks" / "assignments")
    assert find_repo() == ROOT


@pytest.mark.parametrize("command", ["notebooks", "assignments"])
def test_outside_a_checkout_one_line_says_what_is_needed(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mtp-edu: error: mtp-edu {command} works on a checkout of the mtp-edu repository")
    assert "--repo DIR" in err and str(tmp_path.resolve()) in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["notebooks", "assignments"])
def test_a_repo_option_that_is_not_a_checkout_is_refused(command, tmp_path, capsys):
    assert main([command, "--repo", str(tmp_path)]) == 2
    assert "not a checkout of the mtp-edu repository" in capsys.readouterr().err


def test_assignments_with_repo_writes_the_student_versions(tmp_path, monkeypatch, capsys):
    repo = fake_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert main(["assignments", "--repo", str(repo)]) == 0
    student = nbformat.read(repo / "notebooks" / "assignments" / "a9_demo.ipynb", as_version=4)
    assert student.cells[0].source == 'x = 1\n# YOUR CODE HERE\nraise NotImplementedError()\n'
    assert "a9_demo.ipynb" in capsys.readouterr().out


def test_notebooks_with_repo_runs_that_checkout_s_walkthroughs(tmp_path, monkeypatch, capsys):
    repo = fake_repo(tmp_path / "repo")
    ran = []
    monkeypatch.setattr(runner, "execute", lambda path, write=False: ran.append(path) or 0.5)
    monkeypatch.chdir(tmp_path)
    assert main(["notebooks", "--repo", str(repo)]) == 0
    assert ran == [repo / "notebooks" / "00_demo.ipynb"] and "00_demo.ipynb" in capsys.readouterr().out
    assert main(["notebooks", "--repo", str(repo), "zzz"]) == 2
    assert "no walkthrough notebook matches 'zzz'" in capsys.readouterr().err


def test_a_tool_run_as_a_module_outside_a_checkout_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "mtp_edu.tools.assignments"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--repo DIR" in result.stderr
