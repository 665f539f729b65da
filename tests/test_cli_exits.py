"""One exit-status convention for every `mtp-edu` subcommand (issue 11, sec. 1 and 6).

0 on success; 2 on a usage or input error, with exactly one line on stderr that says what is wrong;
1 on a failure at run time. Never a traceback. Every subcommand is run here both ways, in process
(fast) and, for a sample, through `python -m mtp_edu.cli` (the real entry point, a fresh process).
The successful runs are kept tiny: a 3-step training run, a 1-prompt benchmark of that checkpoint, the
training benchmark with 1 round (peak memory stubbed: it spawns 6 processes, tested in
test_bench_train.py), and `notebooks` / `assignments` on a fake checkout with one small notebook each,
run for real (`assignments` needs nbgrader, a dev dependency).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from mtp_edu import checkpoint as ckpt
from mtp_edu import train as train_module
from mtp_edu.cli import main
from mtp_edu.tools import bench, bench_train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "2", "--eval-every", "0", "--no-progress",
         "--data", "synthetic:words:0.05"]
TINY_BENCH = ["--prompts", "1", "--rounds", "1", "--new-tokens", "4", "--prompt-tokens", "8", "--min-confidence", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exits") / "run"
    assert main(["train", *SMALL, "--steps", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture
def places(run_dir, tmp_path):
    """Names in the cases below, made real: a file, a folder with other files, a symlink loop, ..."""
    (tmp_path / "file.txt").write_text("not a checkpoint")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("precious")
    (tmp_path / "empty").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return {"RUN": str(run_dir), "FILE": str(tmp_path / "file.txt"), "FOREIGN": str(tmp_path / "foreign"),
            "EMPTY": str(tmp_path / "empty"), "LOOP": str(tmp_path / "loop"), "NEW": str(tmp_path / "new"),
            "UNDER_FILE": str(tmp_path / "file.txt" / "run"), "NO_DIR_JSON": str(tmp_path / "nowhere" / "x.json")}


def must_not_run(*args, **kwargs):
    raise AssertionError("the work started before the arguments were checked")


@pytest.fixture
def nothing_heavy_runs(monkeypatch):
    """Bad input must be refused before any work: the work itself fails the test (with exit status 1)."""
    monkeypatch.setattr(train_module, "load_corpus", must_not_run)
    monkeypatch.setattr(bench, "bench_model", must_not_run)
    monkeypatch.setattr(bench_train, "time_steps", must_not_run)
    monkeypatch.setattr(bench_train, "peak_step_memory", must_not_run)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")

BAD = [
    # train
    (["train", "--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["train", "--mtp-lambda", "inf"], "argument --mtp-lambda: expected a finite number >= 0"),
    (["train", "--seed", "99999999999999999999999"], "argument --seed: expected an integer >= 0 and <= 1844"),
    (["train", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["train", "--preset", "huge"], "invalid choice: 'huge'"),
    pytest.param(["train", *SMALL, "--device", "cuda", "--out", "NEW"], "device='cuda' is not available",
                 marks=NO_CUDA),
    (["train", *SMALL, "--device", "cuda:abc", "--out", "NEW"], "device='cuda:abc' is not allowed"),
    (["train", *SMALL, "--out", "FILE"], "is a file; a checkpoint is a directory"),
    (["train", *SMALL, "--out", "FOREIGN"], "is a directory with other files and no checkpoint"),
    (["train", *SMALL, "--out", "UNDER_FILE"], "file.txt is a file, not a directory"),
    (["train", *SMALL, "--out", "RUN"], "already holds a checkpoint at step 3"),
    (["train", *SMALL, "--export", "FOREIGN", "--out", "NEW"], "is a directory with other files"),
    (["train", "--resume", "--out", "EMPTY"], "checkpoint.json is missing"),
    (["train", "--resume", "--out", "LOOP"], "is a symbolic link loop"),
    (["train", "--resume", "--out", "RUN", "--steps", "2"], "is at step 3 already"),
    (["train", "--resume", "--out", "RUN", "--tokenizer", "bpe:300"], "a resumed run keeps its tokenizer"),
    # generate
    (["generate", "--model", "RUN", "--prompt", "x", "--temperature", "1e-45"], "or a temperature >= 0.001"),
    (["generate", "--model", "RUN", "--prompt", "x", "--temperature", "inf"], "argument --temperature"),
    (["generate", "--model", "RUN", "--prompt", "x", "--top-p", "nan"], "argument --top-p"),
    (["generate", "--model", "RUN", "--prompt", "x", "--seed", "-1"], "argument --seed"),
    (["generate", "--model", "LOOP", "--prompt", "x"], "is a symbolic link loop"),
    (["generate", "--prompt", "x", "--model", "no-such-model"], "no model 'no-such-model'"),
    # info
    (["info"], "the following arguments are required: model"),
    (["info", "EMPTY"], "checkpoint.json is missing"),
    (["info", "LOOP"], "is a symbolic link loop"),
    # bench
    (["bench", "--models", "RUN", *TINY_BENCH, "--prompt-tokens", "300"], "do not fit RUN's context of 128"),
    (["bench", "--models", "RUN", *TINY_BENCH, "--depths", "5"], "RUN has D = 2 MTP modules"),
    (["bench", "--models", "RUN", *TINY_BENCH, "--out", "NO_DIR_JSON"], "nowhere does not exist"),
    (["bench", "--models", "RUN", *TINY_BENCH, "--out", "EMPTY"], "is a directory"),
    (["bench", "--models", "no-such-model"], "--models no-such-model: no shipped model"),
    (["bench", "--prompts", "0"], "argument --prompts: expected an integer >= 1"),
    (["bench", "--min-confidence", "nan"], "argument --min-confidence"),
    (["bench", "--depths", "1,x"], "--depths must be comma-separated integers"),
    (["bench", "--bogus"], "unrecognized arguments: --bogus (see mtp-edu bench --help)"),
    # bench train
    (["bench", "train", "--d-model", "7"], "--d-model 7"),
    (["bench", "train", "--styles", "bogus"], "'bogus' is not a style"),
    (["bench", "train", "--rounds", "0"], "argument --rounds"),
    (["bench", "train", "--out", "NO_DIR_JSON"], "nowhere does not exist"),
    (["bench", "train", "--device", "tpu"], "argument --device: invalid choice"),
    # diagrams
    (["diagrams", "--out", "FILE"], "is a file; give a folder"),
    (["diagrams", "--out", "UNDER_FILE"], "is a file"),
    (["diagrams", "--bogus"], "unrecognized arguments: --bogus"),
    # notebooks, assignments (tools with plain argparse parsers: their errors are one line too)
    (["notebooks", "--bogus"], "unrecognized arguments: --bogus (see mtp-edu notebooks --help)"),
    (["notebooks", "--repo", "EMPTY"], "not a checkout of the mtp-edu repository"),
    (["assignments", "--bogus"], "unrecognized arguments: --bogus (see mtp-edu assignments --help)"),
    (["assignments", "--repo", "EMPTY"], "not a checkout of the mtp-edu repository"),
    # no subcommand, an unknown one
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_exits_2_with_one_line(argv, message, places, nothing_heavy_runs, capsys):
    before = {p: sorted(os.listdir(p)) for p in (places["RUN"], places["FOREIGN"], places["EMPTY"])}
    assert main([places.get(a, a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("mtp-edu: error: ") and err.count("\n") == 1, err
    assert message.replace("RUN", places["RUN"]) in err
    assert "Traceback" not in err and out == ""
    assert {p: sorted(os.listdir(p)) for p in before} == before                 # nothing written anywhere
    assert not os.path.exists(places["NEW"])


def _cli(args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MTP_EDU_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "mtp_edu.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("argv", [
    ["train", "--device", "cuda:abc", "--data", "synthetic:cycle", "--out", "NEW"],
    ["train", "--seed", "99999999999999999999999"],
    ["generate", "--prompt", "x", "--temperature", "1e-45"],
    ["diagrams", "--out", "FILE"],
    ["bench", "--models", "random:linear", "--out", "NO_DIR_JSON"],
    ["bench", "train", "--styles", "bogus"],
    ["notebooks", "--bogus"],
])
def test_the_real_entry_point_exits_2_without_a_traceback(argv, places):
    result = _cli([places.get(a, a) for a in argv])
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("mtp-edu: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


# ---- a failure at run time: exit status 1 ----------------------------------------------------
def test_a_diverging_run_exits_1_naming_the_step_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--data", "synthetic:cycle", "--steps", "30", "--lr", "1e6", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mtp-edu: failed: training diverged at step ") and err.count("\n") == 1
    assert "not finite" in err and "no checkpoint was saved before it (save_every=0)" in err
    assert "Traceback" not in err and not out.exists()


def test_an_unexpected_exception_is_one_line_with_exit_1(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")
    monkeypatch.setattr(train_module, "_train", boom)
    assert main(["train", *SMALL, "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert err == "mtp-edu: failed: RuntimeError: disk on fire second line (MTP_EDU_TRACEBACK=1 shows where)\n"


# ---- success: exit status 0 ------------------------------------------------------------------
def test_train_generate_and_info_exit_0(run_dir, tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(shutil.copytree(run_dir, tmp_path / "run")), "--steps", "4",
                 "--no-progress"]) == 0
    assert main(["generate", "--model", str(run_dir), "--prompt", "def ", "--max-new-tokens", "4"]) == 0
    assert main(["info", str(run_dir)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_bench_exits_0_and_writes_its_report(run_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", str(run_dir), *TINY_BENCH, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [v["name"] for v in report["results"][str(run_dir)]["variants"]] == \
        ["mtp d=1", "mtp d=2", "prompt lookup d=2"]                  # default depths: 1..D of the model


def test_bench_train_exits_0_without_printing_its_results_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_train, "peak_step_memory", lambda *args, **kwargs: 1 << 20)
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--quick", "--d-model", "32", "--n-layers", "1", "--batch", "2", "--seq", "16",
                 "--styles", "linear", "--rounds", "1", "--device", "cpu", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "command" not in captured.err and "excess" in captured.out          # the result dict is not dumped
    assert json.loads(out.read_text())["peak_memory"]["256"]["d0"] == 1.0


def test_diagrams_exit_0(tmp_path, capsys):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    assert main(["diagrams", "--out", str(tmp_path / "d")]) == 0
    assert any(p.suffix == ".svg" for p in (tmp_path / "d").iterdir())


def fake_checkout(folder: Path) -> Path:
    """A checkout as the tools see it: pyproject.toml, one walkthrough and one solution notebook."""
    (folder / "notebooks" / "assignments").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "mtp-edu"\n')
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1 + 1")]),
                   folder / "notebooks" / "00_demo.ipynb")
    cell = nbformat.v4.new_code_cell("y = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n")
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": "a9-demo", "locked": False, "schema_version": 3,
                                 "solution": True, "task": False}          # an nbgrader solution cell
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "notebooks" / "assignments" / "a9_solution.ipynb")
    return folder


def test_notebooks_exits_0(tmp_path, monkeypatch, capsys):
    repo = fake_checkout(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert main(["notebooks", "--repo", str(repo)]) == 0                 # runs the notebook in a fresh kernel
    assert "00_demo.ipynb" in capsys.readouterr().out


def test_assignments_exits_0(tmp_path, monkeypatch):
    pytest.importorskip("nbgrader")
    repo = fake_checkout(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert main(["assignments", "--repo", str(repo)]) == 0
    assert (repo / "notebooks" / "assignments" / "a9.ipynb").is_file()


def test_a_forwarded_tool_leaves_argparse_as_it_was():
    import argparse
    before = argparse.ArgumentParser.error
    assert main(["notebooks", "--bogus"]) == 2
    assert argparse.ArgumentParser.error is before


def test_checkpoint_dir_of_the_successful_run_is_untouched_by_refusals(run_dir):
    assert ckpt.read_meta(run_dir)["step"] == 3
