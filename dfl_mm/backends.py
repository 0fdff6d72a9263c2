"""The one dispatch point: which implementation computes a call.

Three backends share one contract (``dfl_mm.inputs.LossInputs`` in, module
functions ``forward(inputs, gamma, reduce_sum)`` and
``backward(inputs, gamma, grad_out, reduce_sum)`` returning gradients already
scaled by ``grad_out``, and ``forward_backward(inputs, gamma, scale)``: the
summed loss and its gradients, all times ``scale``, in one pass for the kernels):

* ``dfl_mm.triton_dfl``: CUDA tensors (float16/bfloat16/float32, integer labels);
* ``dfl_mm.cpu_kernel``: reduced float32 calls on CPU (see its docstring);
* ``dfl_mm.core``: everything, the reference the other two are tested against.

The Triton kernels get the safety the C kernel has: on their first use per
(device, dtype, mode) they run a small probe against the core (loss, both
gradients and the loss map, separately and, for softmax, from the fused
launch). A compile or launch error, or a mismatch, warns once (naming the
error) and sends those calls to the core from then on. ``DFL_MM_TRITON``:
``auto`` (default, as described), ``0`` (never use Triton) or ``1`` (strict:
use it wherever it applies, CPU tensors included with ``TRITON_INTERPRET=1``,
and raise instead of falling back).
"""
import os
import warnings
from typing import Dict, Optional, Tuple

import torch

from . import core, cpu_kernel, triton_dfl
from .inputs import LossInputs

__all__ = ['select', 'forward', 'backward', 'triton_setting', 'probe_triton',
           'TritonFallbackWarning']


class TritonFallbackWarning(UserWarning):
    """The Triton kernels failed somewhere; the PyTorch core takes those calls."""


# backends whose forward computes the gradients too when they are needed
FUSED = (cpu_kernel, triton_dfl)
# devices on which 'auto' uses the Triton kernels
TRITON_AUTO_DEVICES = ('cuda', )
# probe tolerance: max |triton - core| / max |core|, per compute precision
PROBE_TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}

# (device, dtype, sigmoid) -> None (the kernels work there) or why they do not
_triton_state: Dict[Tuple[str, torch.dtype, bool], Optional[str]] = {}


def triton_setting() -> str:
    setting = os.environ.get('DFL_MM_TRITON', 'auto')
    if setting not in ('auto', '0', '1'):
        raise ValueError(f"DFL_MM_TRITON must be 'auto', '0' or '1', got {setting!r}")
    return setting


def _key(inputs: LossInputs):
    return (str(inputs.logits.device), inputs.logits.dtype, bool(inputs.use_sigmoid))


def _describe(key) -> str:
    device, dtype, sigmoid = key
    return f"{'sigmoid' if sigmoid else 'softmax'} {str(dtype).replace('torch.', '')} on {device}"


def _reason(error: Exception) -> str:
    return f'{type(error).__name__}: {str(error).strip()[:300]}'


def _fail(key, reason: str) -> None:
    """Record that Triton does not work for ``key``: raise (strict) or warn once."""
    first = _triton_state.get(key) is None
    _triton_state[key] = reason
    if triton_setting() == '1':
        raise RuntimeError(f'dfl_mm: the Triton kernels failed ({_describe(key)}): {reason} '
                           '(DFL_MM_TRITON=1 makes this an error; unset it to fall back '
                           'to the PyTorch core)')
    if first:
        warnings.warn(f'dfl_mm: the Triton kernels failed ({_describe(key)}): {reason}; '
                      'these calls use the PyTorch core from now on (DFL_MM_TRITON=0 '
                      'silences this, DFL_MM_TRITON=1 makes it an error)', TritonFallbackWarning)


def _probe_inputs(device, dtype, use_sigmoid: bool):
    """Small inputs that cover tails, ignored rows and both weight kinds."""
    gen = torch.Generator().manual_seed(0)
    shape = (29, 6, 1) if use_sigmoid else (2, 6, 13)
    logits = 4 * torch.randn(shape, generator=gen)
    logits.view(-1)[:4] = torch.tensor([40.0, -40.0, 25.0, -25.0])
    classes = shape[1] + int(use_sigmoid)  # sigmoid: label C is background
    labels = torch.randint(0, classes, (shape[0], 1, shape[2]), generator=gen)
    labels.view(-1)[::7] = -1
    row_weight = torch.rand((shape[0], 1, shape[2]), generator=gen)
    class_weight = torch.rand((1, shape[1], 1), generator=gen) + 0.5
    return LossInputs(logits.to(device=device, dtype=dtype), labels.to(device),
                      row_weight.to(device), None, class_weight.to(device),
                      0.25 if use_sigmoid else None, -1, use_sigmoid)


def probe_triton(device, dtype, use_sigmoid: bool) -> Optional[str]:
    """Run the kernels once on a probe against the core: None if they agree, else why.

    Raises nothing: a compile or launch error is returned as the reason.
    """
    inputs = _probe_inputs(device, dtype, use_sigmoid)
    gamma = torch.tensor(2.0, device=inputs.logits.device)
    grad_out = torch.tensor(1.5, device=inputs.logits.device)
    reference = LossInputs(inputs.logits.float(), *inputs.tensors()[1:], inputs.alpha,
                           inputs.ignore_index, use_sigmoid)
    try:
        got = (triton_dfl.forward(inputs, gamma, True),
               *triton_dfl.backward(inputs, gamma, grad_out, True),
               triton_dfl.forward(inputs, gamma, False),
               *(() if use_sigmoid else triton_dfl.forward_backward(inputs, gamma, 0.5)))
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any compile/launch failure counts
        return _reason(error)
    want = (core.forward(reference, gamma, True),
            *core.backward(reference, gamma, grad_out, True),
            core.forward(reference, gamma, False),
            *(() if use_sigmoid else core.forward_backward(reference, gamma, 0.5)))
    tolerance = PROBE_TOLERANCE.get(dtype, PROBE_TOLERANCE[torch.float16])
    names = ('loss', 'd loss / d logits', 'd loss / d gamma', 'loss map', 'fused loss',
             'fused d loss / d logits', 'fused d loss / d gamma')
    for name, g, w in zip(names, got, want):
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        error = (g - w).abs().max().item() / max(w.abs().max().item(), 1e-12)
        if not error <= tolerance:  # NaN fails too
            return (f'{name} differs from the PyTorch core on a probe: relative error '
                    f'{error:.3g} > {tolerance:g}')
    return None


def _triton_ready(inputs: LossInputs) -> bool:
    key = _key(inputs)
    if key not in _triton_state:
        _triton_state[key] = None
        reason = probe_triton(*key)
        if reason is not None:
            _fail(key, reason)
    elif _triton_state[key] is not None and triton_setting() == '1':
        _fail(key, _triton_state[key])  # strict: every call raises
    return _triton_state[key] is None


def select(inputs: LossInputs, gamma: torch.Tensor, reduce_sum: bool):
    """The backend module for this call (see the module docstring)."""
    setting = triton_setting()
    if setting != '0' and triton_dfl.applies(inputs) and (
            setting == '1' or inputs.logits.device.type in TRITON_AUTO_DEVICES):
        if _triton_ready(inputs):
            return triton_dfl
    if cpu_kernel.should_use(inputs, gamma, reduce_sum):
        return cpu_kernel
    return core


def _guarded(backend, step: str, inputs: LossInputs, *args):
    """Run ``backend.<step>``; a failing Triton launch falls back to the core."""
    if backend is not triton_dfl:
        return getattr(backend, step)(inputs, *args), backend
    try:
        return getattr(triton_dfl, step)(inputs, *args), triton_dfl
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - a specialisation the probe did not compile
        _fail(_key(inputs), _reason(error))
    return getattr(core, step)(inputs, *args), core


def forward(backend, inputs: LossInputs, gamma: torch.Tensor, reduce_sum: bool,
            with_grad: bool = False, scale: float = 1.0):
    """(loss, the backend that computed it, gradients or None).

    The loss is a sum times ``scale`` (0-d) or the map (B, C, S). With
    ``with_grad`` the kernels (``FUSED``) compute a softmax sum's gradients
    (times ``scale``) in the same pass; backward then only applies the incoming
    gradient (measured on CPU: 1.5x faster, for one kept copy of the gradient).
    Sigmoid calls keep two passes and save nothing but their inputs: there the
    fused pass bought no time (its forward is cheap) and cost a copy of
    150M-logit RetinaNet gradients. The core keeps its two passes.
    """
    if with_grad and reduce_sum and backend in FUSED and not inputs.use_sigmoid:
        (loss, grad_logits, grad_gamma), backend = _guarded(backend, 'forward_backward',
                                                            inputs, gamma, scale)
        return loss, backend, (grad_logits, grad_gamma)
    out, backend = _guarded(backend, 'forward', inputs, gamma, reduce_sum)
    return (out * scale if reduce_sum and scale != 1.0 else out), backend, None


def backward(backend, inputs: LossInputs, gamma: torch.Tensor, grad_out: torch.Tensor,
             reduce_sum: bool):
    """Scaled (d / d logits, d / d gamma) of ``backend`` (the core if it fails)."""
    grads, _ = _guarded(backend, 'backward', inputs, gamma, grad_out, reduce_sum)
    return grads
