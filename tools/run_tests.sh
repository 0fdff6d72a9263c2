#!/usr/bin/env bash
# Install everything (see tools/install.sh) and run the test suite.
#   bash tools/run_tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/install.sh" --tests
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest -p no:cacheprovider "$@" tests
