"""The loss function, :mod:`dfl_mm.core.functional` (this path is documented API)."""
from ._moved import alias

alias(__name__, 'dfl_mm.core.functional', deprecated=False)
