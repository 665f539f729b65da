#!/usr/bin/env bash
# Open the guided notebooks, installing what they need first (only when something changed).
#   bash scripts/run.sh [ARGS]             JupyterLab on notebooks/, opened at 00_tour.ipynb
#   bash scripts/run.sh --stepper [ARGS]   the drafting/acceptance stepper as a standalone Voila page
#   bash scripts/run.sh --execute [ARGS]   run the walkthrough notebooks headlessly (`mtp-edu notebooks ARGS`)
# ARGS go to jupyter lab / voila / mtp-edu notebooks: e.g. --port 8890, --ip 0.0.0.0 (in a container).
# As root it adds --allow-root (JupyterLab refuses root without it). With no display (Linux or BSD without
# $DISPLAY or $WAYLAND_DISPLAY, a Mac reached over ssh) it adds --no-browser: open the URL the server prints.
# The set-up (scripts/setup.sh) is skipped when it already ran for this pyproject.toml and setup.sh and every
# piece is still there; `rm .venv/.mtp-edu-setup` (or $MTP_EDU_VENV/.mtp-edu-setup) forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MTP_EDU_VENV:-.venv}"
mode=lab
case "${1:-}" in
  --execute) mode=execute; shift ;;
  --stepper) mode=stepper; shift ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

# 1. Set-up, unless the last one is still good: same pyproject.toml and setup.sh (the stamp), `dot` on the
#    PATH, the programs this script starts, and mtp_edu importable from this checkout (not another clone).
stamp="$venv/.mtp-edu-setup"
want="$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1,2) $PWD"
up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && command -v dot >/dev/null &&
    [ -x "$venv/bin/jupyter" ] && [ -x "$venv/bin/voila" ] && [ -x "$venv/bin/mtp-edu" ] &&
    "$venv/bin/python" -I - "$PWD" <<'PY' 2>/dev/null
import importlib.util, os, sys                             # -I: the current directory is not on sys.path
spec = importlib.util.find_spec("mtp_edu")                 # finds, does not import (fast: no torch)
here = os.path.join(os.path.realpath(sys.argv[1]), "mtp_edu", "")
ok = spec is not None and os.path.realpath(spec.origin).startswith(here)
ok = ok and all(importlib.util.find_spec(m) for m in ("torch", "jupyterlab", "voila", "nbclient", "ipywidgets"))
sys.exit(0 if ok else 1)
PY
}
if up_to_date; then
  echo "[run] set-up up to date in $venv (pyproject.toml and scripts/setup.sh unchanged; rm $stamp to redo it)"
else
  bash scripts/setup.sh
  printf '%s\n' "$want" > "$stamp" || true
fi

# 2. Where we run: as root? with a screen for a browser?
root=0; [ "$(id -u)" = 0 ] && root=1
display=1
case "$(uname -s)" in
  Darwin) [ -z "${SSH_CONNECTION:-}" ] || display=0 ;;
  CYGWIN*|MINGW*|MSYS*) ;;
  *) [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || display=0 ;;
esac

# 3. Start it. exec: Ctrl-C, SIGTERM and the exit status are the server's own, and no wrapper is left behind.
case $mode in
  execute)
    cmd=("$venv/bin/mtp-edu" notebooks "$@") ;;
  lab)
    cmd=("$venv/bin/jupyter" lab "--ServerApp.root_dir=$PWD/notebooks" --LabApp.default_url=/lab/tree/00_tour.ipynb)
    [ $root = 1 ] && cmd+=(--allow-root)
    [ $display = 1 ] || cmd+=(--no-browser)
    cmd+=("$@")
    echo "[run] JupyterLab on notebooks/: start with 00_tour.ipynb (the URL the server prints opens it)."
    [ $display = 1 ] || echo "[run] no display here, so no browser: open the URL ending in" \
      "/lab/tree/00_tour.ipynb?token=... printed below (in a container: --ip 0.0.0.0 and publish the port)."
    echo "[run] stop it with Ctrl-C twice (or Ctrl-C, then y)." ;;
  stepper)
    cmd=("$venv/bin/voila" notebooks/stepper_demo.ipynb)
    [ $display = 1 ] || cmd+=(--no-browser)
    while [ $# -gt 0 ]; do                  # Voila spells JupyterLab's --ip as --Voila.ip
      case $1 in
        --ip) cmd+=("--Voila.ip=${2:?--ip needs an address}"); shift 2 ;;
        --ip=*) cmd+=("--Voila.ip=${1#--ip=}"); shift ;;
        *) cmd+=("$1"); shift ;;
      esac
    done
    echo "[run] Voila: the stepper page (notebooks/stepper_demo.ipynb, code hidden); each page load runs it anew."
    [ $display = 1 ] || echo "[run] no display here, so no browser: open the URL after 'Voilà is running at' below."
    echo "[run] stop it with Ctrl-C." ;;
esac
echo "[run] ${cmd[*]}"
exec "${cmd[@]}"
