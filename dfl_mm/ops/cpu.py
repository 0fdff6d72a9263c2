"""The CPU fast path: the loss and its gradients as a small C library,
``csrc/dfl_cpu.c``, for sigmoid mode on (N, C) logits (mmdet's dense heads)
and softmax mode on (B, C, ...) maps (mmseg's decode heads).

The pure-PyTorch core needs about ten full passes of transcendental ATen ops
per element; the C loops do the same maths in one vectorised pass per
direction (softmax: loss and gradients in one call, a few passes over each
block of pixels, deterministic for any thread count). The library is compiled on
first use with the system C compiler (``$CC``, else ``cc``) for this CPU
(``-march=native``) and cached under ``$DFL_MM_CACHE_DIR`` (default
``~/.cache/dfl_mm``), keyed by the source, the flags and the CPU, as Triton
does for GPU kernels.

Backend ``cpu`` of ``dfl_mm.ops`` (``DFL_MM_BACKEND=cpu`` names it; ``auto``
uses it on CPU tensors, falling back to the reference with one warning if it
cannot be built). It applies to
contiguous CPU float32 logits with integer labels and one gamma for all
classes, with optional row/pixel weights, class weights, alpha (sigmoid) and
ignore_index, when the loss is reduced ('mean'/'sum'). Everything else (soft
targets, per-element weights, per-class gamma, dense sigmoid maps, 'none',
float64 and half inputs) runs on the PyTorch reference, which the kernel is
tested against. The C interface is one struct per direction: every entry point
is ``int dfl_<mode>_<pass>(const DflArgs *, DflOut *)`` returning a status, and
``DflArgs``/``DflOut`` below mirror the C structs field for field.
"""
import ctypes
import hashlib
import os
import os.path as osp
import platform
import subprocess
import tempfile
from typing import Optional

import torch

from .inputs import CallRefused

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'dfl_cpu.c')
# -D__FAST_MATH__ only makes glibc's <math.h> declare the SIMD variants of
# expf/logf/expm1f/log1pf (libmvec); the maths stays IEEE (no -ffast-math).
FLAGS = ['-O3', '-march=native', '-fopenmp', '-fno-math-errno', '-fno-trapping-math',
         '-D__FAST_MATH__', '-Wno-builtin-macro-redefined', '-fPIC', '-shared']
LIBS = ['-lmvec', '-lm']

_lib = None
_failure: Optional[str] = None


def _cpu_signature() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return ''.join(sorted({line for line in f
                                   if line.startswith(('flags', 'model name'))}))
    except OSError:
        return platform.processor()


def _cache_dir() -> str:
    """``$DFL_MM_CACHE_DIR``, else ~/.cache/dfl_mm, else (read-only home) the temp dir."""
    configured = os.environ.get('DFL_MM_CACHE_DIR')
    cache = configured or osp.join(osp.expanduser('~'), '.cache', 'dfl_mm')
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError:
        if configured:
            raise
        cache = osp.join(tempfile.gettempdir(), f'dfl_mm_{os.getuid()}')
        os.makedirs(cache, exist_ok=True)
    return cache


def _build() -> str:
    """Compile the library if this source/flags/CPU has none yet; its path."""
    if platform.system() != 'Linux' or platform.machine() not in ('x86_64', 'AMD64'):
        raise RuntimeError(f'built for Linux x86-64 only, this is '
                           f'{platform.system()} {platform.machine()}')
    compiler = os.environ.get('CC', 'cc')
    with open(SOURCE, 'rb') as f:
        source = f.read()
    key = hashlib.sha256(b'\0'.join([
        source, ' '.join([compiler] + FLAGS + LIBS).encode(),
        _cpu_signature().encode()])).hexdigest()[:16]
    cache = _cache_dir()
    path = osp.join(cache, f'dfl_cpu_{key}.so')
    if osp.exists(path):
        return path
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *FLAGS, SOURCE, '-o', tmp, *LIBS],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f'{compiler} failed: {proc.stderr.strip()[-800:]}')
        os.replace(tmp, path)  # atomic: processes racing on first use are safe
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def _load():
    """The loaded library, or None (with the reason in ``_failure``); builds once."""
    global _lib, _failure
    if _lib is None and _failure is None:
        try:
            _lib = _open(_build())
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            _failure = str(error)
    return _lib


class DflArgs(ctypes.Structure):
    """Mirror of ``DflArgs`` in ``csrc/dfl_cpu.c`` (one call's inputs)."""

    _fields_ = [('logits', ctypes.c_void_p), ('labels', ctypes.c_void_p),
                ('row_weight', ctypes.c_void_p), ('pos_weight', ctypes.c_void_p),
                ('neg_weight', ctypes.c_void_p), ('batch', ctypes.c_int64),
                ('classes', ctypes.c_int64), ('spatial', ctypes.c_int64),
                ('has_ignore', ctypes.c_int64), ('ignore_index', ctypes.c_int64),
                ('gamma', ctypes.c_float), ('scale', ctypes.c_float),
                ('grad', ctypes.c_void_p), ('threads', ctypes.c_int32)]


class DflOut(ctypes.Structure):
    """Mirror of ``DflOut``: the loss sum and d loss / d gamma (unscaled)."""

    _fields_ = [('loss', ctypes.c_double), ('grad_gamma', ctypes.c_double)]


# DflStatus
OK, NO_MEMORY, BAD_ARGS = 0, 1, 2
ENTRY_POINTS = ('sigmoid_forward', 'sigmoid_backward', 'softmax_forward',
                'softmax_backward', 'softmax_forward_backward')


def _open(path: str):
    """Load the library, check the ABI handshake and declare its entry points:
    int f(const DflArgs*, DflOut*)."""
    lib = ctypes.CDLL(path)
    check_abi(lib)
    for name in ENTRY_POINTS:
        function = getattr(lib, f'dfl_{name}')
        function.argtypes = [ctypes.POINTER(DflArgs), ctypes.POINTER(DflOut)]
        function.restype = ctypes.c_int
    return lib


def abi() -> list:
    """What ``dfl_abi`` in the C source must report: the sizes of the two structs
    and the offsets of their fields, in order, as the ctypes mirrors lay them out."""
    return ([ctypes.sizeof(DflArgs), ctypes.sizeof(DflOut)]
            + [getattr(DflArgs, name).offset for name, _ in DflArgs._fields_]
            + [getattr(DflOut, name).offset for name, _ in DflOut._fields_])


def check_abi(lib) -> None:
    """Raise RuntimeError unless the library's structs are laid out as the mirrors."""
    expected = abi()
    reported = (ctypes.c_int64 * len(expected))()
    lib.dfl_abi.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int64]
    lib.dfl_abi.restype = ctypes.c_int64
    count = lib.dfl_abi(reported, len(expected))
    if count != len(expected) or list(reported) != expected:
        raise RuntimeError(f'ABI mismatch between csrc/dfl_cpu.c ({count} entries: '
                           f'{list(reported)}) and the ctypes mirrors ({expected}): '
                           'DflArgs / DflOut differ')


NAME = 'cpu'
AUTO_DEVICES = ('cpu', )


def applies(inputs, gamma, reduce_sum: bool) -> bool:
    """Whether the kernel implements this call (see the module docstring): pure."""
    logits, target = inputs.logits, inputs.target
    return (reduce_sum and logits.device.type == 'cpu' and logits.dtype == torch.float32
            and logits.shape[1] >= 1 and logits.is_contiguous() and not target.is_floating_point()
            and inputs.elem_weight is None and gamma.dim() == 0
            and (logits.shape[2] == 1 or not inputs.use_sigmoid))


def unavailable(inputs=None) -> Optional[str]:
    """Why the kernel can not run here (it failed to build), or None."""
    return None if _load() is not None else f'the CPU kernel could not be built: {_failure}'


def _arguments(inputs, gamma, scale: float = 1.0, grad: Optional[torch.Tensor] = None):
    """The ``DflArgs`` of a call, and the tensors its pointers point into."""
    batch, classes, spatial = inputs.logits.shape
    pixels = batch * spatial
    labels = inputs.target.reshape(pixels).to(torch.int64).contiguous()
    row_weight = (None if inputs.row_weight is None
                  else inputs.row_weight.reshape(pixels).to(torch.float32).contiguous())
    class_weight = (torch.ones(classes) if inputs.class_weight is None
                    else inputs.class_weight.reshape(classes).to(torch.float32))
    if inputs.use_sigmoid and inputs.alpha is not None:
        pos_weight = (class_weight * inputs.alpha).contiguous()
        neg_weight = (class_weight * (1.0 - inputs.alpha)).contiguous()
    else:
        pos_weight = neg_weight = class_weight.contiguous()
    keep = (labels, row_weight, pos_weight, neg_weight, grad)

    def address(t):
        return None if t is None else t.data_ptr()

    args = DflArgs(
        logits=inputs.logits.data_ptr(), labels=labels.data_ptr(), row_weight=address(row_weight),
        pos_weight=pos_weight.data_ptr(), neg_weight=neg_weight.data_ptr(), batch=batch,
        classes=classes, spatial=spatial, has_ignore=int(inputs.ignore_index is not None),
        ignore_index=0 if inputs.ignore_index is None else int(inputs.ignore_index),
        gamma=float(gamma), scale=scale, grad=address(grad), threads=torch.get_num_threads())
    return args, keep


def run(name: str, args: DflArgs) -> DflOut:
    """Run ``dfl_<name>`` (one of ``ENTRY_POINTS``) on ``args``.

    Raises:
        MemoryError: the kernel could not allocate its scratch.
        CallRefused: the kernel refused this call's arguments.
        RuntimeError: the kernel is unavailable.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(unavailable())
    out = DflOut()
    status = getattr(lib, f'dfl_{name}')(ctypes.byref(args), ctypes.byref(out))
    if status == NO_MEMORY:
        raise MemoryError(f'dfl_mm CPU kernel: could not allocate the softmax scratch for '
                          f'{args.classes} classes (up to 3 x 4 bytes x classes x 32 pixels '
                          'per thread); DFL_MM_BACKEND=reference uses the PyTorch reference')
    if status != OK:
        raise CallRefused(f'dfl_mm CPU kernel: dfl_{name} refused its arguments '
                           f'(status {status})')
    return out


def call(name: str, inputs, gamma, scale: float = 1.0, grad=None) -> DflOut:
    """Run ``dfl_<name>`` on a call's inputs (see :func:`run`)."""
    args, _keep = _arguments(inputs, gamma, scale, grad)
    return run(name, args)


def _mode(inputs) -> str:
    return 'sigmoid' if inputs.use_sigmoid else 'softmax'


def forward(inputs, gamma, reduce_sum: bool = True) -> torch.Tensor:
    """Sum of the weighted element losses (float32 scalar); only sums are supported."""
    return torch.tensor(call(f'{_mode(inputs)}_forward', inputs, gamma).loss,
                        dtype=torch.float32)


def forward_backward(inputs, gamma, scale: float):
    """Softmax mode: the summed loss and its gradients in one pass (a forward
    pass whose gradients are needed), all times ``scale``.

    Returns:
        (loss 0-d float32, d / d logits (B, C, S) float32, d / d gamma 0-d float32).
    """
    grad = torch.empty_like(inputs.logits)
    out = call('softmax_forward_backward', inputs, gamma, scale, grad)
    return (torch.tensor(out.loss * scale, dtype=torch.float32), grad,
            torch.tensor(out.grad_gamma * scale, dtype=torch.float32))


def backward(inputs, gamma, grad_out: torch.Tensor, reduce_sum: bool = True):
    """Gradients of ``grad_out`` times the summed loss, scaled as the kernel writes them.

    Returns:
        (d / d logits (B, C, S) float32, d / d gamma 0-d float32).
    """
    scale = float(grad_out)
    grad = torch.empty_like(inputs.logits)
    out = call(f'{_mode(inputs)}_backward', inputs, gamma, scale, grad)
    return grad, torch.tensor(out.grad_gamma * scale, dtype=torch.float32)
