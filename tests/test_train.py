"""Training (mtp_edu.train): schedules, determinism, exact resume, memory-efficient path, torchrun DDP."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mtp_edu.train as train_module
from mtp_edu import MTPConfig
from mtp_edu.card import evaluate
from mtp_edu.checkpoint import CheckpointError, load_checkpoint, read_meta
from mtp_edu.data import synthetic_corpus
from mtp_edu.losses import mtp_loss
from mtp_edu.model import MTPModel
from mtp_edu.train import PRESETS, TrainConfig, TrainingDiverged, lr_at, preset, train

ROOT = Path(__file__).resolve().parents[1]
MODEL = MTPConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, mtp_depth=2)


def tc(**changes) -> TrainConfig:
    base = dict(data="synthetic:words:0.05", steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2,
                eval_every=3, eval_chunks=4, final_eval_chunks=4, card_chunks=2, log_every=1, device="cpu")
    return TrainConfig(**{**base, **changes})


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    c = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))            # increasing warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))            # then non-increasing
    assert lr_at(100, c) == pytest.approx(0.1) and lrs[55] == pytest.approx(0.55)   # half way: mean


def test_train_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lambda_schedule"):
        TrainConfig(lambda_schedule="cosine")
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert set(PRESETS) >= {"tiny", "mtp-seq-d3", "mtp-d0", "mtp-par-d3", "mtp-lin-d3"}


def test_training_learns_and_records_a_json_history(tmp_path):
    result = train(MODEL, tc(steps=30, eval_every=15), tmp_path / "run", progress=False)
    h = result.history
    assert [r["step"] for r in h] == list(range(1, 31))
    assert h[-1]["loss_0"] < 0.75 * h[0]["loss_0"]                     # it learns the word language
    assert {"loss", "loss_0", "loss_1", "loss_2", "lr", "tokens", "grad_norm"} <= set(h[0])
    assert {"val_loss_0", "val_acc_2"} <= set(h[14]) and "val_loss_0" not in h[13]
    json.dumps(h, allow_nan=False)
    for r in h:                                                       # eq. 25 with lambda = 0.3, D = 2
        assert r["loss"] == pytest.approx(r["loss_0"] + 0.15 * (r["loss_1"] + r["loss_2"]), rel=1e-5)
    card = result.card
    assert card["steps"] == 30 and card["tokens_seen"] == 30 * 4 * 32
    assert card["corpus"]["sha256"] == synthetic_corpus("words", 0.05).sha256
    assert read_meta(tmp_path / "run")["corpus"]["sha256"] == card["corpus"]["sha256"]


def test_evaluate_matches_the_loss_definition():
    torch.manual_seed(0)
    model = MTPModel(MODEL).eval()
    chunks = torch.randint(0, 256, (5, 17))
    got = evaluate(model, chunks, batch_size=2)
    with torch.no_grad():
        out = model(chunks[:, :-1])
    parts = mtp_loss(out, chunks[:, 1:])
    for k, loss in enumerate([parts.main, *parts.depths]):
        assert got[f"val_loss_{k}"] == pytest.approx(float(loss), rel=1e-5)
        target = chunks[:, 1 + k:]
        acc = (out.logits[k].argmax(-1) == target).float().mean()
        assert got[f"val_acc_{k}"] == pytest.approx(float(acc))


def test_training_is_deterministic_on_cpu(tmp_path):
    a = train(MODEL, tc(), None, progress=False)
    b = train(MODEL, tc(), None, progress=False)
    assert same_weights(a.model, b.model)
    c = train(MODEL, tc(seed=1), None, progress=False)
    assert not same_weights(a.model, c.model)


class Killed(Exception):
    pass


def test_resume_after_interruption_is_bit_exact(tmp_path):
    config = tc(steps=7, save_every=3)
    full = train(MODEL, config, tmp_path / "full", progress=False)

    def kill_at_5(step, record):
        if step == 5:
            raise Killed                      # dies after the step-3 checkpoint, mid-way to step 6
    with pytest.raises(Killed):
        train(MODEL, config, tmp_path / "cut", progress=False, callback=kill_at_5)
    assert read_meta(tmp_path / "cut")["step"] == 3
    resumed = train(MODEL, config, tmp_path / "cut", resume=True, progress=False)
    assert same_weights(full.model, resumed.model)
    def strip(history):                   # what the machine was doing is not part of the run
        return [{k: v for k, v in r.items() if k not in ("time_s", "load_avg")} for r in history]
    assert strip(resumed.history) == strip(full.history)
    assert same_weights(load_checkpoint(tmp_path / "cut").model, full.model)


def test_resume_refuses_another_corpus_or_config(tmp_path):
    train(MODEL, tc(steps=2), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="sha256"):
        train(MODEL, tc(steps=4, data="synthetic:words:0.5"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="model config differs"):
        train(MODEL.replace(d_model=64), tc(steps=4), tmp_path / "run", resume=True, progress=False)


def test_memory_efficient_training_follows_the_same_path():
    plain = train(MODEL, tc(steps=4, eval_every=0), None, progress=False)
    lean = train(MODEL, tc(steps=4, eval_every=0, memory_efficient=True), None, progress=False)
    for (name, a), b in zip(plain.model.state_dict().items(), lean.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    for r, s in zip(plain.history, lean.history):
        assert r["loss"] == pytest.approx(s["loss"], rel=1e-5)


def test_bpe_training_sets_the_vocabulary(tmp_path):
    result = train(MODEL, tc(steps=2, tokenizer="bpe:300", eval_every=0), tmp_path / "bpe", progress=False)
    assert result.model.config.vocab_size == result.tokenizer.vocab_size <= 300
    back = load_checkpoint(tmp_path / "bpe")
    assert back.tokenizer.encode("def f(x):") == result.tokenizer.encode("def f(x):")


def test_a_bpe_run_resumes_through_the_python_api(tmp_path):
    """The caller's config says vocab_size=256; the run's BPE tokenizer set it to its own size."""
    config = tc(steps=2, tokenizer="bpe:260", eval_every=0)
    first = train(MODEL, config, tmp_path / "bpe", progress=False)
    assert first.model.config.vocab_size == first.tokenizer.vocab_size != MODEL.vocab_size
    resumed = train(MODEL, tc(steps=3, tokenizer="bpe:260", eval_every=0), tmp_path / "bpe", resume=True,
                    progress=False)
    assert read_meta(tmp_path / "bpe")["step"] == 3 and [r["step"] for r in resumed.history] == [1, 2, 3]
    assert resumed.tokenizer.to_dict() == first.tokenizer.to_dict()


def test_resume_refuses_fewer_steps_and_another_tokenizer(tmp_path):
    train(MODEL, tc(steps=3, eval_every=0), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.json").read_bytes()
    with pytest.raises(CheckpointError, match="with steps=2: the checkpoint is at step 3 already"):
        train(MODEL, tc(steps=2, eval_every=0), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="tokenizer 'bpe:300': the run was trained with 'byte'"):
        train(MODEL, tc(steps=4, tokenizer="bpe:300", eval_every=0), tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "checkpoint.json").read_bytes() == before
    same = train(MODEL, tc(steps=3, eval_every=0), tmp_path / "run", resume=True, progress=False)
    assert [r["step"] for r in same.history] == [1, 2, 3] and read_meta(tmp_path / "run")["step"] == 3


# ---- run safety: non-finite losses, bad output places, the caller's model and threads -----------
def poison(monkeypatch, at_step: int, what: str) -> None:
    """Make mtp_loss give a NaN loss ("loss") or a finite loss with a NaN gradient ("gradient") at
    0-based step `at_step` of train(): sqrt(0 * x) is 0, and its derivative inf * 0 is NaN."""
    real = train_module.mtp_loss

    def loss(output, targets, *args):
        parts = real(output, targets, *args)
        if args[1] == at_step:
            parts.total = parts.total * float("nan") if what == "loss" else \
                parts.total + torch.sqrt(output.logits[0].sum() * 0)
        return parts
    monkeypatch.setattr(train_module, "mtp_loss", loss)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tc(steps=8, save_every=2, eval_every=0)
    full = train(MODEL, config, tmp_path / "full", progress=False)

    def kill_at_5(step, record):
        if step == 5:
            raise Killed
    with pytest.raises(Killed):                            # the same run, cut where the other one diverges
        train(MODEL, config, tmp_path / "cut", progress=False, callback=kill_at_5)
    poison(monkeypatch, at_step=4, what="loss")
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5: the loss is nan, per depth .*not finite.*"
                                               r"the last checkpoint, step 4, is kept in .*run"):
        train(MODEL, config, tmp_path / "run", progress=False)
    kept = load_checkpoint(tmp_path / "run")
    assert kept.meta["step"] == 4 and same_weights(kept.model, load_checkpoint(tmp_path / "cut").model)
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())
    json.dumps(read_meta(tmp_path / "run"), allow_nan=False)
    monkeypatch.undo()                                     # the fault is gone: resume finishes bit-exactly
    resumed = train(MODEL, config, tmp_path / "run", resume=True, progress=False)
    assert same_weights(resumed.model, full.model)


def test_a_nan_gradient_stops_the_run_before_the_optimizer_step(tmp_path, monkeypatch):
    poison(monkeypatch, at_step=1, what="gradient")
    steps = []
    with pytest.raises(TrainingDiverged, match=r"at step 2: the loss is [0-9.]+ but the gradient norm is nan .*"
                                               r"no checkpoint was saved before it \(save_every=0\)"):
        train(MODEL, tc(steps=4, eval_every=0), tmp_path / "run", progress=False,
              callback=lambda step, record: steps.append(step))
    assert steps == [1] and not (tmp_path / "run").exists()


def test_a_diverged_run_through_the_api_without_out_says_so(monkeypatch):
    poison(monkeypatch, at_step=0, what="loss")
    with pytest.raises(TrainingDiverged, match="at step 1: .*nothing was saved"):
        train(MODEL, tc(steps=2, eval_every=0, grad_clip=0.0), None, progress=False)


def no_corpus_loaded(spec):
    """Loading the corpus is the first slow thing train() does: a bad place must be refused before it."""
    raise AssertionError("the run started before its output place was checked")


@pytest.mark.parametrize("place, message", [
    ("file.txt", "is a file; a checkpoint is a directory"),
    ("foreign", "is a directory with other files and no checkpoint"),
    ("file.txt/run", "file.txt is a file, not a directory"),
    ("done", "already holds a checkpoint at step 1; a new run would replace it: continue it with --resume"),
    ("loop", "is a symbolic link loop"),
])
def test_a_bad_out_is_refused_before_the_first_step(place, message, tmp_path, monkeypatch):
    train(MODEL, tc(steps=1, eval_every=0), tmp_path / "done", progress=False)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("precious")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    before = sorted(str(p) for p in tmp_path.rglob("*") if not p.is_symlink())
    monkeypatch.setattr(train_module, "load_corpus", no_corpus_loaded)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        train(MODEL, tc(steps=1, save_every=0), tmp_path / place, progress=False)
    if place != "done":                                # an export place alike (an export may be regenerated)
        with pytest.raises(CheckpointError, match=re.escape(message)):
            train(MODEL, tc(steps=1), tmp_path / "new", export=tmp_path / place, progress=False)
    assert sorted(str(p) for p in tmp_path.rglob("*") if not p.is_symlink()) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_is_refused_before_the_first_step(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setattr(train_module, "load_corpus", no_corpus_loaded)
    try:
        with pytest.raises(CheckpointError, match="is not writable"):
            train(MODEL, tc(steps=1), locked / "run", progress=False)
    finally:
        locked.chmod(0o700)


class Watched(MTPModel):
    """An MTPModel that records every move or cast (.to, .cpu, .cuda, .float, ... all go through _apply)."""
    made: list = []
    moves: list = []
    started = False                       # set once the training loop has run a step

    def __init__(self, config):
        super().__init__(config)
        Watched.made.append(self)

    def _apply(self, fn, recurse=True):
        Watched.moves.append((self, Watched.started))
        return super()._apply(fn, recurse)


def test_train_leaves_the_trained_model_where_it_trained(tmp_path, monkeypatch):
    """After training, result.model is the very model that trained, never moved: on a GPU it stays there
    (`model.cpu()` moved it in place). The card and checkpoint are written from a CPU copy on every device,
    so this CPU run takes the same path as a GPU run."""
    Watched.made, Watched.moves, Watched.started = [], [], False
    monkeypatch.setattr(train_module, "MTPModel", Watched)
    seen = {}

    def at_last_step(step, record):
        Watched.started = True
        model = Watched.made[0]
        seen.update(params=[id(p) for p in model.parameters()], ptrs=[p.data_ptr() for p in model.parameters()])
    result = train(MODEL, tc(steps=2, eval_every=0), tmp_path / "run", export=tmp_path / "export",
                   progress=False, callback=at_last_step)
    trained = Watched.made[0]
    assert result.model is trained
    assert [moved for moved, started in Watched.moves if moved is trained and started] == []   # no move after
    assert [id(p) for p in result.model.parameters()] == seen["params"]
    assert [p.data_ptr() for p in result.model.parameters()] == seen["ptrs"]
    assert same_weights(load_checkpoint(tmp_path / "run").model, result.model)


def test_train_restores_the_thread_count_even_when_it_fails(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(MODEL, tc(steps=1, eval_every=0, threads=1), None, progress=False)
        assert torch.get_num_threads() == 2
        with pytest.raises(CheckpointError, match="does not exist"):           # fails after the threads are set
            train(MODEL, tc(steps=1, threads=1), tmp_path / "nothing", resume=True, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_resume_of_an_api_checkpoint_without_a_step_is_a_clear_error(tmp_path):
    from mtp_edu.checkpoint import save_checkpoint
    from mtp_edu.data import ByteTokenizer
    model = MTPModel(MODEL)
    save_checkpoint(tmp_path / "api", model, ByteTokenizer(), optimizer=torch.optim.AdamW(model.parameters()))
    with pytest.raises(CheckpointError, match="'step' is None; a resumable checkpoint records its step"):
        train(MODEL, tc(steps=2), tmp_path / "api", resume=True, progress=False)


def test_compile_is_refused_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(ValueError, match="Windows"):
        train(MODEL, tc(compile=True), None, progress=False)


def _cli(args, nproc=1):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "mtp_edu.cli"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         "-m", "mtp_edu.cli"]
    return subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """Same global batch (8 chunks; 4 per rank under torchrun): the losses agree to 1e-5 relative and the
    final weights to 1e-5 absolute (only the order of floating-point sums differs)."""
    args = ["train", "--preset", "tiny", "--steps", "5", "--batch-size", "8", "--seq-len", "32",
            "--data", "synthetic:words:0.05", "--eval-every", "0", "--log-every", "1", "--no-progress",
            "--threads", "1", "--device", "cpu"]
    one = _cli(args + ["--out", str(tmp_path / "one")])
    two = _cli(args + ["--out", str(tmp_path / "two")], nproc=2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    h1, h2 = (read_meta(tmp_path / d)["history"] for d in ("one", "two"))
    assert len(h1) == len(h2) == 5
    for a, b in zip(h1, h2):
        for key in ("loss", "loss_0", "loss_1", "loss_2"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (a["step"], key, a[key], b[key])
    m1, m2 = load_checkpoint(tmp_path / "one").model, load_checkpoint(tmp_path / "two").model
    for (name, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert "x 2 processes" in json.loads((tmp_path / "two" / "card.json").read_text())["hardware"]
