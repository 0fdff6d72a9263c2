"""Moved to :mod:`dfl_mm.apis.cli` (this path: one more release)."""
from ._moved import alias

alias(__name__, 'dfl_mm.apis.cli')
