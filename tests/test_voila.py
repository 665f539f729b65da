"""The presenters' standalone page, started by the README's command `bash scripts/run.sh --stepper` as CI runs
it (root, no display): Voila serves notebooks/stepper_demo.ipynb, Debian's Chromium opens it through
Playwright, and pressing the stepper's Step button advances tau. Stopped with SIGTERM to its process group:
status 0, no process left, and no browser launched by the server (there is no display)."""
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from test_run_script import assert_nothing_left, descendants, kill_group, run_env, start

from browser import CHROMIUM, CHROMIUM_ARGS, _free_port

pytest.importorskip("voila", reason="voila is not installed: pip install voila")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots"


def start_voila(home: Path, port: int) -> subprocess.Popen:
    """The README's command, headless, in its own process group; its output goes to home/run.log."""
    return start(["--stepper", "--port", str(port), "--ip", "127.0.0.1"], home, run_env(home))


def test_stepper_as_a_standalone_voila_page(tmp_path):
    assert "bash scripts/run.sh --stepper" in (ROOT / "README.md").read_text()     # the command tested here
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `bash scripts/setup.sh --dev`"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_voila(tmp_path, port)
    try:
        deadline = time.time() + 60
        while True:                                   # the server answers before any kernel runs
            try:
                urllib.request.urlopen(f"{url}voila/static/", timeout=2)
                break
            except urllib.error.HTTPError:            # any HTTP answer means the server is up
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"voila did not start; log:\n{(tmp_path / 'run.log').read_text()[-3000:]}") \
                        from None
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)   # runs the notebook in a new kernel
            step = page.locator(".mtp-step-button").first
            step.wait_for(state="visible", timeout=120_000)
            tau = page.locator(".mtp-tau").first
            tau.wait_for(state="visible", timeout=30_000)
            before = tau.inner_text()
            for _ in range(3):
                step.click()
                page.wait_for_timeout(400)
            started = descendants(proc.pid)           # the page's kernel (in a session of its own)
            assert started, "Voila runs no kernel for the page"
            steps_before = int(re.search(r"after (\d+) step", before).group(1))   # the page opens a few steps in
            advanced = "n => new RegExp(`after ${n} step`).test(document.querySelector('.mtp-tau').innerText)"
            page.wait_for_function(advanced, arg=steps_before + 3, timeout=30_000)
            after = tau.inner_text()
            assert re.search(r"τ = \d\.\d\d", after), (before, after)
            assert page.locator(".mtp-token-accepted").count() > 0
            assert page.get_by_text("Traceback").count() == 0
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "voila_stepper.png"), full_page=True)
            browser.close()
        log = (tmp_path / "run.log").read_text()
        assert f"Voilà is running at:\nhttp://127.0.0.1:{port}/" in log, log[-3000:]
        assert "no display here" in log and not (tmp_path / "browser-calls").exists()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert_nothing_left(proc.pid, started)
    finally:
        kill_group(proc)
