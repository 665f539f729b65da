"""Diagrams: the DeepSeek-V3 MTP figure's labelled parts in every architecture SVG, committed diagrams/
up to date, numbers from the live model, and a clear error when Graphviz's `dot` is missing."""
import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.config import MTP_STYLES
from mtp_edu.viz import diagrams
from mtp_edu.viz.diagrams import (
    GraphvizNotFound,
    architecture_diagram,
    loss_flow_diagram,
    render,
    sub,
    token_flow_diagram,
    write_diagrams,
)

REPO = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def svg_text(diagram) -> str:
    """All the text drawn in the SVG, entities decoded."""
    svg = render(diagram, "svg").decode("utf-8")
    return html.unescape(" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)))


def tiny(D, style, **kw):
    return MTPModel(MTPConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=32,
                              mtp_depth=D, mtp_style=style, **kw))


@needs_dot
@pytest.mark.parametrize("style", MTP_STYLES)
@pytest.mark.parametrize("D", [1, 2, 3])
def test_architecture_svg_shows_every_labelled_part_of_the_deepseek_figure(D, style):
    model = tiny(D, style)
    text = svg_text(architecture_diagram(model))
    must = ["Main Model", "Next Token Prediction", "Embedding Layer", "Transformer Block × L", "Transformer Block"
            if style != "linear" else "Transformer Block × L", "RMSNorm", "Output Head", "Cross-Entropy Loss",
            "Shared", "Input Tokens", "Target Tokens", "L_Main"]
    if style == "sequential":
        must += ["Linear Projection", "concatenation", "enorm", "hnorm", "eh_proj"]
    if style == "linear":
        must += ["Linear Projection"]
    for k in range(1, D + 1):
        must += [f"MTP Module {k}", f"L_MTP^{k}", f"Next{diagrams.sup(k + 1)} Token Prediction"]
    # the figure's token rows: main t1..t4 -> t2..t5, module k reads t(1+k).. and predicts t(2+k)..
    must += [f"t{sub(i)}" for i in range(1, 4 + D + 2)]
    missing = [m for m in must if m not in text]
    assert not missing, f"labels missing from the {style} D={D} SVG: {missing}"
    assert text.count("Output Head") == D + 1 and text.count("Cross-Entropy Loss") == D + 1
    assert text.count("Shared") >= D                     # dotted links between the shared output heads
    if style == "sequential":
        assert text.count("Embedding Layer") == D + 1 and text.count("Shared") == 2 * D
        assert text.count("concatenation") == D and text.count("RMSNorm") == 1 + 3 * D
    else:                                                # no token input for parallel / linear heads
        assert text.count("Embedding Layer") == 1 and "concatenation" not in text


def test_architecture_numbers_come_from_the_live_model():
    model = tiny(2, "sequential", tie_embeddings=False)
    counts = model.param_counts()
    src = architecture_diagram(model).source
    for key in ("total", "trunk", "embedding", "output_head", "mtp_1", "mtp_2"):
        assert f"{counts[key]:,}" in src, key
    assert "[B, T−2, 2d=64]" in src and "V=37" in src          # shapes on the edges
    assert "eh_proj: 2d→d = 64→32" in src and f"{2 * 32 * 32:,} params" in src


def test_architecture_is_deterministic_and_d0_is_the_main_model_alone():
    a = architecture_diagram(MTPConfig(mtp_depth=2, d_model=32, n_heads=4)).source
    b = architecture_diagram(MTPConfig(mtp_depth=2, d_model=32, n_heads=4)).source
    assert a == b
    src = architecture_diagram(tiny(0, "sequential")).source
    assert "Main Model" in src and "MTP Module" not in src


def test_token_flow_is_built_from_shift_table():
    from mtp_edu import shift_table
    tokens = ["a", "b", "c", "d", "e", "f"]
    for style in MTP_STYLES:
        src = token_flow_diagram(tokens, 2, style=style).source
        table = shift_table(tokens, 2)
        for k in range(3):
            for i, tgt in enumerate(table.targets[k]):
                if tgt is not None:
                    assert f"→ t{sub(i + k + 2)} {tgt}" in src
        assert src.count(">PAD<") == 1 + 2                   # depth 1 loses one position, depth 2 two
        assert ("reads t" in src.split("cluster_tok1")[1]) == (style == "sequential")


def test_loss_flow_shows_weights_and_reduction():
    src = loss_flow_diagram(MTPConfig(mtp_depth=3, mtp_loss_scale=0.3)).source
    assert src.count("λ/D = 0.3/3 = 0.1") == 3 and "× 1" in src and "reduction=&#x27;valid&#x27;" in src
    for k in range(4):
        assert f"targets[:, {k}:]" in src and f"cluster_depth{k}" in src
    paper = loss_flow_diagram(MTPConfig(mtp_depth=2), reduction="paper").source
    assert "÷ (B·T)" in paper
    with pytest.raises(ValueError, match="reduction"):
        loss_flow_diagram(MTPConfig(), reduction="sum")


@needs_dot
def test_committed_diagrams_equal_what_the_code_produces(tmp_path):
    written = write_diagrams(tmp_path)
    committed = REPO / "diagrams"
    fresh = sorted(p.name for p in written)
    assert fresh == sorted(p.name for p in committed.iterdir() if p.suffix in (".dot", ".svg")), \
        "diagrams/ is out of date: run `mtp-edu diagrams` (or mtp_edu.viz.diagrams.write_diagrams())"
    version = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr
    version = re.search(r"version ([\d.]+)", version).group(1)
    for name in fresh:
        new, old = (tmp_path / name).read_bytes(), (committed / name).read_bytes()
        if name.endswith(".svg") and f"graphviz version {version} ".encode() not in old:
            # another Graphviz lays out differently: compare the drawn text, not the coordinates
            def words(b):
                return sorted(html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", b.decode()))
            assert words(new) == words(old), f"{name}: labels differ; run `mtp-edu diagrams`"
        else:
            assert new == old, f"{name} differs from the code's output; run `mtp-edu diagrams`"


def test_missing_dot_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(diagrams.shutil, "which", lambda name: None)
    g = architecture_diagram(tiny(1, "sequential"))
    for call in (lambda: render(g), lambda: g._repr_mimebundle_(), lambda: write_diagrams(tmp_path),
                 lambda: diagrams.save(g, tmp_path / "x.svg")):
        with pytest.raises(GraphvizNotFound, match="apt-get install graphviz") as err:
            call()
        assert "brew install graphviz" in str(err.value) and "conda" in str(err.value)
    diagrams.save(g, tmp_path / "x.dot")                     # the DOT text needs no Graphviz
    assert (tmp_path / "x.dot").read_text().startswith("digraph")
    from mtp_edu.viz.state import ArchitectureState
    view = ArchitectureState(depth=1, base=tiny(1, "sequential").config).html()
    assert "apt-get install graphviz" in view and "mtp-message" in view
