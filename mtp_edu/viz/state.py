"""The logic of the explorer widgets, as plain objects that tests drive without a browser.

Each state object holds the current control values, has setters that never raise on user input
(bad input becomes a friendly `message` shown inside the widget) and an `html()` that renders the
current view as self-contained HTML, which is also the widget's static fallback (GitHub, nbconvert).

- ShiftTableState:   text + depth -> the coloured token-shift table
- ArchitectureState: D + style -> the architecture diagram (SVG)
- LossWeightState:   lambda + schedule -> the schedule curve and the total-loss formula

The drafting / acceptance stepper's state, StepperState, has its own module: stepper_state.py.
CSS classes for browser tests: mtp-message (see widgets.py for the classes on the controls).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

from ..checks import check_int, check_number
from ..config import MTP_STYLES, MTPConfig
from ..data import ByteTokenizer
from ..losses import Constant, Curriculum, Decay, DeepSeekStep, depth_weights
from ..shifts import shift_table
from .tokens import show_text, show_token

SCHEDULES = ("constant", "deepseek", "decay", "curriculum")     # the lambda schedules of mtp_edu.losses


def message_html(text: str, kind: str = "info") -> str:
    """A friendly boxed message (never a traceback)."""
    colour = {"info": "#0969da", "warn": "#9a6700", "error": "#cf222e"}[kind]
    return (f'<div class="mtp-message mtp-message-{kind}" style="border-left:4px solid {colour};'
            f'padding:4px 8px;margin:4px 0;background:#f6f8fa;font-family:sans-serif">'
            f'{html.escape(text, quote=False)}</div>')


# ---- shift-table explorer ---------------------------------------------------------------------------
@dataclass
class ShiftTableState:
    """Text + depth -> shift table. Long text is cut to `max_tokens` tokens (said in a note)."""
    text: str = "The cat sat on the mat."
    depth: int = 2
    max_depth: int = 4
    max_tokens: int = 24
    tokenizer: Any = field(default_factory=ByteTokenizer)
    notes: list[str] = field(default_factory=list)

    def set(self, text: str | None = None, depth: Any = None) -> None:
        if text is not None:
            self.text = text if isinstance(text, str) else str(text)
        if depth is not None:
            self.depth = depth

    def tokens(self) -> list[int]:
        return list(self.tokenizer.encode(self.text))

    def table(self):
        """The ShiftTable, or None with `notes` saying why (or what was adjusted)."""
        self.notes = []
        try:
            depth = check_int("depth", self.depth)
        except TypeError as err:
            self.notes.append(str(err))
            return None
        if depth < 0:
            self.notes.append(f"depth must be 0 or more; got {depth}.")
            return None
        if depth > self.max_depth:
            self.notes.append(f"depth {depth} is more than this explorer's D = {self.max_depth}; showing D = "
                              f"{self.max_depth}.")
            depth = self.max_depth
        if not self.text:
            self.notes.append("Type a sentence or some code above to see its shift table.")
            return None
        ids = self.tokens()
        if not ids:
            self.notes.append("This text encodes to no tokens; type something else.")
            return None
        if len(ids) > self.max_tokens:
            self.notes.append(f"Showing the first {self.max_tokens} of {len(ids)} tokens.")
            ids = ids[:self.max_tokens]
        if len(ids) < depth + 2:
            self.notes.append(f"Depth {depth} needs at least D + 2 = {depth + 2} tokens; this text has {len(ids)}. "
                              f"Type more, or lower the depth.")
            return None
        return shift_table(ids, depth)

    def html(self) -> str:
        table = self.table()
        notes = "".join(message_html(n, "info" if table is not None else "warn") for n in self.notes)
        if table is None:
            return f'<div class="mtp-shift-explorer">{notes}</div>'
        shown = show_text(self.tokenizer.decode(table.tokens)) if hasattr(self.tokenizer, "decode") else ""
        head = (f'<div style="font-family:sans-serif;margin:2px 0">{len(table.tokens)} tokens '
                f't₁..t<sub>{len(table.tokens)}</sub> of <code>{html.escape(shown)}</code>; '
                f'the model reads t₁..t<sub>T</sub>, T = {len(table.tokens) - 1}</div>')
        return (f'<div class="mtp-shift-explorer">{notes}{head}'
                f'{table.to_html(fmt=lambda t: show_token(t, self.tokenizer))}</div>')


# ---- architecture explorer ------------------------------------------------------------------------------
@dataclass
class ArchitectureState:
    """D + mtp_style -> the architecture diagram of a model with that config (others from `base`)."""
    depth: int = 1
    style: str = "sequential"
    max_depth: int = 4
    base: MTPConfig = field(default_factory=MTPConfig)
    _cache: dict = field(default_factory=dict, repr=False)

    def set(self, depth: Any = None, style: Any = None) -> None:
        if depth is not None:
            self.depth = depth
        if style is not None:
            self.style = style

    def check(self) -> str | None:
        """A friendly message when the controls make no model, else None."""
        try:
            depth = check_int("D", self.depth)
        except TypeError as err:
            return str(err)
        if not 0 <= depth <= self.max_depth:
            return f"D = {depth} is outside this explorer's range 0..{self.max_depth}."
        if self.style not in MTP_STYLES:
            return f"style {self.style!r} is not one of {', '.join(MTP_STYLES)}."
        return None

    def diagram(self):
        from .diagrams import architecture_diagram
        if self.check():
            return None
        key = (self.depth, self.style)
        if key not in self._cache:
            self._cache[key] = architecture_diagram(self.base.replace(mtp_depth=key[0], mtp_style=key[1]))
        return self._cache[key]

    def svg(self) -> str | None:
        from .diagrams import GraphvizNotFound, render
        diagram = self.diagram()
        if diagram is None:
            return None
        try:
            svg = render(diagram, "svg").decode("utf-8")
        except GraphvizNotFound as err:
            self._missing = str(err)
            return None
        return svg[svg.index("<svg"):]

    def html(self) -> str:
        problem = self.check()
        if problem:
            return f'<div class="mtp-arch-explorer">{message_html(problem, "warn")}</div>'
        self._missing = ""
        svg = self.svg()
        if svg is None:
            return f'<div class="mtp-arch-explorer">{message_html(self._missing, "error")}</div>'
        return f'<div class="mtp-arch-explorer" style="max-width:100%;overflow-x:auto">{svg}</div>'


# ---- loss-weight explorer -------------------------------------------------------------------------------
@dataclass
class LossWeightState:
    """lambda + schedule (+ D, total steps, step) -> the schedule curve and L's formula at `step`."""
    schedule: str = "constant"
    lam: float = 0.3
    depth: int = 3
    total_steps: int = 1000
    step: int = 0
    alpha: float = 1.0
    notes: list[str] = field(default_factory=list)

    def set(self, **controls) -> None:
        for name, value in controls.items():
            if name not in ("schedule", "lam", "depth", "total_steps", "step", "alpha"):
                raise AttributeError(f"LossWeightState has no control {name!r}")
            setattr(self, name, value)

    def make_schedule(self):
        """The schedule object from mtp_edu.losses, or None with a note saying why."""
        self.notes = []
        try:
            lam, depth = check_number("λ", self.lam), check_int("D", self.depth)
            total = check_int("total steps", self.total_steps)
            check_int("step", self.step, minimum=0)
        except (TypeError, ValueError) as err:
            self.notes.append(str(err))
            return None
        if lam < 0 or depth < 1 or total < 1:
            self.notes.append("λ must be ≥ 0, D ≥ 1 and the number of steps ≥ 1.")
            return None
        if self.schedule == "constant":
            return Constant(lam)
        if self.schedule == "deepseek":
            return DeepSeekStep(total, high=lam, low=lam / 3)
        if self.schedule == "decay":
            return Decay(lam, total, float(self.alpha))
        if self.schedule == "curriculum":
            return Curriculum(lam, depth, max(1, total // (2 * depth)))
        self.notes.append(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}.")
        return None

    def weights(self) -> list[float] | None:
        schedule = self.make_schedule()
        if schedule is None:
            return None
        return depth_weights(int(self.depth), schedule, int(self.step))

    def formula_html(self) -> str:
        w = self.weights()
        if w is None:
            return "".join(message_html(n, "warn") for n in self.notes)
        D = len(w) - 1
        terms = " + ".join(f"{x:.4g}·L<sup>{k}</sup>" for k, x in enumerate(w[1:], 1))
        desc = {"constant": f"λ = {float(self.lam):g} throughout",
                "deepseek": f"λ = {float(self.lam):g}, then {float(self.lam) / 3:g} after 10/14.8 of training "
                                 "(DeepSeek-V3 used 0.3 then 0.1)",
                "decay": f"λ = {float(self.lam):g}·(1 − step/{self.total_steps})^{float(self.alpha):g} "
                         "('Complete Guide' tutorial)",
                "curriculum": "depth k switched on at step (k−1)·N ('Complete Guide' tutorial); "
                              "λ/D per active depth"}[self.schedule]
        return (f'<div class="mtp-loss-formula" style="font-family:sans-serif">'
                f'<div>L = L<sub>main</sub> + (λ/D) Σ<sub>k=1..D</sub> L<sup>k</sup> &nbsp; (DeepSeek-V3 eq. 25), '
                f'D = {D}; {html.escape(desc)}</div>'
                f'<div style="font-size:120%;margin-top:4px">at step {int(self.step)}: '
                f'<b>L = L<sub>main</sub> + {terms}</b></div></div>')

    def figure(self):
        from .plots import lambda_schedule_curve
        schedule = self.make_schedule()
        return None if schedule is None else lambda_schedule_curve(schedule, int(self.total_steps), int(self.step))

    def png(self) -> bytes | None:
        fig = self.figure()
        if fig is None:
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        return buf.getvalue()

    def html(self) -> str:
        png = self.png()
        img = "" if png is None else \
            f'<img class="mtp-lambda-curve" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        return f'<div class="mtp-loss-explorer">{self.formula_html()}{img}</div>'
