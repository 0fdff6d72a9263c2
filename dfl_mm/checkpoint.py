"""Make mmengine checkpoints load (and ``--resume`` work) on torch >= 2.6,
without widening any other ``torch.load`` of the process.

torch >= 2.6 loads with ``weights_only=True``, which refuses every class not on
its allow-list. mmengine 0.10.7 checkpoints hold its ``HistoryBuffer`` (the
message hub's log history) with numpy arrays, dtypes and scalars inside, so
``Runner.resume`` fails with "Unsupported global ... HistoryBuffer" (mmengine
issue 1655). Rather than switching ``weights_only`` off (which would let a
checkpoint run arbitrary code), dfl_mm allow-lists exactly those types, and
only around the runner's own checkpoint loads (``scope_checkpoint_loads``,
applied by the tools and by ``DFLGammaHook``).
"""
import functools
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_loading',
           'scope_checkpoint_loads', 'MMENGINE_CHECKPOINT_GLOBALS']


def _numpy_globals():
    core = getattr(np, '_core', None) or np.core  # numpy 2 / numpy 1
    multiarray = core.multiarray
    dtypes = [type(np.dtype(code)) for code in '?bhilqBHILQefdgFDG']
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dict.fromkeys(dtypes)]


def _mmengine_globals():
    from mmengine.logging.history_buffer import HistoryBuffer

    # HistoryBuffer pickles its bound statistics methods as
    # getattr(buffer, 'mean'). The restricted unpickler refuses to call
    # anything not on the allow-list, so getattr can only look up attributes
    # of objects it was allowed to build, never run them.
    return [HistoryBuffer, getattr]


MMENGINE_CHECKPOINT_GLOBALS = _numpy_globals() + _mmengine_globals()


@contextmanager
def mmengine_checkpoint_loading():
    """Allow-list mmengine's checkpoint types in ``torch.load`` inside the block only.

    Every other ``torch.load(weights_only=True)`` in the process keeps stock
    torch's allow-list: ``getattr`` (which mmengine checkpoints need) lets a
    crafted checkpoint reach attributes of allowed objects, e.g. overwrite
    ``HistoryBuffer``'s statistics methods, so it is allowed only here.
    """
    scope = getattr(torch.serialization, 'safe_globals', None)
    if scope is None:  # torch < 2.5 loads these checkpoints unrestricted anyway
        yield
        return
    with scope(MMENGINE_CHECKPOINT_GLOBALS):
        yield


def scope_checkpoint_loads(runner) -> None:
    """Run ``runner.load_checkpoint`` and ``runner.resume`` (what
    ``load_or_resume`` calls for ``load_from`` / ``--resume``) inside
    :func:`mmengine_checkpoint_loading`. Idempotent."""
    for name in ('load_checkpoint', 'resume'):
        method = getattr(runner, name)
        if getattr(method, 'dfl_scoped', False):
            continue

        @functools.wraps(method)
        def scoped(*args, _method=method, **kwargs):
            with mmengine_checkpoint_loading():
                return _method(*args, **kwargs)

        scoped.dfl_scoped = True
        setattr(runner, name, scoped)


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint types for the whole process (opt-in).

    Prefer :func:`mmengine_checkpoint_loading`; this widens every
    ``torch.load(weights_only=True)`` of the process (see its docstring).

    Returns:
        bool: False on a torch without ``add_safe_globals`` (< 2.4), which
        loads these checkpoints unrestricted anyway.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    add(MMENGINE_CHECKPOINT_GLOBALS)
    return True
