"""Committed notebooks show something where widgets cannot run (GitHub, nbconvert, editors without a
widget manager): every widget's static fallback and every progress bar shows a final or an advanced
state, never an empty or initial one, and no cell that makes a widget is saved without outputs.

`problems(cell)` is the detector; the control tests feed it initial-state outputs made by the package's
own widgets (and by tqdm in a real kernel), so the committed-notebook test can fail."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"

# What a widget's static view says before anything has happened, or when it shows no picture at all.
INITIAL = [
    ("the stepper before its first step", re.compile(r"Press Step or Play to draft and verify|after 0 step\(s\)")),
    ("the tree stepper before its first step", re.compile(r"Press Step to draft a tree and verify it")),
    ("a replay at step 0", re.compile(r"\bstep 0 of \d+")),
    ("an error instead of a picture", re.compile(r"Something went wrong|no static snapshot")),
]
# A code line that makes a widget (imports and definitions are not): the package's explorers and
# steppers, ipywidgets controls, tqdm bars.
MAKES_WIDGET = re.compile(r"\b(stepper|tree_stepper|\w+_explorer|Explorer|W\.[A-Z]\w*|widgets\.[A-Z]\w*|"
                          r"tqdm|trange|progress_bar)\s*\(")
BAR = re.compile(r"(?P<desc>[^|]*?):?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)")


def makes_widget(source: str) -> bool:
    return any(MAKES_WIDGET.search(line) for line in source.splitlines()
               if not re.match(r"\s*(import|from|def|class|#)\b", line))


def bars(text: str) -> list[tuple[str, int, int]]:
    """(description, n, total) of every tqdm line in `text`, in order (a terminal bar redraws after \\r)."""
    return [(m["desc"].strip(), int(m["n"]), int(m["total"]))
            for line in re.split(r"[\r\n]", text) if len(line) < 1000 and (m := BAR.match(line))]


def output_text(out) -> str:
    if out.get("output_type") == "stream":
        return out.get("text", "")
    plain = out.get("data", {}).get("text/plain", "")            # (a bar's text; pictures are in the html)
    return "".join(plain) if isinstance(plain, list) else plain


def widget_problem(data: dict) -> str | None:
    """Why a widget output's static fallback shows nothing useful, or None."""
    page = data.get("text/html")
    if isinstance(page, list):
        page = "".join(page)
    if page is not None:
        visible = re.sub(r"<[^>]+>", "", page).strip()
        if not visible and not re.search(r"<(img|svg)\b", page):
            return "its static fallback (text/html) is empty"
        for what, pattern in INITIAL:
            if pattern.search(page):
                return f"its static fallback shows {what} ({pattern.search(page)[0]!r})"
        return None
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    if bars(text):
        return None                                     # a progress bar: judged with the cell's other bars
    return f"it has no static picture, only the widget's repr ({text[:60]!r})"


def problems(cell) -> list[str]:
    """What is wrong with one code cell's saved outputs, as messages; [] if nothing."""
    if cell.get("cell_type") != "code":
        return []
    outputs = cell.get("outputs", [])
    found = []
    if makes_widget(cell.get("source", "")) and not outputs:
        found.append("it makes a widget but was saved without outputs (execute it and save the outputs)")
    last = {}
    for out in outputs:
        data = out.get("data", {})
        if WIDGET in data:
            why = widget_problem(data)
            if why:
                found.append(f"a widget output: {why}")
        for desc, n, total in bars(output_text(out)):
            last[desc] = (n, total)
    for desc, (n, total) in last.items():
        if n < total:
            found.append(f"progress bar {desc!r} is saved at {n}/{total}, not at its final state "
                         f"({'its initial state' if n == 0 else 'unfinished'})")
    return found


def committed_notebooks() -> list[Path]:
    """The walkthroughs, their solutions and the demos; an assignment only if it has widgets."""
    paths = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))
    for path in sorted((NOTEBOOKS / "assignments").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        if WIDGET in text or any(makes_widget(c.source) for c in nbformat.reads(text, as_version=4).cells
                                 if c.cell_type == "code"):
            paths.append(path)
    return paths


@pytest.mark.parametrize("path", committed_notebooks(), ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_committed_widgets_and_progress_bars_show_a_final_or_advanced_state(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"{path.relative_to(ROOT)}, cell {i} (id {cell.get('id')}): {why}"
             for i, cell in enumerate(nb.cells) for why in problems(cell)]
    assert not found, "\n".join(found)


# ---- controls: the detector reports initial states (so the test above can fail) ------------------------
def _cell(source: str, *bundles: dict, streams: tuple[str, ...] = ()):
    outputs = [nbformat.v4.new_output("display_data", data=b) for b in bundles]
    outputs += [nbformat.v4.new_output("stream", name="stderr", text=s) for s in streams]
    return nbformat.v4.new_code_cell(source, outputs=outputs)


def _trace():
    from mtp_edu.traces import Step, Trace
    steps = [Step([65, 66, 67], [0.9, 0.8, 0.7], [0.95, 0.6, 0.1], 3, 68, "bonus"),
             Step([69, 70, 71], [0.9, 0.5, 0.4], [0.85, 0.2, 0.3], 1, 10, "correction")]
    return Trace(list(b"Hi "), "greedy", 3, steps, first_token=64)


def test_the_detector_reports_a_stepper_at_its_initial_state_and_passes_it_advanced():
    from mtp_edu.viz import widgets
    from mtp_edu.viz.tree_view import tree_stepper
    demo = widgets.stepper(trace=_trace())
    initial = demo._repr_mimebundle_()
    assert WIDGET in initial
    assert any("stepper before its first step" in p for p in problems(_cell("demo", initial)))
    tree = tree_stepper()._repr_mimebundle_()
    assert any("tree stepper before" in p for p in problems(_cell("tree_stepper()", tree)))
    demo.buttons["step"].click()
    assert problems(_cell("demo", demo._repr_mimebundle_())) == []           # advanced: one step shown
    demo.buttons["step"].click()
    assert "finished" in demo.static_html() and problems(_cell("demo", demo._repr_mimebundle_())) == []


def test_the_detector_reports_empty_and_repr_only_fallbacks_and_unsaved_widget_cells():
    view = {"model_id": "0", "version_major": 2, "version_minor": 0}
    assert any("empty" in p for p in problems(_cell("x", {WIDGET: view, "text/html": "<div> </div>"})))
    assert any("only the widget's repr" in p
               for p in problems(_cell("x", {WIDGET: view, "text/plain": "Explorer(children=(HBox(…"})))
    assert problems(_cell("x", {WIDGET: view, "text/html": '<img src="data:image/png;base64,AAAA">'})) == []
    unsaved = nbformat.v4.new_code_cell('from mtp_edu.viz.widgets import stepper\nstepper(model, tokenizer)')
    assert any("without outputs" in p for p in problems(unsaved))
    definition = nbformat.v4.new_code_cell("import ipywidgets as W\nfrom mtp_edu.viz.widgets import stepper")
    assert problems(definition) == []


def test_the_detector_reports_a_progress_bar_left_at_zero_or_unfinished():
    view = {"model_id": "0", "version_major": 2, "version_minor": 0}
    stuck = {WIDGET: view, "text/plain": "tiny (300 steps):   0%|          | 0/300 [00:00<?, ?step/s]"}
    done = {WIDGET: view, "text/plain": "tiny (300 steps): 100%|██████████| 300/300 [00:15<00:00, 19.6step/s]"}
    assert any("initial state" in p for p in problems(_cell("train(...)", stuck)))
    assert problems(_cell("train(...)", done)) == []
    assert problems(_cell("train(...)", stuck, streams=("tiny (300 steps): 100%|#####| 300/300 [00:15]\n",))) == []
    terminal = "run:   0%|     | 0/10 [00:00<?]\rrun:  50%|##   | 5/10 [00:01<00:01]"
    assert any("unfinished" in p for p in problems(_cell("train(...)", streams=(terminal,))))
    assert problems(_cell("train(...)", streams=(terminal + "\rrun: 100%|#####| 10/10 [00:02<00:00]\n",))) == []


@pytest.mark.slow
def test_a_notebook_progress_bar_is_saved_at_its_final_state():
    """In a real kernel: tqdm.auto's widget is saved at 0% (the detector says so), mtp_edu's
    progress_bar (what `train` uses) at its final state."""
    from nbclient import NotebookClient
    loop = "for _ in range(5):\n    bar.update(1)\nbar.close()"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"from tqdm.auto import tqdm\nbar = tqdm(total=5, desc='plain')\n{loop}"),
        nbformat.v4.new_code_cell(f"from mtp_edu.train import progress_bar\nbar = progress_bar(total=5, desc='ours')\n"
                                  f"{loop}")])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    plain, ours = nb.cells
    assert any(WIDGET in o.get("data", {}) for o in plain.outputs + ours.outputs)
    assert any("progress bar 'plain' is saved at 0/5" in p for p in problems(plain))
    assert problems(ours) == [] and [b for o in ours.outputs for b in bars(output_text(o))] == [("ours", 5, 5)]
