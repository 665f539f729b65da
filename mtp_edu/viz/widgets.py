"""ipywidgets front ends for the state objects in `state.py` and `stepper_state.py` (thin: every rule lives there).

    from mtp_edu.viz.widgets import shift_table_explorer, architecture_explorer, stepper, loss_weight_explorer
    stepper(model, tokenizer)            # in JupyterLab: a live widget

Each function returns an `Explorer` (an ipywidgets VBox) whose `.state` is the plain state object and
whose `.controls` maps names to the control widgets. Displayed, an Explorer also carries a `text/html`
snapshot of its current view, so GitHub, nbconvert and editors without the widget manager show a
static picture instead of nothing; `explorer.static()` gives that snapshot as an IPython HTML object.

CSS classes for browser tests: mtp-explorer, mtp-text, mtp-depth, mtp-style, mtp-prompt, mtp-rule,
mtp-draft-depth, mtp-temperature, mtp-threshold, mtp-step-button, mtp-play-button, mtp-reset-button,
mtp-lambda, mtp-schedule, mtp-step, mtp-view; inside the view: mtp-token-accepted, mtp-token-rejected,
mtp-token-extra, mtp-tau, mtp-message.
"""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W

from ..checks import check_int
from ..config import MTP_STYLES, MTPConfig
from ..decoding import RULES
from ..traces import Trace
from .state import SCHEDULES, ArchitectureState, LossWeightState, ShiftTableState, message_html
from .stepper_state import StepperState


class Explorer(W.VBox):
    """A VBox with a plain `state`, named `controls`, a `view` (HTML) and a static HTML fallback."""

    def __init__(self, state, controls: dict[str, W.Widget], view: W.Widget, extra: list | None = None, **kw):
        rows = [W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap"))] + (extra or []) + [view]
        super().__init__(rows, **kw)
        self.state, self.controls, self.view = state, controls, view
        self.add_class("mtp-explorer")

    def static_html(self) -> str:
        return self.state.html()

    def static(self):
        from IPython.display import HTML
        return HTML(self.static_html())

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        try:
            bundle["text/html"] = self.static_html()
        except Exception as err:                      # the live widget still works; say why there is no snapshot
            bundle["text/html"] = message_html(f"(no static snapshot: {err})", "warn")
        return bundle


def _guard(view: W.HTML, render: Callable[[], str]) -> Callable[..., None]:
    """A callback that re-renders `view` and turns any unexpected error into a message in the widget."""
    def update(*_):
        try:
            view.value = render()
        except Exception as err:
            view.value = message_html(f"Something went wrong ({type(err).__name__}: {err}). "
                                      "Try other values; please report this if it persists.", "error")
    return update


def _classed(widget: W.Widget, *classes: str) -> W.Widget:
    for c in classes:
        widget.add_class(c)
    return widget


def _wire(state, controls: dict[str, W.Widget], update) -> None:
    """After every control change, pass all control values to `state.set` (each control's name is the
    keyword it drives) and call `update`; call it once now for the first render."""
    def on_change(change):
        state.set(**{name: c.value for name, c in controls.items()})
        update()
    for c in controls.values():
        c.observe(on_change, names="value")
    update()


def _live(state, controls: dict[str, W.Widget]) -> Explorer:
    """An Explorer whose view re-renders `state.html()` after every control change."""
    view = _classed(W.HTML(), "mtp-view")
    _wire(state, controls, _guard(view, state.html))
    return Explorer(state, controls, view)


# ---- shift-table explorer ----------------------------------------------------------------------------
def shift_table_explorer(text: str = "The cat sat on the mat.", depth: int = 2, max_depth: int = 4,
                         tokenizer: Any = None, max_tokens: int = 24) -> Explorer:
    """A text box and a depth slider -> the coloured token-shift table (bytes shown escaped).

    text and depth go through the state's set(): a depth above max_depth is clamped, a wrong value is
    refused (the default stays), each with a note in the view, so the controls show what is used."""
    state = ShiftTableState(max_depth=max_depth, max_tokens=max_tokens,
                            **({"tokenizer": tokenizer} if tokenizer is not None else {}))
    state.depth = min(state.depth, max_depth)              # the default, kept if `depth` is refused
    state.set(text=text, depth=depth)
    controls = {
        "text": _classed(W.Text(value=state.text, description="text", continuous_update=True,
                                layout=W.Layout(width="32em")), "mtp-text"),
        "depth": _classed(W.IntSlider(value=state.depth, min=0, max=max_depth,
                                      description="depth D"), "mtp-depth"),
    }
    return _live(state, controls)


# ---- architecture explorer ---------------------------------------------------------------------------
def architecture_explorer(config: MTPConfig | None = None, depth: int = 1, style: str = "sequential",
                          max_depth: int = 4) -> Explorer:
    """D and style selectors -> the architecture diagram, re-rendered from a model with that config.
    depth and style go through the state's set() (clamped or refused with a note, as in state.py)."""
    state = ArchitectureState(max_depth=max_depth, base=MTPConfig() if config is None else config)
    state.depth = min(state.depth, max_depth)              # the default, kept if `depth` is refused
    state.set(depth=depth, style=style)
    controls = {
        "depth": _classed(W.IntSlider(value=state.depth, min=0, max=max_depth, description="D"), "mtp-depth"),
        "style": _classed(W.Dropdown(options=list(MTP_STYLES), value=state.style, description="mtp_style"),
                          "mtp-style"),
    }
    return _live(state, controls)


# ---- drafting / acceptance stepper -----------------------------------------------------------------------
def stepper(model=None, tokenizer: Any = None, *, trace_fn: Callable[..., Trace] | None = None,
            trace: Trace | None = None, prompt: str = "The cat sat on the mat. The cat", rule: str = "greedy",
            draft_depth: int | None = None, temperature: float = 0.0, max_new_tokens: int = 24,
            interval_ms: int = 700) -> Explorer:
    """Prompt, rule, draft depth and temperature; Step, Play/Pause and Reset buttons; the drafted tokens
    of each step coloured by outcome, p and q per draft, the running tau and acceptance per depth.

    Give a `model` (drafts with mtp_edu.decoding.speculative_generate), or a `trace_fn` with the
    signature `(prompt_ids, rule, draft_depth, temperature, threshold, seed) -> Trace`, or a recorded
    `trace` to replay.

    prompt, rule, draft_depth and temperature go through the state's set(): a value beyond its
    control's range (temperature above 2, a draft depth above D) is clamped and a wrong one refused,
    each with a note in the view, so the controls always show what the stepper decodes with."""
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    check_int("interval_ms", interval_ms, minimum=1)
    if trace is not None and not isinstance(trace, Trace):
        raise TypeError(f"trace must be None or a mtp_edu.traces.Trace; got {type(trace).__name__}")
    if model is not None:
        state = StepperState.for_model(model, tokenizer, max_new_tokens)
        if trace_fn is not None:
            state.trace_fn = trace_fn
    else:
        state = StepperState(trace_fn=trace_fn, **({"tokenizer": tokenizer} if tokenizer is not None else {}))
        if trace is not None:
            state.model_depth = max(state.model_depth, trace.draft_depth)
    state.draft_depth = state.model_depth                    # the default, kept if `draft_depth` is refused
    state.set(prompt=prompt, rule=rule, temperature=temperature,
              **({} if state.model_depth == 0 else {"draft_depth": state.model_depth if draft_depth is None
                                                    else draft_depth}))
    if trace is not None:
        state.load_trace(trace)
    D = max(1, state.model_depth)
    controls = {
        "prompt": _classed(W.Textarea(value=state.prompt, description="prompt", rows=2,
                                      layout=W.Layout(width="30em")), "mtp-prompt"),
        "rule": _classed(W.Dropdown(options=list(RULES), value=state.rule, description="rule"), "mtp-rule"),
        "draft_depth": _classed(W.IntSlider(value=min(max(state.draft_depth, 1), D), min=1, max=D,
                                            description="draft depth", disabled=state.model_depth == 0),
                                "mtp-draft-depth"),
        "temperature": _classed(W.FloatSlider(value=state.temperature, min=0.0, max=state.max_temperature, step=0.1,
                                              description="temperature"), "mtp-temperature"),
        "threshold": _classed(W.FloatSlider(value=state.threshold, min=0.05, max=0.95, step=0.05,
                                            description="threshold"), "mtp-threshold"),
    }
    step_b = _classed(W.Button(description="Step", icon="step-forward"), "mtp-step-button")
    play_b = _classed(W.ToggleButton(value=False, description="Play/Pause", icon="play"), "mtp-play-button")
    reset_b = _classed(W.Button(description="Reset", icon="undo"), "mtp-reset-button")
    timer = W.Play(value=0, min=0, max=10**6, interval=interval_ms, show_repeat=False,
                   layout=W.Layout(display="none"))                  # the browser-side clock behind Play
    view = _classed(W.HTML(), "mtp-view")
    update = _guard(view, state.html)
    syncing = {"on": False}

    def sync_play():
        syncing["on"] = True
        play_b.value, timer.playing = state.playing, state.playing
        syncing["on"] = False

    def on_control(change):
        if syncing["on"]:
            return
        state.set(**{name: c.value for name, c in controls.items()})
        sync_play()
        update()

    def on_step(_):
        state.playing = False
        state.step()
        sync_play()
        update()

    def on_play(change):
        if syncing["on"]:
            return
        if change["new"] != state.playing:
            state.toggle_play()
        if state.playing:
            state.step()                                              # the first step at once
        sync_play()
        update()

    def on_reset(_):
        state.reset()
        sync_play()
        update()

    def on_tick(_):
        if state.playing:
            state.tick()
            sync_play()
            update()

    for c in controls.values():
        c.observe(on_control, names="value")
    step_b.on_click(_safe(on_step, view))
    reset_b.on_click(_safe(on_reset, view))
    play_b.observe(_safe(on_play, view), names="value")
    timer.observe(_safe(on_tick, view), names="value")
    update()
    buttons = W.HBox([step_b, play_b, reset_b, timer])
    ex = Explorer(state, controls, view, extra=[buttons])
    ex.buttons = {"step": step_b, "play": play_b, "reset": reset_b, "timer": timer}
    return ex


def _safe(callback, view: W.HTML):
    def run(arg):
        try:
            callback(arg)
        except Exception as err:
            view.value = message_html(f"Something went wrong ({type(err).__name__}: {err}).", "error")
    return run


# ---- loss-weight explorer ------------------------------------------------------------------------------
def loss_weight_explorer(lam: float = 0.3, schedule: str = "constant", depth: int = 3,
                         total_steps: int = 1000) -> Explorer:
    """lambda and a schedule (constant, DeepSeek step, decay, curriculum) -> the curve and L's formula.

    lam, schedule, depth and total_steps go through the state's set(): λ above 1 and D above 6 (the
    sliders' ends) are clamped, a wrong value is refused, each with a note in the view."""
    state = LossWeightState()
    state.set(schedule=schedule, lam=lam, depth=depth, total_steps=total_steps)
    total = state.total_steps
    controls = {
        "lam": _classed(W.FloatSlider(value=state.lam, min=0.0, max=state.max_lam, step=0.05, description="λ"),
                        "mtp-lambda"),
        "schedule": _classed(W.Dropdown(options=list(SCHEDULES), value=state.schedule, description="schedule"),
                             "mtp-schedule"),
        "depth": _classed(W.IntSlider(value=state.depth, min=1, max=state.max_depth, description="D"), "mtp-depth"),
        "alpha": _classed(W.FloatSlider(value=state.alpha, min=0.25, max=4.0, step=0.25, description="decay α"),
                          "mtp-alpha"),
        "step": _classed(W.IntSlider(value=0, min=0, max=total, step=max(1, total // 100),
                                     description="step"), "mtp-step"),
    }
    formula = _classed(W.HTML(), "mtp-view")
    curve = _classed(W.Image(format="png"), "mtp-lambda-curve")
    update_formula = _guard(formula, state.formula_html)

    def update(*_):
        update_formula()
        try:
            png = state.png()
        except Exception as err:
            png = None
            formula.value += message_html(f"(no curve: {err})", "warn")
        curve.value = png or b""
        curve.layout.display = None if png else "none"

    _wire(state, controls, update)
    ex = Explorer(state, controls, formula, extra=[curve])
    ex.curve = curve
    return ex


__all__ = ["Explorer", "shift_table_explorer", "architecture_explorer", "stepper", "loss_weight_explorer"]
