"""Moved to :mod:`dfl_mm.apis.switch` (this path: one more release)."""
from ._moved import alias

alias(__name__, 'dfl_mm.apis.switch')
