"""Corpora, tokenizers and batches (mtp_edu.data)."""
import sysconfig
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtp_edu.data import (
    BPETokenizer,
    ByteTokenizer,
    eval_chunks,
    get_batch,
    load_corpus,
    make_tokenizer,
    stdlib_corpus,
    stdlib_files,
    synthetic_corpus,
    synthetic_text,
    text_file_corpus,
    tokenizer_from_dict,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_byte_tokenizer_round_trips_any_string(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode_tensor(text).tolist() == ids


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(stdlib_corpus().train[:200_000], vocab_size=400)


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_bpe_round_trips_any_string(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_bpe_compresses_code_and_serialises(bpe):
    code = stdlib_corpus().val[:5000]
    assert len(bpe.encode(code)) < 0.7 * len(code.encode("utf-8"))    # merges were learned
    again = tokenizer_from_dict(bpe.to_dict())
    assert again.vocab_size == bpe.vocab_size == 400
    assert again.encode(code) == bpe.encode(code) == bpe.encode_tensor(code).tolist()


def test_tokenizer_specs_and_errors():
    corpus = synthetic_corpus("words", n_chars=5000)
    assert isinstance(make_tokenizer("byte", corpus), ByteTokenizer)
    assert make_tokenizer("bpe:280", corpus).vocab_size == 280
    for bad in ("wordpiece", "bpe:many", "bpefoo", "bpe", "bpe:300:junk", "bpe:-5", "bpe:٣٠٠"):
        with pytest.raises(ValueError, match="is not known"):
            make_tokenizer(bad, corpus)
    with pytest.raises(ValueError, match="only enough pairs"):          # never fewer tokens than asked
        make_tokenizer("bpe:60000", corpus)
    with pytest.raises(ValueError, match=r"\[257, 65536\]"):
        make_tokenizer("bpe:100", corpus)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_dict({"type": "sentencepiece"})


@pytest.mark.parametrize("make", [ByteTokenizer, lambda: BPETokenizer.train("abc abd " * 40, 260)])
def test_tokenizers_refuse_bad_input_clearly(make):
    tok = make()
    for bad in (b"abc", None, 3):
        with pytest.raises(TypeError, match="takes a str"):
            tok.encode(bad)
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("ok \ud800")
    for bad in ([-1], [tok.vocab_size], [10**30]):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tok.decode(bad)
    with pytest.raises(TypeError, match="integer token ids"):
        tok.decode([1.5])
    for bad in (None, 5, torch.arange(3, device="meta"), torch.zeros(2, 2, dtype=torch.long)):
        with pytest.raises(TypeError, match=r"decode takes a list or a 1-d tensor of token ids"):
            tok.decode(bad)
    assert tok.decode(torch.tensor(tok.encode("abd"))) == "abd"
    assert b"".join(tok.token_bytes(i) for i in tok.encode("abd abc")) == b"abd abc"


def test_stdlib_corpus_is_the_stdlib_without_tests_with_disjoint_validation_files():
    a, b = stdlib_corpus(), stdlib_corpus()
    assert a.train == b.train and a.val == b.val and a.sha256 == b.sha256
    assert len(a.train) > 5_000_000 and len(a.val) > 100_000
    train, val = stdlib_files(Path(sysconfig.get_paths()["stdlib"]))
    assert not set(train) & set(val) and train == sorted(train) and 0.02 < len(val) / len(train + val) < 0.1
    assert not [f for f in train + val if "/test/" in f"/{f}" or f.split("/")[-1].startswith("test_")]
    for name in val:     # each validation file's text is absent from the training text
        assert f"# ==== {name} ====" in a.val and f"# ==== {name} ====" not in a.train
    assert a.describe()["sha256"] == a.sha256 and a.info["val_files"] == val


def test_stdlib_corpus_rule_and_hash_see_any_change(tmp_path):
    names = ["abc.py", "json/decoder.py", "uuid.py", "zz.py", "test/test_x.py", "email/tests/t.py",
             "test_top.py", "pydoc_data/topics.py", "encodings/cp1252.py", "site-packages/pkg.py",
             "config-3.11-x86_64-linux-gnu/python-config.py"] + [f"m{i}.py" for i in range(40)]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\nx = 1\n")
    train, val = stdlib_files(tmp_path)
    assert sorted(train + val) == sorted(["abc.py", "json/decoder.py", "uuid.py", "zz.py"] +
                                         [f"m{i}.py" for i in range(40)])
    assert val and train
    base = stdlib_corpus(tmp_path)
    assert base.train.index("# ==== abc.py") < base.train.index("# ==== json/decoder.py")   # sorted order
    (tmp_path / "json/decoder.py").write_text("# changed\n")
    changed = stdlib_corpus(tmp_path)
    assert changed.sha256 != base.sha256
    (tmp_path / "zz.py").unlink()
    assert stdlib_corpus(tmp_path).sha256 != changed.sha256
    (tmp_path / "abc.py").write_bytes(b"\xff not utf-8")
    with pytest.raises(ValueError, match="not UTF-8"):
        stdlib_corpus(tmp_path)
    with pytest.raises(ValueError, match="no Python standard library"):
        stdlib_corpus(tmp_path / "nowhere")


def test_synthetic_cycle_noise_knob():
    clean = synthetic_text("cycle", 5000, noise=0.0, seed=3)
    successors = {}
    for a, b in zip(clean, clean[1:]):
        assert successors.setdefault(a, b) == b          # fully determined by the previous character
    assert synthetic_text("cycle", 5000, noise=0.0, seed=3) == clean
    noisy = synthetic_text("cycle", 20000, noise=0.5, seed=3)
    follows = sum(successors.get(a) == b for a, b in zip(noisy, noisy[1:])) / (len(noisy) - 1)
    assert 0.45 < follows < 0.62                          # 0.5 + 0.5 / 26 expected
    noise = synthetic_text("noise", 26_000, seed=1)
    counts = torch.tensor([noise.count(c) for c in set(noise)], dtype=torch.float)
    assert len(counts) == 26 and counts.min() > 800       # roughly uniform


def test_synthetic_words_and_errors():
    text = synthetic_text("words", 3000, seed=0)
    words = set(text.split()[:-1])                         # the last word may be cut off
    assert 2 <= len(words) <= 16 and len({w[0] for w in words}) == len(words)
    corpus = synthetic_corpus("cycle", noise=0.1, n_chars=1000)
    assert len(corpus.train) + len(corpus.val) == 1000 and corpus.name == "synthetic:cycle:noise=0.1"
    with pytest.raises(ValueError, match="synthetic kind"):
        synthetic_text("zipf")
    with pytest.raises(ValueError, match="noise"):
        synthetic_text("cycle", noise=1.5)
    assert load_corpus("synthetic:noise").name == "synthetic:noise:noise=0"
    with pytest.raises(ValueError, match="noise must be a number"):
        load_corpus("synthetic:cycle:lots")


@pytest.mark.parametrize("spec,match", [                   # issue 11: 'synthetic:cycle:0.1:junk' dropped the junk
    ("synthetic:cycle:0.1:junk", r"expected synthetic:KIND\[:NOISE\], got 1 more ':'-separated part"),
    ("synthetic:cycle:", "noise must be a number"), ("synthetic:cycle: 0.1", "noise must be a number"),
    ("synthetic:cycle:nan", "noise must be a number"), ("synthetic:", "synthetic kind '' is not known"),
    ("synthetic:zipf:0.1", "synthetic kind 'zipf' is not known"),
    ("synthetic:cycle:1.5", r"noise must lie in \[0, 1\]"),
])
def test_corpus_specs_parse_strictly(spec, match):
    with pytest.raises(ValueError, match=match):
        load_corpus(spec)
    assert load_corpus("synthetic:words:0.25").name == "synthetic:words:noise=0.25"


def test_a_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(ValueError, match=r"is a directory; the data must be 'stdlib', 'synthetic:KIND\[:NOISE\]'"):
        load_corpus(str(tmp_path))                         # issue 11: it said "does not exist"
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    with pytest.raises(ValueError, match="is a broken symbolic link"):
        text_file_corpus(loop)
    for bad in (None, 5, b"stdlib"):
        with pytest.raises(TypeError, match="corpus spec .* is not allowed: must be 'stdlib'"):
            load_corpus(bad)
    with pytest.raises(ValueError, match=r"val_fraction=1.0 is not allowed: must be a finite number > 0 and < 1"):
        text_file_corpus(loop, val_fraction=1.0)


def test_text_file_corpus(tmp_path):
    path = tmp_path / "poem.txt"
    lines = [f"line {i} ünïcode\n" for i in range(100)]
    path.write_text("".join(lines), encoding="utf-8")
    corpus = load_corpus(str(path))
    assert corpus.train + corpus.val == "".join(lines)
    assert corpus.val.startswith("line ") and corpus.train.endswith("\n")   # cut at a line start
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00 not utf8")
    with pytest.raises(ValueError, match="not UTF-8"):
        text_file_corpus(tmp_path / "bin.txt")
    with pytest.raises(ValueError, match="does not exist"):
        text_file_corpus(tmp_path / "missing.txt")


def test_get_batch_shifts_and_is_seeded():
    data = torch.arange(1000)
    x, y = get_batch(data, 6, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])                 # targets are inputs shifted by one
    assert torch.equal(y - x, torch.ones_like(x))           # contiguous chunks of the data
    x2, _ = get_batch(data, 6, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    x3, _ = get_batch(data, 6, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)


def test_get_batch_ranks_split_the_global_batch():
    data = torch.arange(5000)
    full, _ = get_batch(data, 8, 10, torch.Generator().manual_seed(5))
    parts = [get_batch(data, 8, 10, torch.Generator().manual_seed(5), rank=r, world_size=4)[0] for r in range(4)]
    assert torch.equal(torch.cat(parts), full)
    with pytest.raises(ValueError, match="multiple"):
        get_batch(data, 6, 10, torch.Generator(), rank=0, world_size=4)
    with pytest.raises(ValueError, match="chunk needs"):
        get_batch(torch.arange(5), 2, 10, torch.Generator())


def test_eval_chunks_are_consecutive():
    chunks = eval_chunks(torch.arange(100), 9, max_chunks=5)
    assert chunks.shape == (5, 10) and torch.equal(chunks.flatten(), torch.arange(50))
    assert eval_chunks(torch.arange(100), 9).shape == (10, 10)
    with pytest.raises(ValueError, match="validation data"):
        eval_chunks(torch.arange(5), 9)
