#!/usr/bin/env bash
# Install everything (see tools/install.sh) and run the test suite.
#   bash tools/run_tests.sh                     the whole suite (what CI runs)
#   bash tools/run_tests.sh tests/test_adaptive.py -x   what you name, with pytest's flags
#   bash tools/run_tests.sh -m "not slow"       the fast inner loop (flags alone: all of tests/)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/install.sh" --tests
cd "$ROOT"
# run the whole suite unless a test path (file, folder or node id) is named
named=0
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ -e "${arg%%::*}" ]; then named=1; fi ;;
  esac
done
if [ "$named" -eq 0 ]; then
  set -- "$@" tests
fi
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest -p no:cacheprovider "$@"
