#!/usr/bin/env bash
# Set up mtp-edu in a virtual environment (.venv, or $MTP_EDU_VENV): system packages, torch, the package.
#   bash scripts/setup.sh         what the notebooks need
#   bash scripts/setup.sh --dev   plus what the tests need
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0; [ "${1:-}" = "--dev" ] && dev=1
venv="${MTP_EDU_VENV:-.venv}"

# 1. System packages: graphviz's `dot` renders the diagrams (pip's graphviz is only its Python wrapper).
#    Debian's chromium drives the browser test (--dev); Playwright uses it, never a browser of its own.
missing=()
command -v dot >/dev/null || missing+=(graphviz)
[ $dev = 1 ] && ! command -v chromium >/dev/null && missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "[setup] apt-get install ${missing[*]}"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] please install: ${missing[*]} (macOS: brew install graphviz; conda: conda install -c conda-forge graphviz)" >&2
    echo "[setup] (chromium is needed only by tests/test_browser.py)" >&2
    exit 1
  fi
fi

# 2. A virtual environment.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"

# 3. torch: keep one that is already there. Otherwise prefer a wheel that pip finds locally without
#    an index (the CPU build of 2.13.0 lies on disk on the machines CI uses: seconds, not a multi-GB
#    CUDA download); else the newest torch from PyPI. pyproject only asks for torch>=2.4.
if ! "$py" -c "import torch" 2>/dev/null; then
  if "$py" -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
    "$py" -m pip install -q torch==2.13.0           # the wheel was local; now its dependencies
  else
    "$py" -m pip install -q torch
  fi
fi

# 4. The package itself, editable, with its Python dependencies.
extra=""; [ $dev = 1 ] && extra="[dev]"
"$py" -m pip install -q -e ".${extra}"
"$py" -c "import torch, mtp_edu; print(f'[setup] mtp_edu {mtp_edu.__version__}, torch {torch.__version__}, python in $venv')"
