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

``DFL_MM_CPU_KERNEL``: ``auto`` (default: use it where it applies, fall back to
the PyTorch core with one warning if it cannot be built), ``0`` (never) or
``1`` (always where it applies; a build failure is an error). It applies to
contiguous CPU float32 logits with integer labels and one gamma for all
classes, with optional row/pixel weights, class weights, alpha (sigmoid) and
ignore_index, when the loss is reduced ('mean'/'sum'). Everything else (soft
targets, per-element weights, per-class gamma, dense sigmoid maps, 'none',
float64 and half inputs) runs on the PyTorch core, the reference the kernel
is tested against.
"""
import ctypes
import hashlib
import os
import os.path as osp
import platform
import subprocess
import tempfile
import warnings
from typing import Optional

import torch

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'dfl_cpu.c')
# -D__FAST_MATH__ only makes glibc's <math.h> declare the SIMD variants of
# expf/logf/expm1f/log1pf (libmvec); the maths stays IEEE (no -ffast-math).
FLAGS = ['-O3', '-march=native', '-fopenmp', '-fno-math-errno', '-fno-trapping-math',
         '-D__FAST_MATH__', '-Wno-builtin-macro-redefined', '-fPIC', '-shared']
LIBS = ['-lmvec', '-lm']

_lib = None
_failure: Optional[str] = None


def _setting() -> str:
    setting = os.environ.get('DFL_MM_CPU_KERNEL', 'auto')
    if setting not in ('auto', '0', '1'):
        raise ValueError(f"DFL_MM_CPU_KERNEL must be 'auto', '0' or '1', got {setting!r}")
    return setting


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
    """The loaded library, or None (with the reason in ``_failure``)."""
    global _lib, _failure
    if _lib is not None:
        return _lib
    if _failure is None:
        try:
            _lib = _open(_build())
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            _failure = str(error)
            if _setting() != '1':
                warnings.warn(f'dfl_mm: CPU kernel unavailable ({_failure}); using the '
                              'PyTorch path (DFL_MM_CPU_KERNEL=0 silences this)')
    if _lib is None and _setting() == '1':
        raise RuntimeError(f'DFL_MM_CPU_KERNEL=1 but the CPU kernel is unavailable: '
                           f'{_failure}')
    return _lib


def _open(path: str):
    """Load the library and declare its functions."""
    lib = ctypes.CDLL(path)
    pointer, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    sigmoid = [pointer] * 5 + [i64, i64, i64, i64, f32]
    softmax = [pointer] * 4 + [i64, i64, i64, i64, i64, f32]
    for name, common in (('sigmoid', sigmoid), ('softmax', softmax)):
        forward_fn = getattr(lib, f'dfl_{name}_forward')
        forward_fn.argtypes, forward_fn.restype = common + [ctypes.c_int], ctypes.c_double
        backward_fn = getattr(lib, f'dfl_{name}_backward')
        backward_fn.argtypes = common + [f32, pointer, ctypes.c_int]
        backward_fn.restype = ctypes.c_double
    # softmax: the forward pass fused into the backward one (also the loss sum)
    fused = lib.dfl_softmax_forward_backward
    fused.argtypes = softmax + [f32, pointer, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                ctypes.POINTER(ctypes.c_double)]
    fused.restype = ctypes.c_double
    # the softmax functions allocate scratch: they report a failed malloc
    lib.dfl_softmax_forward.argtypes.append(ctypes.POINTER(ctypes.c_int))
    lib.dfl_softmax_backward.argtypes.append(ctypes.POINTER(ctypes.c_int))
    return lib


def should_use(inputs, gamma, reduce_sum: bool) -> bool:
    """Whether this call goes through the C kernel (see module docstring)."""
    logits, target = inputs.logits, inputs.target
    applies = (
        reduce_sum and logits.device.type == 'cpu' and logits.dtype == torch.float32
        and logits.is_contiguous() and not target.is_floating_point()
        and inputs.elem_weight is None and gamma.dim() == 0
        and (logits.shape[2] == 1 or not inputs.use_sigmoid))
    return applies and _setting() != '0' and _load() is not None


def _arguments(inputs, gamma):
    """ctypes arguments of either mode, and the tensors they point into."""
    batch, classes, spatial = inputs.logits.shape
    pixels = batch * spatial
    labels = inputs.target.reshape(pixels).to(torch.int64).contiguous()
    row_weight = (None if inputs.row_weight is None
                  else inputs.row_weight.reshape(pixels).to(torch.float32).contiguous())
    class_weight = (torch.ones(classes) if inputs.class_weight is None
                    else inputs.class_weight.reshape(classes).to(torch.float32))
    ignore = (int(inputs.ignore_index is not None),
              0 if inputs.ignore_index is None else int(inputs.ignore_index))
    start = [inputs.logits.data_ptr(), labels.data_ptr(),
             None if row_weight is None else row_weight.data_ptr()]
    if inputs.use_sigmoid:
        if inputs.alpha is None:
            pos_weight = neg_weight = class_weight.contiguous()
        else:
            pos_weight = (class_weight * inputs.alpha).contiguous()
            neg_weight = (class_weight * (1.0 - inputs.alpha)).contiguous()
        keep = (labels, row_weight, pos_weight, neg_weight)
        args = start + [pos_weight.data_ptr(), neg_weight.data_ptr(), *ignore, batch,
                        classes, float(gamma)]
    else:
        class_weight = class_weight.contiguous()
        keep = (labels, row_weight, class_weight)
        args = start + [class_weight.data_ptr(), *ignore, batch, classes, spatial,
                        float(gamma)]
    return args, keep


_SOFTMAX_CLASSES_ARG = 7  # where ``_arguments`` puts the class count (softmax)


def call(name: str, *args) -> float:
    """Run ``dfl_<name>`` of the library; MemoryError if its scratch allocation failed."""
    function = getattr(_load(), f'dfl_{name}')
    if not name.startswith('softmax_'):
        return function(*args)
    # the softmax functions take the failure flag after the thread count:
    # ``_arguments``' 10, then (gradients) scale and grad, then threads
    position = 11 if name == 'softmax_forward' else 13
    failed = ctypes.c_int(0)
    result = function(*args[:position], ctypes.byref(failed), *args[position:])
    if failed.value:
        classes = args[_SOFTMAX_CLASSES_ARG]
        raise MemoryError(f'dfl_mm CPU kernel: could not allocate the softmax '
                          f'scratch for {classes} classes (up to 3 x 4 bytes x classes x '
                          'block per thread); DFL_MM_CPU_KERNEL=0 uses the PyTorch core')
    return result


def forward(inputs, gamma, reduce_sum: bool = True) -> torch.Tensor:
    """Sum of the weighted element losses (float32 scalar); only sums are supported."""
    args, _keep = _arguments(inputs, gamma)
    mode = 'sigmoid' if inputs.use_sigmoid else 'softmax'
    return torch.tensor(call(f'{mode}_forward', *args, torch.get_num_threads()),
                        dtype=torch.float32)


def forward_backward(inputs, gamma, scale: float):
    """Softmax mode: the summed loss and its gradients in one pass (a forward
    pass whose gradients are needed), all times ``scale``.

    Returns:
        (loss 0-d float32, d / d logits (B, C, S) float32, d / d gamma 0-d float32).
    """
    grad = torch.empty_like(inputs.logits)
    args, _keep = _arguments(inputs, gamma)
    loss = ctypes.c_double(0.0)
    grad_gamma = call('softmax_forward_backward', *args, scale, grad.data_ptr(),
                      torch.get_num_threads(), ctypes.byref(loss))
    return (torch.tensor(loss.value * scale, dtype=torch.float32), grad,
            torch.tensor(grad_gamma * scale, dtype=torch.float32))


def backward(inputs, gamma, grad_out: torch.Tensor, reduce_sum: bool = True):
    """Gradients of ``grad_out`` times the summed loss, scaled as the kernel writes them.

    Returns:
        (d / d logits (B, C, S) float32, d / d gamma 0-d float32).
    """
    scale = float(grad_out)
    grad = torch.empty_like(inputs.logits)
    args, _keep = _arguments(inputs, gamma)
    mode = 'sigmoid' if inputs.use_sigmoid else 'softmax'
    grad_gamma = call(f'{mode}_backward', *args, scale, grad.data_ptr(),
                      torch.get_num_threads())
    return grad, torch.tensor(grad_gamma * scale, dtype=torch.float32)
