"""Training (mtp_edu.train): schedules, determinism, exact resume, memory-efficient path, torchrun DDP."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtp_edu import MTPConfig
from mtp_edu.card import evaluate
from mtp_edu.checkpoint import CheckpointError, load_checkpoint, read_meta
from mtp_edu.data import synthetic_corpus
from mtp_edu.losses import mtp_loss
from mtp_edu.model import MTPModel
from mtp_edu.train import PRESETS, TrainConfig, lr_at, preset, train

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
