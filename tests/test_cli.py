"""The `mtp-edu` command line (mtp_edu.cli): train -> info --verify -> generate, and clear errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtp_edu import checkpoint as ckpt
from mtp_edu.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "2", "--eval-every", "0", "--no-progress",
         "--data", "synthetic:words:0.05"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--steps", "3", "--out", str(out)]) == 0
    return out


def test_train_leaves_a_loadable_checkpoint_with_its_command(run_dir):
    state = ckpt.load_checkpoint(run_dir)
    assert state.meta["step"] == 3 and state.model.config.mtp_depth == 2
    card = state.card
    assert card["command"].startswith("mtp-edu train --preset tiny") and "--steps 3" in card["command"]
    assert card["train_config"]["seq_len"] == 32 and card["tokens_seen"] == 3 * 2 * 32


def test_resume_from_the_command_line(run_dir, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", "--out", str(copy), "--steps", "5", "--no-progress"]) == 0
    assert ckpt.read_meta(copy)["step"] == 5


def _copy(run_dir, tmp_path):
    import shutil
    return shutil.copytree(run_dir, tmp_path / "run")


@pytest.mark.parametrize("extra, message", [
    (["--steps", "2"], "is at step 3 already; give steps >= 3"),                 # would relabel step 3 as 2
    (["--tokenizer", "bpe:300"], "was trained with 'byte', and a resumed run keeps its tokenizer"),
])
def test_resume_refuses_to_rewrite_the_run_s_history(extra, message, run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)
    before = (copy / ckpt.META).read_bytes()
    assert main(["train", "--resume", "--out", str(copy), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (copy / ckpt.META).read_bytes() == before                            # the checkpoint is untouched


def test_a_resumed_run_keeps_its_name_whatever_the_preset(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    assert main(["train", "--preset", "mtp-d0", "--resume", "--out", str(copy), "--steps", "4",
                 "--no-progress"]) == 0
    meta = ckpt.read_meta(copy)
    assert meta["name"] == "tiny" and meta["step"] == 4 and meta["config"]["mtp_depth"] == 2


def test_a_new_run_into_a_checkpoint_is_refused_before_any_step(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)
    before = (copy / ckpt.WEIGHTS).read_bytes()
    assert main(["train", *SMALL, "--steps", "3", "--out", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "already holds a checkpoint at step 3" in err and "--resume" in err and err.count("\n") == 1
    assert (copy / ckpt.WEIGHTS).read_bytes() == before


def test_resume_of_damaged_metadata_is_a_clear_error(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)

    def rewrite(change):
        meta = json.loads((copy / ckpt.META).read_text())
        change(meta)
        (copy / ckpt.META).write_text(json.dumps(meta))
    rewrite(lambda m: m.pop("train_config"))                                   # as saved through the API
    assert main(["train", "--resume", "--out", str(copy), "--no-progress"]) == 2
    assert "records no training config" in capsys.readouterr().err
    rewrite(lambda m: m.update(train_config={**ckpt.read_meta(run_dir)["train_config"]},
                               optimizer={**m["optimizer"], "scalars": {"zero.step": 3.0}}))
    assert main(["train", "--resume", "--out", str(copy), "--steps", "4", "--no-progress"]) == 2
    assert "malformed optimizer key 'zero.step'" in capsys.readouterr().err
    rewrite(lambda m: m.update(optimizer={"scalars": {}}))
    assert main(["train", "--resume", "--out", str(copy), "--steps", "4", "--no-progress"]) == 2
    assert "optimizer.param_groups is missing" in capsys.readouterr().err
    rewrite(lambda m: m.update(step="three"))
    assert main(["train", "--resume", "--out", str(copy), "--steps", "4", "--no-progress"]) == 2
    assert "'step' is 'three'" in capsys.readouterr().err


def test_info_prints_and_verifies_the_card(run_dir, capsys):
    assert main(["info", str(run_dir), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "mtp-edu train --preset tiny" in out and "verified: the card matches the stored weights" in out
    assert main(["info", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3


def test_info_verify_catches_numbers_that_do_not_match(run_dir, tmp_path, capsys):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    card = json.loads((copy / ckpt.CARD).read_text())
    card["eval_slice"]["loss"][1] += 0.01
    (copy / ckpt.CARD).write_text(json.dumps(card))
    meta = json.loads((copy / ckpt.META).read_text())
    meta["files"][ckpt.CARD] = {"bytes": (copy / ckpt.CARD).stat().st_size,
                                "sha256": ckpt.sha256_file(copy / ckpt.CARD)}
    (copy / ckpt.META).write_text(json.dumps(meta))
    assert main(["info", str(copy), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "NOT verified" in out and "FAIL  eval slice" in out


def test_generate_continues_the_prompt(run_dir, capsys):
    pytest.importorskip("mtp_edu.decoding")
    assert main(["generate", "--model", str(run_dir), "--prompt", "def f(x):", "--max-new-tokens", "8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("def f(x):") and len(text.rstrip("\n")) > len("def f(x):")
    assert main(["generate", "--model", str(run_dir), "--prompt", "ab", "--max-new-tokens", "5",
                 "--temperature", "0.8", "--top-k", "20", "--seed", "1"]) == 0


@pytest.mark.parametrize("argv, message", [
    ([], "required"),
    (["train", "--preset", "huge"], "invalid choice"),
    (["train", "--steps", "0"], "expected an integer >= 1"),
    (["train", "--lr", "fast"], "expected a finite number > 0, got 'fast'"),
    (["train", "--lr", "inf"], "expected a finite number > 0, got 'inf'"),
    (["train", "--mtp-lambda", "nan"], "argument --mtp-lambda: expected a finite number >= 0, got 'nan'"),
    (["generate"], "--prompt"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtp-edu: error: ") and message in err and err.count("\n") == 1
    assert "--help)" in err                                      # where to read the usage


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "no-such-model", "--prompt", "x"], "no model 'no-such-model'"),
    (["generate", "--model", "RUN", "--prompt", "x", "--top-p", "0"], "--top-p"),
    (["info", "EMPTY"], "checkpoint.json is missing"),
    (["train", "--data", "MISSING_FILE", "--no-progress"], "does not exist"),
    (["train", "--data", "synthetic:zipf", "--no-progress"], "synthetic kind"),
    (["train", "--resume", "--out", "EMPTY"], "checkpoint.json is missing"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    subs = {"EMPTY": str(tmp_path / "empty"), "RUN": str(run_dir), "MISSING_FILE": str(tmp_path / "nope.txt")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtp-edu: error: ") and message in err and err.count("\n") == 1


def test_errors_from_the_installed_entry_point_have_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "mtp_edu.cli", "info", str(tmp_path / "nothing")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "does not exist" in result.stderr


def test_subcommands_can_be_added():
    from mtp_edu import cli
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert {"train", "generate", "info"} <= names
    assert all(callable(add) for add in cli.SUBCOMMANDS)


def test_the_module_docstring_lists_every_subcommand():
    from mtp_edu import cli
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert len(names) == 7 and all(f"    mtp-edu {name}" in cli.__doc__ for name in names)
