"""The presenters' standalone page: Voila serves notebooks/stepper_demo.ipynb, Debian's Chromium opens it
through Playwright, and pressing the stepper's Step button advances tau. Stopped with SIGTERM."""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser import CHROMIUM, CHROMIUM_ARGS, _free_port

pytest.importorskip("voila", reason="voila is not installed: pip install voila")
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "stepper_demo.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"


def start_voila(home: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
        env[var] = str(home / sub)
        (home / sub).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "voila", str(NOTEBOOK), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(home / "voila.log", "w"), stderr=subprocess.STDOUT)


def test_stepper_as_a_standalone_voila_page(tmp_path):
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
                    raise RuntimeError(f"voila did not start; log:\n{(tmp_path / 'voila.log').read_text()[-3000:]}")
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
            page.wait_for_function("() => /after [1-9]\\d* step/.test(document.querySelector('.mtp-tau').innerText)",
                                   timeout=30_000)
            after = tau.inner_text()
            assert after != before and re.search(r"τ = \d\.\d\d", after), (before, after)
            assert page.locator(".mtp-token-accepted").count() > 0
            assert page.get_by_text("Traceback").count() == 0
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "voila_stepper.png"), full_page=True)
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
