"""Moved to :mod:`dfl_mm.models.heads` (this path: one more release)."""
from ._moved import alias

alias(__name__, 'dfl_mm.models.heads')
