"""The loss function: :mod:`dfl_mm.core.functional` under its documented public path
(the same module object, so its attributes are the core's)."""
import sys

from .core import functional

sys.modules[__name__] = functional
