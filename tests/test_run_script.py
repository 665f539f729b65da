"""The README's first command, run for real: `bash scripts/run.sh --port N` as CI runs it (root, no display)
starts JupyterLab on notebooks/ and prints the URL to open, with its token; the REST API lists the notebooks,
/lab answers 200, and stopping the server (SIGTERM to its process group, or Ctrl-C then `y` as a user would)
ends it with status 0 and leaves no process behind (none of its group, nor the kernel that opening the tour
started). Also: the set-up that run.sh skips when nothing changed, and `run.sh --execute` on one notebook.
Everything Jupyter writes goes to a temporary folder.

A fake browser ($BROWSER, which Python's webbrowser module prefers) records whether the server tried to open
one: it must not without a display, and must with one."""
from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STAMP = Path(sys.prefix) / ".mtp-edu-setup"
# JupyterLab prints the URL to open (run.sh points it at the tour), with the token it generated
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab/tree/00_tour\.ipynb\?token=([0-9a-f]{16,})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env(home: Path, display: str | None = None) -> dict:
    """The environment of `bash scripts/run.sh` in a test: headless unless `display` is given, this venv,
    Jupyter's and matplotlib's files under `home`, and a fake browser that appends its arguments to a file."""
    env = dict(os.environ)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "JUPYTER_TOKEN", "JUPYTER_PORT"):
        env.pop(var, None)
    if display:
        env["DISPLAY"] = display
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "mpl")):
        env[var] = str(home / sub)
        (home / sub).mkdir(parents=True, exist_ok=True)
    env["MTP_EDU_VENV"] = sys.prefix                 # the venv these tests run in (.venv under scripts/test.sh)
    fake = home / "fake-browser"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{home}/browser-calls"\n')
    fake.chmod(0o755)
    env["BROWSER"] = str(fake)
    return env


def start(args: list[str], home: Path, env: dict, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """`bash scripts/run.sh ARGS` in its own session and process group, output to home/run.log."""
    return subprocess.Popen(["bash", "scripts/run.sh", *args], cwd=ROOT, env=env, stdin=stdin,
                            stdout=open(home / "run.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)


def log_of(home: Path) -> str:
    return (home / "run.log").read_text(errors="replace")


def wait_for(home: Path, proc: subprocess.Popen, pattern: re.Pattern | str, timeout: float = 60.0) -> re.Match:
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, log_of(home))
        if m:
            return m
        if proc.poll() is not None or time.time() > deadline:
            status = "exited with status %s" % proc.returncode if proc.poll() is not None else "still running"
            raise AssertionError(f"{pattern!r} never appeared ({status}); log:\n{log_of(home)[-4000:]}")
        time.sleep(0.25)


def processes() -> dict[int, tuple[int, int, str, str]]:
    """Every process on this machine: pid -> (parent pid, process group, state, command); /proc, else ps."""
    found = {}
    if not Path("/proc/self/stat").exists():                   # macOS, BSD
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat=,comm="], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            pid, ppid, pgid, state, comm = line.split(None, 4)
            found[int(pid)] = (int(ppid), int(pgid), state[0], comm)
        return found
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:                          # ended while we looked
            continue
        pid, rest = text.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        state, ppid, pgid = fields.split()[:3]
        found[int(pid)] = (int(ppid), int(pgid), state, comm)
    return found


def descendants(pid: int) -> set[int]:
    """The processes started under `pid`, however deep (kernels run in sessions of their own)."""
    table, found, todo = processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, (ppid, *_rest) in table.items() if ppid == parent}
        todo += children - found
        found |= children
    return found


def assert_nothing_left(pgid: int, started: set[int] = frozenset(), timeout: float = 10.0) -> None:
    """No process (zombies included) of group `pgid` remains, nor any of `started` (processes seen earlier
    under the server, such as kernels, which run in groups of their own)."""
    deadline = time.time() + timeout
    while True:
        table = processes()
        left = [f"{pid} {state} {comm}" for pid, (_ppid, pgid_, state, comm) in table.items()
                if pgid_ == pgid or pid in started]
        if not left or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"processes left behind by the server: {left}"


def kill_group(proc: subprocess.Popen) -> None:
    """Last resort after a failure: nothing started by the test may outlive it (kernels included)."""
    for pid in descendants(proc.pid) if proc.poll() is None else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def check_jupyterlab(home: Path, proc: subprocess.Popen, port: int) -> tuple[str, str]:
    """The server run.sh started answers on `port`: the token it printed opens the notebooks and /lab."""
    m = wait_for(home, proc, URL)
    assert int(m.group(1)) == port, m.group(0)
    token = m.group(2)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60                  # the URL is printed a moment before the server answers
    while True:
        try:
            if get(f"{base}/api/status?token={token}")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, f"no answer on {base}; log:\n{log_of(home)[-4000:]}"
        time.sleep(0.25)
    status, body = get(f"{base}/api/contents?token={token}")
    assert status == 200, status
    listed = {item["name"] for item in json.loads(body)["content"]}
    on_disk = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert "00_tour.ipynb" in listed and on_disk <= listed, (sorted(listed), sorted(on_disk))
    status, body = get(f"{base}/api/contents/00_tour.ipynb?content=0&token={token}")
    assert status == 200 and json.loads(body)["type"] == "notebook"
    assert get(f"{base}/api/contents?token=not-{token}")[0] == 403      # the token is what lets us in
    status, body = get(f"{base}/lab?token={token}")
    assert status == 200 and b"JupyterLab" in body, status
    assert get(f"{base}/lab/tree/00_tour.ipynb?token={token}")[0] == 200
    return base, token


def open_the_tour(base: str, token: str) -> str:
    """What a user's first click does: a session for 00_tour.ipynb with a kernel; returns the kernel's id."""
    body = json.dumps({"path": "00_tour.ipynb", "type": "notebook", "name": "00_tour.ipynb",
                       "kernel": {"name": "python3"}}).encode()
    req = urllib.request.Request(f"{base}/api/sessions?token={token}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 201
        return json.loads(r.read())["kernel"]["id"]


def test_run_sh_as_ci_runs_it_headless_stopped_with_sigterm(tmp_path):
    """Root (on CI) and no display: --allow-root and --no-browser, the URL printed; SIGTERM ends it with 0."""
    port = free_port()
    proc = start(["--port", str(port)], tmp_path, run_env(tmp_path))
    try:
        base, token = check_jupyterlab(tmp_path, proc, port)
        open_the_tour(base, token)
        started = descendants(proc.pid)
        assert started, "the kernel of the tour notebook did not start"
        log = log_of(tmp_path)
        assert "Running as root is not recommended" not in log
        assert "start with 00_tour.ipynb" in log and "no display here" in log
        time.sleep(1)                            # a browser, had one been launched, is launched right after the URL
        assert not (tmp_path / "browser-calls").exists(), "a browser was launched without a display"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_of(tmp_path)[-3000:]
        assert_nothing_left(proc.pid, started)
    finally:
        kill_group(proc)


def test_run_sh_with_a_display_opens_a_browser_and_stops_on_ctrl_c_then_y(tmp_path):
    """With $DISPLAY set the server opens the (fake) browser; in a terminal, Ctrl-C asks and `y` stops it."""
    port = free_port()
    master, slave = pty.openpty()                # a terminal for the server's stdin, as a user has
    proc = start(["--port", str(port)], tmp_path, run_env(tmp_path, display=":99"), stdin=slave)
    os.close(slave)
    try:
        base, token = check_jupyterlab(tmp_path, proc, port)
        open_the_tour(base, token)
        started = descendants(proc.pid)
        deadline = time.time() + 30
        while not (tmp_path / "browser-calls").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "browser-calls").exists(), "no browser was launched although there is a display"
        assert "no display here" not in log_of(tmp_path)
        os.killpg(proc.pid, signal.SIGINT)       # what Ctrl-C sends to the terminal's foreground group
        wait_for(tmp_path, proc, r"Shut down this Jupyter server \(y/\[n\]\)\?", timeout=20)
        os.write(master, b"y\n")
        assert proc.wait(timeout=30) == 0, log_of(tmp_path)[-3000:]
        assert "Shutdown confirmed" in log_of(tmp_path)
        assert_nothing_left(proc.pid, started)
    finally:
        kill_group(proc)
        os.close(master)


def test_setup_runs_when_its_inputs_change_and_is_skipped_when_not(tmp_path):
    """A stale stamp makes run.sh run scripts/setup.sh (and renew the stamp); the next start skips it."""
    env = run_env(tmp_path)
    old = STAMP.read_text() if STAMP.exists() else None
    STAMP.write_text("a stamp from another pyproject.toml\n")
    try:
        out = subprocess.run(["bash", "scripts/run.sh", "--execute", "--help"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "[setup] mtp_edu" in out.stdout and "set-up up to date" not in out.stdout, out.stdout
        assert STAMP.read_text() != "a stamp from another pyproject.toml\n"
    except BaseException:
        if old is not None:
            STAMP.write_text(old)
        raise
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "scripts/run.sh", "--execute", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    assert "set-up up to date" in out.stdout and "[setup]" not in out.stdout, out.stdout
    assert "usage: mtp-edu notebooks" in out.stdout, out.stdout          # --execute hands its arguments on
    assert seconds < 30, f"an up-to-date start spent {seconds:.1f} s before the notebooks runner's --help"


def test_run_sh_execute_runs_the_tour_notebook(tmp_path):
    """`run.sh --execute 00_tour`: the reduced smoke run through the `mtp-edu notebooks` command."""
    out = subprocess.run(["bash", "scripts/run.sh", "--execute", "00_tour"], cwd=ROOT, env=run_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert re.search(r"^00_tour\.ipynb\s+\d+\.\d s", out.stdout, re.M), out.stdout
    assert "01_next_token" not in out.stdout                    # only the notebook that was asked for
