"""Make mmengine checkpoints load (and ``--resume`` work) on torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True``, which refuses every class not on
its allow-list. mmengine 0.10.7 checkpoints hold its ``HistoryBuffer`` (the
message hub's log history) with numpy arrays, dtypes and scalars inside, so
``Runner.resume`` fails with "Unsupported global ... HistoryBuffer" (mmengine
issue 1655). Rather than switching ``weights_only`` off (which would let a
checkpoint run arbitrary code), dfl_mm adds exactly those types to torch's
allow-list: loading stays restricted to plain data.
"""
import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'MMENGINE_CHECKPOINT_GLOBALS']


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


def allow_mmengine_checkpoints() -> bool:
    """Allow-list the data types of mmengine checkpoints in ``torch.load``.

    Returns:
        bool: False on a torch without ``add_safe_globals`` (< 2.4), which
        loads these checkpoints unrestricted anyway.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        return False
    add(MMENGINE_CHECKPOINT_GLOBALS)
    return True
