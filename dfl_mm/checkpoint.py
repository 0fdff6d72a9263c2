"""Moved to :mod:`dfl_mm.engine.checkpoint` (this path: one more release)."""
from ._moved import alias

alias(__name__, 'dfl_mm.engine.checkpoint')
