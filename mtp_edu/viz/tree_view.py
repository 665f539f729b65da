"""Pictures of tree drafting (mtp_edu.tree), drawn from a live TreeTrace, and a tree stepper.

    tree_diagram(step, tokenizer)      graphviz: one step's tree; accepted path green, rejected red,
                                       untried grey, q and p on every node, the extra token in blue
    tree_html(step, tokenizer)         the same tree as nested HTML lists (no Graphviz needed)
    mask_heatmap(parents, prefix)      matplotlib: the tree-attention mask with each node's position id
    TreeStepperState                   replays a TreeTrace one step at a time; `html()` is the view and
                                       the static fallback; setters never raise on user input
    tree_stepper(model, tokenizer)     the ipywidgets front end: prompt, tree, rule; Step and Reset

CSS classes for browser tests: mtp-tree, mtp-tree-node, mtp-tree-accepted, mtp-tree-rejected,
mtp-tree-untried, mtp-tree-extra, mtp-tau, mtp-tree-nodes, mtp-message; on the controls mtp-prompt,
mtp-tree-shape, mtp-rule, mtp-temperature, mtp-step-button, mtp-reset-button, mtp-view.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..data import ByteTokenizer
from ..decoding import RULES
from ..traces import TreeStep, TreeTrace
from .state import message_html
from .stepper_state import decode_text, output_html
from .tokens import show_token

COLOURS = {"root": "#57606a", "accepted": "#1a7f37", "rejected": "#cf222e", "untried": "#8c959f",
           "extra": "#0969da"}
FILLS = {"root": "#eaeef2", "accepted": "#dafbe1", "rejected": "#ffebe9", "untried": "#f6f8fa",
         "extra": "#ddf4ff"}


def _node_text(step: TreeStep, j: int, tokenizer: Any) -> tuple[str, str]:
    token = show_token(step.tokens[j], tokenizer)
    if j == 0:
        return token, "root: the pending token"
    return token, f"q {step.q[j]:.2f}  p {step.p[j]:.2f}"


# ---- graphviz ---------------------------------------------------------------------------------------
def tree_diagram(step: TreeStep, tokenizer: Any = None, title: str | None = None):
    """One step's tree as a graphviz Digraph (renders inline in Jupyter; `diagrams.save` writes SVG/PNG).
    Each node shows its token, its number j and depth (= position past the prefix), and q (drafter) and
    p (main model). The accepted path is green, tried-and-rejected children red, untried nodes grey;
    the main model's extra token hangs off the last accepted node in blue."""
    from .diagrams import FONT, Diagram, _esc

    g = Diagram(name="tree_step")
    g.attr(rankdir="LR", fontname=FONT, nodesep="0.15", ranksep="0.35",
           label=_esc(title or f"accepted {step.accepted} of {step.nodes} drafted nodes; "
                               f"+{len(step.emitted)} tokens ({step.extra_kind})"), labelloc="t", fontsize="11")
    g.attr("node", fontname=FONT, fontsize="10", shape="box", style="rounded,filled", margin="0.08,0.03")
    g.attr("edge", color="#57606a", arrowsize="0.6")
    outcome, depths = step.outcomes(), step.depths
    for j in range(len(step.tokens)):
        token, line = _node_text(step, j, tokenizer)
        label = (f'<<B>{_esc(token)}</B><BR/><FONT POINT-SIZE="8" COLOR="#444444">#{j}, depth {depths[j]}'
                 f'<BR/>{_esc(line)}</FONT>>')
        g.node(f"n{j}", label, color=COLOURS[outcome[j]], fillcolor=FILLS[outcome[j]],
               penwidth="2" if outcome[j] == "accepted" else "1")
    for j, p in enumerate(step.parents[1:], 1):
        g.edge(f"n{p}", f"n{j}", color=COLOURS["accepted"] if outcome[j] == "accepted" else "#8c959f")
    last = step.path[-1] if step.path else 0
    g.node("extra", f'<<B>{_esc(show_token(step.extra_token, tokenizer))}</B><BR/>'
                    f'<FONT POINT-SIZE="8">{step.extra_kind}</FONT>>',
           color=COLOURS["extra"], fillcolor=FILLS["extra"])
    g.edge(f"n{last}", "extra", style="dashed", color=COLOURS["extra"])
    return g


def tree_svg(step: TreeStep, tokenizer: Any = None) -> str | None:
    """The diagram as inline SVG text, or None when Graphviz's `dot` is not installed."""
    from .diagrams import GraphvizNotFound, render
    try:
        return render(tree_diagram(step, tokenizer), "svg").decode("utf-8")
    except GraphvizNotFound:
        return None


# ---- HTML (no Graphviz) --------------------------------------------------------------------------------
LIST_STYLE = "list-style:none;padding-left:1em"     # every level: a browser bullets nested lists


def tree_html(step: TreeStep, tokenizer: Any = None) -> str:
    """The tree as nested lists: each node's token, q and p, coloured by outcome; the extra token in blue."""
    kids, outcome = step.children(), step.outcomes()
    last = step.path[-1] if step.path else 0

    def node(j: int) -> str:
        token, line = _node_text(step, j, tokenizer)
        colour = COLOURS[outcome[j]]
        strike = outcome[j] == "rejected"
        body = f"<s>{html.escape(token)}</s>" if strike else html.escape(token)
        item = (f'<span class="mtp-tree-node mtp-tree-{outcome[j]}" title="node {j}: {outcome[j]}" '
                f'style="font-family:monospace;border:1px solid {colour};color:{colour};background:{FILLS[outcome[j]]};'
                f'border-radius:3px;padding:0 4px">{body}</span>'
                f' <span style="color:#57606a;font-size:85%">{html.escape(line)}</span>')
        if j == last:
            item += (f' → <span class="mtp-tree-node mtp-tree-extra" style="font-family:monospace;border:1px dashed '
                     f'{COLOURS["extra"]};color:{COLOURS["extra"]};border-radius:3px;padding:0 4px">'
                     f'{html.escape(show_token(step.extra_token, tokenizer))}</span>'
                     f' <span style="color:{COLOURS["extra"]};font-size:85%">{step.extra_kind}</span>')
        inner = "".join(node(c) for c in kids[j])
        sub = f'<ul style="{LIST_STYLE}">{inner}</ul>' if inner else ""
        return f"<li>{item}{sub}</li>"

    return (f'<ul class="mtp-tree" style="{LIST_STYLE};margin:4px 0;font-family:sans-serif;line-height:1.6">'
            f'{node(0)}</ul>')


# ---- the mask -----------------------------------------------------------------------------------------------
def mask_heatmap(parents: Sequence[int], prefix: int = 0, labels: Sequence[str] | None = None,
                 title: str | None = None):
    """The verify forward's attention mask as a matplotlib Figure: a row per tree node (query), a column
    per key: `prefix` committed cache entries, then the nodes. Each node's row and column are labelled
    with its number and its position id (prefix + depth)."""
    from matplotlib.figure import Figure

    from ..tree import verify_layout
    positions, mask = verify_layout(parents, prefix)
    n = len(parents)
    names = [f"{j}" + (f" {labels[j]}" if labels else "") + f"  (pos {int(positions[j])})" for j in range(n)]
    fig = Figure(figsize=(max(5.0, 1.6 + 0.42 * (min(prefix, 3) + n)), 1.4 + 0.36 * n), layout="constrained")
    ax = fig.subplots()
    shown = mask[:, max(prefix - 3, 0):].int()                         # at most 3 prefix columns, for space
    ax.imshow(shown.numpy(), cmap="Greens", vmin=0, vmax=1.4)
    cols = [f"cache {i}" for i in range(max(prefix - 3, 0), prefix)] + names
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for r in range(shown.shape[0]):
        for c in range(shown.shape[1]):
            ax.text(c, r, "1" if shown[r, c] else "·", ha="center", va="center", fontsize=8,
                    color="white" if shown[r, c] else "#8c959f")
    if prefix:
        ax.axvline(min(prefix, 3) - 0.5, color="#0969da", linewidth=1)
    hidden = f" (last 3 of {prefix})" if prefix > 3 else ""
    ax.set_xlabel(f"key: the cache{hidden}, then the tree nodes", fontsize=9)
    ax.set_ylabel("query: tree node", fontsize=9)
    ax.set_title(title or "tree-attention mask:\na node sees the cache, its ancestors and itself", fontsize=10)
    return fig


# ---- the tree stepper ------------------------------------------------------------------------------------
TreeTraceFn = Callable[..., TreeTrace]


def parse_tree(text: Any):
    """A tree shape from the stepper's text box: "3,2,1" (widths per depth) or "dynamic 8" (EAGLE-2,
    budget 8). Raises ValueError with a message for the user."""
    from ..tree import DynamicTree, TreeSpec
    if not isinstance(text, str) or not text.strip():
        raise ValueError('Type a tree: widths per depth like "3,2,1", or "dynamic 8" for a dynamic tree of 8 nodes.')
    words = text.replace(",", " ").split()
    try:
        if words[0].lower() == "dynamic":
            return DynamicTree(budget=int(words[1]) if len(words) > 1 else 8)
        return TreeSpec.from_widths(tuple(int(w) for w in words))
    except (ValueError, TypeError, IndexError) as err:
        raise ValueError(f'"{text}" is not a tree: {err}. Try "3,2,1" or "dynamic 8".') from None


def tree_trace_fn(model, max_new_tokens: int = 24) -> TreeTraceFn:
    """A trace producer backed by mtp_edu.tree.tree_generate."""
    def run(prompt_ids, tree, rule, temperature, seed):
        from ..tree import tree_generate
        return tree_generate(model, prompt_ids, max_new_tokens, tree=tree, rule=rule, temperature=temperature,
                             seed=seed)[1]
    return run


@dataclass
class TreeStepperState:
    """Replays a TreeTrace one verification step at a time. Changing a control (prompt, tree, rule,
    temperature, seed) resets it; the trace is computed on the first `step()` after that, by
    `trace_fn(prompt_ids, tree_shape, rule, temperature, seed)`. `load_trace` replays a recorded trace.
    Setters never raise on user input: a problem becomes a message in the view."""
    trace_fn: TreeTraceFn | None = None
    tokenizer: Any = field(default_factory=ByteTokenizer)
    vocab_size: int = 256
    max_prompt_tokens: int = 64
    prompt: str = "The cat sat on the mat. The cat"
    tree: str = "3,2,1"
    rule: str = "greedy"
    temperature: float = 0.0
    seed: int = 0
    trace: TreeTrace | None = None
    shown: int = 0
    error: str = ""
    svg: bool = True                       # draw the current step with Graphviz when `dot` is installed

    @classmethod
    def for_model(cls, model, tokenizer=None, max_new_tokens: int = 24, **controls) -> "TreeStepperState":
        cfg = model.config
        return cls(trace_fn=tree_trace_fn(model, max_new_tokens), tokenizer=tokenizer or ByteTokenizer(),
                   vocab_size=cfg.vocab_size, max_prompt_tokens=max(1, cfg.max_seq_len - max_new_tokens - 2),
                   **controls)

    def set(self, **controls) -> None:
        for name, value in controls.items():
            if name not in ("prompt", "tree", "rule", "temperature", "seed"):
                raise TypeError(f"TreeStepperState has no control {name!r}")
            setattr(self, name, value)
        self.reset(keep_trace=False)

    def reset(self, keep_trace: bool = True) -> None:
        self.shown, self.error = 0, ""
        if not keep_trace:
            self.trace = None

    def load_trace(self, trace: TreeTrace, prompt_text: str | None = None) -> None:
        self.trace, self.rule, self.tree, self.shown, self.error = trace, trace.rule, trace.tree, 0, ""
        self.prompt = prompt_text if prompt_text is not None else decode_text(self.tokenizer, trace.prompt)

    def ensure_trace(self) -> bool:
        if self.trace is not None:
            return True
        self.error = ""
        try:
            shape = parse_tree(self.tree)
            if self.rule not in RULES:
                raise ValueError(f"rule {self.rule!r} is not one of {', '.join(RULES)}.")
            temperature = float(self.temperature)
            if not temperature >= 0:
                raise ValueError("temperature must be 0 (greedy) or more.")
            if self.rule == "greedy" and temperature > 0:
                raise ValueError("rule 'greedy' decodes at temperature 0: set it to 0, or pick rule 'sample'.")
            if not isinstance(self.prompt, str) or not self.prompt.strip():
                raise ValueError("Type a prompt to start.")
            ids = list(self.tokenizer.encode(self.prompt))[-self.max_prompt_tokens:]
            if not ids or any(not 0 <= i < self.vocab_size for i in ids):
                raise ValueError(f"The prompt must encode to tokens of this model's vocabulary "
                                 f"(V = {self.vocab_size}).")
            if self.trace_fn is None:
                raise ValueError("No model is connected: give the stepper a model, a trace_fn, or a recorded trace.")
            self.trace = self.trace_fn(ids, shape, self.rule, temperature, int(self.seed))
        except (ValueError, TypeError, RuntimeError) as err:
            self.error = str(err)
        return self.trace is not None

    def step(self) -> bool:
        """Reveal one more step; False at the end or on an error."""
        if not self.ensure_trace() or self.shown >= len(self.trace.steps):
            return False
        self.shown += 1
        return True

    @property
    def done(self) -> bool:
        return self.trace is not None and self.shown >= len(self.trace.steps)

    def stats_html(self) -> str:
        if self.trace is None or not self.shown:
            return ""
        t = self.trace
        part = TreeTrace(t.prompt, t.rule, t.draft_depth, t.steps[:self.shown], t.first_token, t.lossy, t.tree)
        rates = ", ".join("n/a" if a is None else f"{100 * a:.0f}%" for a in part.acceptance_per_depth())
        return (f'<div style="font-family:sans-serif;margin-top:6px"><span class="mtp-tau" style="font-weight:bold">'
                f'τ = {part.tau():.2f} tokens per verification forward</span>; <span class="mtp-tree-nodes">'
                f'{part.nodes_per_step():.1f} drafted nodes verified per step</span>; acceptance per depth: {rates} '
                f'(after {self.shown} step(s))</div>')

    def html(self) -> str:
        if self.error:
            return f'<div class="mtp-tree-stepper">{message_html(self.error, "warn")}</div>'
        if self.trace is None:
            return f'<div class="mtp-tree-stepper">{message_html("Press Step to draft a tree and verify it.")}</div>'
        t = self.trace
        text = output_html(self.tokenizer, t, self.shown)
        status = "finished" if self.done else f"step {self.shown} of {len(t.steps)}"
        head = (f'<div style="font-family:sans-serif;color:#57606a">tree = {html.escape(t.tree)}, rule = '
                f'{html.escape(t.rule)}{" (lossy rule)" if t.lossy else ""}; {status}. '
                f'<span style="color:{COLOURS["accepted"]}">accepted</span>, '
                f'<span style="color:{COLOURS["rejected"]}"><s>rejected</s></span>, '
                f'<span style="color:{COLOURS["untried"]}">not tried</span>, '
                f'<span style="color:{COLOURS["extra"]}">correction / bonus</span>.</div>')
        picture = ""
        if self.shown:
            step = t.steps[self.shown - 1]
            svg = tree_svg(step, self.tokenizer) if self.svg else None
            picture = (f'<div class="mtp-tree-svg">{svg}</div>' if svg else "") + tree_html(step, self.tokenizer)
        return f'<div class="mtp-tree-stepper">{head}{text}{picture}{self.stats_html()}</div>'


def tree_stepper(model=None, tokenizer: Any = None, *, trace: TreeTrace | None = None,
                 prompt: str = "The cat sat on the mat. The cat", tree: str = "3,2,1", rule: str = "greedy",
                 temperature: float = 0.0, max_new_tokens: int = 24, svg: bool = True):
    """The tree stepper widget: prompt, tree ("3,2,1" or "dynamic 8"), rule, temperature; Step and Reset.
    Give a `model` (drafts with tree_generate) or a recorded `trace`. Displayed outside a live kernel it
    shows its current view as static HTML (the Explorer's text/html snapshot)."""
    import ipywidgets as W

    from .widgets import Explorer, _classed, _guard, _safe
    if model is not None:
        state = TreeStepperState.for_model(model, tokenizer, max_new_tokens, prompt=prompt, tree=tree, rule=rule,
                                           temperature=temperature, svg=svg)
    else:
        state = TreeStepperState(prompt=prompt, tree=tree, rule=rule, temperature=temperature, svg=svg,
                                 **({"tokenizer": tokenizer} if tokenizer is not None else {}))
    if trace is not None:
        state.load_trace(trace)
    controls = {
        "prompt": _classed(W.Textarea(value=state.prompt, description="prompt", rows=2,
                                      layout=W.Layout(width="30em")), "mtp-prompt"),
        "tree": _classed(W.Text(value=state.tree, description="tree"), "mtp-tree-shape"),
        "rule": _classed(W.Dropdown(options=list(RULES), value=state.rule, description="rule"), "mtp-rule"),
        "temperature": _classed(W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.1,
                                              description="temperature"), "mtp-temperature"),
    }
    view = _classed(W.HTML(), "mtp-view")
    update = _guard(view, state.html)

    def on_control(_):
        state.set(**{name: c.value for name, c in controls.items()})
        update()

    def on_step(_):
        state.step()
        update()

    def on_reset(_):
        state.reset()
        update()

    for c in controls.values():
        c.observe(on_control, names="value")
    step_b = _classed(W.Button(description="Step", icon="step-forward"), "mtp-step-button")
    reset_b = _classed(W.Button(description="Reset", icon="undo"), "mtp-reset-button")
    step_b.on_click(_safe(on_step, view))
    reset_b.on_click(_safe(on_reset, view))
    update()
    ex = Explorer(state, controls, view, extra=[W.HBox([step_b, reset_b])])
    ex.buttons = {"step": step_b, "reset": reset_b}
    return ex


__all__ = ["tree_diagram", "tree_svg", "tree_html", "mask_heatmap", "parse_tree", "tree_trace_fn",
           "TreeStepperState", "tree_stepper"]
