"""Safe checkpoints: safetensors for tensors, JSON for everything else, atomic directory writes.

A checkpoint is a directory:

    model.safetensors        the weights (a tied OutHead is stored once, as embed.weight)
    train_state.safetensors  optional: optimizer tensors and RNG states, for an exact resume
    card.json                optional: the model card (see mtp_edu.card.make_card)
    checkpoint.json          config, tokenizer, corpus hash, command, step, metrics, history,
                             optimizer hyper-parameters, and the size + sha256 of every file above

Nothing is ever pickled or unpickled (no torch.load): a checkpoint from a stranger can only contain
numbers and JSON.

Atomicity: the files are written into a fresh temporary directory beside the target, fsynced, and
the directory is then renamed into place (os.replace). An existing checkpoint is first renamed to
`.NAME.prev` and removed only after the new one is in place, so at every instant either NAME or
.NAME.prev is a complete checkpoint; `load_checkpoint` falls back to .NAME.prev if NAME is missing.

Loading checks everything it can and raises `CheckpointError` (a ValueError) naming what is wrong:
unreadable or truncated JSON, a file whose size or sha256 differs from the record, tensors missing
or unexpected, shapes that do not match the config. The shapes are compared before anything is
allocated: the config's from a model built on the meta device (no memory), the file's from the
safetensors header, so a config edited to an absurd size is an error, not a huge allocation.
Saving refuses weights or optimizer state that hold NaN or inf: a checkpoint is always usable.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import MTPConfig
from .data import tokenizer_from_dict
from .model import MTPModel

FORMAT, VERSION = "mtp-edu-checkpoint", 1
META, WEIGHTS, TRAIN_STATE, CARD = "checkpoint.json", "model.safetensors", "train_state.safetensors", "card.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says which file and what is wrong with it."""


@dataclass
class Checkpoint:
    model: MTPModel
    tokenizer: object
    meta: dict        # the parsed checkpoint.json
    path: Path

    @property
    def card(self) -> dict | None:
        return read_card(self.path)


# ---- writing ----------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "nt":            # directories cannot be opened for fsync on Windows
        _fsync(path)


def _dumps(data) -> str:
    """Indented JSON, except that lists of numbers stay on one line (token chunks, shapes)."""
    compact: dict[str, str] = {}

    def mark(x):
        if isinstance(x, dict):
            return {k: mark(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            if x and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
                key = f"@@compact{len(compact)}@@"
                compact[key] = json.dumps(x, separators=(",", ":"), allow_nan=False)
                return key
            return [mark(v) for v in x]
        return x

    text = json.dumps(mark(data), indent=1, allow_nan=False)
    for key, value in compact.items():
        text = text.replace(f'"{key}"', value, 1)
    return text + "\n"


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(_dumps(data))


def _first_non_finite(data, where: str = "") -> str | None:
    """Where (like `history[3].loss`) the first NaN or inf float in nested dicts and lists is; None if none."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where or 'the value'} = {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _first_non_finite(value, f"{where}[{key}]" if isinstance(key, int) else
                                  f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _refuse_non_finite(path: Path, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError if a floating-point tensor holds NaN or inf: such a checkpoint is useless."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"refusing to save {path}: the {what} hold NaN or inf in {bad[:4]}"
                              f"{' ...' if len(bad) > 4 else ''}; nothing was written")


def weights_state(model: MTPModel) -> dict[str, torch.Tensor]:
    """The model's tensors as saved: a tied OutHead weight is the embedding, so it is dropped."""
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("out_head.weight", None)
    return state


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split optimizer.state_dict() into tensors (for safetensors) and JSON (everything else)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save_checkpoint(path: str | Path, model: MTPModel, tokenizer, meta: dict | None = None, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    rng_states: dict[str, torch.Tensor] | None = None,
                    card: dict | None = None, dtype: str = "float32") -> Path:
    """Write a checkpoint directory atomically (see the module docstring) and return its path.

    meta: JSON-able facts to record (corpus, command, step, metrics, history, ...).
    optimizer, rng_states: saved to train_state.safetensors so that training can resume exactly.
    dtype: storage dtype of the weights ("float32", or "float16"/"bfloat16" to halve the size;
    they are loaded back as float32).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / META).exists())):
        raise CheckpointError(f"refusing to overwrite {path}: it exists and is not an mtp-edu checkpoint")
    record = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
              "tokenizer": tokenizer.to_dict(), "weights_dtype": dtype, **(meta or {}), "files": {}}
    weights = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in weights_state(model).items()}
    _refuse_non_finite(path, weights, f"weights (stored as {dtype})")
    train_tensors = None
    if optimizer is not None or rng_states:
        train_tensors, record["optimizer"] = optimizer_tensors(optimizer) if optimizer is not None else ({}, None)
        _refuse_non_finite(path, train_tensors, "optimizer state")
        train_tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in (rng_states or {}).items()})
    for what, data in ((META, record), (CARD, card)):
        where = _first_non_finite(data)
        if where is not None:
            raise CheckpointError(f"refusing to save {path}: {where} in {what} is not a finite number "
                                  "(JSON has no NaN or inf)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o777 & ~umask)            # mkdtemp makes it private; a checkpoint is not
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        files = [WEIGHTS]
        if train_tensors is not None:
            save_file(train_tensors, str(tmp / TRAIN_STATE), metadata={"format": FORMAT})
            files.append(TRAIN_STATE)
        if card is not None:
            _write_json(tmp / CARD, card)
            files.append(CARD)
        for name in files:
            os.chmod(tmp / name, 0o666 & ~umask)
            _fsync(tmp / name)
            record["files"][name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
        _write_json(tmp / META, record)
        os.chmod(tmp / META, 0o666 & ~umask)
        _fsync(tmp / META)
        _fsync_dir(tmp)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _prev(path: Path) -> Path:
    return path.parent / f".{path.name}.prev"


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename tmp to path; an existing path is kept as .NAME.prev until the new one is in place."""
    prev = _prev(path)
    if path.exists():
        if prev.exists():
            shutil.rmtree(prev)          # stale: `path` itself is complete
        os.replace(path, prev)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if prev.exists():
        shutil.rmtree(prev)


def check_target(path: str | Path, *, overwrite: bool = False) -> Path:
    """Check, before any work, that a checkpoint can be saved at `path`; raise CheckpointError if not.

    Refused: a file; a directory that holds other files and no checkpoint; a place where this process
    cannot write (probed by creating and removing a folder in the nearest existing folder, as a save
    does); and, unless `overwrite`, a directory that already holds a checkpoint: replacing it would
    throw that run away. Returns `path` as a Path.
    """
    path = Path(path)
    _check_symlink(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file; a checkpoint is a directory: choose another place")
    holds = (path / META).is_file() or (not path.exists() and (_prev(path) / META).is_file())
    if not holds and path.is_dir() and any(path.iterdir()):
        raise CheckpointError(f"{path} is a directory with other files and no checkpoint ({META}); refusing to "
                              "write a checkpoint there: choose a new or empty directory")
    if holds and not overwrite:
        try:
            step = read_meta(path).get("step")
        except CheckpointError:
            step = None
        step = f" at step {step}" if isinstance(step, int) else ""
        raise CheckpointError(f"{path} already holds a checkpoint{step}; a new run would replace it: continue "
                              "it with --resume (resume=True), or choose another directory")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot create {path}: {folder} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=folder))
    except OSError as e:
        raise CheckpointError(f"cannot save a checkpoint at {path}: the folder {folder} is not writable "
                              f"({e.strerror or e})") from None
    return path


# ---- reading ----------------------------------------------------------------------------------
def _check_symlink(path: Path) -> None:
    """Raise CheckpointError if `path` is a symbolic link that leads nowhere: a loop (also one in a
    folder above it), or a link to something that does not exist. (Path.exists() says False for both.)"""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError(f"{path} is a symbolic link loop (it, or a link on the way to it, leads back to "
                                  "itself); point it at a checkpoint directory") from None
        if path.is_symlink():
            raise CheckpointError(f"{path} is a symbolic link to {os.readlink(path)!r}, which does not "
                                  "exist") from None


def resolve(path: str | Path) -> Path:
    """The directory to read: `path`, or its .NAME.prev if a save was interrupted mid-swap."""
    path = Path(path)
    if (path / META).is_file():
        return path
    _check_symlink(path)
    if not path.exists() and (_prev(path) / META).is_file():
        warnings.warn(f"{path} is missing; using {_prev(path)} left by an interrupted save", stacklevel=2)
        return _prev(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the directory does not exist")
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a checkpoint is a directory holding {META} and {WEIGHTS}")
    raise CheckpointError(f"{path} is not a checkpoint: {META} is missing")


def read_meta(path: str | Path) -> dict:
    """Parse and check checkpoint.json (format, version, required fields)."""
    path = resolve(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / META} is not valid JSON (truncated or corrupt?): {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META} is not an mtp-edu checkpoint record (format field "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path / META} has format version {meta.get('version')!r}; "
                              f"this mtp-edu reads version {VERSION}")
    for key in ("config", "tokenizer", "files"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{path / META} lacks the {key!r} section")
    if WEIGHTS not in meta["files"]:
        raise CheckpointError(f"{path / META} does not record {WEIGHTS}")
    return meta


def _checked_file(path: Path, meta: dict, name: str) -> Path:
    """The file `name`, after checking that its size and sha256 match checkpoint.json."""
    record, file = meta["files"].get(name), path / name
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str) or \
            isinstance(record.get("bytes"), bool) or not isinstance(record.get("bytes"), int):
        raise CheckpointError(f"{path / META} does not record the size and sha256 of {name}")
    if not file.is_file():
        raise CheckpointError(f"{file} is missing (listed in {META})")
    size = file.stat().st_size
    if size != record["bytes"]:
        raise CheckpointError(f"{file} is truncated or corrupt: {size} bytes, {META} records {record['bytes']}")
    digest = sha256_file(file)
    if digest != record["sha256"]:
        raise CheckpointError(f"{file} is corrupt or was modified: sha256 {digest[:16]}..., "
                              f"{META} records {record['sha256'][:16]}...")
    return file


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")          # safetensors' names of the floating-point dtypes


def read_header(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of every tensor in a safetensors file, read from its header: nothing loaded."""
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None


def expected_shapes(config: MTPConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every saved tensor of a model with this config, from a model built on the meta
    device: it has shapes but no storage, so an absurd config costs no memory."""
    with torch.device("meta"):
        model = MTPModel(config)
    return {k: tuple(v.shape) for k, v in weights_state(model).items()}


def check_state(header: dict[str, tuple[tuple[int, ...], str]], config: MTPConfig, source: str) -> None:
    """Raise CheckpointError listing missing, unexpected, mis-shaped and non-float tensors of a file
    (`header`: {name: (shape, dtype)}, see read_header) against the config."""
    state = {k: shape for k, (shape, _) in header.items()}
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: {state[k]} in the file, {expected[k]} from the config"
              for k in sorted(set(state) & set(expected)) if state[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:4]) + (" ..." if len(shapes) > 4 else ""))
    if problems:
        c = config
        raise CheckpointError(f"{source} does not match its config (d_model={c.d_model}, n_layers={c.n_layers}, "
                              f"mtp_depth={c.mtp_depth}, mtp_style={c.mtp_style!r}, vocab_size={c.vocab_size}): "
                              + " | ".join(problems))
    for k, (_, dtype) in header.items():
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{source}: tensor {k} has dtype {dtype}; weights must be floating point "
                                  f"({', '.join(FLOAT_DTYPES)})")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory into an MTPModel (float32, eval mode) and its tokenizer.

    Everything is checked before the model is built: the config, the tokenizer, the file's size and
    sha256, and the tensors' names, shapes and dtypes (from the file's header) against the config."""
    path = resolve(path)
    meta = read_meta(path)
    try:
        config = MTPConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META}: invalid config: {e}") from None
    try:
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META}: {e}") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path / META}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                              f"vocab_size is {config.vocab_size}")
    file = _checked_file(path, meta, WEIGHTS)
    check_state(read_header(file), config, str(file))        # before anything is allocated
    state = _read_tensors(file)
    model = MTPModel(config)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)  # tied head: shares embed
    return Checkpoint(model.to(device).eval(), tokenizer, meta, path)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer | None = None
                     ) -> dict[str, torch.Tensor]:
    """Restore the optimizer (if given) from a checkpoint and return its RNG state tensors by name."""
    path = resolve(path)
    meta = read_meta(path)
    if TRAIN_STATE not in meta["files"]:
        raise CheckpointError(f"{path} holds no training state ({TRAIN_STATE}); it cannot be resumed "
                              "(pretrained exports keep only the weights)")
    tensors = _read_tensors(_checked_file(path, meta, TRAIN_STATE))
    if optimizer is not None:
        record = meta.get("optimizer")
        if not isinstance(record, dict):
            raise CheckpointError(f"{path / META} lacks the optimizer section")
        scalars, groups = record.get("scalars", {}), record.get("param_groups")
        if not isinstance(scalars, dict):
            raise CheckpointError(f"{path / META}: optimizer.scalars must be an object, got {type(scalars).__name__}")
        if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
            raise CheckpointError(f"{path / META}: optimizer.param_groups is missing or is not a list of objects")

        def index_and_name(key: str, where: str) -> tuple[int, str]:
            idx, dot, name = key.partition(".")
            if not (dot and name and idx.isascii() and idx.isdigit()):
                raise CheckpointError(f"{where}: malformed optimizer key {key!r}; expected INDEX.NAME, like "
                                      "'0.exp_avg'")
            return int(idx), name
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer.state."):
                idx, name = index_and_name(key[len("optimizer.state."):], str(path / TRAIN_STATE))
                state.setdefault(idx, {})[name] = value
        for key, value in scalars.items():
            idx, name = index_and_name(key, f"{path / META} optimizer.scalars")
            state.setdefault(idx, {})[name] = value
        groups = [{k: (tuple(v) if k == "betas" and isinstance(v, list) else v) for k, v in g.items()}
                  for g in groups]
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the optimizer state does not fit this model/optimizer: "
                                  f"{type(e).__name__}: {e}") from None
    return {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}


def run_record(path: str | Path) -> dict:
    """What a resumed run continues from, checked: a dict with step (an int >= 0), history (a list of
    objects), training_time_s (a number >= 0), commands (a list of strings) and train_config (an object,
    or None for a checkpoint saved through the Python API without one). CheckpointError names what
    is missing or malformed."""
    path = resolve(path)
    meta = read_meta(path)
    where = path / META
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{where}: 'step' is {step!r}; a resumable checkpoint records its step as an "
                              "integer >= 0")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise CheckpointError(f"{where}: 'history' must be a list of objects")
    seconds = meta.get("training_time_s", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise CheckpointError(f"{where}: 'training_time_s' is {seconds!r}; expected a number >= 0")
    commands = meta.get("commands", [meta["command"]] if isinstance(meta.get("command"), str) else [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise CheckpointError(f"{where}: 'commands' must be a list of strings")
    train_config = meta.get("train_config")
    if train_config is not None and not isinstance(train_config, dict):
        raise CheckpointError(f"{where}: 'train_config' must be an object, got {type(train_config).__name__}")
    return {"step": step, "history": history, "training_time_s": float(seconds), "commands": commands,
            "train_config": train_config}


def read_card(path: str | Path) -> dict | None:
    """The model card (card.json) of a checkpoint, checked against its recorded sha256; None if absent."""
    path = resolve(path)
    meta = read_meta(path)
    if CARD not in meta["files"]:
        return None
    file = _checked_file(path, meta, CARD)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
