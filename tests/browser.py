"""A real browser for the notebook tests: JupyterLab on localhost, driven by Playwright in Debian's
Chromium (never `playwright install`: that downloads a browser). See shared notes on what works here."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "mtp-edu-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path):
    """JupyterLab serving `root` on 127.0.0.1 with everything it writes kept under `home`."""
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
        env[var] = str(home / sub)
        (home / sub).mkdir(parents=True, exist_ok=True)
    settings = home / "settings"
    settings.mkdir(exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(
        {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(home / "user-settings")
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabServerApp.app_settings_dir={settings}", f"--LabApp.app_settings_dir={settings}"]
    log = open(home / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log = (home / "jupyterlab.log").read_text()[-3000:]
                    raise RuntimeError(f"JupyterLab did not start; log:\n{log}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


KERNEL_STATUS = ("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                 " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                 " return k ? k.status : null; }")


ALL_EXECUTED = ("() => window.jupyterapp.shell.currentWidget.content.widgets.every("
                "c => c.model.type !== 'code' || c.model.executionCount !== null)")


def open_and_run_all(page, url: str, notebook: str, timeout_s: float = 240) -> None:
    """Open a notebook, wait for a live idle kernel, run every cell and wait until it is idle again."""
    page.goto(f"{url}/lab/tree/{notebook}?token={TOKEN}")
    page.wait_for_function(f"({KERNEL_STATUS})() === 'idle'", timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(f"({KERNEL_STATUS})() === 'idle' && ({ALL_EXECUTED})()",
                           timeout=timeout_s * 1000, polling=500)
