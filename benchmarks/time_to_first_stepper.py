"""Time to first stepper: from a fresh clone to the stepper of notebook 00, as a new user gets there.

`git clone` this checkout's committed HEAD into a temporary folder, then in the clone run
`MTP_EDU_VENV=<fresh venv> bash scripts/run.sh --port N` and time four phases:
  setup      run.sh's set-up (scripts/setup.sh) into the fresh venv, until run.sh prints that it starts JupyterLab
  jupyterlab JupyterLab's own start, until /api/status answers (with the token from the URL it prints)
  kernel     a session for 00_tour.ipynb through /api/sessions, until its kernel answers kernel_info
  cells      the code cells of 00_tour.ipynb up to and including the `stepper(...)` cell, over the kernel's websocket
Then stop the server (SIGTERM to its process group) and time a second `bash scripts/run.sh`, which skips the
set-up, until /api/status answers. Jupyter's and matplotlib's files go to the temporary folder; pip uses the
machine's own configuration and cache. Everything is removed on exit, also after an error.

    OMP_NUM_THREADS=1 python benchmarks/time_to_first_stepper.py --out benchmarks/time_to_first_stepper.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import torch
import websocket

from mtp_edu.machine import hardware_description, load_average

ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab/tree/00_tour\.ipynb\?token=([0-9a-f]+)")
SETUP_DONE = "[run] JupyterLab on notebooks/"      # run.sh prints this right after its set-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float, poll: float = 0.1):
    """Call check() until it returns something truthy; raise after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while not (found := check()):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: nothing after {timeout:.0f} s")
        time.sleep(poll)
    return found


class RunSh:
    """`bash scripts/run.sh --port N` in the clone, in its own process group, its output in a log file."""

    def __init__(self, clone: Path, env: dict, log: Path):
        self.log, self.port = log, free_port()
        self.proc = subprocess.Popen(["bash", "scripts/run.sh", "--port", str(self.port)], cwd=clone, env=env,
                                     stdin=subprocess.DEVNULL, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        if self.proc.poll() is not None and self.proc.returncode != 0:
            raise RuntimeError(f"run.sh exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return self.log.read_text(errors="replace")

    def wait_for_status(self, timeout: float) -> tuple[str, str]:
        """Wait for the printed URL, then until /api/status answers 200; returns (base URL, token)."""
        token = wait_until("the URL with its token", lambda: URL.search(self.output()), timeout).group(2)
        base = f"http://127.0.0.1:{self.port}"

        def answers():
            self.output()                                # raises if run.sh died
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    return r.status == 200
            except (OSError, urllib.error.HTTPError):
                return False
        wait_until("/api/status", answers, timeout, poll=0.05)
        return base, token

    def stop(self) -> None:
        """SIGTERM to the process group (the server stops its kernels); SIGKILL whatever is left after 30 s."""
        if self.proc.poll() is not None:
            return
        started = psutil.Process(self.proc.pid).children(recursive=True)   # kernels run in sessions of their own
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for p in started:
            if p.is_running():
                p.kill()


class Kernel:
    """A kernel opened as JupyterLab opens a notebook: a session through the REST API, then the websocket."""

    def __init__(self, base: str, token: str, path: str):
        body = json.dumps({"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}}).encode()
        req = urllib.request.Request(f"{base}/api/sessions?token={token}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            kernel_id = json.loads(r.read())["kernel"]["id"]
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://{base.split('://')[1]}/api/kernels/{kernel_id}/channels?token={token}"
            f"&session_id={self.session}", timeout=600)
        self.request("kernel_info_request", {})

    def request(self, msg_type: str, content: dict) -> list[dict]:
        """Send one shell request; return its iopub messages once the reply came and the kernel is idle."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "bench",
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": []}))
        iopub, replied, idle = [], False, False
        while not (replied and idle):
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                replied = True
                if msg["content"].get("status") == "error":
                    raise RuntimeError(f"{msg_type} failed: {msg['content'].get('ename')}: "
                                       f"{msg['content'].get('evalue')}")
            elif msg["channel"] == "iopub":
                iopub.append(msg)
                idle = msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
        return iopub

    def run(self, code: str) -> str:
        """Execute code; return what it printed."""
        out = self.request("execute_request", {"code": code, "silent": False, "store_history": True,
                                               "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        return "".join(m["content"]["text"] for m in out if m["msg_type"] == "stream")


def cells_up_to_stepper(clone: Path) -> list[str]:
    """The code cells of 00_tour.ipynb, up to and including the first one that calls stepper(...)."""
    cells = [c for c in json.loads((clone / "notebooks/00_tour.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    last = next(i for i, s in enumerate(sources) if "stepper(" in s)
    return sources[:last + 1]


def measure(tmp: Path) -> dict:
    clone, venv, home = tmp / "clone", tmp / "venv", tmp / "home"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "JUPYTER_TOKEN",
                                                           "JUPYTER_PORT", "VIRTUAL_ENV")}
    env["MTP_EDU_VENV"] = str(venv)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
        env[var] = str(home / sub)
        (home / sub).mkdir(parents=True)
    phases = {}

    # First start: set-up, JupyterLab, a kernel, the tour up to its stepper.
    t0 = time.perf_counter()
    server = RunSh(clone, env, tmp / "run1.log")
    try:
        wait_until("the end of the set-up", lambda: SETUP_DONE in server.output(), 3600)
        t1 = time.perf_counter()
        base, token = server.wait_for_status(120)
        t2 = time.perf_counter()
        kernel = Kernel(base, token, "00_tour.ipynb")
        t3 = time.perf_counter()
        printed = [kernel.run(code) for code in cells_up_to_stepper(clone)]
        t4 = time.perf_counter()
        kernel.ws.close()
    finally:
        server.stop()
    phases.update(setup_s=t1 - t0, jupyterlab_s=t2 - t1, kernel_s=t3 - t2, cells_to_stepper_s=t4 - t3,
                  total_s=t4 - t0)
    setup_line = next(line for line in server.log.read_text().splitlines() if line.startswith("[setup] mtp_edu"))
    kernel_python = re.search(r"kernel: (\S+)", printed[0]).group(1)
    assert kernel_python.startswith(str(venv)), f"the kernel ran {kernel_python}, not the fresh venv's python"

    # Second start: run.sh finds its set-up stamp and starts JupyterLab at once.
    t0 = time.perf_counter()
    server = RunSh(clone, env, tmp / "run2.log")
    try:
        server.wait_for_status(120)
        phases["second_start_s"] = time.perf_counter() - t0
    finally:
        server.stop()
    assert "set-up up to date" in server.log.read_text(), "the second run.sh did the set-up again"
    return {"phases_s": {k: round(v, 2) for k, v in phases.items()}, "commit": commit,
            "fresh_venv": setup_line, "cells_run": len(printed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))       # so that the clean-up below runs
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="ttfs-") as tmp:
        result = measure(Path(tmp))
    pip_config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    result = {"command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} "
                         "python benchmarks/time_to_first_stepper.py" + (f" --out {args.out}" if args.out else ""),
              **result, "hardware": hardware_description(torch.device("cpu")),
              "load_average_1min_before": load_before, "load_average_1min_after": load_average(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "pip_config": pip_config.stdout.splitlines()}
    p = result["phases_s"]
    print(f"time to first stepper {p['total_s']:.1f} s: set-up {p['setup_s']:.1f} s, JupyterLab "
          f"{p['jupyterlab_s']:.1f} s, first kernel {p['kernel_s']:.1f} s, cells up to the stepper "
          f"{p['cells_to_stepper_s']:.1f} s; second run.sh {p['second_start_s']:.1f} s "
          f"(load {result['load_average_1min_before']:.2f} before, {result['load_average_1min_after']:.2f} after)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
