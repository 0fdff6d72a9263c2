"""Make mmengine checkpoints load (and ``--resume`` work) on torch >= 2.6,
without widening any other ``torch.load`` of the process.

torch >= 2.6 loads with ``weights_only=True``, which refuses every class not on
its allow-list. mmengine 0.10.7 checkpoints hold its ``HistoryBuffer`` (the
message hub's log history) with numpy arrays, dtypes and scalars inside, so
``Runner.resume`` fails with "Unsupported global ... HistoryBuffer" (mmengine
issue 1655). Rather than switching ``weights_only`` off (which would let a
checkpoint run arbitrary code), dfl_mm allow-lists exactly those types, and
only around the runner's own checkpoint loads (``scope_checkpoint_loads``,
applied by the tools and by ``DFLStepHook``).
"""
import functools
import pickle
import traceback
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_loading',
           'scope_checkpoint_loads', 'checkpoint_getattr', 'MMENGINE_CHECKPOINT_GLOBALS']


def _numpy_globals():
    core = getattr(np, '_core', None) or np.core  # numpy 2 / numpy 1
    multiarray = core.multiarray
    dtypes = [type(np.dtype(code)) for code in '?bhilqBHILQefdgFDG']
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dict.fromkeys(dtypes)]


# What mmengine 0.10.7 checkpoints reach through ``getattr``: a HistoryBuffer
# (the message hub's log history) pickles its ``_statistics_methods``, the
# functions HistoryBuffer.min / max / current / mean registered by
# ``_set_default_statistics``, by name, which pickle protocol 2 writes as
# ``getattr(HistoryBuffer, 'mean')``.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer():
    from mmengine.logging.history_buffer import HistoryBuffer
    return HistoryBuffer


def checkpoint_getattr(obj, name):
    """The ``getattr`` that mmengine checkpoints may call: only
    ``HistoryBuffer.<statistic>`` for the default statistics, nothing else.

    A real ``getattr`` would let a crafted pickle fetch
    ``HistoryBuffer.__init__.__globals__`` (or ``__builtins__``) and write into
    it; this one resolves exactly the pairs mmengine writes.

    Raises:
        pickle.UnpicklingError: any other object or attribute.
    """
    if obj is _history_buffer() and name in HISTORY_BUFFER_STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint refused: getattr({getattr(obj, "__name__", type(obj).__name__)}, '
        f'{name!r}) is not one of the HistoryBuffer statistics that mmengine '
        f'checkpoints hold ({", ".join(HISTORY_BUFFER_STATISTICS)})')


def _mmengine_globals():
    # registered under the name the pickle asks for: the real getattr is never
    # on the allow-list
    return [_history_buffer(), (checkpoint_getattr, 'builtins.getattr')]


MMENGINE_CHECKPOINT_GLOBALS = _numpy_globals() + _mmengine_globals()


@contextmanager
def mmengine_checkpoint_loading():
    """Allow-list mmengine's checkpoint types in ``torch.load`` inside the block only.

    Every other ``torch.load(weights_only=True)`` of the process keeps stock
    torch's allow-list. Inside, ``getattr`` is :func:`checkpoint_getattr`
    (the HistoryBuffer statistics only), and the one piece of class state a
    checkpoint writes, ``HistoryBuffer._statistics_methods`` (its
    ``__setstate__`` updates the class's dict), is checked after the block:
    an entry that is not ``name -> HistoryBuffer.<name>`` is undone and the
    load refused.

    Raises:
        pickle.UnpicklingError: a checkpoint that reaches anything else.
    """
    scope = getattr(torch.serialization, 'safe_globals', None)
    if scope is None:  # torch < 2.5 loads these checkpoints unrestricted anyway
        yield
        return
    methods = _history_buffer()._statistics_methods
    before = dict(methods)
    try:
        with scope(MMENGINE_CHECKPOINT_GLOBALS):
            yield
    except Exception as error:
        if isinstance(error, pickle.UnpicklingError) or not _raised_unpickling(error):
            raise
        # a malformed pickle (an unhashable key, a failing __setstate__): one kind of error
        raise pickle.UnpicklingError(
            f'checkpoint refused: its pickle is malformed ({type(error).__name__}: '
            f'{str(error)[:200]})') from error
    finally:
        # restore first, whatever the load raised, then judge what it tried: no key
        # or value a checkpoint wrote is compared, sorted or hashed before the undo
        after = list(methods.items())
        methods.clear()
        methods.update(before)
        refused = [_describe_key(name) for name, method in after
                   if not (isinstance(name, str) and before.get(name) is method)
                   and not _is_default_statistic(name, method)]
        if refused:
            raise pickle.UnpicklingError(
                f'checkpoint refused: it rebinds HistoryBuffer statistics {refused} '
                '(undone)')


def _raised_unpickling(error: BaseException) -> bool:
    """Whether ``error`` was raised inside torch's weights-only unpickler (its
    ``Unpickler.load`` on the traceback, told by code object, not by file name):
    a malformed pickle, not the runner."""
    load = torch._weights_only_unpickler.Unpickler.load.__code__
    return any(frame.f_code is load for frame, _ in traceback.walk_tb(error.__traceback__))


def _describe_key(name) -> str:
    if isinstance(name, str):
        return repr(name)
    return f'<a {type(name).__name__} key>'  # its own repr() could run a checkpoint's code


def _is_default_statistic(name, method) -> bool:
    return (isinstance(name, str) and name in HISTORY_BUFFER_STATISTICS
            and method is getattr(_history_buffer(), name))


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
