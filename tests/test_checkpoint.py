"""Checkpoints (mtp_edu.checkpoint): bit-exact round trips, atomic writes, clear errors, no pickle."""
import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtp_edu import MTPConfig, MTPModel
from mtp_edu import checkpoint as ckpt
from mtp_edu.checkpoint import CheckpointError, load_checkpoint, load_train_state, save_checkpoint
from mtp_edu.data import ByteTokenizer, make_tokenizer, synthetic_corpus

CFG = dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, mtp_depth=2)


def trained_model(**changes):
    """A model whose weights (norm gains included) are not at their initial values."""
    torch.manual_seed(0)
    model = MTPModel(MTPConfig(**{**CFG, **changes}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 256, (2, 17))
    for _ in range(2):
        out = model(x[:, :-1])
        sum(logits.float().mean() for logits in out.logits).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def rewrite_meta(path, change):
    meta = json.loads((path / ckpt.META).read_text())
    change(meta)
    (path / ckpt.META).write_text(json.dumps(meta))


@pytest.mark.parametrize("style", ["sequential", "parallel", "linear"])
def test_round_trip_is_bit_exact(tmp_path, style):
    model, _ = trained_model(mtp_style=style)
    save_checkpoint(tmp_path / "c", model, ByteTokenizer(), {"step": 2})
    back = load_checkpoint(tmp_path / "c")
    original = model.state_dict()
    for name, tensor in back.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert back.model.out_head.weight is back.model.embed.weight          # still tied
    x = torch.randint(0, 256, (2, 12))
    for a, b in zip(model.eval()(x).logits, back.model(x).logits):
        assert torch.equal(a, b)
    assert back.meta["step"] == 2 and isinstance(back.tokenizer, ByteTokenizer)
    assert "out_head.weight" not in load_file(str(tmp_path / "c" / ckpt.WEIGHTS))   # saved once


def test_untied_head_and_bpe_tokenizer_round_trip(tmp_path):
    model, _ = trained_model(tie_embeddings=False, vocab_size=300)
    tok = make_tokenizer("bpe:300", synthetic_corpus("words", n_chars=4000))
    save_checkpoint(tmp_path / "c", model, tok)
    back = load_checkpoint(tmp_path / "c")
    assert torch.equal(back.model.out_head.weight, model.out_head.weight)
    assert not torch.equal(back.model.out_head.weight[:256], back.model.embed.weight[:256])
    assert back.tokenizer.encode("hello world") == tok.encode("hello world")


def test_half_precision_storage_loads_as_float32(tmp_path):
    model, _ = trained_model()
    save_checkpoint(tmp_path / "c", model, ByteTokenizer(), dtype="float16")
    back = load_checkpoint(tmp_path / "c")
    for name, tensor in back.model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, model.state_dict()[name].half().float()), name
    assert (tmp_path / "c" / ckpt.WEIGHTS).stat().st_size < 0.6 * sum(
        t.numel() * 4 for t in ckpt.weights_state(model).values())


def test_optimizer_and_rng_state_round_trip(tmp_path):
    model, opt = trained_model()
    g = torch.Generator().manual_seed(9)
    torch.randint(0, 10, (5,), generator=g)
    save_checkpoint(tmp_path / "c", model, ByteTokenizer(), optimizer=opt, rng_states={"data": g.get_state()})
    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    rng = load_train_state(tmp_path / "c", fresh)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"][idx][key]), (idx, key)
    g2 = torch.Generator()
    g2.set_state(rng["data"])
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=g2))


@pytest.fixture
def saved(tmp_path):
    model, opt = trained_model()
    return save_checkpoint(tmp_path / "c", model, ByteTokenizer(), optimizer=opt, card={"name": "x"})


def test_corrupt_weights_are_detected(saved):
    path = saved / ckpt.WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt or was modified: sha256"):
        load_checkpoint(saved)


def test_truncated_weights_are_detected(saved):
    path = saved / ckpt.WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt: 1000 bytes"):
        load_checkpoint(saved)


def test_truncated_or_foreign_json_is_detected(saved):
    text = (saved / ckpt.META).read_text()
    (saved / ckpt.META).write_text(text[:len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(saved)
    (saved / ckpt.META).write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not an mtp-edu checkpoint record"):
        load_checkpoint(saved)
    (saved / ckpt.META).write_text(json.dumps({"format": ckpt.FORMAT, "version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(saved)


def test_missing_files_and_directories(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint.json is missing"):
        load_checkpoint(tmp_path / "empty")
    (saved / ckpt.WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(saved)


def test_config_that_does_not_match_the_tensors(saved):
    rewrite_meta(saved, lambda m: m["config"].update(d_model=64))
    with pytest.raises(CheckpointError, match=r"does not match its config \(d_model=64.*shape mismatch .*"
                                              r"blocks\.0\.attn\.qkv\.weight: \(96, 32\) in the file, \(192, 64\)"):
        load_checkpoint(saved)


def test_more_depth_in_config_than_in_file(saved):
    rewrite_meta(saved, lambda m: m["config"].update(mtp_depth=3))
    with pytest.raises(CheckpointError, match=r"missing tensors \['mtp\.2\."):
        load_checkpoint(saved)


def test_invalid_config_and_tokenizer(saved):
    rewrite_meta(saved, lambda m: m["config"].update(n_heads=5))
    with pytest.raises(CheckpointError, match="invalid config.*n_heads"):
        load_checkpoint(saved)
    rewrite_meta(saved, lambda m: (m["config"].update(n_heads=4), m["tokenizer"].update(type="magic")))
    with pytest.raises(CheckpointError, match="unknown tokenizer 'magic'"):
        load_checkpoint(saved)


def test_tensor_file_with_missing_key_and_matching_hash(saved):
    """A consistent but wrong file (its hash recorded) still fails on the missing tensor."""
    path = saved / ckpt.WEIGHTS
    state = load_file(str(path))
    del state["norm.weight"]
    save_file(state, str(path))
    rewrite_meta(saved, lambda m: m["files"][ckpt.WEIGHTS].update(bytes=path.stat().st_size,
                                                                  sha256=ckpt.sha256_file(path)))
    with pytest.raises(CheckpointError, match=r"missing tensors \['norm\.weight'\]"):
        load_checkpoint(saved)


def test_weights_only_export_cannot_be_resumed(tmp_path):
    model, _ = trained_model()
    save_checkpoint(tmp_path / "c", model, ByteTokenizer())
    with pytest.raises(CheckpointError, match="holds no training state"):
        load_train_state(tmp_path / "c")


def test_a_failed_save_leaves_the_old_checkpoint_intact(saved, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    model, _ = trained_model(init_seed=1)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(ckpt, "_write_json", crash)        # dies after the tensors are written
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, model, ByteTokenizer(), card={"name": "y"})
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["c"]          # no partial directory left
    load_checkpoint(saved)


def test_a_save_interrupted_mid_swap_is_recovered(saved):
    os.replace(saved, saved.parent / ".c.prev")            # killed between the two renames
    with pytest.warns(UserWarning, match="interrupted save"):
        back = load_checkpoint(saved)
    assert back.path.name == ".c.prev"
    model, _ = trained_model(init_seed=2)
    save_checkpoint(saved, model, ByteTokenizer())         # the next save completes the swap
    assert sorted(p.name for p in saved.parent.iterdir()) == ["c"]
    assert torch.equal(load_checkpoint(saved).model.embed.weight, model.embed.weight)


def test_overwrite_replaces_and_refuses_foreign_directories(saved, tmp_path):
    model, _ = trained_model(init_seed=3)
    save_checkpoint(saved, model, ByteTokenizer())
    assert torch.equal(load_checkpoint(saved).model.embed.weight, model.embed.weight)
    assert not (saved / ckpt.TRAIN_STATE).exists()          # the old file went with the old checkpoint
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "mine", model, ByteTokenizer())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_card_is_hash_checked(saved):
    assert ckpt.read_card(saved) == {"name": "x"}
    (saved / ckpt.CARD).write_text('{"name": "forged"}')
    with pytest.raises(CheckpointError, match="card.json"):
        ckpt.read_card(saved)


def test_an_absurd_config_is_refused_before_anything_is_allocated(saved, monkeypatch):
    """A one-line edit (vocab_size 4e9) would make MTPModel allocate 1 TB: the config is compared with the
    shapes in the file's header first, and the only model built before that is on the meta device."""
    rewrite_meta(saved, lambda m: m["config"].update(vocab_size=4_000_000_000))
    built, real = [], ckpt.MTPModel

    def recording(config):
        model = real(config)
        built.append(next(model.parameters()).device.type)
        return model
    monkeypatch.setattr(ckpt, "MTPModel", recording)
    monkeypatch.setattr(ckpt, "_read_tensors", lambda file: pytest.fail("tensors loaded before the shapes' check"))
    with pytest.raises(CheckpointError, match=r"vocab_size=4000000000\).*shape mismatch embed\.weight: \(256, 32\) "
                                              r"in the file, \(4000000000, 32\) from the config"):
        load_checkpoint(saved)
    assert built == ["meta"]


def test_header_shapes_and_dtypes_are_read_without_loading(saved):
    header = ckpt.read_header(saved / ckpt.WEIGHTS)
    assert header["embed.weight"] == ((256, 32), "F32")
    assert ckpt.expected_shapes(MTPConfig(**CFG)) == {k: shape for k, (shape, _) in header.items()}


def test_integer_weights_are_refused(saved):
    path = saved / ckpt.WEIGHTS
    state = load_file(str(path))
    state["norm.weight"] = state["norm.weight"].long()
    save_file(state, str(path))
    rewrite_meta(saved, lambda m: m["files"][ckpt.WEIGHTS].update(bytes=path.stat().st_size,
                                                                  sha256=ckpt.sha256_file(path)))
    with pytest.raises(CheckpointError, match="tensor norm.weight has dtype I64; weights must be floating point"):
        load_checkpoint(saved)


@pytest.mark.parametrize("damage, message", [
    (lambda m: m["optimizer"].pop("param_groups"), "optimizer.param_groups is missing"),
    (lambda m: m["optimizer"].update(param_groups="all"), "optimizer.param_groups is missing or is not a list"),
    (lambda m: m["optimizer"].update(scalars={"step": 1.0}), "malformed optimizer key 'step'; expected INDEX.NAME"),
    (lambda m: m["optimizer"].update(scalars={"x.step": 1.0}), "malformed optimizer key 'x.step'"),
    (lambda m: m["optimizer"].update(scalars=[1]), "optimizer.scalars must be an object"),
    (lambda m: m.pop("optimizer"), "lacks the optimizer section"),
    (lambda m: m["optimizer"]["param_groups"][0].pop("params"), "does not fit this model/optimizer: KeyError"),
])
def test_damaged_optimizer_metadata_is_a_checkpoint_error(saved, damage, message):
    rewrite_meta(saved, damage)
    model, _ = trained_model()
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_train_state(saved, torch.optim.AdamW(model.parameters()))


def test_a_malformed_tensor_key_in_the_training_state_is_a_checkpoint_error(saved):
    path = saved / ckpt.TRAIN_STATE
    tensors = load_file(str(path))
    tensors["optimizer.state.nodot"] = torch.zeros(1)
    save_file(tensors, str(path))
    rewrite_meta(saved, lambda m: m["files"][ckpt.TRAIN_STATE].update(bytes=path.stat().st_size,
                                                                      sha256=ckpt.sha256_file(path)))
    model, _ = trained_model()
    with pytest.raises(CheckpointError, match="malformed optimizer key 'nodot'"):
        load_train_state(saved, torch.optim.AdamW(model.parameters()))


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("step"), "'step' is None"),
    (lambda m: m.update(step=-1), "'step' is -1"),
    (lambda m: m.update(step=True), "'step' is True"),
    (lambda m: m.update(history={"a": 1}), "'history' must be a list of objects"),
    (lambda m: m.update(training_time_s="long"), "'training_time_s' is 'long'"),
    (lambda m: m.update(commands=[1]), "'commands' must be a list of strings"),
    (lambda m: m.update(train_config=[]), "'train_config' must be an object"),
])
def test_run_record_names_what_is_missing_or_malformed(saved, damage, message):
    rewrite_meta(saved, lambda m: m.update(step=2, history=[], train_config={}))
    assert ckpt.run_record(saved)["step"] == 2
    rewrite_meta(saved, damage)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        ckpt.run_record(saved)


def test_symbolic_links_that_lead_nowhere_are_named_as_such(saved, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(CheckpointError, match="is a symbolic link loop"):
        load_checkpoint(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(CheckpointError, match="is a symbolic link to .*gone.*, which does not exist"):
        load_checkpoint(tmp_path / "dangling")
    (tmp_path / "link").symlink_to(saved)                         # a link to a checkpoint is fine
    assert load_checkpoint(tmp_path / "link").meta["files"]


def test_weights_with_nan_or_inf_are_never_saved(saved):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    model, opt = trained_model(init_seed=4)
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"weights \(stored as float32\) hold NaN or inf in \['norm.weight'\]"):
        save_checkpoint(saved, model, ByteTokenizer(), optimizer=opt)
    with torch.no_grad():
        model.norm.weight[0] = 1e6                                  # finite, but not in float16
    with pytest.raises(CheckpointError, match=r"stored as float16\) hold NaN or inf in \['norm.weight'\]"):
        save_checkpoint(saved, model, ByteTokenizer(), dtype="float16")
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["c"]          # no partial directory either


def test_nan_in_the_metadata_is_named_and_nothing_is_written(saved):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    model, _ = trained_model()
    with pytest.raises(CheckpointError, match=r"history\[1\]\.loss = nan in checkpoint\.json is not a finite number"):
        save_checkpoint(saved, model, ByteTokenizer(), {"history": [{"loss": 1.0}, {"loss": float("nan")}]})
    with pytest.raises(CheckpointError, match=r"validation\.loss\[0\] = inf in card\.json"):
        save_checkpoint(saved, model, ByteTokenizer(), card={"validation": {"loss": [float("inf")]}})
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


@pytest.mark.parametrize("place, overwrite, message", [
    ("file", False, "is a file; a checkpoint is a directory"),
    ("foreign", False, "is a directory with other files and no checkpoint"),
    ("c", False, "already holds a checkpoint; a new run would replace it"),           # its meta records no step
    ("file/sub", False, "file is a file, not a directory"),
])
def test_check_target_refuses_what_a_save_would_refuse_or_destroy(saved, tmp_path, place, overwrite, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match=re.escape(message)):
        ckpt.check_target(tmp_path / place, overwrite=overwrite)
    assert ckpt.check_target(saved, overwrite=True) == saved
    assert ckpt.check_target(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()                                   # the check writes nothing


def test_no_pickle_anywhere_in_our_io():
    root = Path(ckpt.__file__).parent
    for name in ("checkpoint.py", "train.py", "data.py", "cli.py", "pretrained/__init__.py"):
        text = (root / name).read_text()
        for forbidden in ("torch.load(", "import pickle", "pickle.load", "weights_only"):
            assert forbidden not in text, (name, forbidden)
