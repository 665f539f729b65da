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

__all__ = ["train", "TrainConfig", "TrainResult", "preset", "PRESETS", "lr_at", "make_optimizer"]


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

    resume: continue from the checkpoint in `out` (its step, optimizer, RNG states and history).
    export: also write an inference-only copy there (weights in `export_dtype`, plus the card, whose
    numbers are measured on the exported weights).
    callback(step, record): called on rank 0 after every step (record = that step's losses).
    """
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
        ddp.broadcast_parameters(model)

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
        values = torch.stack([parts.total.detach(), parts.main.detach(),
                              *[loss.detach() for loss in parts.depths]]).float()
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
            ddp.all_reduce_mean(grads + [values], world)
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
                       hardware=hardware, steps=tc.steps, commands=commands, history=history)
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
            code = corpus.name == "stdlib"                 # the quality gates are for code models
            result.card = make_card(stored, weights_dtype=export_dtype, tokenizer=tokenizer if code else None,
                                    val_text=corpus.val if code else None, **card_kw)
            ckpt.save_checkpoint(export, stored, tokenizer,
                                 {**meta_common, "step": tc.steps, "history": history, "training_time_s": elapsed,
                                  "tokens_seen": card_kw["tokens_seen"]},
                                 card=result.card, dtype=export_dtype)
    ddp.finish(world)
    return result
