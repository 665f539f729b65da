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
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch

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

    root: the standard library directory (default: this interpreter's, sysconfig 'stdlib').
    Another Python version has other files, so the corpus hash differs; checkpoints record it and
    the Python version, and resuming on a different corpus is refused with both named.
    Cached per root: the ~10 MB are read once per process.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"]).resolve()
    return _stdlib_corpus_cached(root, _tree_stamp(root))


def _tree_stamp(root: Path) -> float:
    """The stdlib folder's modification time: a cheap key that changes when files are added or removed."""
    if not root.is_dir():
        raise ValueError(f"standard library folder {str(root)!r} is not a directory")
    return root.stat().st_mtime


@functools.lru_cache(maxsize=2)
def _stdlib_corpus_cached(root: Path, stamp: float) -> Corpus:
    train_files, val_files = stdlib_files(root)
    if not train_files or not val_files:
        raise ValueError(f"no Python standard library source found under {root} (an embedded Python that "
                         "ships only .pyc files?); use --data FILE or a synthetic corpus instead")
    try:
        train, val = _concat(root, train_files), _concat(root, val_files)
    except UnicodeDecodeError as e:
        raise ValueError(f"a standard library file under {root} is not UTF-8 ({e})") from None
    import platform
    return Corpus("stdlib", train, val, {"python": platform.python_version(), "train_files": len(train_files),
                                         "val_files": val_files})


def text_file_corpus(path: str | Path, val_fraction: float = 0.1) -> Corpus:
    """Any UTF-8 text file; the last `val_fraction` (cut at a line start) is the validation split."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    try:
        text = _read_text(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {str(path)!r} is not UTF-8 text ({e})") from None
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1); got {val_fraction}")
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


def load_corpus(spec: str) -> Corpus:
    """'stdlib' | 'synthetic:KIND[:NOISE]' | a path to a UTF-8 text file."""
    if spec == "stdlib":
        return stdlib_corpus()
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        try:
            noise = float(parts[2]) if len(parts) > 2 else 0.0
        except ValueError:
            raise ValueError(f"bad synthetic corpus {spec!r}: noise must be a number, e.g. synthetic:cycle:0.1")
        return synthetic_corpus(parts[1], noise)
    return text_file_corpus(spec)


# ---- tokenizers -------------------------------------------------------------------------------
class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, every string encodes, decode(encode(s)) == s."""
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        # a model may generate bytes that are not valid UTF-8; show them as U+FFFD, never fail
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def encode_tensor(self, text: str) -> torch.Tensor:
        """Fast path for a whole corpus: (N,) int64 tensor of the text's bytes."""
        data = text.encode("utf-8")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)

    def to_dict(self) -> dict:
        return {"type": "byte", "vocab_size": 256}

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained locally with Hugging Face `tokenizers`.

    Byte-level pre-tokenisation maps every byte to a symbol first, so any string encodes and
    decodes back exactly; merges then join frequent pairs up to `vocab_size`.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 1024) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        if vocab_size < 257:
            raise ValueError(f"BPE vocab_size must be >= 257 (256 bytes + merges); got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False, special_tokens=[])
        tok.train_from_iterator(text.splitlines(keepends=True) or [text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def encode_tensor(self, text: str) -> torch.Tensor:
        lines = text.splitlines(keepends=True)
        ids = [i for enc in self._tok.encode_batch(lines) for i in enc.ids]
        return torch.tensor(ids, dtype=torch.long)

    def to_dict(self) -> dict:
        return {"type": "bpe", "vocab_size": self.vocab_size, "tokenizer_json": self._tok.to_str()}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


Tokenizer = ByteTokenizer | BPETokenizer


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


def make_tokenizer(spec: str, corpus: Corpus) -> Tokenizer:
    """'byte' | 'bpe:VOCAB' (BPE trained on the corpus's training split)."""
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe"):
        try:
            vocab = int(spec.split(":")[1]) if ":" in spec else 1024
        except ValueError:
            raise ValueError(f"bad tokenizer {spec!r}: use bpe:VOCAB_SIZE, e.g. bpe:1024") from None
        return BPETokenizer.train(corpus.train, vocab)
    raise ValueError(f"unknown tokenizer {spec!r}; use 'byte' or 'bpe:VOCAB_SIZE'")


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
