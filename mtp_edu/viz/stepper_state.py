"""The logic of the drafting / acceptance stepper, as a plain object that tests drive without a browser.

StepperState: prompt, rule, draft depth, temperature -> a recorded Trace of speculative decoding,
replayed one verification step at a time. Like the explorers in `state.py`, its setters never raise
on user input and `html()` renders the current view, which is also the widget's static fallback.
The rule for control values is state.py's: a value beyond the control's range (a draft depth above
the model's D, a temperature above the slider's max_temperature) is clamped with a note; a wrong one
is refused and the last good value kept. The stepper does not decode after a refusal: it shows why
until the controls are set again, so it never decodes with settings other than the ones asked for.

CSS classes for browser tests: mtp-message, mtp-token-accepted, mtp-token-rejected, mtp-token-extra,
mtp-tau, mtp-acceptance (see widgets.py for the classes on the controls).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable

from ..checks import check_int, check_number
from ..data import ByteTokenizer
from ..decoding import RULES
from ..traces import Trace
from .state import Controls, Resolved, at_most, message_html, notes_html, prob, short
from .tokens import show_text, show_token

ACCEPTED, REJECTED, EXTRA = "#1a7f37", "#cf222e", "#0969da"
NO_MTP_MODULES = ("This model has no MTP modules (D = 0), so the stepper has nothing to draft with. Load a model "
                  "trained with D > 0 (e.g. mtp-edu train --depth 3), or, in code, let prompt lookup draft: "
                  "speculative_generate(model, prompt_ids, n, drafter='prompt_lookup').")


TraceFn = Callable[..., Trace]


def speculative_trace_fn(model, max_new_tokens: int = 24) -> TraceFn:
    """A trace producer backed by `mtp_edu.decoding.speculative_generate` (imported when first used)."""
    def run(prompt_ids, rule, draft_depth, temperature, threshold, seed):
        from ..decoding import speculative_generate  # lazy: the core never needs viz
        _, trace = speculative_generate(model, prompt_ids, max_new_tokens, rule=rule, draft_depth=draft_depth,
                                        temperature=temperature, threshold=threshold, seed=seed)
        return trace
    return run



def decode_text(tokenizer, ids) -> str:
    """The text of `ids`, or each token shown on its own where the tokenizer cannot decode them."""
    try:
        return tokenizer.decode(list(ids))
    except (TypeError, ValueError):
        return "".join(show_token(i) for i in ids)


def output_html(tokenizer, trace, shown: int) -> str:
    """The prompt (grey) and the text of a trace's first `shown` steps, as a stepper shows them."""
    emitted = [] if trace.first_token is None else [trace.first_token]
    for step in trace.steps[:shown]:
        emitted += step.emitted
    return (f'<div class="mtp-output" style="font-family:monospace;white-space:pre-wrap;margin:4px 0">'
            f'<span style="color:#8c959f">{html.escape(show_text(decode_text(tokenizer, trace.prompt)))}</span>'
            f'<span>{html.escape(show_text(decode_text(tokenizer, emitted)))}</span></div>')

@dataclass
class StepperState(Controls):
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
    max_temperature: float = 2.0          # the temperature slider's maximum
    set_notes: list[tuple[str, str]] = field(default_factory=list, repr=False)   # from the last set()
    CONTROLS = ("prompt", "rule", "draft_depth", "temperature", "threshold", "seed")

    def __post_init__(self) -> None:
        check_int("StepperState.model_depth", self.model_depth, minimum=0)
        check_int("StepperState.vocab_size", self.vocab_size, minimum=1)
        check_int("StepperState.max_prompt_tokens", self.max_prompt_tokens, minimum=1)
        check_number("StepperState.max_temperature", self.max_temperature, minimum=0)
        if self.trace_fn is not None and not callable(self.trace_fn):
            raise TypeError(f"StepperState.trace_fn must be None or callable; got {type(self.trace_fn).__name__}")

    @classmethod
    def for_model(cls, model, tokenizer=None, max_new_tokens: int = 24, **controls) -> "StepperState":
        check_int("max_new_tokens", max_new_tokens, minimum=1)
        cfg = model.config
        controls.setdefault("draft_depth", max(1, cfg.mtp_depth))     # all D modules, unless asked otherwise
        return cls(trace_fn=speculative_trace_fn(model, max_new_tokens), tokenizer=tokenizer or ByteTokenizer(),
                   model_depth=cfg.mtp_depth, vocab_size=cfg.vocab_size,
                   max_prompt_tokens=max(1, cfg.max_seq_len - max_new_tokens - cfg.mtp_depth - 2), **controls)

    # -- controls
    def set(self, **controls) -> None:
        """Set any of prompt, rule, draft_depth, temperature, threshold, seed; resets the replay.
        Never raises on a value (module docstring); an unknown control name is a TypeError."""
        self.set_notes = self._set_controls(controls)
        self.reset(keep_trace=False)

    def _resolve(self, name: str, value: Any) -> Resolved:
        """(the value to use, a note or None) for one control; TypeError / ValueError to refuse it."""
        if name == "prompt":
            if not isinstance(value, str):
                raise TypeError(f"prompt must be a str; got {type(value).__name__}.")
            if value.strip():
                self._encode(value)
            return value, None
        if name == "rule":
            if not isinstance(value, str) or value not in RULES:
                raise ValueError(f"rule {short(value)} is not one of {', '.join(RULES)}.")
            return value, None
        if name == "draft_depth":                       # (a D = 0 model: ensure_trace and html say why not)
            depth = check_int("draft depth", value)
            if depth < 1:
                raise ValueError(f"Draft at least 1 token per step; got draft depth = {depth}.")
            if 0 < self.model_depth < depth:
                return self.model_depth, (f"This model has D = {self.model_depth} MTP modules; drafting {depth} "
                                          f"tokens would reuse modules. The stepper drafts {self.model_depth}.")
            return depth, None
        if name == "temperature":
            temperature = check_number("temperature", value)
            if temperature < 0:
                raise ValueError(f"temperature must be 0 (greedy) or more; got {temperature:g}.")
            return at_most(temperature, self.max_temperature,
                           f"temperature {temperature:g} is above this stepper's maximum {self.max_temperature:g} "
                           f"(the slider's range); using {self.max_temperature:g}.")
        if name == "threshold":
            return check_number("threshold", value, minimum=0, below=1), None
        return check_int("seed", value, minimum=0, maximum=2**64 - 1, note="a torch seed"), None

    def _encode(self, text: str) -> list[int]:
        try:
            return list(self.tokenizer.encode(text))
        except Exception as err:                                       # a tokenizer that refuses the text
            raise ValueError(f"The tokenizer could not encode this prompt: {err}") from None

    def reset(self, keep_trace: bool = True) -> None:
        """Back to step 0; with keep_trace the same recorded trace is replayed again."""
        self.shown, self.playing, self.error = 0, False, ""
        if not keep_trace:
            self.trace = None

    def load_trace(self, trace: Trace, prompt_text: str | None = None) -> None:
        """Replay a recorded trace (e.g. Trace.from_json(...)); the controls follow the trace."""
        if not isinstance(trace, Trace):
            raise TypeError(f"load_trace takes a mtp_edu.traces.Trace; got {type(trace).__name__}")
        self.rule, self.draft_depth, self.trace = trace.rule, trace.draft_depth, trace
        self.prompt = prompt_text if prompt_text is not None else decode_text(self.tokenizer, trace.prompt)
        self.shown, self.playing, self.error = 0, False, ""

    # -- checks: every problem becomes a note or an error message
    def prompt_ids(self) -> list[int] | None:
        self.notes = [n for n in self.notes if not n.startswith("prompt:")]
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            self.error = "Type a prompt to start."
            return None
        try:
            ids = self._encode(self.prompt)
        except ValueError as err:
            self.error = str(err)
            return None
        if not ids:
            self.error = "This prompt encodes to no tokens; type something else."
            return None
        bad = sorted({i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size},
                     key=repr)
        if bad:
            self.error = (f"The prompt has tokens outside this model's vocabulary (V = {self.vocab_size}): "
                          f"{', '.join(show_token(i) for i in bad[:8])}. Try plain ASCII text.")
            return None
        if len(ids) > self.max_prompt_tokens:
            self.notes.append(f"prompt: only its last {self.max_prompt_tokens} of {len(ids)} tokens are used.")
            ids = ids[-self.max_prompt_tokens:]
        return ids

    def controls_ok(self) -> tuple[int, float] | None:
        """(draft depth, temperature) to decode with, or None with `error` saying why; also checks rule,
        threshold and seed (values given to the constructor meet the same rule as set()'s)."""
        self.notes = [n for n in self.notes if n.startswith("prompt:")]
        used = {}
        try:
            for name in ("rule", "draft_depth", "temperature", "threshold", "seed"):
                used[name], note = self._resolve(name, getattr(self, name))
                if note:
                    self.notes.append(note)
        except (TypeError, ValueError) as err:
            self.error = str(err)
            return None
        if used["rule"] == "sample" and used["temperature"] == 0:
            self.notes.append("rule 'sample' at temperature 0 samples from a one-hot p: same output as greedy.")
        return used["draft_depth"], float(used["temperature"])

    # -- actions
    def ensure_trace(self) -> bool:
        if self.trace is not None:
            return True
        self.error = ""
        if self.model_depth == 0:
            self.error = NO_MTP_MODULES
            return False
        if any(kind == "warn" for kind, _ in self.set_notes):
            self.error = ("The stepper does not decode until the refused control above is set to an allowed "
                          "value (it never decodes with settings other than the ones asked for).")
            return False
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
        if not self.ensure_trace() or self._check_shown() >= len(self.trace.steps):
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
            if self.trace is not None and self._check_shown() >= len(self.trace.steps):
                self.reset()
            self.playing = self.ensure_trace()
        return self.playing

    def tick(self) -> None:
        if self.playing:
            self.step()

    @property
    def done(self) -> bool:
        return self.trace is not None and self._check_shown() >= len(self.trace.steps)

    def _check_shown(self) -> int:
        """`shown` as a step count of the trace (0..steps); a value assigned from outside that is not one
        (shown = 999, -1, 'x') is clamped into that range, with a note."""
        n = len(self.trace.steps) if self.trace is not None else 0
        s = self.shown
        if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= n:
            return s
        self.shown = min(max(s, 0), n) if isinstance(s, int) and not isinstance(s, bool) else 0
        self.notes.append(f"shown = {short(s)} is not a step count of this trace (0..{n}); showing step "
                          f"{self.shown}.")
        return self.shown

    # -- what is shown
    def partial_trace(self) -> Trace | None:
        if self.trace is None:
            return None
        t = self.trace
        return Trace(t.prompt, t.rule, t.draft_depth, t.steps[:self._check_shown()], t.first_token, t.lossy)

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
            tip = f"draft {j + 1} (MTP module {j + 1}): q = {prob(q)}, p = {prob(p)}"
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
        try:
            threshold = self._resolve("threshold", self.threshold)[0]
        except (TypeError, ValueError):                                # refused: say nothing wrong instead
            threshold = None
        rule_col = {"sample": ("min(1, p/q)", lambda p, q: prob(min(1.0, p / q)) if q > 0 else "nan"),
                    "threshold": (f"p > {threshold:g}?", lambda p, q: "yes" if p > threshold else "no")
                    if threshold is not None else ("p > threshold?", lambda p, q: "?")
                    }.get(self.trace.rule, ("is the main argmax?", None))
        rows = "".join(
            f"<tr>{td}{j + 1}</td>{td}<code>{html.escape(show_token(t, self.tokenizer))}</code></td>"
            f"{td}{prob(q)}</td>{td}{prob(p)}</td>"
            f"{td}{rule_col[1](p, q) if rule_col[1] else 'yes' if j < s.accepted else 'no' if j == s.accepted else '-'}"
            "</td>"
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
                f'verification forward (ceiling D + 1 = {ceiling}) after {self.shown} step(s)</div>'
                f'<div class="mtp-acceptance">{"".join(bars)}</div></div>')

    def html(self) -> str:
        self._check_shown()
        set_notes = notes_html(self.set_notes)
        notes = set_notes + "".join(message_html(n, "info") for n in self.notes)
        error = self.error or (NO_MTP_MODULES if self.trace is None and self.model_depth == 0 else "")
        if error:
            return (f'<div class="mtp-stepper">{set_notes}{message_html(error, "warn")}'
                    f'{"".join(message_html(n, "info") for n in self.notes)}</div>')
        if self.trace is None:
            return (f'<div class="mtp-stepper">{notes}{message_html("Press Step or Play to draft and verify.")}'
                    f'{self.stats_html()}</div>')
        t = self.trace
        text = output_html(self.tokenizer, t, self.shown)
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
                f'<span style="color:{ACCEPTED}">accepted</span>, '
                f'<span style="color:{REJECTED}"><s>rejected</s></span>, '
                f'<span style="color:{EXTRA}">correction / bonus</span>; hover a token for p and q.</div>')
        return f'<div class="mtp-stepper">{notes}{head}{text}{steps}{pq}{self.stats_html()}</div>'
