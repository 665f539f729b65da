"""The model card: how a model was made and what it scores, measured on the weights as stored.

`evaluate` gives the per-depth validation loss and top-1 accuracy that training logs and the card
records; the card also stores a small slice of validation chunks so that anyone can recompute its
numbers (`mtp-edu info --verify`).
"""
from __future__ import annotations

import platform

import torch

from .checkpoint import DTYPES
from .config import TrainConfig
from .data import eval_chunks
from .model import MTPModel
from .shifts import depth_targets


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
    copy.load_state_dict({k: v.detach().cpu().to(DTYPES[dtype]).float() for k, v in model.state_dict().items()})
    return copy.eval()


def make_card(model: MTPModel, corpus_info: dict, val_data: torch.Tensor, tc: TrainConfig, *, name: str,
              command: str, training_time_s: float, tokens_seen: int, hardware: str, weights_dtype: str,
              steps: int) -> dict:
    """The model card: how it was made and what it scores, measured on the weights as stored."""
    full = eval_chunks(val_data, tc.seq_len, tc.final_eval_chunks)
    card_slice = eval_chunks(val_data, tc.seq_len, tc.card_chunks)
    val, sl = evaluate(model, full), evaluate(model, card_slice)
    D = model.config.mtp_depth

    def per_depth(metrics: dict, what: str) -> list[float]:
        return [round(metrics[f"val_{what}_{k}"], 6) for k in range(D + 1)]

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
