"""The MTP training loss (DeepSeek-V3 eqs. 24-25), its lambda schedules and a memory-efficient path.

    L_main = CE(P^0, t_{i+1})                     over i = 1..T
    L^k    = CE(P^k, t_{i+k+1})                   over i = 1..T-k                      (eq. 24)
    L      = L_main + (lambda / D) * sum_k L^k                                           (eq. 25)

Reductions of one depth's summed cross-entropy:
- "valid" (default, Megatron-core): divide by the number of valid (non-ignored) target tokens;
- "paper" (eq. 24 as printed): divide by T, the full sequence length, whatever k is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from .checks import check_number
from .shifts import depth_inputs, depth_targets

REDUCTIONS = ("valid", "paper")
Schedule = Callable[[int], Union[float, Sequence[float]]]


# ---- lambda schedules: callables of the training step -----------------------------------------
@dataclass(frozen=True)
class Constant:
    """lambda(step) = value."""
    value: float = 0.3

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class DeepSeekStep:
    """DeepSeek-V3's schedule: 0.3 for the first 10T of 14.8T tokens, then 0.1 (sec. 4.2)."""
    total_steps: int
    high: float = 0.3
    low: float = 0.1
    switch_fraction: float = 10.0 / 14.8

    def __call__(self, step: int) -> float:
        return self.high if step < self.switch_fraction * self.total_steps else self.low


@dataclass(frozen=True)
class Decay:
    """The 'Complete Guide' tutorial's decay (no primary source):
    lambda(step) = lambda0 * (1 - step / total_steps) ** alpha (0 after the end)."""
    lambda0: float
    total_steps: int
    alpha: float = 1.0

    def __call__(self, step: int) -> float:
        return self.lambda0 * max(0.0, 1.0 - step / self.total_steps) ** self.alpha


@dataclass(frozen=True)
class Curriculum:
    """The 'Complete Guide' tutorial's curriculum (no primary source): depth k is switched on at
    step (k - 1) * steps_per_depth.

    Returns one lambda per depth (0 for a depth not yet on); eq. 25's 1/D stays as it is."""
    value: float
    depth: int
    steps_per_depth: int

    def __call__(self, step: int) -> list[float]:
        return [self.value if step >= (k - 1) * self.steps_per_depth else 0.0 for k in range(1, self.depth + 1)]


def depth_weights(depth: int, mtp_loss_scale: float | Schedule, step: int = 0) -> list[float]:
    """The factor in front of each depth's loss: [1, lambda_1/D, ..., lambda_D/D] (eq. 25)."""
    lam = mtp_loss_scale(step) if callable(mtp_loss_scale) else mtp_loss_scale
    lams = list(lam) if isinstance(lam, (list, tuple)) else [lam] * depth
    if len(lams) != depth:
        raise ValueError(f"the lambda schedule gave {len(lams)} per-depth values; the model has D={depth}")
    for value in lams:
        check_number("lambda", value, minimum=0)
    return [1.0] + [float(value) / depth for value in lams]


def depth_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "valid",
               ignore_index: int = -100, token_weights: torch.Tensor | None = None,
               seq_len: int | None = None) -> torch.Tensor:
    """One depth's cross-entropy. logits (B, n, V), targets (B, n), token_weights (B, n) or None.

    "valid": sum_i w_i CE_i / sum_i w_i over valid i (0 when no target is valid);
    "paper": sum_i w_i CE_i / (B * seq_len), seq_len = T (eq. 24's 1/T).
    """
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
                         reduction="none").view_as(targets)              # (B, n), 0 where ignored
    w = (targets != ignore_index).to(ce.dtype)
    if token_weights is not None:
        w = w * token_weights.to(ce.dtype)
    if reduction == "paper":
        return (ce * w).sum() / (targets.shape[0] * seq_len)
    return (ce * w).sum() / w.sum().clamp_min(torch.finfo(ce.dtype).tiny)    # 0 / tiny = 0 if none valid


@dataclass
class LossBreakdown:
    """total = main + sum_k weights[k] * depths[k-1]; weights[0] = 1 is the main loss's."""
    total: torch.Tensor
    main: torch.Tensor
    depths: list[torch.Tensor]
    weights: list[float]

    def as_dict(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "loss_0": float(self.main.detach())}
        out.update({f"loss_{k}": float(x.detach()) for k, x in enumerate(self.depths, 1)})
        return out


def _check(targets: torch.Tensor, T: int, batch: int, reduction: str,
           token_weights: torch.Tensor | None) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not allowed: must be one of {', '.join(REDUCTIONS)}")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point():
        raise ValueError("targets must be an integer tensor (B, T) holding t_2..t_(T+1)")
    if tuple(targets.shape) != (batch, T):
        raise ValueError(f"targets have shape {tuple(targets.shape)}; the main logits need (B, T) = {(batch, T)}")
    if token_weights is not None and tuple(token_weights.shape) != (batch, T):
        raise ValueError(f"token_weights have shape {tuple(token_weights.shape)}; expected (B, T) = {(batch, T)}")


def mtp_loss(output, targets: torch.Tensor, mtp_loss_scale: float | Schedule = 0.3, step: int = 0,
             reduction: str = "valid", ignore_index: int = -100,
             token_weights: torch.Tensor | None = None) -> LossBreakdown:
    """L = L_main + (lambda / D) * sum_k L^k (eqs. 24-25) from an `MTPOutput`.

    targets: (B, T) = t_2..t_{T+1} for inputs t_1..t_T; depth k is scored on targets[:, k:].
    mtp_loss_scale: lambda, or a schedule `step -> lambda` (or -> one lambda per depth).
    token_weights: optional (B, T) per-target weights (the 'Complete Guide' tutorial's
    token-level importance), aligned with `targets`, so depth k uses token_weights[:, k:].
    """
    B, T = output.logits[0].shape[:2]
    _check(targets, T, B, reduction, token_weights)
    D = len(output.logits) - 1
    weights = depth_weights(D, mtp_loss_scale, step)
    losses = [depth_loss(logits, depth_targets(targets, k), reduction, ignore_index,
                         None if token_weights is None else depth_targets(token_weights, k), T)
              for k, logits in enumerate(output.logits)]
    total = sum(w * loss for w, loss in zip(weights, losses))
    return LossBreakdown(total, losses[0], losses[1:], weights)


def mtp_loss_backward(model, input_ids: torch.Tensor, targets: torch.Tensor,
                      mtp_loss_scale: float | Schedule = 0.3, step: int = 0, reduction: str = "valid",
                      ignore_index: int = -100, token_weights: torch.Tensor | None = None) -> LossBreakdown:
    """Backward of `mtp_loss` with only one (B, T, V) logits tensor alive at a time (Meta 2024, sec. 2).

    Runs the trunk once, then forward+backward depth by depth into detached copies of the hidden
    states, and finally back-propagates the gathered hidden-state gradients through the modules
    (deepest first) and the trunk. Same gradients as `mtp_loss(...).total.backward()`;
    returns the (detached) loss values.
    """
    model.check_input(input_ids)
    B, T = input_ids.shape
    _check(targets, T, B, reduction, token_weights)
    D, sequential = model.config.mtp_depth, model.config.mtp_style == "sequential"
    weights = depth_weights(D, mtp_loss_scale, step)
    h0 = model.trunk(input_ids)
    leaves, graphs, losses = [h0.detach().requires_grad_()], [h0], []
    for k in range(D + 1):
        if k >= 1:
            h_prev = leaves[k - 1] if sequential else leaves[0]
            h = model.mtp_hidden(k, h_prev[:, :T - k], depth_inputs(input_ids, k))
            graphs.append(h)
            leaves.append(h.detach().requires_grad_())
        loss = depth_loss(model.head_logits(k, leaves[k]), depth_targets(targets, k), reduction, ignore_index,
                          None if token_weights is None else depth_targets(token_weights, k), T)
        (weights[k] * loss).backward()                    # frees this depth's logits
        losses.append(loss.detach())
    for k in range(D, -1, -1):                            # module D .. 1, then the trunk
        graphs[k].backward(leaves[k].grad)
    total = sum(w * loss for w, loss in zip(weights, losses))
    return LossBreakdown(total, losses[0], losses[1:], weights)
