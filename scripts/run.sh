#!/usr/bin/env bash
# Install what the suite needs, then open the guided notebooks in JupyterLab.
#   bash scripts/run.sh            open JupyterLab on notebooks/
#   bash scripts/run.sh --execute  run every walkthrough notebook headlessly instead (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${MTP_EDU_VENV:-.venv}"
if [ "${1:-}" = "--execute" ]; then
  exec "$venv/bin/mtp-edu" notebooks
fi
exec "$venv/bin/jupyter" lab notebooks/
