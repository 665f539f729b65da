"""Training: AdamW + warmup/cosine, gradient clipping, per-depth evaluation, checkpoints, torchrun DDP.

One entry point, `train(model_config, train_config, ...)`, serves a notebook (tqdm.auto progress bar,
a JSON-able metrics history), the CLI (`mtp-edu train`) and multi-process data parallelism: started
under `torchrun --nproc_per_node N`, it reads WORLD_SIZE/RANK, joins a process group (gloo on CPU,
nccl on CUDA), gives each rank its own rows of the global batch and averages gradients across ranks.

The loss is eq. 25 of DeepSeek-V3 (mtp_edu.losses.mtp_loss), or the memory-efficient path of
Gloeckle et al. 2024 sec. 2 (mtp_loss_backward) with `memory_efficient=True`.
On CPU, training is seeded and deterministic, and a resumed run continues bit-exactly: the optimizer
state and the RNG states are part of every checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .config import DictConfig, MTPConfig
from .data import eval_chunks, get_batch, load_corpus, make_tokenizer
from .losses import DeepSeekStep, mtp_loss, mtp_loss_backward
from .model import MTPModel
from .shifts import depth_targets


@dataclass
class TrainConfig(DictConfig):
    """Every training knob; JSON-able, stored in each checkpoint."""
    data: str = "stdlib"             # 'stdlib' | 'synthetic:KIND[:NOISE]' | path to a UTF-8 text file
    tokenizer: str = "byte"          # 'byte' | 'bpe:VOCAB'
    steps: int = 1000                # optimizer steps in total
    batch_size: int = 16             # global batch: chunks per step, summed over all processes
    seq_len: int = 256               # T: tokens each chunk feeds the model (chunks hold T + 1)
    lr: float = 3e-3                 # peak learning rate
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100          # linear warmup from 0
    weight_decay: float = 0.1        # AdamW decay, on matrices only (not norms)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # max global gradient norm (0 = off)
    seed: int = 0                    # data order and dropout; weights use MTPConfig.init_seed
    lambda_schedule: str = "constant"  # 'constant' (MTPConfig.mtp_loss_scale) | 'deepseek' (0.3 then 0.1)
    reduction: str = "valid"         # per-depth loss reduction, see mtp_edu.losses
    memory_efficient: bool = False   # one depth's logits alive at a time (mtp_loss_backward)
    compile: bool = False            # torch.compile the forward (not on Windows)
    device: str = "auto"             # 'auto' = cuda, then mps, then cpu
    threads: int | None = None       # torch CPU threads (None = torch's default); 1 is fastest for
                                     # small models on a busy 2-core machine
    log_every: int = 10              # history gets the mean of each `log_every` steps
    eval_every: int = 200            # periodic validation (0 = only at the end)
    eval_chunks: int = 32            # validation chunks per periodic evaluation
    final_eval_chunks: int | None = None  # validation chunks for the card (None = the whole split)
    card_chunks: int = 32            # chunks of the fixed slice the card stores for re-checking
    save_every: int = 0              # checkpoint every N steps (0 = only at the end)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "seq_len", "log_every", "eval_chunks", "card_chunks")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 1")
        for name in ("warmup_steps", "eval_every", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 0")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1; got lr={self.lr}, "
                             f"min_lr_ratio={self.min_lr_ratio}")
        if self.lambda_schedule not in ("constant", "deepseek"):
            raise ValueError(f"TrainConfig.lambda_schedule={self.lambda_schedule!r} must be 'constant' or 'deepseek'")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"TrainConfig.threads={self.threads!r} must be None or an integer >= 1")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"TrainConfig.device={self.device!r} must be auto, cpu, cuda[:N] or mps")



# ---- presets: the shipped models and a notebook-sized run -------------------------------------
# The shipped models read subword tokens (a 2048-token BPE trained on the corpus's training split;
# why 2048: docs/design.md). The trunk (8 blocks) is much deeper than one MTP module (1 block): a
# CPU decode step costs about the same per layer whatever the number of tokens, so drafting must be
# cheap next to verifying. d = 160 keeps the four shipped models under 30 MB in float16.
_STAR = dict(vocab_size=2048, d_model=160, n_layers=8, n_heads=4, max_seq_len=512, mtp_loss_scale=0.3)
_STAR_TRAIN = dict(tokenizer="bpe:2048", steps=4000, batch_size=8, seq_len=512, lr=2e-3, warmup_steps=200,
                   eval_every=500, log_every=10, save_every=250)
PRESETS: dict[str, tuple[dict, dict]] = {
    "tiny": (dict(vocab_size=256, d_model=64, n_layers=2, n_heads=2, max_seq_len=128, mtp_depth=2),
             dict(steps=1000, batch_size=8, seq_len=128, lr=3e-3, warmup_steps=30, eval_every=250,
                  eval_chunks=16, final_eval_chunks=32, card_chunks=16, log_every=10, threads=1)),
    "mtp-seq-d3": (dict(_STAR, mtp_depth=3, mtp_style="sequential"), dict(_STAR_TRAIN)),
    "mtp-d0": (dict(_STAR, mtp_depth=0), dict(_STAR_TRAIN)),
    "mtp-par-d3": (dict(_STAR, mtp_depth=3, mtp_style="parallel"), dict(_STAR_TRAIN)),
    "mtp-lin-d3": (dict(_STAR, mtp_depth=3, mtp_style="linear"), dict(_STAR_TRAIN)),
    # For a CUDA GPU (bf16 autocast, fused SDPA attention): ~49M parameters, the same byte-level corpus.
    # Not trained for the package: no GPU numbers are claimed for it. Add --compile to try torch.compile.
    "gpu": (dict(vocab_size=256, d_model=512, n_layers=12, n_heads=8, max_seq_len=512, mtp_depth=3,
                 mtp_style="sequential", mtp_loss_scale=0.3),
            dict(steps=5000, batch_size=32, seq_len=512, lr=6e-4, warmup_steps=200, eval_every=500,
                 log_every=10, save_every=1000, device="auto")),
}


def preset(name: str) -> tuple[MTPConfig, TrainConfig]:
    """The (model, training) configs of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    model_kw, train_kw = PRESETS[name]
    return MTPConfig(**model_kw), TrainConfig(**train_kw)


# ---- pieces -----------------------------------------------------------------------------------
def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to tc.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at tc.steps."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu (or the one named)."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hardware_description(device: torch.device) -> str:
    """A one-line description of where training ran (for the model card)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    kind = "Apple GPU (MPS), " if device.type == "mps" else ""
    return f"{kind}{cpu}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): benchmarks store it, because other
    jobs on the machine skew timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (and the embedding), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=tc.lr, betas=(tc.beta1, tc.beta2))


@torch.no_grad()
def evaluate(model: MTPModel, chunks: torch.Tensor, batch_size: int = 16) -> dict[str, float]:
    """Per-depth validation loss (nats/token) and top-1 accuracy over chunks (n, T+1).

    Depth k is scored on its T-k positions of every chunk: loss = summed CE / count, acc = share of
    positions where argmax P^k equals t_{i+k+1}. Returns {'val_loss_k': .., 'val_acc_k': ..}.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    D = model.config.mtp_depth
    ce, hits, count = [0.0] * (D + 1), [0] * (D + 1), [0] * (D + 1)
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start:start + batch_size].to(device)
        out = model(batch[:, :-1])
        for k, logits in enumerate(out.logits):
            target = depth_targets(batch[:, 1:], k)
            logits = logits.float()
            ce[k] += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(),
                                                             reduction="sum"))
            hits[k] += int((logits.argmax(-1) == target).sum())
            count[k] += target.numel()
    model.train(was_training)
    metrics = {f"val_loss_{k}": ce[k] / count[k] for k in range(D + 1)}
    metrics.update({f"val_acc_{k}": hits[k] / count[k] for k in range(D + 1)})
    return metrics


def rounded_copy(model: MTPModel, dtype: str) -> MTPModel:
    """The model as it will be stored in `dtype` and loaded back as float32 (for honest card numbers)."""
    copy = MTPModel(model.config)
    copy.load_state_dict({k: v.detach().cpu().to(ckpt.DTYPES[dtype]).float() for k, v in model.state_dict().items()})
    return copy.eval()


def make_card(model: MTPModel, corpus_info: dict, val_data: torch.Tensor, tc: TrainConfig, *, name: str,
              command: str, training_time_s: float, tokens_seen: int, hardware: str, weights_dtype: str,
              steps: int) -> dict:
    """The model card: how it was made and what it scores, measured on the weights as stored."""
    full = eval_chunks(val_data, tc.seq_len, tc.final_eval_chunks)
    card_slice = eval_chunks(val_data, tc.seq_len, tc.card_chunks)
    val, sl = evaluate(model, full), evaluate(model, card_slice)
    D = model.config.mtp_depth
    per_depth = lambda m, what: [round(m[f"val_{what}_{k}"], 6) for k in range(D + 1)]
    return {
        "name": name,
        "command": command,
        "training_time_s": round(training_time_s, 1),
        "hardware": hardware,
        "software": f"python {platform.python_version()}, torch {torch.__version__}",
        "steps": steps,
        "tokens_seen": tokens_seen,
        "params": model.param_counts(),
        "config": model.config.to_dict(),
        "train_config": tc.to_dict(),
        "corpus": corpus_info,
        "weights_dtype": weights_dtype,
        "validation": {"what": f"{len(full)} chunks of {tc.seq_len + 1} tokens from the start of the "
                               "validation split (held-out files), depth k scored on its T-k positions",
                       "tokens_per_depth": [len(full) * (tc.seq_len - k) for k in range(D + 1)],
                       "loss": per_depth(val, "loss"), "acc": per_depth(val, "acc")},
        "eval_slice": {"what": "the first chunks of the validation split, stored here so that anyone can "
                               "recompute these numbers on any machine (mtp-edu info --verify)",
                       "loss": per_depth(sl, "loss"), "acc": per_depth(sl, "acc"),
                       "chunks": card_slice.tolist()},
    }


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """Average tensors across processes in place, as one flat buffer.

    This is what DistributedDataParallel does with gradients (bucketed and overlapped with the
    backward pass there); doing it by hand after backward lets the memory-efficient loss, which
    calls backward once per depth, run unchanged under torchrun.
    """
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


@dataclass
class TrainResult:
    model: MTPModel
    tokenizer: object
    history: list[dict]
    card: dict | None
    path: Path | None
    corpus: dict = field(default_factory=dict)


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, pick_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(model_config: MTPConfig, tc: TrainConfig, out: str | Path | None = None, *, resume: bool = False,
          export: str | Path | None = None, export_dtype: str = "float32", name: str = "custom",
          command: str | None = None, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train an MTPModel; checkpoint to `out` (every save_every steps and at the end).

    resume: continue from the checkpoint in `out` (its step, optimizer, RNG states and history).
    export: also write an inference-only copy there (weights in `export_dtype`, plus the card, whose
    numbers are measured on the exported weights).
    callback(step, record): called on rank 0 after every step (record = that step's losses).
    """
    if tc.compile and (os.name == "nt" or sys.platform == "win32"):
        raise ValueError("torch.compile is not supported on Windows; train with compile=False")
    rank, world, device = _setup_distributed(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.batch_size % world:
        raise ValueError(f"batch_size={tc.batch_size} must be a multiple of the {world} processes")
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs the checkpoint directory `out`")
    command = command or "mtp_edu.train.train(...)"
    torch.manual_seed(tc.seed)

    corpus = load_corpus(tc.data)
    state = ckpt.load_checkpoint(out) if resume else None
    if state is not None:
        recorded = state.meta.get("corpus", {}).get("sha256")
        if recorded != corpus.sha256:
            raise ckpt.CheckpointError(f"cannot resume {out}: it was trained on corpus {tc.data!r} with sha256 "
                                       f"{str(recorded)[:16]}..., this machine's corpus has {corpus.sha256[:16]}... "
                                       "(another Python version or a changed file)")
        if state.meta["config"] != model_config.to_dict():
            raise ckpt.CheckpointError(f"cannot resume {out}: its model config differs from the one given")
        tokenizer = state.tokenizer
    else:
        tokenizer = make_tokenizer(tc.tokenizer, corpus)
    if tokenizer.vocab_size != model_config.vocab_size:
        model_config = model_config.replace(vocab_size=tokenizer.vocab_size)   # BPE sets V
    train_data, val_data = tokenizer.encode_tensor(corpus.train), tokenizer.encode_tensor(corpus.val)

    model = (state.model if state is not None else MTPModel(model_config)).to(device).train()
    optimizer = make_optimizer(model, tc)
    data_rng = torch.Generator().manual_seed(tc.seed)
    start, history, past_time = 0, [], 0.0
    if state is not None:
        rng = ckpt.load_train_state(out, optimizer)
        data_rng.set_state(rng["data"])
        torch.set_rng_state(rng["torch"])
        start, history = int(state.meta["step"]), list(state.meta.get("history", []))
        past_time = float(state.meta.get("training_time_s", 0.0))
    if world > 1:
        for p in model.parameters():
            dist.broadcast(p.detach(), src=0)

    schedule = DeepSeekStep(tc.steps) if tc.lambda_schedule == "deepseek" else model_config.mtp_loss_scale
    forward = torch.compile(model) if tc.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    val_periodic = eval_chunks(val_data, tc.seq_len, tc.eval_chunks)
    D = model_config.mtp_depth
    from tqdm.auto import tqdm
    bar = tqdm(total=tc.steps, initial=start, disable=not progress or rank != 0, desc=name, unit="step",
               dynamic_ncols=True)
    commands = (list(state.meta.get("commands", [state.meta.get("command")])) if state is not None else []) + [command]
    meta_common = {"corpus": corpus.describe(), "command": command, "commands": commands,
                   "train_config": tc.to_dict(), "name": name}

    def save(step: int, elapsed: float) -> None:
        if out is not None and rank == 0:
            ckpt.save_checkpoint(out, model, tokenizer, {**meta_common, "step": step, "history": history,
                                                         "training_time_s": elapsed,
                                                         "tokens_seen": step * tc.batch_size * tc.seq_len},
                                 optimizer=optimizer, rng_states={"data": data_rng.get_state(),
                                                                  "torch": torch.get_rng_state()})

    t0, sums, n_sum, last_val = time.perf_counter(), {}, 0, {}
    for step in range(start, tc.steps):
        lr = lr_at(step, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, tc.batch_size, tc.seq_len, data_rng, rank, world)
        x, y = x.to(device), y.to(device)
        with autocast if autocast is not None else contextlib.nullcontext():
            if tc.memory_efficient:
                parts = mtp_loss_backward(model, x, y, schedule, step, tc.reduction)
            else:
                parts = mtp_loss(forward(x), y, schedule, step, tc.reduction)
                parts.total.backward()
        values = torch.stack([parts.total.detach(), parts.main.detach(), *[l.detach() for l in parts.depths]]).float()
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
            _all_reduce_mean(grads + [values], world)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        record = {"loss": float(values[0]), **{f"loss_{k}": float(values[k + 1]) for k in range(D + 1)}}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        for key, value in record.items():
            sums[key] = sums.get(key, 0.0) + value
        n_sum += 1
        done = step + 1
        bar.update(1)
        if done % tc.log_every == 0 or done == tc.steps:
            entry = {"step": done, "lr": lr, "tokens": done * tc.batch_size * tc.seq_len,
                     "time_s": round(past_time + time.perf_counter() - t0, 3), "load_avg": load_average(),
                     **{k: v / n_sum for k, v in sums.items()}}
            if tc.eval_every and (done % tc.eval_every == 0 or done == tc.steps):
                last_val = evaluate(model, val_periodic)
                entry.update(last_val)
            history.append(entry)
            sums, n_sum = {}, 0
        postfix = f"loss {record['loss']:.3f} | " + " ".join(f"L{k} {record[f'loss_{k}']:.3f}" for k in range(D + 1))
        if last_val:
            postfix += " | val L0 {:.3f} acc0 {:.2f}".format(last_val["val_loss_0"], last_val["val_acc_0"])
        bar.set_postfix_str(postfix, refresh=False)
        if tc.save_every and done % tc.save_every == 0 and done != tc.steps:
            save(done, past_time + time.perf_counter() - t0)
        if callback is not None and rank == 0:
            callback(done, record)
    bar.close()
    elapsed = past_time + time.perf_counter() - t0
    model.eval()
    result = TrainResult(model, tokenizer, history, None, out, corpus.describe())
    if rank == 0:
        hardware = hardware_description(device) + (f" x {world} processes" if world > 1 else "")
        card_kw = dict(corpus_info=corpus.describe(), val_data=val_data, tc=tc, name=name, command=command,
                       training_time_s=elapsed, tokens_seen=tc.steps * tc.batch_size * tc.seq_len,
                       hardware=hardware, steps=tc.steps)
        cpu_model = model.cpu() if device.type != "cpu" else model
        if out is not None:
            result.card = make_card(cpu_model, weights_dtype="float32", **card_kw)
            ckpt.save_checkpoint(out, cpu_model, tokenizer,
                                 {**meta_common, "step": tc.steps, "history": history, "training_time_s": elapsed,
                                  "tokens_seen": card_kw["tokens_seen"]},
                                 optimizer=optimizer, rng_states={"data": data_rng.get_state(),
                                                                  "torch": torch.get_rng_state()},
                                 card=result.card)
        if export is not None:
            stored = rounded_copy(cpu_model, export_dtype)
            result.card = make_card(stored, weights_dtype=export_dtype, **card_kw)
            ckpt.save_checkpoint(export, stored, tokenizer,
                                 {**meta_common, "step": tc.steps, "history": history, "training_time_s": elapsed,
                                  "tokens_seen": card_kw["tokens_seen"]},
                                 card=result.card, dtype=export_dtype)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
