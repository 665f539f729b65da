"""Token-shift tables: the one place that does MTP's index arithmetic (docs/design.md).

A training chunk holds t_1 .. t_{T+1}; the model reads t_1 .. t_T and is given the next tokens
t_2 .. t_{T+1} as `targets` (nanoGPT's `(idx, targets)`). At depth k (k = 0 is the main model) and
position i = 1 .. T-k (DeepSeek-V3 eqs. 21-22):

    module k reads   Emb(t_{i+k})  and  h^{k-1}_i        (k >= 1; depth 0 reads t_i)
    depth k predicts t_{i+k+1}

So depth k keeps T-k positions: its inputs are `input_ids[:, k:]` and its targets `targets[:, k:]`.
`depth_inputs` and `depth_targets` say exactly that; the model, the loss and `shift_table` all use them.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from .checks import check_int

PAD = "PAD"
DEPTH_COLOURS = ("#cfe2ff", "#d1e7dd", "#fff3cd", "#f8d7da", "#e2d9f3", "#d2f4ea", "#fde2c8", "#e9ecef")


def depth_inputs(input_ids: torch.Tensor, k: int) -> torch.Tensor:
    """Tokens depth k embeds: t_{i+k} for i = 1..T-k (eq. 21's Emb(t_{i+k})). Shape [..., T-k]."""
    return input_ids[..., k:]


def depth_targets(targets: torch.Tensor, k: int) -> torch.Tensor:
    """Targets of depth k: t_{i+k+1} for i = 1..T-k (eq. 24), from targets = t_2..t_{T+1}. [..., T-k]."""
    return targets[..., k:]


def check_length(T: int, depth: int) -> None:
    """Every depth needs at least one position: T >= D + 1, i.e. a chunk of >= D + 2 tokens."""
    if T < depth + 1:
        raise ValueError(
            f"sequence too short for mtp_depth={depth}: the model reads T={T} token(s), but depth {depth} "
            f"needs T >= {depth + 1} (a chunk of at least D + 2 = {depth + 2} tokens t_1..t_(T+1))")


@dataclass(repr=False)
class ShiftTable:
    """What each position reads and predicts at each depth; `None` marks a masked (PAD) cell.

    inputs[k][i-1]  : the token depth k embeds at position i (t_{i+k}), or None past the end
    hidden[k][i-1]  : the hidden state it also reads ("h^{k-1}_i"), depth >= 1 only
    targets[k][i-1] : the token it must predict (t_{i+k+1}), or None past the end
    """
    tokens: list
    depth: int
    positions: list[int]
    inputs: list[list[Any]]
    hidden: list[list[str | None]]
    targets: list[list[Any]]

    def _label(self, k: int) -> str:
        return "main model" if k == 0 else f"MTP module {k}"

    def to_text(self, fmt: Callable[[Any], str] = str) -> str:
        """A plain-text table: one 'reads' and one 'predicts' row per depth, PAD past the end (or <PAD>
        when a real token reads 'PAD': padding never looks like a token)."""
        pad = PAD
        shown = {fmt(t) for row in self.inputs + self.targets for t in row if t is not None}
        while pad in shown:
            pad = f"<{pad}>"

        def cell(x):
            return pad if x is None else fmt(x)
        rows = [["", "position"] + [str(i) for i in self.positions]]
        for k in range(self.depth + 1):
            reads = [cell(t) if k == 0 or t is None else f"{cell(t)}+{h}"
                     for t, h in zip(self.inputs[k], self.hidden[k])]
            rows.append([self._label(k), "reads"] + reads)
            rows.append(["", "predicts"] + [cell(t) for t in self.targets[k]])
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows)

    def to_html(self, fmt: Callable[[Any], str] = str) -> str:
        """An HTML table: one colour per depth, masked cells greyed and labelled PAD."""
        def td(x, colour, extra=""):
            if x is None:
                return ('<td style="background:#eeeeee;color:#999999;border:1px solid #ccc;'
                        'padding:2px 6px" class="mtp-pad">PAD</td>')
            return (f'<td style="background:{colour};border:1px solid #ccc;padding:2px 6px">'
                    f"{html.escape(fmt(x))}{extra}</td>")
        head = "".join(f'<th style="padding:2px 6px">{i}</th>' for i in self.positions)
        out = ['<table class="mtp-shift-table" style="border-collapse:collapse;font-family:monospace">',
               f'<tr><th></th><th style="padding:2px 6px">position i</th>{head}</tr>']
        for k in range(self.depth + 1):
            colour = DEPTH_COLOURS[k % len(DEPTH_COLOURS)]
            label = html.escape(self._label(k))
            reads = "".join(td(t, colour, "" if k == 0 or h is None else
                               f'<sub style="color:#555"> + {html.escape(h)}</sub>')
                            for t, h in zip(self.inputs[k], self.hidden[k]))
            preds = "".join(td(t, colour) for t in self.targets[k])
            out.append(f'<tr class="mtp-depth-{k}"><th rowspan="2" style="background:{colour};'
                       f'padding:2px 6px">{label}</th><td>reads</td>{reads}</tr>')
            out.append(f'<tr class="mtp-depth-{k}"><td>predicts</td>{preds}</tr>')
        out.append("</table>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return self.to_text()


def _token_list(tokens: Any) -> list:
    """tokens as a list: any ordered sequence (list, tuple, str, range, 1-d tensor) of tokens that are not None.

    None is refused, not drawn: it is how a ShiftTable marks the cells past the end (PAD), so a None
    token would be indistinguishable from padding in `inputs` / `targets`, not only on screen."""
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1 or tokens.is_meta:
            raise ValueError(f"tokens must be a 1-d sequence t_1..t_(T+1); got a {tokens.dim()}-d "
                             f"{'meta ' if tokens.is_meta else ''}tensor")
        return tokens.tolist()
    if tokens is None or isinstance(tokens, (set, frozenset, dict)) or not isinstance(tokens, Iterable):
        raise TypeError(f"tokens must be a sequence t_1..t_(T+1) (a list, tuple, str or 1-d tensor); "
                        f"got {type(tokens).__name__}")
    tokens = list(tokens)
    if any(t is None for t in tokens):
        raise ValueError(f"tokens[{tokens.index(None)}] is None; a shift table uses None for its padding cells "
                         f"(PAD), so a token cannot be None (use a string such as 'None' to show one)")
    return tokens


def shift_table(tokens: Sequence[Any], depth: int, positions: str = "all") -> ShiftTable:
    """The token-shift table of a chunk t_1..t_{T+1} for depths k = 0..depth.

    positions="all" shows i = 1..T with PAD where depth k has no position (i > T-k; the 'Complete
    Guide' tutorial's targets matrix); positions="common" keeps only i = 1..T-depth, where every depth
    is valid (the DeepSeek-V3 MTP figure's table). The cells are built with `depth_inputs` /
    `depth_targets`, the same functions the model and the loss use.
    """
    tokens = _token_list(tokens)
    check_int("depth", depth, minimum=0)
    if positions not in ("all", "common"):
        raise ValueError(f"positions={positions!r} is not allowed: must be 'all' or 'common'")
    T = len(tokens) - 1
    check_length(T, depth)
    index = torch.arange(T + 1)
    width = T if positions == "all" else T - depth
    inputs, hidden, targets = [], [], []
    for k in range(depth + 1):
        reads = depth_inputs(index[:T], k).tolist()
        wants = depth_targets(index[1:], k).tolist()
        pad = [None] * (width - len(reads))
        inputs.append(([tokens[j] for j in reads] + pad)[:width])
        targets.append(([tokens[j] for j in wants] + pad)[:width])
        hidden.append(([None if k == 0 else f"h{k - 1}_{i + 1}" for i in range(len(reads))] + pad)[:width])
    return ShiftTable(tokens, depth, list(range(1, width + 1)), inputs, hidden, targets)
