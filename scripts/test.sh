#!/usr/bin/env bash
# Install everything the tests need, then run them: the unit tests, every walkthrough notebook, its worked
# solutions and every assignment solution (nbmake: a failing cell fails), and the real-browser test.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec "${MTP_EDU_VENV:-.venv}/bin/python" -m pytest tests \
  --nbmake notebooks/[0-9][0-9]_*.ipynb notebooks/solutions/*.ipynb notebooks/assignments/*_solution.ipynb "$@"
