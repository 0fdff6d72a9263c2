"""The module paths before the layer folders, kept as aliases for one release.

``dfl_mm/<name>.py`` is a one-line shim that makes ``dfl_mm.<name>`` the very
module object of its new home (same attributes, same registered classes), with a
``DeprecationWarning`` naming the new path; ``dfl_mm.functional`` is documented
API and stays without a warning.
"""
import importlib
import sys
import warnings


def alias(old: str, new: str, deprecated: bool = True) -> None:
    """Make ``sys.modules[old]`` the module ``new`` (imported if needed)."""
    module = importlib.import_module(new)
    if deprecated:
        warnings.warn(f'{old} moved to {new}; the old path works until the next release',
                      DeprecationWarning, stacklevel=3)
    sys.modules[old] = module
