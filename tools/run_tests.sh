#!/usr/bin/env bash
# Install everything (see tools/install.sh) and run the test suite.
#   bash tools/run_tests.sh                     the whole suite (what CI runs): the fast
#                                               tests, then, if they pass, the slow ones
#   bash tools/run_tests.sh tests/test_adaptive.py -x   what you name, with pytest's flags
#   bash tools/run_tests.sh -m "not slow"       the fast inner loop (flags alone: all of tests/)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/install.sh" --tests
cd "$ROOT"
PY="${VENV:-$ROOT/.venv}/bin/python"
# no arguments (what CI runs): the fast tests first, and the slow end-to-end ones only
# when those pass
if [ "$#" -eq 0 ]; then
  "$PY" -m pytest -p no:cacheprovider -m "not slow" tests || exit $?
  exec "$PY" -m pytest -p no:cacheprovider -m slow tests
fi
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
exec "$PY" -m pytest -p no:cacheprovider "$@"
