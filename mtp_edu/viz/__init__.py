"""Pictures of MTP drawn from the live model: graphviz diagrams, matplotlib plots, ipywidgets.

    from mtp_edu.viz import architecture_diagram, loss_flow_diagram, token_flow_diagram, write_diagrams
    from mtp_edu.viz import plots            # training curves, acceptance, tau and speed vs depth
    from mtp_edu.viz import widgets          # explorers and the drafting/acceptance stepper
    from mtp_edu.viz import StepperState     # the widgets' logic without a browser (state, stepper_state)
    from mtp_edu.viz import tree_view        # tree drafting: tree drawing, mask heatmap, tree stepper

The core package never imports this one. Submodules load lazily, so `import mtp_edu.viz` does not pull
in matplotlib or ipywidgets until they are used.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "architecture_diagram": "diagrams", "loss_flow_diagram": "diagrams", "token_flow_diagram": "diagrams",
    "write_diagrams": "diagrams", "save": "diagrams", "GraphvizNotFound": "diagrams",
    "show_token": "tokens",
    "ShiftTableState": "state", "ArchitectureState": "state", "LossWeightState": "state",
    "StepperState": "stepper_state",
    "tree_diagram": "tree_view", "tree_html": "tree_view", "mask_heatmap": "tree_view",
    "TreeStepperState": "tree_view", "tree_stepper": "tree_view",
}
_MODULES = ("diagrams", "plots", "state", "stepper_state", "tokens", "tree_view", "widgets")
__all__ = sorted(_LAZY) + list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
