"""``dfl_mm.ops``: the torch-only loss stack, one registry of backends.

Every backend is a module with the same surface (see ``docs/architecture.md``,
"Add a backend"): ``NAME``, ``AUTO_DEVICES`` (the device types ``auto`` uses
it on; None: every one), a pure ``applies(inputs, gamma, reduce_sum)``,
``unavailable(inputs) -> reason | None`` and ``forward`` / ``backward`` /
``forward_backward`` on the one contract, ``LossInputs`` (``.inputs``); every
call reaches them through the custom ops of ``.custom_ops`` (the one autograd path):

* ``triton`` (``.triton_kernels``): CUDA; its ``unavailable()`` is the
  first-use probe against the reference;
* ``cpu`` (``.cpu``): the C kernel for CPU float32 sums;
* ``reference`` (``.reference``): the PyTorch reference, every call.

One switch picks them: ``DFL_MM_BACKEND`` = ``auto`` (default: the first of
``BACKENDS`` that applies to the call and is available on its device; an
unavailable one warns once, ``BackendFallbackWarning``, and is skipped) or a
backend's name (strict: that backend wherever it applies, the reference
elsewhere; unavailable or failing, it raises). ``use(name)`` sets it for a
block (tests, benchmarks, ``gpu_check``). A launch that fails at run time is
handled by the same policy.

Nothing here imports mmengine, mmdet, mmseg or mmcv.
"""
import os
import threading
import warnings
from contextlib import contextmanager
from typing import Dict, Tuple

import torch

from . import cpu, reference, triton_kernels
from .inputs import Backend, CallRefused, LossInputs
from .triton_kernels import KernelMode

__all__ = ['BACKENDS', 'SETTINGS', 'Backend', 'BackendFallbackWarning',
           'LossInputs', 'KernelMode', 'CallRefused',
           'setting', 'use', 'select', 'forward', 'forward_backward', 'backward']

# the order in which 'auto' tries them (the reference takes what is left)
BACKENDS = (triton_kernels, cpu, reference)
BY_NAME = {backend.NAME: backend for backend in BACKENDS}
SETTINGS = ('auto', ) + tuple(BY_NAME)


class BackendFallbackWarning(UserWarning):
    """A backend can not take some calls here; the next one (in the end the
    PyTorch reference) takes them."""


_local = threading.local()  # use(): the setting of the current block, per thread
# (backend, device, dtype, sigmoid) -> why it failed at run time there
_failed: Dict[Tuple[str, str, torch.dtype, bool], str] = {}
_warned = set()


def setting() -> str:
    """The backend named, or 'auto': from ``use()``, else ``DFL_MM_BACKEND``.

    Raises:
        ValueError: a value that names no backend.
    """
    override = getattr(_local, 'name', None)
    if override is not None:
        return override
    name = os.environ.get('DFL_MM_BACKEND', 'auto')
    if name not in SETTINGS:
        raise ValueError(f'DFL_MM_BACKEND must be one of {SETTINGS}, got {name!r}')
    return name


@contextmanager
def use(name: str):
    """Run the block with backend ``name`` (or 'auto'), whatever the environment.

    Example:
        >>> with dfl_mm.ops.use('reference'):
        ...     loss = dual_focal_loss(logits, labels)
    """
    if name not in SETTINGS:
        raise ValueError(f'backend must be one of {SETTINGS}, got {name!r}')
    previous = getattr(_local, 'name', None)
    _local.name = name
    try:
        yield
    finally:
        _local.name = previous


def _key(backend, inputs: LossInputs):
    logits = inputs.logits
    return (backend.NAME, str(logits.device), logits.dtype, bool(inputs.use_sigmoid))


def _describe(key) -> str:
    name, device, dtype, sigmoid = key
    return (f"{name} backend ({'sigmoid' if sigmoid else 'softmax'} "
            f"{str(dtype).replace('torch.', '')} on {device})")


def _fall_back(key, reason: str, strict: bool, cache: bool = True) -> None:
    """The one policy: raise when the backend was named, else warn once (a failure
    of one call, ``cache=False``, routes that call only)."""
    if strict:
        raise RuntimeError(f'dfl_mm: DFL_MM_BACKEND={key[0]} names the {_describe(key)}, '
                           f'which failed: {reason} (DFL_MM_BACKEND=auto falls back to '
                           'the PyTorch reference)')
    if (key, cache) not in _warned:
        _warned.add((key, cache))
        then = 'these calls use the next backend from now on' if cache else \
            'it uses the next backend'
        warnings.warn(f'dfl_mm: the {_describe(key)} failed: {reason}; {then} '
                      '(DFL_MM_BACKEND=reference silences this)', BackendFallbackWarning)


def _ready(backend, inputs: LossInputs, strict: bool) -> bool:
    key = _key(backend, inputs)
    reason = _failed.get(key) or backend.unavailable(inputs)
    if reason is not None:
        _fall_back(key, reason, strict)
    return reason is None


def select(inputs: LossInputs, gamma: torch.Tensor, reduce_sum: bool):
    """The backend module for this call (see the module docstring)."""
    name = setting()
    if name != 'auto':
        backend = BY_NAME[name]
        if backend.applies(inputs, gamma, reduce_sum) and _ready(backend, inputs, True):
            return backend
        return reference
    device = inputs.logits.device.type
    for backend in BACKENDS:
        if (backend.applies(inputs, gamma, reduce_sum)
                and (backend.AUTO_DEVICES is None or device in backend.AUTO_DEVICES)
                and _ready(backend, inputs, False)):
            return backend
    return reference


def _guarded(backend, step: str, inputs: LossInputs, *args):
    """Run ``backend.<step>``; a failure at run time follows the fallback policy."""
    if backend is reference:
        return getattr(reference, step)(inputs, *args)
    try:
        return getattr(backend, step)(inputs, *args)
    except torch.cuda.OutOfMemoryError:
        raise
    except (CallRefused, MemoryError) as error:  # about this call: the backend stays on
        key = _key(backend, inputs)
        _fall_back(key, f'{type(error).__name__}: {str(error).strip()[:300]} (this call '
                   'only)', setting() != 'auto', cache=False)
    except Exception as error:  # noqa: BLE001 - e.g. a specialisation the probe did not compile
        key = _key(backend, inputs)
        _failed[key] = f'{type(error).__name__}: {str(error).strip()[:300]}'
        _fall_back(key, _failed[key], setting() != 'auto')
    return getattr(reference, step)(inputs, *args)


def forward(backend, inputs: LossInputs, gamma: torch.Tensor, reduce_sum: bool,
            scale: float = 1.0) -> torch.Tensor:
    """The loss of ``backend`` (the reference if it fails): its sum times ``scale``
    (0-d) or the map (B, C, S)."""
    out = _guarded(backend, 'forward', inputs, gamma, reduce_sum)
    return out * scale if reduce_sum and scale != 1.0 else out


def forward_backward(backend, inputs: LossInputs, gamma: torch.Tensor, scale: float):
    """(summed loss, d / d logits, d / d gamma), all times ``scale``: one pass on the
    kernels, two on the reference."""
    return _guarded(backend, 'forward_backward', inputs, gamma, scale)


def backward(backend, inputs: LossInputs, gamma: torch.Tensor, grad_out: torch.Tensor,
             reduce_sum: bool):
    """Scaled (d / d logits, d / d gamma) of ``backend`` (the reference if it fails)."""
    return _guarded(backend, 'backward', inputs, gamma, grad_out, reduce_sum)
