#!/usr/bin/env bash
# Sourced by the launch scripts: PY is the interpreter they run.
#   PYTHON if set; else `python` of an activated virtual environment; else the
#   installer's environment ($VENV, default .venv in the checkout) when it exists;
#   else `python` from the PATH.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  PY=python
elif [ -x "${VENV:-$_root/.venv}/bin/python" ]; then
  PY="${VENV:-$_root/.venv}/bin/python"
else
  PY=python
fi
