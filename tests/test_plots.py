"""Plots: every function returns a labelled Figure, reads its inputs tolerantly, never calls show."""
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure

from mtp_edu.losses import Curriculum, Decay, DeepSeekStep
from mtp_edu.traces import Step, Trace
from mtp_edu.viz import plots


def trace(rule="greedy", accepted=(3, 1, 0, 2, 3), depth=3):
    steps = []
    for a in accepted:
        kind = "bonus" if a == depth else "correction"
        steps.append(Step(list(range(10, 10 + depth)), [0.9] * depth, [0.8] * depth, a, 42, kind))
    return Trace([1, 2, 3], rule, depth, steps, first_token=7)


def labelled(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert "(" in ax.get_ylabel(), f"y axis without a unit: {ax.get_ylabel()!r}"
    fig.canvas.draw()                                          # renders without error (Agg)


HISTORY = [
    {"step": 0, "loss": 5.9, "loss_0": 5.5, "loss_1": 5.6, "loss_2": 5.7},
    {"step": 50, "loss_0": 3.1, "loss_1": float("nan"), "loss_2": None, "lr": 1e-3, "note": "warm-up done"},
    {"step": 100, "loss_0": torch.tensor(2.5), "loss_1": 3.0, "loss_2": 3.3,
     "val_loss_0": 2.6, "val_loss_1": 3.1, "val_acc_0": 0.41, "val_acc_1": 0.22},
    "not a dict",
]


def test_training_curves_per_depth_are_tolerant():
    series = plots.metric_series(HISTORY)
    assert series[("train", "loss", 0)] == ([0.0, 50.0, 100.0], [5.5, 3.1, 2.5])
    assert series[("train", "loss", 1)] == ([0.0, 100.0], [5.6, 3.0])      # NaN skipped
    assert series[("val", "acc", 1)] == ([100.0], [0.22])
    fig = plots.training_curves(HISTORY)
    labelled(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "top-1 accuracy (%)"
    assert fig.axes[0].get_ylabel() == "cross-entropy (nats per token)"
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert "main (k=0), train" in labels and "MTP k=1, val" in labels
    cols = {"loss_0": [3.0, 2.0], "loss_1": [3.5, 2.5]}                    # dict of lists, no step: index
    assert len(plots.training_curves(cols).axes) == 1
    assert len(plots.training_curves(HISTORY, depths=[0]).axes[0].lines) == 2
    with pytest.raises(ValueError, match="loss_0"):
        plots.training_curves([{"step": 1, "lr": 0.1}])


def test_decoding_plots():
    t = trace()
    fig = plots.acceptance_bars(t)
    labelled(fig)
    assert [round(b.get_height()) for b in fig.axes[0].patches] == [80, 75, 67]
    assert "τ = " in fig.axes[0].get_title()
    labelled(plots.acceptance_bars([0.9, None, 0.5]))
    fig = plots.accepted_length_histogram([t, trace(accepted=(0, 0))])
    labelled(fig)
    assert [b.get_height() for b in fig.axes[0].patches] == pytest.approx([300 / 7, 100 / 7, 100 / 7, 200 / 7])
    fig = plots.tau_vs_depth({1: 1.8, 2: trace(depth=2, accepted=(2, 1)), 3: [t, t]})
    labelled(fig)
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([1.8, 2.5, t.tau()])
    labelled(plots.speed_vs_depth({1: 1.4, 2: 1.9, 3: 2.1}, device="2-core CPU"))
    rows = [{"threshold": 0.9, "speedup": 1.5, "divergence": 0.0}, {"threshold": 0.5, "speedup": 2.0,
            "divergence": 0.08}, {"threshold": 0.1, "tau": 3.2, "divergence": 0.3}, {"threshold": 0.2}]
    labelled(plots.threshold_tradeoff(rows))
    with pytest.raises(ValueError, match="divergence"):
        plots.threshold_tradeoff([{"threshold": 0.5}])


@pytest.mark.parametrize("schedule", [DeepSeekStep(100), Decay(0.3, 100, 2.0), Curriculum(0.3, 3, 20)])
def test_lambda_schedule_curve(schedule):
    fig = plots.lambda_schedule_curve(schedule, 100, step=30)
    labelled(fig)
    assert len(fig.axes[0].lines) >= 1 and math.isfinite(fig.axes[0].get_ylim()[1])
