"""Model cards and quality gates: bits per byte, compressors, degeneracy, parse rate, --verify."""
import json
import math
import subprocess
import sys

import pytest
import torch

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.card import check_card, evaluate, verify_card
from mtp_edu.checkpoint import load_checkpoint
from mtp_edu.data import BPETokenizer, ByteTokenizer, eval_chunks, stdlib_corpus, token_byte_lengths
from mtp_edu.quality import (
    code_prompts,
    compressor_bits_per_byte,
    distinct_ngram_ratio,
    first_lines,
    held_out_files,
    parses,
)


def test_compressors_tell_noise_from_repetition():
    g = torch.Generator().manual_seed(0)
    noise = "".join(chr(33 + int(i)) for i in torch.randint(0, 94, (20_000,), generator=g))
    loop = "def f(x):\n    return x\n" * 1000
    assert all(6.0 < b < 7.5 for b in compressor_bits_per_byte(noise).values())     # log2(94) = 6.55
    assert all(b < 0.1 for b in compressor_bits_per_byte(loop).values())
    with pytest.raises(ValueError, match="empty"):
        compressor_bits_per_byte("")


def test_distinct_ngrams_and_parsing():
    assert distinct_ngram_ratio(list("abababababab"), 4) == 2 / 9
    assert distinct_ngram_ratio(list(range(10)), 4) == 1.0
    with pytest.raises(ValueError, match="no 4-gram"):
        distinct_ngram_ratio([1, 2, 3], 4)
    assert first_lines("a\nb\nc", 5) == "a\nb\n" and first_lines("a\nb\nc\n", 2) == "a\nb\n"
    assert parses("x = 1\n", "def f():\n    return 2\ny = (")           # the unfinished line is trimmed
    assert not parses("x = 1\n", "def f(:\n    pass\n")
    assert not parses("", "x = '\0'\n")                                     # ValueError inside ast.parse


def test_prompts_are_code_from_the_held_out_files_in_order():
    body = "def f{i}(x):\n    return 'é' * x\n" * 20
    val = "".join(f"# ==== m{i}.py ====\n\"\"\"Docstring.\"\"\"\n" + (body.format(i=i) if i != 1 else "x = 1\n" * 30)
                  for i in range(4))
    assert [n for n, _ in held_out_files(val)] == ["m0.py", "m1.py", "m2.py", "m3.py"]
    prompts = code_prompts(val, 3, n_bytes=50)                       # m1.py has no def or class: skipped
    assert [p[:6] for p in prompts] == ["def f0", "def f2", "def f3"] and all(len(p.encode()) <= 50 for p in prompts)
    whole = code_prompts(val, 2, n_bytes=50, whole_lines=True)
    assert whole[0] == "def f0(x):\n    return 'é' * x\ndef f0(x):\n"              # whole lines within 50 bytes
    with pytest.raises(ValueError, match="holds 3 files with a top-level def or class"):
        code_prompts(val, 4)


@pytest.mark.parametrize("subword", [False, True])
def test_bits_per_byte_is_summed_loss_over_the_scored_bytes(subword):
    text = "def add(a, b):\n    return a + b\n" * 30
    tok = BPETokenizer.train(text, 270) if subword else ByteTokenizer()
    torch.manual_seed(0)
    model = MTPModel(MTPConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2, max_seq_len=32,
                               mtp_depth=2)).eval()
    chunks = eval_chunks(tok.encode_tensor(text), 16)
    lengths = token_byte_lengths(tok)
    got = evaluate(model, chunks, byte_lengths=lengths)
    for k in range(3):
        logits = model(chunks[:, :-1]).logits[k].detach()
        target = chunks[:, 1 + k:]
        nats = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
        assert got[f"val_bpb_{k}"] == pytest.approx(nats / math.log(2) / int(lengths[target].sum()), rel=1e-6)
    if not subword:                                          # one byte per token: bits/byte = nats/token / ln 2
        assert got["val_bpb_0"] == pytest.approx(got["val_loss_0"] / math.log(2), rel=1e-6)


def test_a_damaged_card_is_named_not_a_key_error():
    with pytest.raises(ValueError, match="has no 'validation'"):
        check_card({"name": "x"} | {f: 1 for f in ("command", "steps", "tokens_seen", "training_time_s", "hardware",
                                                   "software", "params", "config", "train_config", "corpus",
                                                   "weights_dtype", "eval_slice")}, "dir")
    with pytest.raises(ValueError, match="not a JSON object"):
        check_card([], "dir")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mtp_edu.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_an_exported_code_model_card_verifies_and_rebuilds(tmp_path):
    """The whole path: train on the stdlib, export with the quality report, verify, rebuild, tamper."""
    out = _cli("train", "--preset", "tiny", "--steps", "12", "--eval-every", "0", "--out", str(tmp_path / "run"),
               "--export", str(tmp_path / "exp"), "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    card = json.loads((tmp_path / "exp" / "card.json").read_text())
    q = card["quality"]
    assert len(q["greedy"]["prompts"]) == 8 and q["parse"]["of"] == 20 and len(q["bits_per_byte"]) == 3
    assert set(q["compressors_bits_per_byte"]) == {"gzip -9", "xz -9e"} and card["load_average"]["max"] >= 0
    verified = _cli("info", str(tmp_path / "exp"), "--verify", cwd=tmp_path)
    assert verified.returncode == 0 and "verified: the card matches" in verified.stdout, verified.stdout
    assert "below gate: main head" in verified.stdout                     # 12 steps do not clear the gates

    rebuilt = subprocess.run([sys.executable, "-m", "mtp_edu.tools.cards", str(tmp_path / "exp")],
                             capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = json.loads((tmp_path / "exp" / "card.json").read_text())
    assert again["quality"] == q and again["validation"] == card["validation"]

    state = load_checkpoint(tmp_path / "exp")
    card["quality"]["parse"]["parsed_each"][0] = not q["parse"]["parsed_each"][0]
    card["eval_slice"]["bits_per_byte"][1] += 0.01
    checks, _ = verify_card(state.model, state.tokenizer, card, stdlib_corpus())
    failed = [line for line, ok in checks if not ok]
    assert len(failed) == 2 and failed[0].startswith("eval slice") and failed[1].startswith("parsed continuations")

    (tmp_path / "exp" / "card.json").write_text(json.dumps(card))          # an edited file is caught on load
    tampered = _cli("info", str(tmp_path / "exp"), "--verify", cwd=tmp_path)
    assert tampered.returncode == 2 and "card.json is truncated or corrupt" in tampered.stderr
