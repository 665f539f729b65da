"""The steppers in a real browser: JupyterLab + Debian's Chromium through Playwright. Each test runs every
cell of a copy of its notebook, presses the widget's buttons and reads what a user sees from the page.

- notebook 05: the chain stepper's Step button; colours, strike-through and the running tau.
- stepper_demo: the tree stepper's Step and Reset buttons and its tree box; the step counter, the tree
  drawing, the accepted path in the committed text, tau and the colours."""
import contextlib
import re
import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from browser import CHROMIUM, CHROMIUM_ARGS, jupyterlab, open_and_run_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "05_speculative_decoding.ipynb"
DEMO = "stepper_demo.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"
ERRORS = ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"


def colour(page, selector: str) -> tuple[int, int, int]:
    text = page.locator(selector).first.evaluate("e => getComputedStyle(e).color")
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def assert_outcome_colours(scope, accepted: str, extra: str, rejected: str) -> None:
    """Accepted tokens green, the correction/bonus token blue, rejected ones (if any) red, under `scope`."""
    r, g, b = colour(scope, accepted)
    assert g > r and g > b, f"accepted tokens should be green, got rgb{(r, g, b)}"
    r, g, b = colour(scope, extra)
    assert b > r and b > g, f"the correction/bonus token should be blue, got rgb{(r, g, b)}"
    if scope.locator(rejected).count():
        r, g, b = colour(scope, rejected)
        assert r > g and r > b, f"rejected tokens should be red, got rgb{(r, g, b)}"


@contextlib.contextmanager
def notebook_page(tmp_path: Path, notebook: str):
    """A page of JupyterLab (fresh server) with every cell of a copy of `notebook` run, and no error shown."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `bash scripts/setup.sh --dev`"
    shutil.copy(ROOT / "notebooks" / notebook, tmp_path / notebook)     # the repo's copy stays untouched
    with jupyterlab(tmp_path, tmp_path / "home") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2300})
        open_and_run_all(page, url, notebook)
        assert page.locator(ERRORS).count() == 0
        yield page
        browser.close()


def test_stepper_in_jupyterlab(tmp_path):
    with notebook_page(tmp_path, NOTEBOOK) as page:
        step = page.locator(".mtp-step-button").first
        step.scroll_into_view_if_needed()
        tau = page.locator(".mtp-tau").first
        before = tau.inner_text()
        for _ in range(6):
            step.click()
            page.wait_for_timeout(400)
        page.wait_for_function("() => document.querySelectorAll('.mtp-token-accepted').length > 0",
                               timeout=30_000)
        after = tau.inner_text()
        assert after != before and re.search(r"τ = \d\.\d\d", after)
        assert re.search(r"after [1-9]\d* step", after)
        assert_outcome_colours(page, ".mtp-token-accepted", ".mtp-token-extra", ".mtp-token-rejected")
        if page.locator(".mtp-token-rejected").count():
            deco = page.locator(".mtp-token-rejected").first.evaluate(
                "e => getComputedStyle(e.querySelector('s') || e).textDecorationLine")   # struck through
            assert "line-through" in deco
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator(".mtp-explorer").filter(has=page.locator(".mtp-step-button")).first.screenshot(
            path=str(SCREENSHOTS / "notebook05_stepper.png"))
        page.screenshot(path=str(SCREENSHOTS / "notebook05_page.png"))


def test_tree_stepper_in_jupyterlab(tmp_path):
    with notebook_page(tmp_path, DEMO) as page:
        assert page.locator(".mtp-explorer").count() == 2                  # the chain stepper, then the tree's
        chain_tau = page.locator(".mtp-explorer").first.locator(".mtp-tau")
        assert re.search(r"after [1-9]\d* step", chain_tau.inner_text()), "the chain stepper opens a few steps in"
        box = page.locator(".mtp-explorer").filter(has=page.locator(".mtp-tree-shape"))
        view = box.locator(".mtp-view")
        step, reset = box.locator(".mtp-step-button"), box.locator(".mtp-reset-button")
        box.scroll_into_view_if_needed()

        def counter() -> tuple[int, int]:
            found = re.search(r"step (\d+) of (\d+)", view.inner_text())
            assert found, view.inner_text()[:500]
            return int(found[1]), int(found[2])

        def committed() -> str:                          # the text decoded so far, after the grey prompt
            return view.locator(".mtp-output span").nth(1).inner_text()

        def path_text() -> str:                          # the accepted path, then the main model's token
            nodes = view.locator(".mtp-tree .mtp-tree-accepted, .mtp-tree .mtp-tree-extra").all_inner_texts()
            return "".join(nodes).replace("␣", " ")

        shown, total = counter()
        assert 1 <= shown < total - 1, "the tree stepper opens a few steps in, with steps left to press"
        text, svg = committed(), view.locator(".mtp-tree-svg svg").text_content()

        step.click()                                     # Step: the next tree, its path added to the text
        expect(view).to_contain_text(f"step {shown + 1} of {total}", timeout=30_000)
        accepted = view.locator(".mtp-tree .mtp-tree-accepted").count()
        assert view.locator(".mtp-tree .mtp-tree-extra").count() == 1
        drawing = view.locator(".mtp-tree-svg svg")
        assert drawing.count() == 1 and drawing.bounding_box()["width"] > 100
        label = drawing.text_content()
        assert label != svg and f"accepted {accepted} of" in label and f"+{accepted + 1} tokens" in label, label[:300]
        grown = committed()
        assert grown.startswith(text) and len(grown) > len(text), (text, grown)
        if "\\x" not in path_text():                     # whole characters: the path is exactly the new text
            assert grown[len(text):] == path_text(), (grown[len(text):], path_text())
        assert re.search(r"τ = \d\.\d\d", box.locator(".mtp-tau").inner_text())
        assert f"after {shown + 1} step(s)" in view.inner_text()
        assert_outcome_colours(view, ".mtp-tree .mtp-tree-accepted", ".mtp-tree .mtp-tree-extra",
                               ".mtp-tree .mtp-tree-rejected")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        box.screenshot(path=str(SCREENSHOTS / "stepper_demo_tree.png"))

        reset.click()                                    # Reset: back to the prompt, no tree drawn
        expect(view).to_contain_text(f"step 0 of {total}", timeout=30_000)
        assert len(committed()) < len(text)
        assert view.locator(".mtp-tree").count() == 0 and view.locator(".mtp-tau").count() == 0
        step.click()
        expect(view).to_contain_text(f"step 1 of {total}", timeout=30_000)
        assert view.locator(".mtp-tree .mtp-tree-node").count() > 1

        box.locator(".mtp-tree-shape input").fill("1,1,1")   # the tree box: a chain of 3 drafts
        expect(view).to_contain_text("Press Step", timeout=30_000)
        step.click()
        expect(view).to_contain_text("step 1 of", timeout=60_000)
        nodes = view.locator(".mtp-tree .mtp-tree-node:not(.mtp-tree-extra)")
        assert nodes.count() == 4, view.inner_text()[:500]   # the root and one candidate per depth
        page.screenshot(path=str(SCREENSHOTS / "stepper_demo_page.png"))
