"""Set-up files agree with each other: pyproject vs environment.yml, README vs CI, the public API."""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if sys.version_info >= (3, 11):
    import tomllib
else:                                                  # pragma: no cover
    import tomli as tomllib

CONDA_TO_PIP = {"pytorch": "torch", "python-graphviz": "graphviz"}
CONDA_ONLY = {"python", "pip", "graphviz"}             # graphviz on conda-forge is the `dot` program


def split(spec: str) -> tuple[str, str]:
    name, bound = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower(), bound.replace(" ", "")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = dict(split(s) for s in project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda, pip_section = {}, []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip_section += item["pip"]
            continue
        name, bound = split(item)
        if name not in CONDA_ONLY:
            conda[CONDA_TO_PIP.get(name, name)] = bound
    assert conda == pip_deps                                  # same names, same lower bounds
    assert "-e .[dev]" in pip_section                         # the package and its dev extra via pip


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash scripts/test.sh"
    assert command in readme and command in ci
    assert "bash scripts/run.sh" in readme


def test_public_api():
    import mtp_edu
    for name in ("MTPConfig", "MTPModel", "shift_table", "mtp_loss"):
        assert hasattr(mtp_edu, name), name


def test_core_never_imports_viz_or_tools():
    for path in (ROOT / "mtp_edu").glob("*.py"):
        if path.name == "cli.py":                             # the command line wires everything together
            continue
        assert not re.search(r"^\s*(from|import)\s+(\.|mtp_edu\.)(viz|tools)", path.read_text(), re.M), path.name


def test_the_version_is_written_once():
    import importlib.metadata

    import mtp_edu
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]       # read from mtp_edu.__version__
    assert importlib.metadata.version("mtp-edu") == mtp_edu.__version__
    assert f"## {mtp_edu.__version__} - " in (ROOT / "CHANGELOG.md").read_text()
