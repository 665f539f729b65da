#!/usr/bin/env bash
# Install everything the tests need, then run them: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec "${MTP_EDU_VENV:-.venv}/bin/python" -m pytest "$@"
