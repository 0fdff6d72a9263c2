"""Moved to :mod:`dfl_mm.engine.hooks` (this path: one more release)."""
from ._moved import alias

alias(__name__, 'dfl_mm.engine.hooks')
