"""Widgets: the plain state objects driven like a user would (every control swept across its range,
nonsense input answered with a friendly message), and the ipywidgets layer wired to them."""
import html
import math
import re

import matplotlib

matplotlib.use("Agg")

import ipywidgets as W
import pytest
import torch

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.losses import depth_weights
from mtp_edu.traces import Step, Trace
from mtp_edu.viz import widgets
from mtp_edu.viz.state import ArchitectureState, LossWeightState, ShiftTableState, prob
from mtp_edu.viz.stepper_state import StepperState
from mtp_edu.viz.tokens import show_token

TINY = dict(vocab_size=128, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)


def friendly(view: str) -> None:
    assert "Traceback" not in view and "Something went wrong" not in view


def sweep_values(control: W.Widget):
    """Every option of a dropdown; min, max and points between for a slider; a few texts for a text box."""
    if isinstance(control, W.Dropdown):
        return list(control.options)
    if isinstance(control, (W.IntSlider, W.FloatSlider)):
        n = round((control.max - control.min) / control.step)
        picks = sorted({0, n, n // 2, n // 3, 1 if n else 0})
        return [control.min + i * control.step for i in picks]
    return ["", "a", "The cat sat on the mat.", "naïve 😀 emoji", "x" * 3000, "tab\tnew\nline", "   "]


# ---- a stand-in decoder: greedy / sample / threshold on a random tiny model, full forwards ----------
def reference_trace_fn(model: MTPModel, max_new_tokens: int = 10):
    """(prompt_ids, rule, draft_depth, temperature, threshold, seed) -> Trace, without KV caches."""
    @torch.no_grad()
    def run(prompt_ids, rule, draft_depth, temperature, threshold, seed):
        g = torch.Generator().manual_seed(seed)
        probs = lambda logits: torch.softmax(logits / max(temperature, 1e-6), -1) if temperature > 0 \
            else torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
        pick = lambda p: int(torch.multinomial(p, 1, generator=g)) if temperature > 0 else int(p.argmax())
        ids = list(prompt_ids)
        first = pick(probs(model(torch.tensor([ids])).logits[0][0, -1].double()))
        ids.append(first)
        trace = Trace(list(prompt_ids), rule, draft_depth, first_token=first, lossy=rule == "threshold")
        while len(trace.tokens) < max_new_tokens:
            drafts, qs = [], []
            for k in range(1, draft_depth + 1):                 # module k at position n-1 drafts t_(n+k)
                q = probs(model(torch.tensor([ids + drafts])).logits[k][0, len(ids) - 2].double())
                drafts.append(pick(q))
                qs.append(float(q[drafts[-1]]))
            main = model(torch.tensor([ids + drafts])).logits[0][0, len(ids) - 1:].double()
            p_all = probs(main)
            ps = [float(p_all[j, t]) for j, t in enumerate(drafts)]
            accepted = 0
            for j in range(draft_depth):
                ok = {"greedy": drafts[j] == int(main[j].argmax()), "threshold": ps[j] > threshold,
                      "sample": float(torch.rand(1, generator=g)) < min(1.0, ps[j] / max(qs[j], 1e-12))}[rule]
                if not ok:
                    break
                accepted += 1
            if accepted == draft_depth:
                extra, kind = pick(p_all[-1]), "bonus"
            else:
                extra, kind = int(main[accepted].argmax()), "correction"
            step = Step(drafts, qs, ps, accepted, extra, kind, 1, draft_depth)
            trace.steps.append(step)
            ids += step.emitted
        return trace
    return run


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MTPModel(MTPConfig(**TINY, mtp_depth=3)).eval()


def hand_trace():
    steps = [Step([65, 66, 67], [0.9, 0.8, 0.7], [0.95, 0.6, 0.1], 3, 68, "bonus"),
             Step([69, 70, 71], [0.9, 0.5, 0.4], [0.85, 0.2, 0.3], 1, 10, "correction"),
             Step([0xE2, 72, 73], [0.7, 0.6, 0.5], [0.1, 0.5, 0.5], 0, 32, "correction")]
    return Trace(list(b"Hi "), "greedy", 3, steps, first_token=64)


# ---- shift-table explorer ---------------------------------------------------------------------------------
def test_show_token_escapes_unprintable_bytes():
    assert [show_token(b) for b in (65, 32, 10, 9, 0, 0xE2, 0x7F)] == ["A", "␣", "⏎", "⇥", "\\x00", "\\xe2", "\\x7f"]
    assert show_token(b"\xe2\x82") == "\\xe2\\x82" and show_token("a\nb") == "a⏎b" and show_token(300) == "<300>"


def test_shift_table_explorer_sweeps_text_and_depth():
    ex = widgets.shift_table_explorer(max_depth=4)
    text, depth = ex.controls["text"], ex.controls["depth"]
    for t in sweep_values(text):
        text.value = t
        for d in sweep_values(depth):
            depth.value = d
            view = ex.view.value
            friendly(view)
            n = len(t.encode())
            if not t:
                assert "Type a sentence" in view
            elif n < d + 2:
                assert f"needs at least D + 2 = {d + 2} tokens" in view
            else:
                assert view.count('class="mtp-depth-') == 2 * (d + 1)
                assert ("first 24 of" in view) == (n > 24)
    text.value, depth.value = "naïve 😀\n", 2
    assert "\\xf0" in ex.view.value and "\\xc3" in ex.view.value and "⏎" in ex.view.value
    text.value = "x" * 3000
    assert "first 24 of 3000 tokens" in ex.view.value
    state = ex.state
    for bad in (9, -1, 2.5, "two"):                           # beyond the slider: straight into the state
        state.set(depth=bad)
        friendly(state.html())
        assert "mtp-message" in state.html()
    assert "bundle" not in ex._repr_mimebundle_().get("text/html", "bundle")


def test_shift_table_state_with_a_tokenizer_that_drops_everything():
    class Nothing:
        def encode(self, s): return []
        def decode(self, ids): return ""
    state = ShiftTableState(text="anything", tokenizer=Nothing())
    assert "encodes to no tokens" in state.html()


# ---- architecture explorer ------------------------------------------------------------------------------
def test_architecture_explorer_sweeps_depth_and_style():
    base = MTPConfig(**TINY)
    ex = widgets.architecture_explorer(base, max_depth=3)
    for style in sweep_values(ex.controls["style"]):
        ex.controls["style"].value = style
        for d in sweep_values(ex.controls["depth"]):
            ex.controls["depth"].value = d
            view = ex.view.value
            friendly(view)
            assert "<svg" in view and "Main Model" in view and f"mtp_style={style}, D={d}" in view
            assert view.count("MTP Module") == d
    state = ArchitectureState(depth=7, max_depth=3, base=base)
    assert "outside this explorer's range" in state.html()
    state.set(depth=1, style="medusa")
    assert "is not one of" in state.html()


# ---- stepper --------------------------------------------------------------------------------------------
def classes(view: str, cls: str) -> int:
    return len(re.findall(rf'class="mtp-token [^"]*\b{cls}\b', view))


def test_stepper_replays_a_recorded_trace_step_by_step():
    t = hand_trace()
    ex = widgets.stepper(trace=t)
    state, view = ex.state, ex.view
    assert "Press Step" not in view.value and "step 0 of 3" in view.value
    expected = [(3, 0, 1), (4, 1, 2), (4, 2, 3)]          # running (accepted, rejected, extra) spans
    for n, (acc, rej, extra) in enumerate(expected, 1):
        ex.buttons["step"].click()
        v = view.value
        friendly(v)
        assert state.shown == n
        assert (classes(v, "mtp-token-accepted"), classes(v, "mtp-token-rejected") - classes(v, "mtp-token-discarded"),
                classes(v, "mtp-token-extra")) == (acc, rej, extra)
        partial = Trace(t.prompt, t.rule, t.draft_depth, t.steps[:n], t.first_token)
        assert f"τ = {partial.tau():.2f}" in v and 'class="mtp-tau"' in v
        assert "<s>" in v or n == 1                       # rejected drafts are struck through
        assert "q = " in v and "p = " in v and 'class="mtp-pq"' in v
    assert "\\xe2" in view.value and "finished" in view.value
    ex.buttons["step"].click()                            # past the end: nothing changes, no error
    assert state.shown == 3
    first = view.value
    ex.buttons["reset"].click()
    assert state.shown == 0
    for _ in range(3):
        ex.buttons["step"].click()
    assert view.value == first                            # deterministic replay
    # Play / Pause: the hidden timer drives tick(); at the end it pauses by itself
    ex.buttons["reset"].click()
    ex.buttons["play"].value = True
    assert state.playing and state.shown == 1
    ex.buttons["play"].value = False
    assert not state.playing
    ex.buttons["timer"].value += 1
    assert state.shown == 1                               # paused: the clock does nothing
    ex.buttons["play"].value = True
    for _ in range(5):
        ex.buttons["timer"].value += 1
    assert state.shown == 3 and not state.playing and not ex.buttons["play"].value
    assert Trace.from_json(t.to_json()).steps == t.steps


def test_stepper_with_a_model_sweeps_every_control(model):
    ex = widgets.stepper(model, trace_fn=reference_trace_fn(model, 8))
    state = ex.state
    assert state.model_depth == 3 and ex.controls["draft_depth"].max == 3
    seen = {}
    for name, control in ex.controls.items():
        for value in sweep_values(control):
            control.value = value                         # a new value resets; the same value does not
            ex.buttons["reset"].click()
            ex.buttons["step"].click()
            ex.buttons["step"].click()
            view = ex.view.value
            friendly(view)
            if state.error:
                assert "mtp-message" in view
            else:
                assert state.shown == 2 and 'class="mtp-tau"' in view
                key = (state.prompt, state.rule, state.draft_depth, state.temperature, state.threshold)
                seen.setdefault(key, view)
                assert seen[key] == view                  # same controls, same picture
        control.value = {"prompt": "The cat", "rule": "greedy", "draft_depth": 3, "temperature": 0.0,
                         "threshold": 0.5}[name]
    # temperature 0 with the greedy rule: every accepted draft equals the main model's argmax
    state.set(rule="greedy", temperature=0.0, draft_depth=2, prompt="abcd")
    while state.step():
        pass
    assert state.done and all(0 <= s.accepted <= 2 for s in state.trace.steps)


def test_stepper_nonsense_gives_friendly_messages(model):
    fn = reference_trace_fn(model, 6)
    state = StepperState.for_model(model)
    state.trace_fn = fn
    cases = {"": "Type a prompt", "   ": "Type a prompt",
             "😀": "outside this model's vocabulary", "naïve": "outside this model's vocabulary"}
    for prompt, msg in cases.items():
        state.set(prompt=prompt)
        assert not state.step() and msg in state.html()
    state.set(prompt="x" * 500)
    assert state.step() and "only its last" in state.html()
    state.set(prompt="okay!", draft_depth=9)
    assert state.step() and "has D = 3 MTP modules" in state.html() and state.trace.draft_depth == 3
    for controls, msg in [({"draft_depth": 0}, "at least 1"), ({"temperature": -1.0}, "0 (greedy) or more"),
                          ({"rule": "beam"}, "is not one of"), ({"draft_depth": "two"}, "must be an integer"),
                          ({"temperature": "hot"}, "must be a finite number")]:
        state.set(draft_depth=2, temperature=0.0, rule="greedy")
        state.set(**controls)
        assert not state.step() and msg in state.html()
        friendly(state.html())

    class Silent:
        def encode(self, s): return []
        def decode(self, ids): return ""
    quiet = StepperState(trace_fn=fn, tokenizer=Silent())
    assert not quiet.step() and "encodes to no tokens" in quiet.html()
    unplugged = StepperState()
    assert not unplugged.step() and "No model is connected" in unplugged.html()

    def missing(*a):
        raise ImportError("no module named mtp_edu.decoding")

    def refuses(*a):
        raise ValueError("prompt too long for max_seq_len")
    for fn2, msg in [(missing, "not available"), (refuses, "prompt too long")]:
        s = StepperState(trace_fn=fn2)
        assert not s.step() and msg in s.html()


def test_stepper_widget_turns_unexpected_errors_into_a_message():
    def broken(*a):
        raise TypeError("bug in a drafter")
    ex = widgets.stepper(trace_fn=broken)
    ex.buttons["step"].click()
    assert "Something went wrong" in ex.view.value and "bug in a drafter" in ex.view.value


def test_speculative_trace_fn_calls_the_decoder_lazily(model, monkeypatch):
    import sys
    import types
    fake = types.ModuleType("mtp_edu.decoding")
    calls = []

    def speculative_generate(m, prompt_ids, max_new_tokens, **kw):
        calls.append(kw)
        return [], hand_trace()
    fake.speculative_generate = speculative_generate
    monkeypatch.setitem(sys.modules, "mtp_edu.decoding", fake)
    state = StepperState.for_model(model, rule="threshold", draft_depth=2, temperature=0.7)
    assert state.step()
    assert calls == [dict(rule="threshold", draft_depth=2, temperature=0.7, threshold=0.5, seed=0)]


# ---- loss-weight explorer ---------------------------------------------------------------------------------
def test_loss_weight_explorer_sweeps_every_control():
    ex = widgets.loss_weight_explorer(total_steps=100)
    state = ex.state
    for control in ex.controls.values():
        for value in sweep_values(control):
            control.value = value
            view = ex.view.value
            friendly(view)
            w = depth_weights(state.depth, state.make_schedule(), state.step)
            assert "L = L<sub>main</sub> + " + " + ".join(f"{x:.4g}·L<sup>{k}</sup>" for k, x in
                                                          enumerate(w[1:], 1)) in view
            assert ex.curve.value[:4] == b"\x89PNG"
    ex.controls["schedule"].value = "curriculum"
    ex.controls["depth"].value, ex.controls["step"].value, ex.controls["lam"].value = 3, 0, 0.3
    assert "0.1·L<sup>1</sup> + 0·L<sup>2</sup> + 0·L<sup>3</sup>" in ex.view.value
    s = LossWeightState(lam=-1)
    assert "λ must be ≥ 0" in s.html()
    s = LossWeightState(schedule="cosine")
    assert "is not one of" in s.html()
    assert 'src="data:image/png;base64,' in LossWeightState().html()


def test_static_fallbacks_are_in_the_mimebundle(model):
    for ex in (widgets.shift_table_explorer(), widgets.loss_weight_explorer(total_steps=50),
               widgets.stepper(trace=hand_trace())):
        bundle = ex._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle and "<div" in bundle["text/html"]
        assert ex.static().data == bundle["text/html"]


def test_show_token_shows_a_subword_token_s_bytes():
    from mtp_edu.data import BPETokenizer
    bpe = BPETokenizer.train("    return the value\n\n" * 50 + "é", vocab_size=270)
    shown = [show_token(i, bpe) for i in bpe.encode("    return the\n\n")]
    assert "".join(shown) == "␣␣␣␣return␣the⏎⏎" and len(shown) < 14            # merged subwords
    assert [show_token(i, bpe) for i in bpe.encode("é")] in (["é"], ["\\xc3", "\\xa9"])
    assert show_token(bpe.vocab_size, bpe) == f"<{bpe.vocab_size}>" and show_token(7) == "\\x07"


def test_stepper_with_the_real_decoder():
    decoding = pytest.importorskip("mtp_edu.decoding")
    torch.manual_seed(0)
    m = MTPModel(MTPConfig(**{**TINY, "vocab_size": 256}, mtp_depth=2)).eval()
    ex = widgets.stepper(m, max_new_tokens=8, prompt="The cat")
    for rule, temperature in [("greedy", 0.0), ("sample", 0.8), ("threshold", 0.0), ("greedy", 1.0)]:
        ex.controls["rule"].value, ex.controls["temperature"].value = rule, temperature
        ex.buttons["reset"].click()
        for _ in range(8):
            ex.buttons["step"].click()
        friendly(ex.view.value)
        if rule == "greedy" and temperature:                 # the decoder's own clear refusal, shown calmly
            assert "mtp-message" in ex.view.value and "temperature" in ex.view.value
            continue
        tokens, _ = decoding.speculative_generate(m, list(b"The cat"), 8, rule=rule, draft_depth=2,
                                                  temperature=temperature, threshold=0.5, seed=0)
        assert ex.state.trace.tokens[:8] == tokens and ex.state.done
        assert 'class="mtp-tau"' in ex.view.value and classes(ex.view.value, "mtp-token-extra") == ex.state.shown


def test_one_name_for_the_deepseek_schedule_in_the_explorer_and_in_training():
    from mtp_edu.train import TrainConfig
    from mtp_edu.viz.state import SCHEDULES
    assert "deepseek" in SCHEDULES and TrainConfig(lambda_schedule="deepseek").lambda_schedule == "deepseek"
    assert "then 0.1 after 10/14.8 of training" in LossWeightState(schedule="deepseek").html()
    html = LossWeightState(schedule="deepseek-step").html()
    assert "is not one of constant, deepseek, decay, curriculum" in html


# ---- issue 11: the state and its control agree; setters keep the last good value and say why ------------
def messages(view: str) -> str:
    """The text of the view's messages (HTML entities decoded)."""
    return html.unescape(" ".join(re.findall(r'class="mtp-message[^"]*"[^>]*>([^<]*)<', view)))


def test_stepper_temperature_beyond_the_slider_is_clamped_in_state_and_slider(model):
    ex = widgets.stepper(model, temperature=5, rule="sample", trace_fn=reference_trace_fn(model, 6))
    assert ex.controls["temperature"].value == ex.state.temperature == 2.0 == ex.controls["temperature"].max
    assert "temperature 5 is above this stepper's maximum 2" in messages(ex.view.value)
    ex.buttons["step"].click()
    assert ex.state.trace is not None and "Traceback" not in ex.view.value


def test_loss_weight_explorer_depth_beyond_the_slider_is_clamped_in_state_and_slider():
    ex = widgets.loss_weight_explorer(depth=99, lam=3.0, total_steps=100)
    assert ex.controls["depth"].value == ex.state.depth == 6 and ex.controls["lam"].value == ex.state.lam == 1.0
    note = messages(ex.view.value)
    assert "D = 99 is more than this explorer's maximum D = 6; showing D = 6." in note and "λ = 3" in note
    assert ex.view.value.count("·L<sup>") == 6
    ex.controls["depth"].value = 2                             # the next change: the note has done its job
    assert "D = 99" not in ex.view.value


def test_unknown_styles_rules_and_schedules_are_notes_not_trait_errors(model):
    for ex, name, default in [(widgets.architecture_explorer(style="medusa"), "style", "sequential"),
                              (widgets.stepper(model, rule="beam"), "rule", "greedy"),
                              (widgets.loss_weight_explorer(schedule="cosine"), "schedule", "constant")]:
        assert ex.controls[name].value == getattr(ex.state, name) == default
        assert "is not one of" in messages(ex.view.value) and f"kept {name} = {default!r}" in messages(ex.view.value)


def test_setters_never_raise_and_keep_the_last_good_value():
    lw = LossWeightState(schedule="decay", depth=2)
    for name, bad in [("depth", math.inf), ("alpha", -1), ("lam", math.nan), ("total_steps", 0), ("step", -1)]:
        before = getattr(lw, name)
        lw.set(**{name: bad})
        assert getattr(lw, name) == before and f"kept {name} = " in messages(lw.html())
        assert lw.png()[:4] == b"\x89PNG"                      # the last good view is still drawn
    st = ShiftTableState()
    st.set(text="a\ud800b")
    assert st.text == "The cat sat on the mat." and "lone surrogate" in messages(st.html())
    assert 'class="mtp-shift-table"' in st.html()
    with pytest.raises(TypeError, match="unknown control 'colour'"):
        lw.set(colour="red")                                   # a programming error, not user input


def test_constructor_values_meet_the_same_rule_at_render_time():
    s = LossWeightState(lam=math.nan)
    assert "λ=nan is not allowed" in messages(s.html()) and s.png() is None   # no NaN curve
    s = LossWeightState(schedule="decay", alpha=-1)
    assert "decay α=-1 is not allowed" in messages(s.html())
    with pytest.raises(ValueError, match=r"ShiftTableState.max_tokens=-1 is not allowed: must be an integer >= 2"):
        ShiftTableState(max_tokens=-1)
    with pytest.raises(ValueError, match="max_tokens=-1"):
        widgets.shift_table_explorer(max_tokens=-1)


def test_curriculum_png_is_bounded_by_the_slider_depth():
    import time
    s = LossWeightState(schedule="curriculum", depth=100000)
    start = time.perf_counter()
    assert s.png()[:4] == b"\x89PNG" and time.perf_counter() - start < 10
    assert "D = 100000 is more than this explorer's maximum D = 6; showing D = 6." in messages(s.html())


def test_stepper_shown_out_of_range_is_clamped_with_a_note():
    state = StepperState(trace=hand_trace())
    state.shown = 999
    view = state.html()
    assert state.shown == 3 and "shown = 999 is not a step count of this trace (0..3)" in messages(view)
    state.shown = "x"
    assert "Traceback" not in state.html() and state.shown == 0


def test_stepper_with_a_d0_model_says_it_has_nothing_to_draft_with():
    m = MTPModel(MTPConfig(**TINY, mtp_depth=0)).eval()
    ex = widgets.stepper(m)
    assert "no MTP modules (D = 0)" in messages(ex.view.value) and "at least 1" not in ex.view.value
    ex.buttons["step"].click()
    note = messages(ex.view.value)
    assert "Load a model trained with D > 0" in note and "drafter='prompt_lookup'" in note
    assert ex.controls["draft_depth"].disabled and ex.state.trace is None


def test_stepper_refuses_to_decode_after_a_refused_value(model):
    state = StepperState.for_model(model)
    state.trace_fn = reference_trace_fn(model, 6)
    state.set(temperature=math.nan)
    assert state.temperature == 0.0 and not state.step()
    assert "does not decode until the refused control" in messages(state.html())
    state.set(temperature=0.0)
    assert state.step()


def test_a_rare_draft_shows_its_probability_not_zero():
    assert [prob(x) for x in (0.5, 0.001, 0.000292, 0.0)] == ["0.500", "0.001", "2.9e-04", "0.000"]
