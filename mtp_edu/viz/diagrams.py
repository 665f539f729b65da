"""Graphviz diagrams drawn from the live model: the architecture, the loss flow and the token flow.

Every function returns a `graphviz.Digraph` (a `Diagram`), which renders inline in Jupyter and saves
as SVG or PNG with `save(diagram, path)`. Nothing is drawn by hand: the boxes come from the model's
modules, the parameter counts from `model.param_counts()`, the loss weights from `depth_weights`,
and the token rows from `shift_table`. The output is deterministic (fixed node order, no
timestamps), so the committed `diagrams/` folder can be compared byte for byte with
`write_diagrams()`'s output.

Colours follow the DeepSeek-V3 MTP figure: shared parts (Embedding Layer, Output Head) green and linked by
dotted green "Shared" edges, learned blocks yellow, each depth in a dashed blue box.

pip's `graphviz` package only writes the DOT text; rendering needs Graphviz's `dot` program
(`require_dot` says how to install it when it is missing).
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any, Sequence

import graphviz

from ..config import MTP_STYLES, MTPConfig
from ..losses import REDUCTIONS, depth_weights
from ..model import MTPModel
from ..shifts import shift_table
from .tokens import show_token

FONT = "Helvetica"
GREEN = {"fillcolor": "#d5e8d4", "color": "#82b366"}           # shared: Embedding Layer, Output Head
YELLOW = {"fillcolor": "#fff2cc", "color": "#d6b656"}          # learned blocks
WHITE = {"fillcolor": "#ffffff", "color": "#666666"}           # norms, concatenation
RED = {"fillcolor": "#f8cecc", "color": "#b85450"}             # losses
BLUE = "#6c8ebf"                                               # dashed depth boxes
SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")
SUBSCRIPT = str.maketrans("0123456789-+", "₀₁₂₃₄₅₆₇₈₉₋₊")

INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH. The pip package `graphviz` only writes DOT text; "
    "to render diagrams install Graphviz itself:\n"
    "  Debian/Ubuntu: sudo apt-get install graphviz\n"
    "  macOS:         brew install graphviz\n"
    "  conda:         conda install -c conda-forge graphviz\n"
    "  Windows/other: https://graphviz.org/download/ (then put its bin/ folder on PATH)\n"
    "The DOT source is still available as `diagram.source`.")


class GraphvizNotFound(RuntimeError):
    """Raised when a diagram must be rendered but Graphviz's `dot` is not installed."""


def require_dot() -> str:
    """The path of Graphviz's `dot`, or GraphvizNotFound with installation instructions."""
    path = shutil.which("dot")
    if path is None:
        raise GraphvizNotFound(INSTALL_HINT)
    return path


class Diagram(graphviz.Digraph):
    """A graphviz.Digraph whose inline rendering says how to install Graphviz when `dot` is missing."""

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        require_dot()
        return super()._repr_mimebundle_(include=include, exclude=exclude, **kwargs)


def render(diagram: graphviz.Digraph, fmt: str = "svg") -> bytes:
    """Render with `dot` (svg, png, pdf, ...) and return the bytes."""
    require_dot()
    try:
        return diagram.pipe(format=fmt)
    except graphviz.ExecutableNotFound as err:                  # dot vanished between check and call
        raise GraphvizNotFound(INSTALL_HINT) from err


def save(diagram: graphviz.Digraph, path: str | Path) -> Path:
    """Write the diagram to `path`; the format comes from the suffix (.svg, .png, .pdf or .dot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    if fmt in ("dot", "gv"):
        path.write_text(diagram.source, encoding="utf-8")
    else:
        path.write_bytes(render(diagram, fmt))
    return path


# ---- small label helpers ------------------------------------------------------------------------
def sup(n: Any) -> str:
    return str(n).translate(SUPERSCRIPT)


def sub(n: Any) -> str:
    return str(n).translate(SUBSCRIPT)


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _box(title: str, *lines: str) -> str:
    """An HTML-like graphviz label: a bold title and small grey lines under it."""
    rows = [f"<B>{_esc(title)}</B>"] + [f'<FONT POINT-SIZE="9" COLOR="#444444">{_esc(x)}</FONT>' for x in lines]
    return "<" + "<BR/>".join(rows) + ">"


def _params(n: int) -> str:
    return f"{n:,} params"


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _new(name: str, rankdir: str = "BT", **graph_attr) -> Diagram:
    g = Diagram(name=name)
    g.attr(**{"rankdir": rankdir, "newrank": "true", "fontname": FONT, "nodesep": "0.3", "ranksep": "0.35",
              **graph_attr})
    g.attr("node", fontname=FONT, fontsize="11", shape="box", style="rounded,filled", margin="0.12,0.05")
    g.attr("edge", fontname=FONT, fontsize="9", color="#333333")
    return g


def _token_row(caption: str, tokens: Sequence[str]) -> str:
    """A row of token cells with a caption (Input Tokens / Target Tokens), as an HTML-like table."""
    cells = "".join(f'<TD BGCOLOR="#ffffff">{_esc(t)}</TD>' for t in tokens)
    return (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
            f'<TR><TD COLSPAN="{len(tokens)}" BORDER="0"><I>{_esc(caption)}</I></TD></TR>'
            f"<TR>{cells}</TR></TABLE>>")


def _header(k: int, style: str) -> str:
    what = f"Next{sup(k + 1)} Token Prediction" if k else "Next Token Prediction"
    title = "Main Model" if k == 0 else f"MTP Module {k}"
    kind = {"sequential": "", "parallel": " · parallel head", "linear": " · linear head"}[style] if k else ""
    return f"<<B>{_esc(title)}</B><BR/><I>({_esc(what)}{_esc(kind)})</I>>"


def _tl(k: int) -> str:
    """The number of positions depth k keeps: T, T−1, T−2, ..."""
    return "T" if k == 0 else f"T−{k}"


def _shape(k: int, width: Any) -> str:
    return f"[B, {_tl(k)}, {width}]"


def _loss_name(k: int) -> str:
    return "L_Main" if k == 0 else f"L_MTP^{k}"


def _as_model(model_or_config: MTPModel | MTPConfig | None) -> MTPModel:
    if model_or_config is None:
        model_or_config = MTPConfig()
    if isinstance(model_or_config, MTPConfig):
        return MTPModel(model_or_config)
    if not isinstance(model_or_config, MTPModel):
        raise TypeError(f"expected an MTPModel or MTPConfig; got {type(model_or_config).__name__}")
    return model_or_config


# ---- architecture ---------------------------------------------------------------------------------
def architecture_diagram(model: MTPModel | MTPConfig | None = None, *, n_positions: int = 4) -> Diagram:
    """The architecture of `model` (or of a freshly built model for a config), as in
    the DeepSeek-V3 MTP figure.

    Main model: Input Tokens -> Embedding Layer -> Transformer Block x L -> RMSNorm -> Output Head ->
    Cross-Entropy Loss (L_Main) against the Target Tokens. Each MTP module k, by `mtp_style`:

    - sequential (DeepSeek-V3): Embedding Layer (shared) of t_{i+k} -> RMSNorm [enorm], h^{k-1}_i ->
      RMSNorm [hnorm], concatenation -> Linear Projection M_k [eh_proj] -> Transformer Block ->
      RMSNorm [norm] -> Output Head (shared) -> Cross-Entropy Loss (L_MTP^k);
    - parallel (Meta 2024): h^0_i -> Transformer Block -> RMSNorm -> Output Head; no token input;
    - linear (Medusa-like): h^0_i + SiLU(W_k h^0_i) -> RMSNorm -> Output Head; no token input.

    Edges carry tensor shapes, nodes their parameter counts; the token rows show `n_positions`
    positions of a chunk t_1..t_{n+D+1}, taken from `shift_table(..., positions="common")`.
    """
    model = _as_model(model)
    cfg, counts = model.config, model.param_counts()
    D, style, d, V, L = cfg.mtp_depth, cfg.mtp_style, cfg.d_model, cfg.vocab_size, cfg.n_layers
    names = [f"t{sub(i)}" for i in range(1, n_positions + D + 2)]
    table = shift_table(names, D, positions="common")
    g = _new(f"mtp_architecture_{style}_D{D}")
    tied = "tied to the embedding: 0 extra params" if cfg.tie_embeddings else _params(counts["output_head"])
    g.attr(label=_box(f"mtp-edu architecture: mtp_style={style}, D={D}",
                      f"L={L} blocks, d={d}, V={V}, total {_params(counts['total'])} "
                      f"(trunk {counts['trunk']:,}, embedding {counts['embedding']:,}"
                      + "".join(f", module {k} {counts[f'mtp_{k}']:,}" for k in range(1, D + 1)) + ")"),
           labelloc="t")

    def common_top(c, k: int, src: str, width: str) -> None:
        """Output Head (shared) -> Cross-Entropy Loss <- Target Tokens, for depth k."""
        c.node(f"head{k}", _box("Output Head", "shared by every depth",
                                f"out_head: {d}→{V}, {tied}"), **GREEN)
        c.edge(src, f"head{k}", label=" " + _shape(k, width))
        c.node(f"ce{k}", _box("Cross-Entropy Loss", f"→ {_loss_name(k)}"), **RED)
        c.edge(f"head{k}", f"ce{k}", label=" logits " + _shape(k, f"V={V}"))
        c.node(f"tgt{k}", _token_row("Target Tokens", table.targets[k]), shape="plaintext", style="")
        c.edge(f"ce{k}", f"tgt{k}", dir="back", label=" " + f"[B, {_tl(k)}]")

    with g.subgraph(name="cluster_main") as c:
        c.attr(label=_header(0, style), labelloc="b", style="dashed,rounded", color=BLUE, penwidth="1.5")
        c.node("in0", _token_row("Input Tokens", table.inputs[0]), shape="plaintext", style="")
        c.node("emb0", _box("Embedding Layer", f"embed: V×d = {V}×{d}", _params(counts["embedding"])), **GREEN)
        c.edge("in0", "emb0", label=" [B, T]")
        c.node("trunk", _box("Transformer Block × L", f"L = {L} pre-norm blocks (attn + SwiGLU)",
                             _params(_numel(model.blocks))), **YELLOW)
        c.edge("emb0", "trunk", label=" " + _shape(0, d))
        c.node("norm0", _box("RMSNorm", "final norm", _params(_numel(model.norm))), **WHITE)
        c.edge("trunk", "norm0", label=" " + _shape(0, d))
        common_top(c, 0, "norm0", f"d={d}")

    for k in range(1, D + 1):
        module = model.mtp[k - 1]
        prev = "norm0" if (k == 1 or style != "sequential") else f"block{k - 1}"
        h_name = f"h{sup(k - 1)}" if style == "sequential" else "h⁰"
        with g.subgraph(name=f"cluster_mtp{k}") as c:
            c.attr(label=_header(k, style), labelloc="b", style="dashed,rounded", color=BLUE, penwidth="1.5")
            c.attr(tooltip=f"MTP module {k}: {counts[f'mtp_{k}']:,} params")
            if style == "sequential":
                c.node(f"in{k}", _token_row("Input Tokens", table.inputs[k]), shape="plaintext", style="")
                c.node(f"emb{k}", _box("Embedding Layer", "shared with the main model", "0 extra params"), **GREEN)
                c.edge(f"in{k}", f"emb{k}", label=f" [B, {_tl(k)}]")
                c.node(f"enorm{k}", _box("RMSNorm", "enorm (embedding)", _params(_numel(module.enorm))), **WHITE)
                c.node(f"hnorm{k}", _box("RMSNorm", f"hnorm ({h_name})", _params(_numel(module.hnorm))), **WHITE)
                c.edge(f"emb{k}", f"enorm{k}", label=" " + _shape(k, d))
                c.node(f"cat{k}", _box("concatenation", f"[enorm(Emb(t_(i+{k}))) ; hnorm({h_name}_i)]"),
                       shape="ellipse", style="filled", **{k2: v for k2, v in WHITE.items()})
                c.edge(f"enorm{k}", f"cat{k}", label=" " + _shape(k, d))
                c.edge(f"hnorm{k}", f"cat{k}", label=" " + _shape(k, d))
                c.node(f"proj{k}", _box(f"Linear Projection M{sub(k)}", f"eh_proj: 2d→d = {2 * d}→{d}, no bias",
                                        _params(_numel(module.eh_proj))), **YELLOW)
                c.edge(f"cat{k}", f"proj{k}", label=" " + _shape(k, f"2d={2 * d}"))
                c.node(f"block{k}", _box("Transformer Block", f"TRM{sub(k)}: one pre-norm block",
                                         _params(_numel(module.block))), **YELLOW)
                c.edge(f"proj{k}", f"block{k}", label=" " + _shape(k, d))
                last = f"block{k}"
            elif style == "parallel":
                c.node(f"bus{k}", "", shape="point", width="0.09", color="#333333")
                c.node(f"block{k}", _box("Transformer Block", f"TRM{sub(k)} on h⁰ (no token input)",
                                         _params(_numel(module.block))), **YELLOW)
                last = f"block{k}"
            else:
                c.node(f"bus{k}", "", shape="point", width="0.09", color="#333333")
                c.node(f"proj{k}", _box(f"Linear Projection W{sub(k)}", f"proj: d→d = {d}→{d}, zero-initialised",
                                        _params(_numel(module.proj))), **YELLOW)
                c.node(f"res{k}", _box("residual add", "h⁰ + SiLU(W h⁰) (no token input)"),
                       shape="ellipse", style="filled", **WHITE)
                c.edge(f"proj{k}", f"res{k}", label=" SiLU " + _shape(k, d))
                last = f"res{k}"
            c.node(f"norm{k}", _box("RMSNorm", f"norm (Norm{sub(k)})", _params(_numel(module.norm))), **WHITE)
            c.edge(last, f"norm{k}", label=" " + _shape(k, d))
            common_top(c, k, f"norm{k}", f"d={d}")

        # the hidden state that feeds module k, drawn across the boxes as in the figure. Written
        # target -> source with dir=back: that keeps the boxes in the order 0, 1, .., D without
        # stretching the ranks (a constraint=false edge lets dot reorder the boxes).
        if style == "sequential":
            g.edge(f"hnorm{k}", prev, dir="back", weight="0", label=f" {h_name} " + _shape(k, d), penwidth="1.6")
        else:
            # parallel / linear: one h^0 bus through every module; module k reads its first T−k positions
            if k == 1:
                g.edge("bus1", "norm0", dir="back", weight="0", label=" h⁰ " + _shape(0, d), penwidth="1.6")
            else:                                           # a flat edge: the buses share one rank
                g.edge(f"bus{k - 1}", f"bus{k}", label=" h⁰ " + _shape(0, d), penwidth="1.6")
            first = f"block{k}" if style == "parallel" else f"proj{k}"
            g.edge(f"bus{k}", first, label=f" h⁰ first {_tl(k)} " + _shape(k, d), penwidth="1.6")
            if style == "linear":
                g.edge(f"bus{k}", f"res{k}", label=" residual", style="dashed")

    # shared weights: dotted green "Shared" links, and matching ranks across the boxes
    shared = [("emb", range(0, D + 1) if style == "sequential" else [])] + [("head", range(0, D + 1))]
    for part, ks in shared:
        ks = list(ks)
        for a, b in zip(ks, ks[1:]):
            g.edge(f"{part}{a}", f"{part}{b}", label="Shared", style="dotted", color="#82b366",
                   fontcolor="#4d7a3a", penwidth="2", dir="none", constraint="false")
    _align(g, ("in", "tgt", "ce", "head", "bus"),
           lambda part, k: {"in": k == 0 or style == "sequential", "bus": k >= 1 and style != "sequential"}
           .get(part, True), D)
    return g


def _align(g: Diagram, parts: Sequence[str], keep, D: int) -> None:
    """Put part0, part1, ... on one rank, left to right (invisible edges fix the order of the boxes)."""
    for part in parts:
        members = [f"{part}{k}" for k in range(D + 1) if keep(part, k)]
        with g.subgraph() as s:
            s.attr(rank="same")
            for m in members:
                s.node(m)
            for a, b in zip(members, members[1:]):
                s.edge(a, b, style="invis")


# ---- loss flow --------------------------------------------------------------------------------------
def loss_flow_diagram(model: MTPModel | MTPConfig | None = None, *, mtp_loss_scale: Any = None,
                      step: int = 0, reduction: str = "valid") -> Diagram:
    """Which logits meet which targets, each depth's cross-entropy, the weights lambda/D and the sum.

    L = L_Main + (lambda / D) * sum_k L_MTP^k (DeepSeek-V3 eq. 25). `mtp_loss_scale` defaults to the
    config's lambda and may be a schedule (evaluated at `step`); the weights come from `depth_weights`.
    `reduction` is "valid" (divide by the number of valid targets, Megatron-core) or "paper" (by T).
    """
    cfg = model.config if isinstance(model, MTPModel) else (model or MTPConfig())
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not allowed: must be one of {', '.join(REDUCTIONS)}")
    D, V = cfg.mtp_depth, cfg.vocab_size
    lam = cfg.mtp_loss_scale if mtp_loss_scale is None else mtp_loss_scale
    weights = depth_weights(D, lam, step)
    lam_text = (f"λ = {lam:g}" if isinstance(lam, (int, float)) else f"λ schedule {type(lam).__name__} at step {step}")
    g = _new(f"mtp_loss_flow_D{D}", rankdir="LR")
    divide = "÷ (number of valid targets: T−k per row, fewer with ignore_index)" if reduction == "valid" \
        else "÷ T (eq. 24 as printed, the same T for every depth)"
    formula = "L = L_Main" + ("" if D == 0 else " + (λ/D) · Σₖ L_MTP^k")
    g.attr(label=_box(f"Loss flow, D={D}, {lam_text}, reduction='{reduction}'", formula,
                      f"cross-entropy sum over positions, then {divide}"), labelloc="t")
    g.node("total", _box("Total loss L", formula), **RED)
    g.node("sum", "Σ", shape="circle", style="filled", **WHITE)
    g.edge("sum", "total")
    for k in range(D + 1):
        with g.subgraph(name=f"cluster_depth{k}") as c:
            c.attr(label=_header(k, cfg.mtp_style), style="dashed,rounded", color=BLUE)
            c.node(f"logits{k}", _box(f"logits P{sup(k)}", f"[B, {_tl(k)}, V={V}]",
                                      f"predicts t_(i+{k + 1}), i = 1..{_tl(k)}"), **GREEN)
            c.node(f"tgt{k}", _box("Target Tokens", f"targets[:, {k}:] = t{sub(k + 2)} .. t_(T+1)", f"[B, {_tl(k)}]"),
                   shape="box", style="rounded", color="#666666")
            per = f"÷ (number of valid targets ≤ B·({_tl(k)}))" if reduction == "valid" else "÷ (B·T)"
            c.node(f"ce{k}", _box("Cross-Entropy Loss", f"Σ over b, i of −log P{sup(k)}_(i+{k + 1})[t_(i+{k + 1})]",
                                  per), **RED)
            c.edge(f"logits{k}", f"ce{k}")
            c.edge(f"tgt{k}", f"ce{k}")
            c.node(f"L{k}", _loss_name(k), shape="plaintext", style="", fontsize="12")
            c.edge(f"ce{k}", f"L{k}")
        w = weights[k]
        wlabel = "× 1" if k == 0 else f"× λ/D = {w * D:g}/{D} = {w:.4g}"
        g.edge(f"L{k}", "sum", label=" " + wlabel)
    return g


# ---- token flow -------------------------------------------------------------------------------------
def token_flow_diagram(tokens: Sequence[Any], depth: int, *, style: str = "sequential",
                       tokenizer: Any = None) -> Diagram:
    """For a concrete short chunk t_1..t_{T+1}: which token each depth reads and which it predicts.

    A grid: one row (dashed box) per depth k, one card per position i holding the token read
    (t_{i+k}; main model and sequential modules only), the hidden state h^k_i and the target
    t_{i+k+1}, with PAD past the end (the 'Complete Guide' tutorial's targets matrix). Arrows
    h^{k-1}_i -> h^k_i show the causal chain (sequential); parallel and linear heads read h^0_i
    instead. The cells are `shift_table(tokens, depth)`'s, so the picture and the model cannot
    disagree.
    """
    if style not in MTP_STYLES:
        raise ValueError(f"style={style!r} is not allowed: must be one of {', '.join(MTP_STYLES)}")
    tokens = list(tokens)
    table = shift_table(tokens, depth)
    index = shift_table(list(range(1, len(tokens) + 1)), depth)          # the same table, of indices
    g = _new(f"mtp_token_flow_{style}_D{depth}", rankdir="TB", nodesep="0.12", ranksep="0.6")
    text = lambda t: t if isinstance(t, str) else show_token(t, tokenizer)
    shown = "".join(text(t) for t in tokens)
    reads = {"sequential": "t_(i+k) and h^(k−1)_i", "parallel": "h^0_1..h^0_i (no token)",
             "linear": "h^0_i only (no token)"}[style]
    g.attr(label=_box(f"Token flow, D={depth}, mtp_style={style}", f"chunk t₁..t{sub(len(tokens))} = {shown!r}",
                      f"depth k ≥ 1 at position i reads {reads} (main model: t_i), "
                      f"predicts t_(i+k+1)"), labelloc="t")

    def card(k: int, i: int) -> str:
        inp, tgt = table.inputs[k][i], table.targets[k][i]
        if tgt is None:
            return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4" COLOR="#aaaaaa">' \
                   '<TR><TD><FONT COLOR="#999999">PAD</FONT></TD></TR></TABLE>>'
        pos = table.positions[i]
        rows = []
        if k == 0 or style == "sequential":
            rows.append(("#d5e8d4", f"reads t{sub(index.inputs[k][i])} {text(inp)}"))
        else:
            rows.append(("#dae8fc", f"reads h⁰{sub(pos)}"))
        rows.append(("#fff2cc", f"h{sup(k)}{sub(pos)}"))
        rows.append(("#f8cecc", f"→ t{sub(index.targets[k][i])} {text(tgt)}"))
        cells = "".join(f'<TR><TD BGCOLOR="{c}">{_esc(x)}</TD></TR>' for c, x in rows)
        return f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">{cells}</TABLE>>'

    for k in range(depth + 1):
        with g.subgraph(name=f"cluster_tok{k}") as c:
            c.attr(label=_header(k, style).replace("<BR/>", " "), style="dashed,rounded", color=BLUE, labeljust="l")
            names = [f"c{k}_{pos}" for pos in table.positions]
            with c.subgraph() as row:
                row.attr(rank="same")
                for i, name in enumerate(names):
                    row.node(name, card(k, i), shape="plaintext", style="")
                for a, b in zip(names, names[1:]):                # positions 1..T, left to right
                    row.edge(a, b, style="invis")
    if style == "sequential":                                      # h^(k-1)_i -> h^k_i, column by column
        for k in range(1, depth + 1):
            for i, pos in enumerate(table.positions):
                live = table.targets[k][i] is not None
                g.edge(f"c{k - 1}_{pos}", f"c{k}_{pos}", color="#6c8ebf" if live else "invis", penwidth="1.4",
                       label=f" h{sup(k - 1)}{sub(pos)}" if live else "", fontcolor="#6c8ebf")
    else:                                                          # every head reads h^0: one arrow per row
        g.attr(compound="true")
        for k in range(1, depth + 1):
            g.edge(f"c{k - 1}_1", f"c{k}_1", style="invis")
            g.edge(f"c0_{table.positions[-1]}", f"c{k}_{table.positions[-1]}", ltail="cluster_tok0",
                   lhead=f"cluster_tok{k}", color="#6c8ebf", penwidth="1.4", fontcolor="#6c8ebf",
                   label=f" h⁰ at i = 1..{_tl(k)}", constraint="false")
    return g


# ---- the committed diagrams/ folder -------------------------------------------------------------------
TOKEN_FLOW_EXAMPLE = ("The", " cat", " sat", " on", " the", " mat", ".")


def diagram_set() -> dict[str, Diagram]:
    """Every committed diagram by file stem: architecture for D = 1, 2, 3 and each style (default
    MTPConfig otherwise: L=4, d=128, V=256), the loss flow for D = 1, 2, 3, the token flow of the
    'Complete Guide' tutorial's sentence for D = 2 (each style) and D = 3 (sequential)."""
    out = {}
    for D in (1, 2, 3):
        for style in MTP_STYLES:
            out[f"architecture_{style}_D{D}"] = architecture_diagram(MTPConfig(mtp_depth=D, mtp_style=style))
    for D in (1, 2, 3):
        out[f"loss_flow_D{D}"] = loss_flow_diagram(MTPConfig(mtp_depth=D))
    for style in MTP_STYLES:
        out[f"token_flow_{style}_D2"] = token_flow_diagram(TOKEN_FLOW_EXAMPLE, 2, style=style)
    out["token_flow_sequential_D3"] = token_flow_diagram(TOKEN_FLOW_EXAMPLE, 3)
    return out


def write_diagrams(out_dir: str | Path = "diagrams") -> list[Path]:
    """Regenerate the diagrams folder: for each diagram its `.dot` source and its `.svg` (sorted names).

    This is what `mtp-edu diagrams [--out DIR]` runs; a test checks that the committed folder equals it.
    """
    require_dot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, diagram in sorted(diagram_set().items()):
        written.append(save(diagram, out_dir / f"{stem}.dot"))
        written.append(save(diagram, out_dir / f"{stem}.svg"))
    return written
