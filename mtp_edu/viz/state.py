"""The logic of the widgets, as plain objects that tests drive without a browser.

Each state object holds the current control values, has setters that never raise on user input
(bad input becomes a friendly `message` shown inside the widget) and an `html()` that renders the
current view as self-contained HTML, which is also the widget's static fallback (GitHub, nbconvert).

- ShiftTableState:   text + depth -> the coloured token-shift table
- ArchitectureState: D + style -> the architecture diagram (SVG)
- StepperState:      prompt, rule, draft depth, temperature -> a recorded Trace, replayed step by step
- LossWeightState:   lambda + schedule -> the schedule curve and the total-loss formula

CSS classes for browser tests: mtp-message, mtp-token-accepted, mtp-token-rejected, mtp-token-extra,
mtp-tau, mtp-acceptance (see widgets.py for the classes on the controls).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import MTP_STYLES, MTPConfig
from ..data import ByteTokenizer
from ..losses import Constant, Curriculum, Decay, DeepSeekStep, depth_weights
from ..shifts import shift_table
from ..traces import Trace
from .tokens import show_text, show_token

RULES = ("greedy", "sample", "threshold")
SCHEDULES = ("constant", "deepseek-step", "decay", "curriculum")
ACCEPTED, REJECTED, EXTRA = "#1a7f37", "#cf222e", "#0969da"


def message_html(text: str, kind: str = "info") -> str:
    """A friendly boxed message (never a traceback)."""
    colour = {"info": "#0969da", "warn": "#9a6700", "error": "#cf222e"}[kind]
    return (f'<div class="mtp-message mtp-message-{kind}" style="border-left:4px solid {colour};'
            f'padding:4px 8px;margin:4px 0;background:#f6f8fa;font-family:sans-serif">{html.escape(text, quote=False)}</div>')


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{name} must be a whole number; got {value!r}")
    return int(value)


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
            depth = _int(self.depth, "depth")
        except ValueError as err:
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

    def text_table(self) -> str:
        table = self.table()
        return "\n".join(self.notes) if table is None else table.to_text(fmt=lambda t: show_token(t, self.tokenizer))


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
            depth = _int(self.depth, "D")
        except ValueError as err:
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
        key = (int(self.depth), self.style)
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


# ---- drafting / acceptance stepper -------------------------------------------------------------------------
TraceFn = Callable[..., Trace]


def speculative_trace_fn(model, max_new_tokens: int = 24) -> TraceFn:
    """A trace producer backed by `mtp_edu.decoding.speculative_generate` (imported when first used)."""
    def run(prompt_ids, rule, draft_depth, temperature, threshold, seed):
        from ..decoding import speculative_generate                     # lazy: the core never needs viz
        _, trace = speculative_generate(model, prompt_ids, max_new_tokens, rule=rule, draft_depth=draft_depth,
                                        temperature=temperature, threshold=threshold, seed=seed)
        return trace
    return run


@dataclass
class StepperState:
    """Replays a speculative-decoding Trace one verification step at a time.

    Changing a control (prompt, rule, draft_depth, temperature, threshold, seed) resets the stepper;
    the trace is computed on the first `step()` after that, by `trace_fn(prompt_ids, rule, draft_depth,
    temperature, threshold, seed) -> Trace` (same inputs, same trace: replay is deterministic).
    `load_trace(trace)` replays a recorded trace instead. `playing` is the Play/Pause state; the widget's
    timer calls `tick()`, which steps while playing and pauses at the end.
    """
    trace_fn: TraceFn | None = None
    tokenizer: Any = field(default_factory=ByteTokenizer)
    model_depth: int = 3                  # D of the model: the most tokens the stepper drafts
    vocab_size: int = 256
    max_prompt_tokens: int = 64
    prompt: str = "The cat sat on the mat. The cat"
    rule: str = "greedy"
    draft_depth: int = 3
    temperature: float = 0.0
    threshold: float = 0.5
    seed: int = 0
    trace: Trace | None = None
    shown: int = 0                        # steps revealed so far
    playing: bool = False
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @classmethod
    def for_model(cls, model, tokenizer=None, max_new_tokens: int = 24, **controls) -> "StepperState":
        cfg = model.config
        return cls(trace_fn=speculative_trace_fn(model, max_new_tokens), tokenizer=tokenizer or ByteTokenizer(),
                   model_depth=cfg.mtp_depth, vocab_size=cfg.vocab_size,
                   max_prompt_tokens=max(1, cfg.max_seq_len - max_new_tokens - cfg.mtp_depth - 2), **controls)

    # -- controls
    def set(self, **controls) -> None:
        """Set any of prompt, rule, draft_depth, temperature, threshold, seed; resets the replay."""
        for name, value in controls.items():
            if name not in ("prompt", "rule", "draft_depth", "temperature", "threshold", "seed"):
                raise AttributeError(f"StepperState has no control {name!r}")
            setattr(self, name, value)
        self.reset(keep_trace=False)

    def reset(self, keep_trace: bool = True) -> None:
        """Back to step 0; with keep_trace the same recorded trace is replayed again."""
        self.shown, self.playing, self.error = 0, False, ""
        if not keep_trace:
            self.trace = None

    def load_trace(self, trace: Trace, prompt_text: str | None = None) -> None:
        """Replay a recorded trace (e.g. Trace.from_json(...)); the controls follow the trace."""
        self.rule, self.draft_depth, self.trace = trace.rule, trace.draft_depth, trace
        self.prompt = prompt_text if prompt_text is not None else self._decode(trace.prompt)
        self.shown, self.playing, self.error = 0, False, ""

    # -- checks: every problem becomes a note or an error message
    def prompt_ids(self) -> list[int] | None:
        self.notes = [n for n in self.notes if not n.startswith("prompt:")]
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            self.error = "Type a prompt to start."
            return None
        try:
            ids = list(self.tokenizer.encode(self.prompt))
        except Exception as err:                                       # a tokenizer that refuses the text
            self.error = f"The tokenizer could not encode this prompt: {err}"
            return None
        if not ids:
            self.error = "This prompt encodes to no tokens; type something else."
            return None
        bad = sorted({i for i in ids if not 0 <= i < self.vocab_size})
        if bad:
            self.error = (f"The prompt has tokens outside this model's vocabulary (V = {self.vocab_size}): "
                          f"{', '.join(show_token(i) for i in bad[:8])}. Try plain ASCII text.")
            return None
        if len(ids) > self.max_prompt_tokens:
            self.notes.append(f"prompt: only its last {self.max_prompt_tokens} of {len(ids)} tokens are used.")
            ids = ids[-self.max_prompt_tokens:]
        return ids

    def controls_ok(self) -> tuple[int, float] | None:
        self.notes = [n for n in self.notes if n.startswith("prompt:")]
        if self.rule not in RULES:
            self.error = f"rule {self.rule!r} is not one of {', '.join(RULES)}."
            return None
        try:
            depth = _int(self.draft_depth, "draft depth")
        except ValueError as err:
            self.error = str(err)
            return None
        if depth < 1:
            self.error = "Draft at least 1 token per step."
            return None
        if depth > self.model_depth:
            self.notes.append(f"This model has D = {self.model_depth} MTP modules; drafting {depth} tokens would "
                              f"reuse modules. The stepper drafts {self.model_depth}.")
            depth = self.model_depth
        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            self.error = f"temperature must be a number; got {self.temperature!r}"
            return None
        if not temperature >= 0:
            self.error = "temperature must be 0 (greedy) or more."
            return None
        if self.rule == "sample" and temperature == 0:
            self.notes.append("rule 'sample' at temperature 0 samples from a one-hot p: same output as greedy.")
        return depth, temperature

    # -- actions
    def ensure_trace(self) -> bool:
        if self.trace is not None:
            return True
        self.error = ""
        ids = self.prompt_ids()
        checked = self.controls_ok() if ids is not None else None
        if ids is None or checked is None:
            return False
        if self.trace_fn is None:
            self.error = "No model is connected: give the stepper a model, a trace_fn, or a recorded trace."
            return False
        depth, temperature = checked
        try:
            self.trace = self.trace_fn(ids, self.rule, depth, temperature, float(self.threshold), int(self.seed))
        except ImportError:
            self.error = ("Speculative decoding (mtp_edu.decoding) is not available in this installation; "
                          "replay a recorded trace with load_trace().")
        except (ValueError, RuntimeError) as err:                       # the decoder's own clear errors
            self.error = f"Could not decode: {err}"
        return self.trace is not None

    def step(self) -> bool:
        """Reveal one more step; False (and pause) at the end or on an error."""
        if not self.ensure_trace() or self.shown >= len(self.trace.steps):
            self.playing = False
            return False
        self.shown += 1
        if self.shown >= len(self.trace.steps):
            self.playing = False
        return True

    def toggle_play(self) -> bool:
        """Play/Pause; starting at the end restarts the replay. Returns the new playing state."""
        if self.playing:
            self.playing = False
        else:
            if self.trace is not None and self.shown >= len(self.trace.steps):
                self.reset()
            self.playing = self.ensure_trace()
        return self.playing

    def tick(self) -> None:
        if self.playing:
            self.step()

    @property
    def done(self) -> bool:
        return self.trace is not None and self.shown >= len(self.trace.steps)

    # -- what is shown
    def partial_trace(self) -> Trace | None:
        if self.trace is None:
            return None
        t = self.trace
        return Trace(t.prompt, t.rule, t.draft_depth, t.steps[:self.shown], t.first_token, t.lossy)

    def _decode(self, ids) -> str:
        try:
            return self.tokenizer.decode(list(ids))
        except Exception:
            return "".join(show_token(i) for i in ids)

    def _tok(self, token: int, cls: str, title: str, colour: str, strike: bool = False) -> str:
        text = html.escape(show_token(token, self.tokenizer))
        style = (f"display:inline-block;min-width:1.1em;text-align:center;margin:1px;padding:1px 4px;"
                 f"border-radius:3px;border:1px solid {colour};color:{colour};font-family:monospace")
        body = f"<s>{text}</s>" if strike else text
        return f'<span class="mtp-token {cls}" title="{html.escape(title)}" style="{style}">{body}</span>'

    def step_html(self, n: int, latest: bool) -> str:
        s = self.trace.steps[n]
        parts = []
        for j, (tok, q, p) in enumerate(zip(s.drafted, s.q, s.p)):
            tip = f"draft {j + 1} (MTP module {j + 1}): q = {q:.3f}, p = {p:.3f}"
            if j < s.accepted:
                parts.append(self._tok(tok, "mtp-token-accepted", tip + ", accepted", ACCEPTED))
            elif j == s.accepted:
                parts.append(self._tok(tok, "mtp-token-rejected", tip + ", rejected", REJECTED, strike=True))
            else:
                parts.append(self._tok(tok, "mtp-token-rejected mtp-token-discarded",
                                       tip + ", discarded (after a rejection)", "#8c959f", strike=True))
        parts.append(self._tok(s.extra_token, "mtp-token-extra", f"{s.extra_kind} token from the main model", EXTRA))
        weight = "font-weight:bold;" if latest else "opacity:0.75;"
        return (f'<div class="mtp-step" style="{weight}font-family:sans-serif;margin:2px 0">'
                f'<span style="display:inline-block;width:5.5em">step {n + 1}:</span>{"".join(parts)}'
                f'<span style="color:#57606a;font-weight:normal"> +{len(s.emitted)} tokens, '
                f'{s.accepted}/{len(s.drafted)} accepted, {s.extra_kind}</span></div>')

    def pq_table(self, n: int) -> str:
        s = self.trace.steps[n]
        td = '<td style="padding:1px 10px;border-bottom:1px solid #eaeef2">'
        # the column that decides acceptance under this trace's rule
        rule_col = {"sample": ("min(1, p/q)", lambda p, q: f"{min(1.0, p / q) if q > 0 else float('nan'):.3f}"),
                    "threshold": (f"p > {self.threshold:g}?", lambda p, q: "yes" if p > self.threshold else "no")
                    }.get(self.trace.rule, ("is the main argmax?", None))
        rows = "".join(
            f"<tr>{td}{j + 1}</td>{td}<code>{html.escape(show_token(t, self.tokenizer))}</code></td>"
            f"{td}{q:.3f}</td>{td}{p:.3f}</td>"
            f"{td}{rule_col[1](p, q) if rule_col[1] else 'yes' if j < s.accepted else 'no' if j == s.accepted else '-'}</td>"
            f"{td}{'accepted' if j < s.accepted else 'rejected' if j == s.accepted else 'discarded'}</td></tr>"
            for j, (t, q, p) in enumerate(zip(s.drafted, s.q, s.p)))
        th = "".join(f'<th style="padding:1px 10px;text-align:left">{h}</th>' for h in
                     ("depth k", "draft", "q (MTP module k)", "p (main model)", rule_col[0], "outcome"))
        return (f'<table class="mtp-pq" style="border-collapse:collapse;font-family:sans-serif;font-size:90%;'
                f'margin:6px 0"><caption style="text-align:left;color:#57606a">step {n + 1}: p and q of each '
                f'draft</caption><tr>{th}</tr>{rows}</table>')

    def stats_html(self) -> str:
        t = self.partial_trace()
        rates = t.acceptance_per_depth() if t is not None else []
        tau = t.tau() if t is not None and t.steps else 0.0
        bars = []
        for k in range(1, max(len(rates), self.trace.draft_depth if self.trace else 0) + 1):
            a = rates[k - 1] if k - 1 < len(rates) else None
            width = 0 if a is None else round(100 * a)
            bars.append(f'<div style="display:flex;align-items:center;gap:6px;font-family:sans-serif;font-size:90%">'
                        f'<span style="width:5em">a<sub>{k}</sub></span>'
                        f'<span style="display:inline-block;width:160px;height:12px;background:#eaeef2">'
                        f'<span class="mtp-acceptance-bar" style="display:block;height:12px;width:{width}%;'
                        f'background:{ACCEPTED}"></span></span>'
                        f'<span>{"n/a" if a is None else f"{100 * a:.0f}%"}</span></div>')
        ceiling = self.trace.draft_depth + 1 if self.trace else self.model_depth + 1
        return (f'<div class="mtp-stats" style="margin-top:6px">'
                f'<div class="mtp-tau" style="font-family:sans-serif;font-weight:bold">τ = {tau:.2f} tokens per '
                f'main-model forward (ceiling D + 1 = {ceiling}) after {self.shown} step(s)</div>'
                f'<div class="mtp-acceptance">{"".join(bars)}</div></div>')

    def html(self) -> str:
        notes = "".join(message_html(n, "info") for n in self.notes)
        if self.error:
            return f'<div class="mtp-stepper">{message_html(self.error, "warn")}{notes}</div>'
        if self.trace is None:
            return (f'<div class="mtp-stepper">{notes}{message_html("Press Step or Play to draft and verify.")}'
                    f'{self.stats_html()}</div>')
        t = self.trace
        emitted = [] if t.first_token is None else [t.first_token]
        for s in t.steps[:self.shown]:
            emitted += s.emitted
        text = (f'<div class="mtp-output" style="font-family:monospace;white-space:pre-wrap;margin:4px 0">'
                f'<span style="color:#8c959f">{html.escape(show_text(self._decode(t.prompt)))}</span>'
                f'<span>{html.escape(show_text(self._decode(emitted)))}</span></div>')
        first = "" if t.first_token is None else (
            '<div class="mtp-step" style="font-family:sans-serif;margin:2px 0;opacity:0.75">'
            '<span style="display:inline-block;width:5.5em">prefill:</span>'
            f'{self._tok(t.first_token, "mtp-token-first", "first token, from the prompt forward", EXTRA)}'
            '<span style="color:#57606a"> main model on the prompt</span></div>')
        steps = first + "".join(self.step_html(n, n == self.shown - 1) for n in range(self.shown))
        pq = self.pq_table(self.shown - 1) if self.shown else ""
        status = "finished" if self.done else f"step {self.shown} of {len(t.steps)}"
        head = (f'<div style="font-family:sans-serif;color:#57606a">rule = {html.escape(t.rule)}, '
                f'draft depth = {t.draft_depth}{" (lossy rule)" if t.lossy else ""}; {status}. '
                f'<span style="color:{ACCEPTED}">accepted</span>, <span style="color:{REJECTED}"><s>rejected</s></span>, '
                f'<span style="color:{EXTRA}">correction / bonus</span>; hover a token for p and q.</div>')
        return f'<div class="mtp-stepper">{notes}{head}{text}{steps}{pq}{self.stats_html()}</div>'


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
            lam, depth, total = float(self.lam), _int(self.depth, "D"), _int(self.total_steps, "total steps")
        except (TypeError, ValueError) as err:
            self.notes.append(str(err))
            return None
        if lam < 0 or depth < 1 or total < 1:
            self.notes.append("λ must be ≥ 0, D ≥ 1 and the number of steps ≥ 1.")
            return None
        if self.schedule == "constant":
            return Constant(lam)
        if self.schedule == "deepseek-step":
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
                "deepseek-step": f"λ = {float(self.lam):g}, then {float(self.lam) / 3:g} after 10/14.8 of training "
                                 "(DeepSeek-V3 used 0.3 then 0.1)",
                "decay": f"λ = {float(self.lam):g}·(1 − step/{self.total_steps})^{float(self.alpha):g} (seed 001)",
                "curriculum": "depth k switched on at step (k−1)·N (seed 001); λ/D per active depth"}[self.schedule]
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
