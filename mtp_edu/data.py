"""Data for mtp-edu: corpora that need no download, tokenizers, and random training chunks.

Corpora
- `stdlib_corpus()`: Python source of the standard library already on the user's machine
  (a fixed list of pure-Python modules, in a fixed order; a few held out for validation).
  Code is where multi-token prediction helps most (Gloeckle et al. 2024, arXiv 2404.19737).
  The files differ a little between Python versions, so every corpus carries the sha256 of its
  bytes and every checkpoint stores it: a different machine's corpus is visible at once.
- `synthetic_corpus(kind, noise)`: generated languages whose predictability is a knob, so that
  speculative decoding can be shown accepting ~100% of drafts, ~0%, and everything between.
- `text_file_corpus(path)`: any UTF-8 text file.

Tokenizers: `ByteTokenizer` (vocabulary 256, the default: every string encodes, nothing is unknown)
and `BPETokenizer` (byte-level BPE trained locally with Hugging Face `tokenizers`). Both decode back
to the exact text and serialise to a JSON-able dict that checkpoints store.

Batches: `get_batch` cuts random chunks t_1..t_{T+1} and returns (input_ids, targets) =
(t_1..t_T, t_2..t_{T+1}), the layout `mtp_loss` expects.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checks import check_number

# The default corpus is every .py file of the standard library except test suites and generated
# data, chosen by a rule (not a list) so that it is the same on every CPython 3.x install:
#   - skipped folders: test, tests, idle_test (test suites), site-packages (not the stdlib),
#     pydoc_data (generated help text), encodings (generated codec tables), config-* (build files);
#   - skipped files: test_*.py;
#   - order: sorted relative POSIX paths;
#   - held out for validation: the files whose path hashes to 0 mod 20 (sha256), about 5%.
STDLIB_SKIP_DIRS = ("test", "tests", "idle_test", "site-packages", "pydoc_data", "encodings", "__pycache__")
STDLIB_VAL_MODULUS = 20

FILE_HEADER = "# ==== {name} ====\n"   # separates files in the concatenation


@dataclass(frozen=True)
class Corpus:
    """A training text and a validation text, with a name and the sha256 of their bytes.

    sha256 = sha256(b"train\\0" + train_utf8 + b"\\0val\\0" + val_utf8): any change in either
    split changes it.
    """
    name: str
    train: str
    val: str
    info: dict = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(b"train\0")
        h.update(self.train.encode("utf-8"))
        h.update(b"\0val\0")
        h.update(self.val.encode("utf-8"))
        return h.hexdigest()

    def describe(self) -> dict:
        """What a checkpoint records about its data (JSON-able)."""
        return {"name": self.name, "sha256": self.sha256, "train_chars": len(self.train),
                "val_chars": len(self.val), **self.info}


def _read_text(path: Path) -> str:
    # newline="" keeps the file's own line endings, so the text is exactly the file's bytes
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def stdlib_files(root: Path) -> tuple[list[str], list[str]]:
    """(train, val): the stdlib's .py files under the rule above, as sorted relative POSIX paths."""
    train, val = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        *dirs, name = rel.split("/")
        if any(d in STDLIB_SKIP_DIRS or d.startswith("config-") for d in dirs) or name.startswith("test_"):
            continue
        held_out = int(hashlib.sha256(rel.encode()).hexdigest(), 16) % STDLIB_VAL_MODULUS == 0
        (val if held_out else train).append(rel)
    return train, val


def _concat(root: Path, names: list[str]) -> str:
    return "".join(FILE_HEADER.format(name=name) + _read_text(root / name) for name in names)


def stdlib_corpus(root: str | Path | None = None) -> Corpus:
    """The default corpus: the standard library's Python source without test suites (rule above).

    root: the standard library directory (default: this interpreter's, sysconfig 'stdlib', read once
    per process and cached). Another Python version has other files, so the corpus hash differs;
    checkpoints record it and the Python version, and resuming on another corpus is refused.
    """
    if root is None:
        return _this_pythons_stdlib()
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"no Python standard library source found under {str(root)!r}: not a directory")
    train_files, val_files = stdlib_files(root)
    if not train_files or not val_files:
        raise ValueError(f"no Python standard library source found under {str(root)!r} (an embedded Python that "
                         "ships only .pyc files?); use --data FILE or a synthetic corpus instead")
    try:
        train, val = _concat(root, train_files), _concat(root, val_files)
    except UnicodeDecodeError as e:
        raise ValueError(f"a standard library file under {str(root)!r} is not UTF-8 ({e})") from None
    return Corpus("stdlib", train, val, {"python": platform.python_version(), "train_files": len(train_files),
                                         "val_files": val_files})


@functools.lru_cache(maxsize=1)
def _this_pythons_stdlib() -> Corpus:
    return stdlib_corpus(sysconfig.get_paths()["stdlib"])


def text_file_corpus(path: str | Path, val_fraction: float = 0.1) -> Corpus:
    """Any UTF-8 text file; the last `val_fraction` (cut at a line start) is the validation split."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"data file path must be a str or a path; got {type(path).__name__}")
    path = Path(path)
    check_number("val_fraction", val_fraction, above=0, below=1)
    if path.is_dir():
        raise ValueError(f"data path {str(path)!r} is a directory; the data must be {CORPUS_SPECS}")
    if not path.is_file():
        why = "is a broken symbolic link (or a loop of links)" if path.is_symlink() else "does not exist"
        raise ValueError(f"data file {str(path)!r} {why}; the data must be {CORPUS_SPECS}")
    try:
        text = _read_text(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {str(path)!r} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise ValueError(f"data file {str(path)!r} cannot be read: {e.strerror or e}") from None
    cut = int(len(text) * (1.0 - val_fraction))
    line_start = text.rfind("\n", 0, cut) + 1
    cut = line_start if line_start > 0 else cut
    if cut <= 0 or cut >= len(text):
        raise ValueError(f"data file {str(path)!r} is too short ({len(text)} characters) to split into "
                         "train and validation text")
    return Corpus(f"file:{path.name}", text[:cut], text[cut:], {"path": str(path)})


# ---- synthetic languages ----------------------------------------------------------------------
SYNTHETIC_KINDS = ("cycle", "words", "noise")
SYNTHETIC_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def synthetic_text(kind: str = "cycle", n_chars: int = 100_000, noise: float = 0.0, seed: int = 0,
                   alphabet: str = SYNTHETIC_ALPHABET) -> str:
    """A generated language with a known amount of predictability.

    cycle : next character = successor(current) under a fixed random cyclic order of `alphabet`;
            with probability `noise` it is instead uniform over the alphabet. noise = 0: every
            character is determined by the one before (drafts ~100% accepted); noise = 1: pure noise.
    words : a fixed vocabulary of 16 random words (distinct first letters) separated by spaces,
            chosen uniformly: a word is determined by its first letter, the next word is not
            (acceptance high inside words, low at their starts). `noise` replaces characters at random.
    noise : uniform random characters (nothing to predict; acceptance ~ 1/len(alphabet)).
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"synthetic kind {kind!r} is not known: use one of {', '.join(SYNTHETIC_KINDS)}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1]; got {noise}")
    if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
        raise ValueError("alphabet must hold at least 2 distinct characters")
    g = torch.Generator().manual_seed(seed)
    A = len(alphabet)
    rand = lambda n: torch.randint(0, A, (n,), generator=g).tolist()
    if kind == "noise":
        return "".join(alphabet[i] for i in rand(n_chars))
    if kind == "cycle":
        order = torch.randperm(A, generator=g).tolist()
        successor = {order[j]: order[(j + 1) % A] for j in range(A)}
        flips = (torch.rand(n_chars, generator=g) < noise).tolist()
        random_chars = rand(n_chars)
        out, c = [], order[0]
        for j in range(n_chars):
            c = random_chars[j] if flips[j] else successor[c]
            out.append(alphabet[c])
        return "".join(out)
    # words
    firsts = torch.randperm(A, generator=g).tolist()[:min(16, A)]
    words = []
    for f in firsts:
        length = int(torch.randint(3, 9, (1,), generator=g))
        words.append(alphabet[f] + "".join(alphabet[i] for i in rand(length - 1)))
    pieces, n = [], 0
    while n < n_chars:
        w = words[int(torch.randint(0, len(words), (1,), generator=g))] + " "
        pieces.append(w)
        n += len(w)
    text = "".join(pieces)[:n_chars]
    if noise > 0:
        flips = (torch.rand(n_chars, generator=g) < noise).tolist()
        random_chars = rand(n_chars)
        text = "".join(alphabet[random_chars[j]] if flips[j] else ch for j, ch in enumerate(text))
    return text


def synthetic_corpus(kind: str = "cycle", noise: float = 0.0, n_chars: int = 200_000, seed: int = 0,
                     val_fraction: float = 0.1) -> Corpus:
    """A synthetic language (see `synthetic_text`); the validation split uses its own seed."""
    n_val = max(1, int(n_chars * val_fraction))
    train = synthetic_text(kind, n_chars - n_val, noise, seed)
    val = synthetic_text(kind, n_val, noise, seed + 1_000_003) if kind == "noise" else \
        synthetic_text(kind, n_chars, noise, seed)[n_chars - n_val:]   # same rule, unseen stretch
    return Corpus(f"synthetic:{kind}:noise={noise:g}", train, val, {"kind": kind, "noise": noise, "seed": seed})


CORPUS_SPECS = ("'stdlib', 'synthetic:KIND[:NOISE]' (KIND one of " + ", ".join(SYNTHETIC_KINDS) +
                ", NOISE a number in [0, 1]) or the path of a UTF-8 text file")
_NOISE = re.compile(r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")    # a plain decimal number, nothing else


def load_corpus(spec: str) -> Corpus:
    """'stdlib' | 'synthetic:KIND[:NOISE]' | a path to a UTF-8 text file. Parsed strictly: anything
    more or other than that is refused, never dropped."""
    if isinstance(spec, os.PathLike):
        return text_file_corpus(spec)
    if not isinstance(spec, str):
        raise TypeError(f"corpus spec {spec!r} is not allowed: must be {CORPUS_SPECS}")
    if spec == "stdlib":
        return stdlib_corpus()
    if spec.startswith("synthetic:"):
        _, kind, *rest = spec.split(":")
        if kind not in SYNTHETIC_KINDS:
            raise ValueError(f"bad synthetic corpus {spec!r}: synthetic kind {kind!r} is not known; "
                             f"use one of {', '.join(SYNTHETIC_KINDS)}")
        if len(rest) > 1:
            raise ValueError(f"bad synthetic corpus {spec!r}: expected synthetic:KIND[:NOISE], got "
                             f"{len(rest) - 1} more ':'-separated part(s)")
        if rest and not _NOISE.fullmatch(rest[0]):
            raise ValueError(f"bad synthetic corpus {spec!r}: noise must be a number, e.g. synthetic:cycle:0.1")
        return synthetic_corpus(kind, float(rest[0]) if rest else 0.0)
    return text_file_corpus(spec)


# ---- tokenizers -------------------------------------------------------------------------------
def _utf8(text, who: str) -> bytes:
    """text as UTF-8, or a clear error: not a str, or a lone surrogate that UTF-8 cannot hold."""
    if not isinstance(text, str):
        raise TypeError(f"{who}.encode takes a str; got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{who}.encode: the text holds {text[e.start]!r} at index {e.start}, a lone surrogate "
                         "that UTF-8 cannot encode") from None


def _check_ids(ids, vocab_size: int, who: str) -> list[int]:
    """ids as a list of ints in [0, vocab_size), or a clear error naming the first bad one."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.is_meta:
            raise TypeError(f"{who}.decode takes a list or a 1-d tensor of token ids; got a {ids.dim()}-d "
                            f"{'meta ' if ids.is_meta else ''}tensor")
        ids = ids.tolist()
    elif not isinstance(ids, (list, tuple, range)):
        raise TypeError(f"{who}.decode takes a list or a 1-d tensor of token ids; got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{who}.decode takes integer token ids; got {i!r} ({type(i).__name__})")
        if not 0 <= i < vocab_size:
            raise ValueError(f"{who}.decode: token id {i} is outside the vocabulary [0, {vocab_size})")
        out.append(i)
    return out


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, every string encodes, decode(encode(s)) == s."""
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(_utf8(text, "ByteTokenizer"))

    def decode(self, ids) -> str:
        # a model may generate bytes that are not valid UTF-8; show them as U+FFFD, never fail
        return bytes(_check_ids(ids, 256, "ByteTokenizer")).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for."""
        return bytes(_check_ids([token_id], 256, "ByteTokenizer"))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """Fast path for a whole corpus: (N,) int64 tensor of the text's bytes."""
        data = _utf8(text, "ByteTokenizer")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)

    def to_dict(self) -> dict:
        return {"type": "byte", "vocab_size": 256}

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte.

    Bytes that print (and are not a space) stand for themselves; the other 68 are shifted to 256+n,
    so a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A) inside a vocabulary entry.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(shifted)})
    return table


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained locally with Hugging Face `tokenizers`.

    Byte-level pre-tokenisation maps every byte to a symbol first (a byte fallback built in: any
    string encodes and decodes back exactly); merges then join frequent pairs up to `vocab_size`.
    """
    MAX_VOCAB = 65536

    def __init__(self, tokenizer):
        self._tok = tokenizer
        alphabet = _byte_level_alphabet()
        self._bytes = [bytes(alphabet[c] for c in tokenizer.id_to_token(i)) for i in range(tokenizer.get_vocab_size())]

    @classmethod
    def train(cls, text: str, vocab_size: int = 2048) -> "BPETokenizer":
        """Train on `text` (one line per training item); `vocab_size` includes the 256 byte tokens."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 257 <= vocab_size <= cls.MAX_VOCAB:
            raise ValueError(f"BPE vocab_size must be an integer in [257, {cls.MAX_VOCAB}] (256 bytes + merges); "
                             f"got {vocab_size!r}")
        _utf8(text, "BPETokenizer.train")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False, special_tokens=[])
        tok.train_from_iterator(text.splitlines(keepends=True) or [text], trainer=trainer)
        if tok.get_vocab_size() < vocab_size:
            raise ValueError(f"BPE vocab_size={vocab_size} asked for, but the training text has only enough pairs "
                             f"for {tok.get_vocab_size()} tokens; ask for fewer or train on more text")
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        _utf8(text, "BPETokenizer")
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        ids = _check_ids(ids, self.vocab_size, "BPETokenizer")
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (may be part of a UTF-8 character)."""
        return self._bytes[_check_ids([token_id], self.vocab_size, "BPETokenizer")[0]]

    def encode_tensor(self, text: str) -> torch.Tensor:
        _utf8(text, "BPETokenizer")
        lines = text.splitlines(keepends=True)
        ids = [i for enc in self._tok.encode_batch(lines) for i in enc.ids]
        return torch.tensor(ids, dtype=torch.long)

    def to_dict(self) -> dict:
        return {"type": "bpe", "vocab_size": self.vocab_size, "tokenizer_json": self._tok.to_str()}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


Tokenizer = ByteTokenizer | BPETokenizer


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """(V,) the number of bytes each token stands for: sum over targets = bytes scored (bits per byte)."""
    return torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], dtype=torch.long)


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_dict()` output (as stored in a checkpoint's JSON)."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer
        try:
            return BPETokenizer(HFTokenizer.from_str(data["tokenizer_json"]))
        except Exception as e:  # tokenizers raises its own exception types
            raise ValueError(f"the stored BPE tokenizer cannot be read: {e}") from None
    raise ValueError(f"unknown tokenizer {kind!r}; expected 'byte' or 'bpe'")


TOKENIZER_SPECS = "'byte' or 'bpe:VOCAB_SIZE' (e.g. bpe:2048)"


def make_tokenizer(spec: str, corpus: Corpus) -> Tokenizer:
    """'byte' | 'bpe:VOCAB' (BPE trained on the corpus's training split)."""
    if spec == "byte":
        return ByteTokenizer()
    kind, _, vocab = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind == "bpe" and vocab.isdigit() and vocab.isascii():
        return BPETokenizer.train(corpus.train, int(vocab))
    raise ValueError(f"tokenizer {spec!r} is not known; use {TOKENIZER_SPECS}")


# ---- batches ----------------------------------------------------------------------------------
def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator,
              rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random chunks of T+1 tokens -> (input_ids, targets) = (chunk[:, :-1], chunk[:, 1:]), each (b, T).

    The generator draws `batch_size` start positions (the global batch); rank r of `world_size`
    keeps rows r*b .. (r+1)*b - 1, b = batch_size / world_size. Every rank advances the generator the
    same way, so ranks see different rows, and the union is what one process would see.
    """
    if data.dim() != 1:
        raise ValueError("data must be a 1-d tensor of token ids")
    if len(data) < seq_len + 1:
        raise ValueError(f"the data holds {len(data)} tokens; a chunk needs seq_len + 1 = {seq_len + 1}")
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the number of processes {world_size}")
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)
    b = batch_size // world_size
    starts = starts[rank * b:(rank + 1) * b]
    chunk = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])   # (b, T+1)
    return chunk[:, :-1], chunk[:, 1:]


def eval_chunks(data: torch.Tensor, seq_len: int, max_chunks: int | None = None) -> torch.Tensor:
    """Consecutive, non-overlapping chunks of T+1 tokens from the start of `data`: (n, T+1).

    Deterministic (no generator): the same slice every evaluation, so numbers are comparable.
    """
    n = len(data) // (seq_len + 1)
    if max_chunks is not None:
        n = min(n, max_chunks)
    if n == 0:
        raise ValueError(f"validation data holds {len(data)} tokens; one chunk needs {seq_len + 1}")
    return data[:n * (seq_len + 1)].view(n, seq_len + 1)
