"""Shift tables: the DeepSeek-V3 MTP figure's table and the 'Complete Guide' tutorial's targets matrix cell for
cell, the index rule for any length, and the model's use of it."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtp_edu import shift_table
from mtp_edu.config import MTP_STYLES
from mtp_edu.shifts import PAD

from conftest import tiny_model


def test_deepseek_figure_table():
    # the DeepSeek-V3 MTP figure (docs/references.md): Main t1..t4 -> t2..t5; module 1 t2..t5 -> t3..t6;
    # module 2 t3..t6 -> t4..t7
    tbl = shift_table([f"t{j}" for j in range(1, 8)], depth=2, positions="common")
    assert tbl.positions == [1, 2, 3, 4]
    assert tbl.inputs == [["t1", "t2", "t3", "t4"], ["t2", "t3", "t4", "t5"], ["t3", "t4", "t5", "t6"]]
    assert tbl.targets == [["t2", "t3", "t4", "t5"], ["t3", "t4", "t5", "t6"], ["t4", "t5", "t6", "t7"]]
    assert tbl.hidden[1] == ["h0_1", "h0_2", "h0_3", "h0_4"] and tbl.hidden[2][0] == "h1_1"


def test_complete_guide_targets_matrix():
    x = [f"x{j}" for j in range(1, 9)]
    guide = [  # the 'Complete Guide' tutorial's matrix; rows: positions 1..7; columns Target1..Target4 = depth 0..3
        ["x2", "x3", "x4", "x5"], ["x3", "x4", "x5", "x6"], ["x4", "x5", "x6", "x7"],
        ["x5", "x6", "x7", "x8"], ["x6", "x7", "x8", PAD], ["x7", "x8", PAD, PAD], ["x8", PAD, PAD, PAD]]
    tbl = shift_table(x, depth=3)
    got = [[PAD if tbl.targets[k][i] is None else tbl.targets[k][i] for k in range(4)] for i in range(7)]
    assert got == guide


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 20), depth=st.integers(0, 6))
def test_every_cell_follows_eq_21(n, depth):
    tokens = list(range(100, 100 + n))             # t_j = 99 + j
    if n < depth + 2:
        with pytest.raises(ValueError, match="too short"):
            shift_table(tokens, depth)
        return
    T = n - 1
    tbl = shift_table(tokens, depth)
    for k in range(depth + 1):
        for i in range(1, T + 1):
            valid = i <= T - k
            assert tbl.inputs[k][i - 1] == (99 + i + k if valid else None)          # t_{i+k}
            assert tbl.targets[k][i - 1] == (99 + i + k + 1 if valid else None)     # t_{i+k+1}


def test_renderings_show_pad_and_depth_colours():
    tbl = shift_table(list("abcdef"), depth=2)
    text = tbl.to_text()
    assert text.count(PAD) == 6 and "MTP module 2" in text and "b+h0_1" in text
    html = tbl.to_html()
    assert html.count('class="mtp-pad"') == 6
    assert "mtp-depth-0" in html and "mtp-depth-2" in html
    assert shift_table(["<b>", "&", "x"], 1).to_html().count("&lt;b&gt;") == 1   # escaped


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        shift_table([1, 2, 3], -1)
    with pytest.raises(ValueError, match="positions"):
        shift_table([1, 2, 3], 1, positions="some")


def test_real_tokens_are_never_shown_as_padding():
    """issue 11: a None token was drawn as PAD. None is PAD's marker in the table's fields, so it is refused;
    a token that prints as 'PAD' gets a padding marker that differs from it."""
    with pytest.raises(ValueError, match=r"tokens\[1\] is None; a shift table uses None for its padding cells"):
        shift_table([1, None, 3], 1)
    for bad in (5, None, {1, 2, 3}):                      # issue 11: "'int' object is not iterable"
        with pytest.raises(TypeError, match=r"tokens must be a sequence t_1..t_\(T\+1\)"):
            shift_table(bad, 1)
    text = shift_table(["PAD", "a", "b"], 1).to_text()
    assert text.count("<PAD>") == 2 and text.split("\n")[1].split()[-2:] == ["PAD", "a"]
    assert shift_table(torch.tensor([4, 5, 6]), 1).inputs == [[4, 5], [5, None]]


@pytest.mark.parametrize("style", MTP_STYLES)
def test_model_reads_the_tables_columns(style):
    """The token ids each depth embeds are exactly shift_table's 'reads' row (valid cells)."""
    model = tiny_model(mtp_style=style)
    chunk = torch.randint(0, 37, (1, 12), generator=torch.Generator().manual_seed(0))
    seen = []
    model.embed.register_forward_hook(lambda mod, args, out: seen.append(args[0][0].tolist()))
    model(chunk[:, :-1])
    tbl = shift_table(chunk[0].tolist(), depth=3)
    rows = [[t for t in tbl.inputs[k] if t is not None] for k in range(4)]
    # the trunk embeds depth 0's row; only sequential modules embed t_{i+k}
    assert seen == (rows if style == "sequential" else rows[:1])
