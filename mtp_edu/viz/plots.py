"""Matplotlib plots of training and of speculative decoding. Each function returns a Figure.

Figures are built with `matplotlib.figure.Figure` directly (not pyplot), so no global figure list
grows and nothing is shown until you display or save the figure (`fig.savefig("x.png")`; in
Jupyter a returned Figure renders inline).

Inputs, tolerantly read:

- metrics history (training curves): a list of dicts, one per logged step, e.g.
  `{"step": 100, "loss": 3.1, "loss_0": 2.9, "loss_1": 3.4, "val_loss_0": 3.0, "val_acc_1": 0.41}`.
  `step` (or `iter` / `iteration`) is the x axis, the list index if absent. `loss_k` /
  `val_loss_k` are depth k's cross-entropy in nats (k = 0 is the main model), `acc_k` /
  `val_acc_k` its top-1 accuracy as a fraction in [0, 1] (or in percent if any value is > 1).
  Missing keys, None and NaN are skipped; a dict of lists (`{"step": [...], "loss_0": [...]}`)
  is accepted too. Values may be Python numbers or 0-d tensors.
- traces: `mtp_edu.traces.Trace` objects (from `speculative_generate`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from matplotlib.figure import Figure

from ..traces import Trace

DEPTH_COLOURS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
METRIC = re.compile(r"^(?P<split>val_|train_)?(?P<kind>loss|acc)_(?P<k>\d+)$")


def _colour(k: int) -> str:
    return DEPTH_COLOURS[k % len(DEPTH_COLOURS)]


def _depth_name(k: int) -> str:
    return "main (k=0)" if k == 0 else f"MTP k={k}"


def _number(x: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric values."""
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x.item() if hasattr(x, "item") else x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rows(history: Any) -> list[dict]:
    if isinstance(history, Mapping):                               # dict of lists
        n = max((len(v) for v in history.values() if isinstance(v, Sequence)), default=0)
        return [{key: v[i] for key, v in history.items() if isinstance(v, Sequence) and i < len(v)}
                for i in range(n)]
    return [row for row in history if isinstance(row, Mapping)]


def metric_series(history: Any) -> dict[tuple[str, str, int], tuple[list[float], list[float]]]:
    """{(split, kind, k): (steps, values)} from a metrics history; split 'train' or 'val', kind 'loss' or 'acc'."""
    series: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}
    for i, row in enumerate(_rows(history)):
        step = next((_number(row[key]) for key in ("step", "iter", "iteration") if key in row), None)
        step = float(i) if step is None else step
        for key, raw in row.items():
            m = METRIC.match(str(key))
            value = _number(raw)
            if m is None or value is None:
                continue
            split = "val" if m["split"] == "val_" else "train"
            xs, ys = series.setdefault((split, m["kind"], int(m["k"])), ([], []))
            xs.append(step)
            ys.append(value)
    return dict(sorted(series.items()))


def training_curves(history: Any, depths: Iterable[int] | None = None) -> Figure:
    """Loss (nats) per depth against the training step, train solid and validation dashed;
    a second panel with validation accuracy (%) per depth when the history has it."""
    series = metric_series(history)
    if depths is not None:
        keep = set(depths)
        series = {key: v for key, v in series.items() if key[2] in keep}
    if not any(kind == "loss" for _, kind, _ in series):
        raise ValueError("no per-depth losses in the metrics history: expected dicts with keys like "
                         "'step', 'loss_0', 'loss_1', 'val_loss_1', 'val_acc_1'")
    has_acc = any(kind == "acc" for _, kind, _ in series)
    fig = Figure(figsize=(11 if has_acc else 6.5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    for (split, kind, k), (xs, ys) in series.items():
        ax = axes[0] if kind == "loss" else axes[1]
        if kind == "acc":
            ys = [100 * y for y in ys] if max(ys) <= 1.0 else ys
        ax.plot(xs, ys, color=_colour(k), linestyle="-" if split == "train" else "--",
                marker=None if len(xs) > 20 else "o", markersize=3, label=f"{_depth_name(k)}, {split}")
    axes[0].set(xlabel="training step", ylabel="cross-entropy (nats per token)", title="Loss per depth")
    if has_acc:
        axes[1].set(xlabel="training step", ylabel="top-1 accuracy (%)", title="Accuracy per depth")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _rates(trace_or_rates: Trace | Sequence[float | None]) -> list[float | None]:
    return trace_or_rates.acceptance_per_depth() if isinstance(trace_or_rates, Trace) else list(trace_or_rates)


def acceptance_bars(trace_or_rates: Trace | Sequence[float | None], title: str | None = None) -> Figure:
    """Conditional acceptance a_k = P(draft k accepted | drafts 1..k-1 accepted), one bar per depth, in %."""
    rates = _rates(trace_or_rates)
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    ks = list(range(1, len(rates) + 1))
    heights = [0.0 if a is None else 100 * a for a in rates]
    bars = ax.bar(ks, heights, color=[_colour(k) for k in ks])
    for bar, a in zip(bars, rates):
        ax.annotate("n/a" if a is None else f"{100 * a:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set(xlabel="draft depth k", ylabel="acceptance a_k (%)", ylim=(0, 110), xticks=ks)
    if title is None and isinstance(trace_or_rates, Trace):
        t = trace_or_rates
        title = (f"rule={t.rule}: τ = {t.tau():.2f} tokens/forward, "
                 f"1 + a₁ + a₁a₂ + … = {t.expected_tokens():.2f}")
    ax.set_title(title or "Acceptance per depth")
    ax.grid(axis="y", alpha=0.3)
    return fig


def accepted_length_histogram(traces: Trace | Sequence[Trace]) -> Figure:
    """How many drafts each verification step accepted (0 .. draft depth), as a share of steps."""
    traces = [traces] if isinstance(traces, Trace) else list(traces)
    counts: list[int] = []
    for t in traces:
        h = t.accepted_histogram()
        counts += [0] * (len(h) - len(counts))
        for j, c in enumerate(h):
            counts[j] += c
    total = sum(counts)
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    xs = list(range(len(counts)))
    ax.bar(xs, [100 * c / total if total else 0.0 for c in counts], color="#2ca02c")
    ax.set(xlabel="drafts accepted in one step (tokens)", ylabel="share of steps (%)", xticks=xs,
           title=f"Accepted length per step ({total} steps)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _tau(value: Any) -> float:
    if isinstance(value, Trace):
        return value.tau()
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, Trace) for t in value):
        emitted = sum(len(s.emitted) for t in value for s in t.steps)
        forwards = sum(s.main_forwards for t in value for s in t.steps)
        return emitted / forwards if forwards else 0.0
    return float(value)


def tau_vs_depth(results: Mapping[int, Any]) -> Figure:
    """tau (mean tokens per verification forward) against the draft depth, with the ceiling D + 1.

    results: {draft_depth: tau | Trace | list of Traces}."""
    ds = sorted(results)
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(ds, [_tau(results[d]) for d in ds], "o-", color="#1f77b4", label="measured τ")
    ax.plot(ds, [d + 1 for d in ds], "--", color="#999999", label="ceiling D + 1 (every draft accepted)")
    ax.set(xlabel="draft depth D (tokens drafted per step)", ylabel="τ (tokens per verification forward)",
           xticks=ds, title="Tokens per verification forward vs draft depth")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def speed_vs_depth(results: Mapping[int, float], device: str = "") -> Figure:
    """Speed-up over plain KV-cached greedy decoding (tokens/s ratio) against the draft depth.

    results: {draft_depth: ratio}; `device` names the hardware in the title (e.g. "2-core CPU")."""
    ds = sorted(results)
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(ds, [float(results[d]) for d in ds], color="#ff7f0e")
    ax.axhline(1.0, color="#333333", linestyle="--", linewidth=1, label="plain greedy (1×)")
    for d in ds:
        ax.annotate(f"{float(results[d]):.2f}×", (d, float(results[d])), ha="center", va="bottom", fontsize=9)
    ax.set(xlabel="draft depth D (tokens drafted per step)", ylabel="speed-up (× tokens/s of plain greedy)",
           xticks=ds, title="Speed-up vs draft depth" + (f" on {device}" if device else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _pick(row: Mapping, keys: Sequence[str]) -> float | None:
    return next((_number(row[k]) for k in keys if k in row and _number(row[k]) is not None), None)


def threshold_tradeoff(rows: Sequence[Mapping[str, Any]], device: str = "") -> Figure:
    """The lossy threshold rule: speed-up against divergence from greedy output, one point per threshold.

    rows: dicts with `threshold`, a speed (`speedup` / `speed_ratio` / `speed`, as × greedy; or `tau`)
    and `divergence` (fraction of generated tokens that differ from plain greedy output, 0..1)."""
    points = []
    for row in rows:
        speed = _pick(row, ("speedup", "speed_ratio", "speed"))
        label = "speed-up (× tokens/s of plain greedy)"
        if speed is None:
            speed, label = _pick(row, ("tau",)), "τ (tokens per verification forward)"
        div = _pick(row, ("divergence", "mismatch", "diverged"))
        if speed is not None and div is not None:
            points.append((100 * div if div <= 1 else div, speed, row.get("threshold")))
    if not points:
        raise ValueError("threshold_tradeoff needs rows with 'threshold', 'speedup' (or 'tau') and 'divergence'")
    points.sort(key=lambda p: p[0])
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="#d62728")
    for x, y, thr in points:
        if thr is not None:
            ax.annotate(f"threshold {thr:g}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="divergence from greedy output (% of tokens)", ylabel=label,
           title="Threshold rule: speed vs divergence" + (f" on {device}" if device else ""))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    return fig


def lambda_schedule_curve(schedule: Callable[[int], Any], total_steps: int, step: int | None = None) -> Figure:
    """lambda(step) of a loss-weight schedule (mtp_edu.losses), one line per depth for per-depth schedules;
    a vertical line marks `step`."""
    total_steps = max(1, int(total_steps))
    xs = sorted(set(range(0, total_steps + 1, max(1, total_steps // 200))) | {total_steps})
    values = [schedule(x) for x in xs]
    fig = Figure(figsize=(6, 3.2))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.16, top=0.88)   # fixed: fast to redraw in a widget
    ax = fig.subplots()
    if values and isinstance(values[0], (list, tuple)):
        for k in range(len(values[0])):
            ax.step(xs, [v[k] for v in values], where="post", color=_colour(k + 1), label=f"λ for depth {k + 1}")
        ax.legend(fontsize=8)
    else:
        ax.step(xs, values, where="post", color="#1f77b4")
    if step is not None:
        ax.axvline(step, color="#999999", linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel="λ (each depth's loss weighs λ/D)",
           title=f"λ schedule: {type(schedule).__name__}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return fig
