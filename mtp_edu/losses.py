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

from .checks import check_int, check_number, check_token_ids
from .shifts import depth_inputs, depth_targets

REDUCTIONS = ("valid", "paper")
Schedule = Callable[[int], Union[float, Sequence[float]]]


# ---- lambda schedules: callables of the training step -----------------------------------------
@dataclass(frozen=True)
class Constant:
    """lambda(step) = value."""
    value: float = 0.3

    def __post_init__(self) -> None:
        check_number("Constant.value", self.value, minimum=0)

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class DeepSeekStep:
    """DeepSeek-V3's schedule: 0.3 for the first 10T of 14.8T tokens, then 0.1 (sec. 4.2)."""
    total_steps: int
    high: float = 0.3
    low: float = 0.1
    switch_fraction: float = 10.0 / 14.8

    def __post_init__(self) -> None:
        check_int("DeepSeekStep.total_steps", self.total_steps, minimum=1)
        check_number("DeepSeekStep.high", self.high, minimum=0)
        check_number("DeepSeekStep.low", self.low, minimum=0)
        check_number("DeepSeekStep.switch_fraction", self.switch_fraction, minimum=0, maximum=1)

    def __call__(self, step: int) -> float:
        return self.high if step < self.switch_fraction * self.total_steps else self.low


@dataclass(frozen=True)
class Decay:
    """The 'Complete Guide' tutorial's decay (no primary source):
    lambda(step) = lambda0 * (1 - step / total_steps) ** alpha (0 after the end)."""
    lambda0: float
    total_steps: int
    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_number("Decay.lambda0", self.lambda0, minimum=0)
        check_int("Decay.total_steps", self.total_steps, minimum=1)
        check_number("Decay.alpha", self.alpha, above=0, note="alpha <= 0 would not reach 0 at the end")

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

    def __post_init__(self) -> None:
        check_number("Curriculum.value", self.value, minimum=0)
        check_int("Curriculum.depth", self.depth, minimum=1)
        check_int("Curriculum.steps_per_depth", self.steps_per_depth, minimum=0)

    def __call__(self, step: int) -> list[float]:
        return [self.value if step >= (k - 1) * self.steps_per_depth else 0.0 for k in range(1, self.depth + 1)]


def depth_weights(depth: int, mtp_loss_scale: float | Schedule, step: int = 0) -> list[float]:
    """The factor in front of each depth's loss: [1, lambda_1/D, ..., lambda_D/D] (eq. 25).

    mtp_loss_scale: lambda (a finite number >= 0), one lambda per depth (a list or tuple of D), or a
    schedule `step -> either of those`. Anything else (NaN, inf, a bool, a negative lambda, a
    schedule that returns one) is refused with an error naming mtp_loss_scale."""
    check_int("depth", depth, minimum=0)
    check_int("step", step, minimum=0)
    if callable(mtp_loss_scale):
        lam, name = mtp_loss_scale(step), f"mtp_loss_scale(step={step})"
        note = "the lambda schedule's value, one number or one per depth"
    else:
        lam, name, note = mtp_loss_scale, "mtp_loss_scale", "lambda in eq. 25, or one lambda per depth"
    if isinstance(lam, (list, tuple)):
        lams = list(lam)
        if len(lams) != depth:
            raise ValueError(f"{name} gave {len(lams)} per-depth lambda values; the model has D={depth}")
        for k, value in enumerate(lams, 1):
            check_number(f"{name}[{k - 1}] (lambda of depth {k})", value, minimum=0)
    else:
        lams = [check_number(name, lam, minimum=0, note=note)] * depth
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
        return (ce * w).sum() / max(1, targets.shape[0] * seq_len)          # an empty batch: 0, not NaN
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


def _check_output(output) -> tuple[int, int, int, torch.device]:
    """(B, T, V, device) of an MTPOutput whose logits[k] are (B, T-k, V) float tensors, k = 0..D."""
    logits = getattr(output, "logits", None)
    if (not isinstance(logits, (list, tuple)) or not logits
            or not all(isinstance(x, torch.Tensor) and x.dim() == 3 and x.is_floating_point() for x in logits)):
        raise TypeError(f"output must be the MTPOutput of a model's forward: .logits a list of (B, T-k, V) float "
                        f"tensors, k = 0..D; got {type(output).__name__}")
    B, T, V = logits[0].shape
    for k, x in enumerate(logits):
        if tuple(x.shape) != (B, T - k, V) or x.device != logits[0].device:
            raise ValueError(f"output.logits[{k}] has shape {tuple(x.shape)} on {x.device}; depth {k} of a "
                             f"(B, T) = {(B, T)} batch needs (B, T-k, V) = {(B, T - k, V)} on {logits[0].device}")
    if logits[0].is_meta:
        raise ValueError("output.logits are on the meta device, which holds no values")
    return B, T, V, logits[0].device


def _check(targets: torch.Tensor, B: int, T: int, V: int, device: torch.device, reduction: str,
           ignore_index: int, token_weights: torch.Tensor | None) -> torch.Tensor:
    """Refuse bad loss arguments with an error naming them; return targets as int64."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not allowed: must be one of {', '.join(REDUCTIONS)}")
    check_int("ignore_index", ignore_index, minimum=-2**63, maximum=2**63 - 1, note="an int64")
    check_token_ids("targets", targets, 2, "(B, T) holding t_2..t_(T+1)", device=device)
    if tuple(targets.shape) != (B, T):
        raise ValueError(f"targets have shape {tuple(targets.shape)}; the main logits need (B, T) = {(B, T)}")
    bad = ((targets < 0) | (targets >= V)) & (targets != ignore_index)
    if bad.any():
        raise ValueError(f"targets must lie in [0, {V}) or equal ignore_index={ignore_index}; got "
                         f"{sorted(set(targets[bad].tolist()))[:5]}")
    if token_weights is not None:
        if not isinstance(token_weights, torch.Tensor) or token_weights.is_complex():
            what = f"a {token_weights.dtype} tensor" if isinstance(token_weights, torch.Tensor) else \
                type(token_weights).__name__
            raise ValueError(f"token_weights must be None or a real (B, T) tensor of weights >= 0; got {what}")
        if tuple(token_weights.shape) != (B, T):
            raise ValueError(f"token_weights have shape {tuple(token_weights.shape)}; expected (B, T) = {(B, T)}")
        if token_weights.device != device:
            raise ValueError(f"token_weights is on {token_weights.device} but the logits are on {device}")
        w = token_weights if token_weights.is_floating_point() else token_weights.float()
        if not bool((torch.isfinite(w) & (w >= 0)).all()):
            raise ValueError(f"token_weights must be finite and >= 0; got min {float(w.min()):g}, "
                             f"max {float(w.max()):g}")
    return targets.long()


def mtp_loss(output, targets: torch.Tensor, mtp_loss_scale: float | Schedule = 0.3, step: int = 0,
             reduction: str = "valid", ignore_index: int = -100,
             token_weights: torch.Tensor | None = None) -> LossBreakdown:
    """L = L_main + (lambda / D) * sum_k L^k (eqs. 24-25) from an `MTPOutput`.

    targets: (B, T) = t_2..t_{T+1} for inputs t_1..t_T, int64 or int32, each in [0, V) or
    ignore_index; depth k is scored on targets[:, k:].
    mtp_loss_scale: lambda, or a schedule `step -> lambda` (or -> one lambda per depth); every lambda
    must be a finite number >= 0.
    token_weights: optional (B, T) per-target weights >= 0, finite (the 'Complete Guide' tutorial's
    token-level importance), aligned with `targets`, so depth k uses token_weights[:, k:].
    A bad argument raises ValueError or TypeError naming it (never torch's own error, never a NaN loss).
    """
    B, T, V, device = _check_output(output)
    targets = _check(targets, B, T, V, device, reduction, ignore_index, token_weights)
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
    targets = _check(targets, B, T, model.config.vocab_size, input_ids.device, reduction, ignore_index,
                     token_weights)
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
