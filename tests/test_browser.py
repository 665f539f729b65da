"""Notebook 05 in a real browser: JupyterLab + Debian's Chromium through Playwright. Runs every cell,
presses the stepper's Step button, and checks colours, strike-through and the running tau."""
import re
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from browser import CHROMIUM, CHROMIUM_ARGS, jupyterlab, open_and_run_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "05_speculative_decoding.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"


def colour(page, selector: str) -> tuple[int, int, int]:
    text = page.locator(selector).first.evaluate("e => getComputedStyle(e).color")
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_stepper_in_jupyterlab(tmp_path):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `bash scripts/setup.sh --dev`"
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, tmp_path / NOTEBOOK)       # the repo's copy stays untouched
    with jupyterlab(tmp_path, tmp_path / "home") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2300})
        open_and_run_all(page, url, NOTEBOOK)
        assert page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() == 0
        step = page.locator(".mtp-step-button").first
        step.scroll_into_view_if_needed()
        tau = page.locator(".mtp-tau").first
        before = tau.inner_text()
        for _ in range(6):
            step.click()
            page.wait_for_timeout(400)
        page.wait_for_function("() => document.querySelectorAll('.mtp-token-accepted').length > 0", timeout=30_000)
        after = tau.inner_text()
        assert after != before and re.search(r"τ = \d\.\d\d", after)
        assert re.search(r"after [1-9]\d* step", after)
        r, g, b = colour(page, ".mtp-token-accepted")
        assert g > r and g > b, f"accepted tokens should be green, got rgb{(r, g, b)}"
        r, g, b = colour(page, ".mtp-token-extra")
        assert b > r and b > g, f"correction/bonus tokens should be blue, got rgb{(r, g, b)}"
        if page.locator(".mtp-token-rejected").count():
            r, g, b = colour(page, ".mtp-token-rejected")
            assert r > g and r > b, f"rejected tokens should be red, got rgb{(r, g, b)}"
            deco = page.locator(".mtp-token-rejected").first.evaluate(
                "e => getComputedStyle(e.querySelector('s') || e).textDecorationLine")   # struck through
            assert "line-through" in deco
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator(".mtp-explorer").filter(has=page.locator(".mtp-step-button")).first.screenshot(
            path=str(SCREENSHOTS / "notebook05_stepper.png"))
        page.screenshot(path=str(SCREENSHOTS / "notebook05_page.png"))
        browser.close()
