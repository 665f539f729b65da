"""The logic of the explorer widgets, as plain objects that tests drive without a browser.

Each state object holds the current control values, has setters that never raise on user input
and an `html()` that renders the current view as self-contained HTML, which is also the widget's
static fallback (GitHub, nbconvert). The rule for a control value:

- of the right kind but beyond the control's range (D = 99 where the slider stops at 6): clamped to
  the range, and a note in the view says so, so the state and the widget's control always agree;
- wrong (a NaN, a negative D, an unknown schedule, text the tokenizer refuses): `set()` refuses it,
  keeps the last good value and says why in the view. A wrong value given to the constructor (there
  is no last good value) shows that message instead of the view.

The explorer's own limits (max_depth, max_tokens, ...) are the programmer's, not the user's: a bad
one raises TypeError or ValueError at construction. Unknown control names raise TypeError.

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


def prob(x: float) -> str:
    """A probability for display: 3 decimals, or 2 significant digits below 0.001 (a rare sampled draft
    would otherwise read p = 0.000)."""
    return f"{x:.3f}" if x >= 1e-3 or x == 0 else f"{x:.1e}"


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (a note quotes what the user gave, not a whole essay)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


Resolved = tuple[Any, "str | None"]       # (the value to use, a note saying how it was adjusted, or None)


def at_most(value: Any, maximum: Any, note: str) -> Resolved:
    """(value, None) within the control's range; (maximum, note) above it (a slider's end, not an error)."""
    return (maximum, note) if value > maximum else (value, None)


class Controls:
    """`set(**controls)` for a state object, by the rule in the module docstring.

    A subclass lists its CONTROLS and implements `_resolve(name, value) -> (value to use, note or None)`,
    raising TypeError or ValueError for a value it refuses; its render path calls `_resolve` on the
    current values too, so a value given to the constructor meets the same rule."""
    CONTROLS: tuple[str, ...] = ()

    def _resolve(self, name: str, value: Any) -> Resolved:
        raise NotImplementedError

    def _set_controls(self, controls: dict[str, Any]) -> list[tuple[str, str]]:
        """Apply `controls`; returns the (kind, text) notes: 'warn' for a refusal, 'info' for an adjustment."""
        notes = []
        for name, value in controls.items():
            if name not in self.CONTROLS:
                raise TypeError(f"{type(self).__name__}.set() got an unknown control {name!r}; "
                                f"its controls are {', '.join(self.CONTROLS)}")
            try:
                value, note = self._resolve(name, value)
            except (TypeError, ValueError) as err:
                notes.append(("warn", f"{str(err).rstrip('.')}; kept {name} = {short(getattr(self, name))}."))
                continue
            setattr(self, name, value)
            if note:
                notes.append(("info", note))
        return notes


def notes_html(notes: list[tuple[str, str]]) -> str:
    return "".join(message_html(text, kind) for kind, text in notes)


# ---- shift-table explorer ---------------------------------------------------------------------------
@dataclass
class ShiftTableState(Controls):
    """Text + depth -> shift table. Long text is cut to `max_tokens` tokens (said in a note)."""
    text: str = "The cat sat on the mat."
    depth: int = 2
    max_depth: int = 4
    max_tokens: int = 24
    tokenizer: Any = field(default_factory=ByteTokenizer)
    notes: list[str] = field(default_factory=list)
    set_notes: list[tuple[str, str]] = field(default_factory=list, repr=False)   # from the last set()
    CONTROLS = ("text", "depth")

    def __post_init__(self) -> None:
        check_int("ShiftTableState.max_depth", self.max_depth, minimum=0)
        check_int("ShiftTableState.max_tokens", self.max_tokens, minimum=2, note="a table needs t_1 and t_2")
        if not callable(getattr(self.tokenizer, "encode", None)):
            raise TypeError(f"ShiftTableState.tokenizer must have an encode(text) method; got "
                            f"{type(self.tokenizer).__name__}")

    def set(self, text: str | None = None, depth: Any = None) -> None:
        """Set the text and / or the depth (None = unchanged); never raises (module docstring)."""
        given = {name: v for name, v in (("text", text), ("depth", depth)) if v is not None}
        self.set_notes = self._set_controls(given)

    def _resolve(self, name: str, value: Any) -> Resolved:
        if name == "text":
            if not isinstance(value, str):
                raise TypeError(f"text must be a str; got {type(value).__name__}.")
            self._encode(value)
            return value, None
        depth = check_int("depth", value, minimum=0)
        return at_most(depth, self.max_depth, f"depth {depth} is more than this explorer's D = {self.max_depth}; "
                                              f"showing D = {self.max_depth}.")

    def _encode(self, text: str) -> list[int]:
        try:
            return list(self.tokenizer.encode(text))
        except Exception as err:                               # any tokenizer's refusal becomes a note
            raise ValueError(f"The tokenizer could not encode this text: {err}") from None

    def tokens(self) -> list[int]:
        return self._encode(self.text)

    def table(self):
        """The ShiftTable, or None with `notes` saying why (or what was adjusted)."""
        self.notes = []
        try:
            depth, note = self._resolve("depth", self.depth)
            self._resolve("text", self.text)
        except (TypeError, ValueError) as err:
            self.notes.append(str(err))
            return None
        if note:
            self.notes.append(note)
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
        try:
            return shift_table(ids, depth)
        except (TypeError, ValueError) as err:                 # a tokenizer that gives odd tokens
            self.notes.append(f"The tokenizer's tokens make no shift table: {err}")
            return None

    def html(self) -> str:
        table = self.table()
        notes = notes_html(self.set_notes) + "".join(message_html(n, "info" if table is not None else "warn")
                                                     for n in self.notes)
        if table is None:
            return f'<div class="mtp-shift-explorer">{notes}</div>'
        try:
            shown = show_text(self.tokenizer.decode(table.tokens))
        except Exception:                                      # no decode, or one that fails: show the tokens
            shown = "".join(show_token(t, self.tokenizer) for t in table.tokens)
        head = (f'<div style="font-family:sans-serif;margin:2px 0">{len(table.tokens)} tokens '
                f't₁..t<sub>{len(table.tokens)}</sub> of <code>{html.escape(shown)}</code>; '
                f'the model reads t₁..t<sub>T</sub>, T = {len(table.tokens) - 1}</div>')
        return (f'<div class="mtp-shift-explorer">{notes}{head}'
                f'{table.to_html(fmt=lambda t: show_token(t, self.tokenizer))}</div>')


# ---- architecture explorer ------------------------------------------------------------------------------
@dataclass
class ArchitectureState(Controls):
    """D + mtp_style -> the architecture diagram of a model with that config (others from `base`)."""
    depth: int = 1
    style: str = "sequential"
    max_depth: int = 4
    base: MTPConfig = field(default_factory=MTPConfig)
    _cache: dict = field(default_factory=dict, repr=False)
    set_notes: list[tuple[str, str]] = field(default_factory=list, repr=False)   # from the last set()
    CONTROLS = ("depth", "style")

    def __post_init__(self) -> None:
        check_int("ArchitectureState.max_depth", self.max_depth, minimum=0)
        if not isinstance(self.base, MTPConfig):
            raise TypeError(f"ArchitectureState.base must be an MTPConfig; got {type(self.base).__name__}")

    def set(self, depth: Any = None, style: Any = None) -> None:
        """Set D and / or the style (None = unchanged); never raises (module docstring)."""
        given = {name: v for name, v in (("depth", depth), ("style", style)) if v is not None}
        self.set_notes = self._set_controls(given)

    def _resolve(self, name: str, value: Any) -> Resolved:
        if name == "style":
            if not isinstance(value, str) or value not in MTP_STYLES:
                raise ValueError(f"style {short(value)} is not one of {', '.join(MTP_STYLES)}.")
            return value, None
        depth = check_int("D", value, minimum=0)
        if depth > self.max_depth:
            return self.max_depth, (f"D = {depth} is outside this explorer's range 0..{self.max_depth}; "
                                    f"showing D = {self.max_depth}.")
        return depth, None

    def _controls(self) -> tuple[int, str, list[str]]:
        """(D, style, notes) to draw; TypeError / ValueError when the controls make no model."""
        depth, note = self._resolve("depth", self.depth)
        style, _ = self._resolve("style", self.style)
        return depth, style, [note] if note else []

    def check(self) -> str | None:
        """A friendly message when the controls make no model, else None."""
        try:
            depth, style, _ = self._controls()
            self.base.replace(mtp_depth=depth, mtp_style=style)
        except (TypeError, ValueError) as err:
            return str(err)
        return None

    def diagram(self):
        from .diagrams import architecture_diagram
        if self.check():
            return None
        key = self._controls()[:2]
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
        notes = notes_html(self.set_notes)
        problem = self.check()
        if problem:
            return f'<div class="mtp-arch-explorer">{notes}{message_html(problem, "warn")}</div>'
        notes += "".join(message_html(n) for n in self._controls()[2])
        self._missing = ""
        svg = self.svg()
        if svg is None:
            return f'<div class="mtp-arch-explorer">{notes}{message_html(self._missing, "error")}</div>'
        return f'<div class="mtp-arch-explorer" style="max-width:100%;overflow-x:auto">{notes}{svg}</div>'


# ---- loss-weight explorer -------------------------------------------------------------------------------
@dataclass
class LossWeightState(Controls):
    """lambda + schedule (+ D, total steps, step) -> the schedule curve and L's formula at `step`.

    λ and D are bounded by the explorer's sliders (max_lam, max_depth): a larger value is clamped
    with a note, which also keeps the curriculum curve (one line per depth) quick to draw."""
    schedule: str = "constant"
    lam: float = 0.3
    depth: int = 3
    total_steps: int = 1000
    step: int = 0
    alpha: float = 1.0
    notes: list[str] = field(default_factory=list)
    max_depth: int = 6
    max_lam: float = 1.0
    set_notes: list[tuple[str, str]] = field(default_factory=list, repr=False)   # from the last set()
    CONTROLS = ("schedule", "lam", "depth", "total_steps", "step", "alpha")

    def __post_init__(self) -> None:
        check_int("LossWeightState.max_depth", self.max_depth, minimum=1)
        check_number("LossWeightState.max_lam", self.max_lam, minimum=0)

    def set(self, **controls) -> None:
        """Set any of schedule, lam, depth, total_steps, step, alpha; never raises (module docstring)."""
        self.set_notes = self._set_controls(controls)

    def _resolve(self, name: str, value: Any) -> Resolved:
        if name == "schedule":
            if not isinstance(value, str) or value not in SCHEDULES:
                raise ValueError(f"schedule {short(value)} is not one of {', '.join(SCHEDULES)}.")
            return value, None
        if name == "lam":
            lam = check_number("λ", value)
            if lam < 0:
                raise ValueError(f"λ must be ≥ 0; got {lam:g}.")
            return at_most(lam, self.max_lam, f"λ = {lam:g} is more than this explorer's maximum {self.max_lam:g}; "
                                              f"using {self.max_lam:g}.")
        if name == "depth":
            depth = check_int("D", value)
            if depth < 1:
                raise ValueError(f"D must be ≥ 1 (a schedule weighs the MTP depths); got {depth}.")
            return at_most(depth, self.max_depth, f"D = {depth} is more than this explorer's maximum "
                                                  f"D = {self.max_depth}; showing D = {self.max_depth}.")
        if name == "total_steps":
            return check_int("total steps", value, minimum=1), None
        if name == "step":
            return check_int("step", value, minimum=0), None
        return check_number("decay α", value, above=0), None

    def _controls(self) -> dict[str, Any]:
        """Every control's value to use; notes what was adjusted; TypeError / ValueError for a refusal."""
        out = {}
        for name in self.CONTROLS:
            out[name], note = self._resolve(name, getattr(self, name))
            if note:
                self.notes.append(note)
        return out

    def make_schedule(self):
        """The schedule object from mtp_edu.losses, or None with a note saying why."""
        self.notes = []
        try:
            c = self._controls()
        except (TypeError, ValueError) as err:
            self.notes.append(str(err))
            return None
        self._used = c
        lam, depth, total = c["lam"], c["depth"], c["total_steps"]
        if c["schedule"] == "constant":
            return Constant(lam)
        if c["schedule"] == "deepseek":
            return DeepSeekStep(total, high=lam, low=lam / 3)
        if c["schedule"] == "decay":
            return Decay(lam, total, float(c["alpha"]))
        return Curriculum(lam, depth, max(1, total // (2 * depth)))

    def weights(self) -> list[float] | None:
        schedule = self.make_schedule()
        if schedule is None:
            return None
        return depth_weights(self._used["depth"], schedule, self._used["step"])

    def formula_html(self) -> str:
        w = self.weights()
        notes = notes_html(self.set_notes) + "".join(message_html(n, "warn" if w is None else "info")
                                                     for n in self.notes)
        if w is None:
            return notes
        c, D = self._used, len(w) - 1
        lam = float(c["lam"])
        terms = " + ".join(f"{x:.4g}·L<sup>{k}</sup>" for k, x in enumerate(w[1:], 1))
        desc = {"constant": f"λ = {lam:g} throughout",
                "deepseek": f"λ = {lam:g}, then {lam / 3:g} after 10/14.8 of training "
                                 "(DeepSeek-V3 used 0.3 then 0.1)",
                "decay": f"λ = {lam:g}·(1 − step/{c['total_steps']})^{float(c['alpha']):g} "
                         "('Complete Guide' tutorial)",
                "curriculum": "depth k switched on at step (k−1)·N ('Complete Guide' tutorial); "
                              "λ/D per active depth"}[c["schedule"]]
        return (f'{notes}<div class="mtp-loss-formula" style="font-family:sans-serif">'
                f'<div>L = L<sub>main</sub> + (λ/D) Σ<sub>k=1..D</sub> L<sup>k</sup> &nbsp; (DeepSeek-V3 eq. 25), '
                f'D = {D}; {html.escape(desc)}</div>'
                f'<div style="font-size:120%;margin-top:4px">at step {c["step"]}: '
                f'<b>L = L<sub>main</sub> + {terms}</b></div></div>')

    def figure(self):
        from .plots import lambda_schedule_curve
        schedule = self.make_schedule()
        return None if schedule is None else lambda_schedule_curve(schedule, self._used["total_steps"],
                                                                   self._used["step"])

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
