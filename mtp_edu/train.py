"""Training: AdamW + warmup/cosine, gradient clipping, per-depth evaluation, checkpoints, torchrun DDP.

One entry point, `train(model_config, train_config, ...)`, serves a notebook (tqdm.auto progress bar,
a JSON-able metrics history), the CLI (`mtp-edu train`) and multi-process data parallelism (started
under `torchrun --nproc_per_node N`, see mtp_edu.ddp).

The loss is eq. 25 of DeepSeek-V3 (mtp_edu.losses.mtp_loss), or the memory-efficient path of
Gloeckle et al. 2024 sec. 2 (mtp_loss_backward) with `memory_efficient=True`.
On CPU, training is seeded and deterministic, and a resumed run continues bit-exactly: the optimizer
state and the RNG states are part of every checkpoint.

The pieces around the loop live beside it: the configs (mtp_edu.config), the named presets
(mtp_edu.presets), the device (mtp_edu.machine), the model card and `evaluate` (mtp_edu.card).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint as ckpt
from . import ddp
from .card import evaluate, make_card, rounded_copy
from .config import MTPConfig, TrainConfig
from .data import eval_chunks, get_batch, load_corpus, make_tokenizer
from .losses import DeepSeekStep, mtp_loss, mtp_loss_backward
from .machine import hardware_description, load_average
from .model import MTPModel
from .presets import PRESETS, preset

__all__ = ["train", "TrainConfig", "TrainResult", "TrainingDiverged", "preset", "PRESETS", "lr_at", "make_optimizer"]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient stopped being a finite number; the message names the step and says what
    is on disk (the last checkpoint saved before it, never one holding NaN or inf)."""


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to tc.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at tc.steps."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (and the embedding), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=tc.lr, betas=(tc.beta1, tc.beta2))


@dataclass
class TrainResult:
    model: MTPModel
    tokenizer: object
    history: list[dict]
    card: dict | None
    path: Path | None
    corpus: dict = field(default_factory=dict)


def train(model_config: MTPConfig, tc: TrainConfig, out: str | Path | None = None, *, resume: bool = False,
          export: str | Path | None = None, export_dtype: str = "float32", name: str = "custom",
          command: str | None = None, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train an MTPModel; checkpoint to `out` (every save_every steps and at the end).

    resume: continue from the checkpoint in `out` (its step, optimizer, RNG states, history and
    tokenizer) up to tc.steps, which may not be below the checkpoint's step.
    export: also write an inference-only copy there (weights in `export_dtype`, plus the card, whose
    numbers are measured on the exported weights).
    callback(step, record): called on rank 0 after every step (record = that step's losses).

    `out` and `export` are checked before the first step (see checkpoint.check_target); without
    `resume`, an `out` that already holds a checkpoint is refused rather than replaced. Training
    stops with TrainingDiverged at the first step whose loss or gradient is not finite, before the
    optimizer step; the last checkpoint saved before it stays on disk. result.model stays on the
    device it was trained on, and torch's CPU thread count is restored on return.
    """
    threads = torch.get_num_threads()
    try:
        return _train(model_config, tc, out, resume=resume, export=export, export_dtype=export_dtype, name=name,
                      command=command, progress=progress, callback=callback)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)       # tc.threads holds for this run only, not for a notebook's next cell


def progress_bar(**kw):
    """tqdm.auto's bar: text in a terminal, a widget in a notebook. A saved notebook keeps, beside the
    widget, a text copy for viewers without widgets (GitHub, nbconvert), taken when the bar is first
    shown: a stuck 0%. So in a notebook the bar is shown with a display id, and `close()` replaces that
    copy with the final bar."""
    from tqdm.auto import tqdm
    notebook = sys.modules.get("tqdm.notebook")              # imported by tqdm.auto only in a notebook kernel
    if kw.get("disable") or notebook is None or not issubclass(tqdm, notebook.tqdm_notebook):
        return tqdm(**kw)

    class NotebookBar(tqdm):
        def __init__(self, **kw):
            from IPython.display import display
            super().__init__(display=False, **kw)
            self.handle = display(self.container, display_id=True)

        def close(self):
            super().close()
            handle, self.handle = getattr(self, "handle", None), None
            if handle is not None:                # once; the whole line (the widget's own copy is cut at 110)
                final = self.container.__repr__(True)
                handle.update({**self.container._repr_mimebundle_(), "text/plain": final}, raw=True)

    return NotebookBar(**kw)


def _finite(model: torch.nn.Module) -> bool:
    """True if no weight holds NaN or inf."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _cpu_copy(model: MTPModel) -> MTPModel:
    """A copy of the model on the CPU (for the card and the checkpoint): `model.cpu()` would move the
    caller's model itself, which must stay on the device it was trained on."""
    with torch.random.fork_rng(devices=[]):    # building a model draws from the global RNG: leave it as it was
        copy = MTPModel(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def _check_resumed_tokenizer(out: Path, state: ckpt.Checkpoint, record: dict, spec: str) -> None:
    """A resumed run keeps the checkpoint's tokenizer: refuse a TrainConfig that names another one,
    which the run's record would otherwise claim it used."""
    recorded = (record["train_config"] or {}).get("tokenizer")
    kind = state.tokenizer.to_dict().get("type")
    if recorded is not None and recorded != spec:
        raise ckpt.CheckpointError(f"cannot resume {out} with tokenizer {spec!r}: the run was trained with "
                                   f"{recorded!r}, and a resumed run keeps its tokenizer (leave --tokenizer out)")
    if recorded is None and spec.split(":")[0] != kind:
        raise ckpt.CheckpointError(f"cannot resume {out} with tokenizer {spec!r}: the checkpoint's tokenizer is "
                                   f"{state.tokenizer!r}, and a resumed run keeps its tokenizer")


def _train(model_config: MTPConfig, tc: TrainConfig, out, *, resume, export, export_dtype, name, command,
           progress, callback) -> TrainResult:
    if tc.compile and (os.name == "nt" or sys.platform == "win32"):
        raise ValueError("torch.compile is not supported on Windows; train with compile=False")
    rank, world, device = ddp.setup(tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.batch_size % world:
        raise ValueError(f"batch_size={tc.batch_size} must be a multiple of the {world} processes")
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs the checkpoint directory `out`")
    state = record = None
    if resume:                                # checked before anything slow (the corpus, BPE training)
        state, record = ckpt.load_checkpoint(out), ckpt.run_record(out)
        if tc.steps < record["step"]:
            raise ckpt.CheckpointError(f"cannot resume {out} with steps={tc.steps}: the checkpoint is at step "
                                       f"{record['step']} already; give steps >= {record['step']} (the total, "
                                       "not the steps to add)")
        _check_resumed_tokenizer(out, state, record, tc.tokenizer)
    if out is not None:
        ckpt.check_target(out, overwrite=resume)
    if export is not None:
        ckpt.check_target(export, overwrite=True)    # an export is meant to be regenerated in place
    command = command or "mtp_edu.train.train(...)"
    torch.manual_seed(tc.seed)

    corpus = load_corpus(tc.data)
    if state is not None:
        recorded = state.meta.get("corpus", {}).get("sha256") if isinstance(state.meta.get("corpus"), dict) else None
        if recorded != corpus.sha256:
            raise ckpt.CheckpointError(f"cannot resume {out}: it was trained on corpus {tc.data!r} with sha256 "
                                       f"{str(recorded)[:16]}..., this machine's corpus has {corpus.sha256[:16]}... "
                                       "(another Python version or a changed file)")
        tokenizer = state.tokenizer
    else:
        tokenizer = make_tokenizer(tc.tokenizer, corpus)
    if tokenizer.vocab_size != model_config.vocab_size:
        model_config = model_config.replace(vocab_size=tokenizer.vocab_size)   # BPE sets V
    if state is not None and state.meta["config"] != model_config.to_dict():
        differ = sorted(k for k, v in model_config.to_dict().items() if state.meta["config"].get(k) != v)
        raise ckpt.CheckpointError(f"cannot resume {out}: its model config differs from the one given in {differ}")
    train_data, val_data = tokenizer.encode_tensor(corpus.train), tokenizer.encode_tensor(corpus.val)

    model = (state.model if state is not None else MTPModel(model_config)).to(device).train()
    optimizer = make_optimizer(model, tc)
    data_rng = torch.Generator().manual_seed(tc.seed)
    start, history, past_time = 0, [], 0.0
    if state is not None:
        rng = ckpt.load_train_state(out, optimizer)
        if not {"data", "torch"} <= set(rng):
            raise ckpt.CheckpointError(f"cannot resume {out}: its {ckpt.TRAIN_STATE} lacks the random number "
                                       f"generator states rng.data and rng.torch (it has {sorted(rng)})")
        try:
            data_rng.set_state(rng["data"])
            torch.set_rng_state(rng["torch"])
        except (RuntimeError, TypeError) as e:
            raise ckpt.CheckpointError(f"cannot resume {out}: its random number generator states are "
                                       f"malformed ({e})") from None
        start, history, past_time = record["step"], list(record["history"]), record["training_time_s"]
    if world > 1:
        ddp.broadcast_parameters(model)

    schedule = DeepSeekStep(tc.steps) if tc.lambda_schedule == "deepseek" else model_config.mtp_loss_scale
    forward = torch.compile(model) if tc.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    val_periodic = eval_chunks(val_data, tc.seq_len, tc.eval_chunks)
    D = model_config.mtp_depth
    bar = progress_bar(total=tc.steps, initial=start, disable=not progress or rank != 0, desc=name, unit="step",
                       dynamic_ncols=True)
    commands = (record["commands"] if record is not None else []) + [command]
    meta_common = {"corpus": corpus.describe(), "command": command, "commands": commands,
                   "train_config": tc.to_dict(), "name": name}

    last_saved = start if state is not None else None      # the step of the checkpoint now in `out`

    def diverged(step: int, what: str) -> TrainingDiverged:
        bar.close()
        kept = ("nothing was saved (no checkpoint directory)" if out is None else
                f"the last checkpoint, step {last_saved}, is kept in {out}" if last_saved is not None else
                f"no checkpoint was saved before it (save_every={tc.save_every})")
        return TrainingDiverged(f"training diverged at step {step}: {what}; it stopped there, and {kept}. Try a "
                                f"lower learning rate (lr; at this step it was {lr_at(step - 1, tc):.3g})")

    def save(step: int, elapsed: float) -> None:
        nonlocal last_saved
        if not _finite(model):                     # checked on every rank: the weights are the same there
            raise diverged(step, "the weights after its optimizer step are not finite")
        if out is not None and rank == 0:
            ckpt.save_checkpoint(out, model, tokenizer, {**meta_common, "step": step, "history": history,
                                                         "training_time_s": elapsed,
                                                         "tokens_seen": step * tc.batch_size * tc.seq_len},
                                 optimizer=optimizer, rng_states={"data": data_rng.get_state(),
                                                                  "torch": torch.get_rng_state()})
            last_saved = step

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
        values = torch.stack([parts.total.detach(), parts.main.detach(),
                              *[loss.detach() for loss in parts.depths]]).float()
        if world > 1:
            ddp.average_gradients(model, world, [values])
        # the global gradient norm, clipped to grad_clip when that is > 0 (max_norm=inf scales by 1: a no-op)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        if not bool(torch.isfinite(values).all()):          # before the optimizer step: the weights stay finite
            raise diverged(step + 1, f"the loss is {float(values[0])}, per depth "
                                     f"{[float(v) for v in values[1:]]} (not finite)")
        if not bool(torch.isfinite(grad_norm)):
            raise diverged(step + 1, f"the loss is {float(values[0]):.4g} but the gradient norm is "
                                     f"{float(grad_norm)} (not finite)")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        record = {"loss": float(values[0]), **{f"loss_{k}": float(values[k + 1]) for k in range(D + 1)}}
        if tc.grad_clip > 0:
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
    if not _finite(model):
        raise diverged(tc.steps, "the weights after its optimizer step are not finite")
    elapsed = past_time + time.perf_counter() - t0
    model.eval()
    result = TrainResult(model, tokenizer, history, None, out, corpus.describe())
    if rank == 0:
        hardware = hardware_description(device) + (f" x {world} processes" if world > 1 else "")
        card_kw = dict(corpus_info=corpus.describe(), val_data=val_data, tc=tc, name=name, command=command,
                       training_time_s=elapsed, tokens_seen=tc.steps * tc.batch_size * tc.seq_len,
                       hardware=hardware, steps=tc.steps, commands=commands, history=history)
        cpu_model = _cpu_copy(model)              # on every device, so the CPU tests run the GPU's code path
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
            code = corpus.name == "stdlib"                 # the quality gates are for code models
            result.card = make_card(stored, weights_dtype=export_dtype, tokenizer=tokenizer if code else None,
                                    val_text=corpus.val if code else None, **card_kw)
            ckpt.save_checkpoint(export, stored, tokenizer,
                                 {**meta_common, "step": tc.steps, "history": history, "training_time_s": elapsed,
                                  "tokens_seen": card_kw["tokens_seen"]},
                                 card=result.card, dtype=export_dtype)
    ddp.finish(world)
    return result
