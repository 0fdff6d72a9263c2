"""The CPU fast path: the sigmoid-mode loss of (N, C) float32 logits (mmdet's
dense heads) as a small C library, ``csrc/dfl_cpu.c``.

The pure-PyTorch core needs about ten full passes of transcendental ATen ops
per element; the C loop does the same maths in one vectorised pass per
direction. The library is compiled on first use with the system C compiler
(``$CC``, else ``cc``) for this CPU (``-march=native``) and cached under
``$DFL_MM_CACHE_DIR`` (default ``~/.cache/dfl_mm``), keyed by the source, the
flags and the CPU, like Triton's kernels on GPU.

``DFL_MM_CPU_KERNEL``: ``auto`` (default: use it where it applies, fall back to
the PyTorch core with one warning if it cannot be built), ``0`` (never) or
``1`` (always where it applies; a build failure is an error). It applies to
CPU float32 (N, C) logits with integer labels, one gamma for all classes, and
optional row weights, class weights, alpha and ignore_index; everything else
(soft targets, per-element weights, per-class gamma, softmax, dense maps,
float64) runs on the PyTorch core.
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
    cache = os.environ.get('DFL_MM_CACHE_DIR', osp.join(osp.expanduser('~'), '.cache', 'dfl_mm'))
    path = osp.join(cache, f'dfl_cpu_{key}.so')
    if osp.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
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
    """Load the library and declare its two functions."""
    lib = ctypes.CDLL(path)
    pointer, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    common = [pointer, pointer, pointer, pointer, pointer, i64, i64, i64, i64, f32]
    lib.dfl_sigmoid_forward.argtypes = common + [ctypes.c_int]
    lib.dfl_sigmoid_forward.restype = ctypes.c_double
    lib.dfl_sigmoid_backward.argtypes = common + [f32, pointer, ctypes.c_int]
    lib.dfl_sigmoid_backward.restype = ctypes.c_double
    return lib


def should_use(inputs, gamma) -> bool:
    """Whether this call goes through the C kernel (see module docstring)."""
    logits, target = inputs.logits, inputs.target
    applies = (
        inputs.use_sigmoid and not logits.is_cuda and logits.device.type == 'cpu'
        and logits.dtype == torch.float32 and logits.shape[2] == 1
        and logits.is_contiguous() and not target.is_floating_point()
        and inputs.elem_weight is None and gamma.dim() == 0)
    return applies and _setting() != '0' and _load() is not None


def _arguments(inputs, gamma):
    """ctypes arguments shared by forward and backward, and tensors to keep alive."""
    rows, classes = inputs.logits.shape[:2]
    labels = inputs.target.reshape(rows).to(torch.int64).contiguous()
    row_weight = (None if inputs.row_weight is None
                  else inputs.row_weight.reshape(rows).to(torch.float32).contiguous())
    class_weight = (torch.ones(classes) if inputs.class_weight is None
                    else inputs.class_weight.reshape(classes).to(torch.float32))
    if inputs.alpha is None:
        pos_weight = neg_weight = class_weight.contiguous()
    else:
        pos_weight = (class_weight * inputs.alpha).contiguous()
        neg_weight = (class_weight * (1.0 - inputs.alpha)).contiguous()
    keep = (labels, row_weight, pos_weight, neg_weight)
    args = [inputs.logits.data_ptr(), labels.data_ptr(),
            None if row_weight is None else row_weight.data_ptr(),
            pos_weight.data_ptr(), neg_weight.data_ptr(),
            int(inputs.ignore_index is not None),
            0 if inputs.ignore_index is None else int(inputs.ignore_index),
            rows, classes, float(gamma)]
    return args, keep


def forward(inputs, gamma) -> torch.Tensor:
    """Sum of the weighted element losses (float32 scalar)."""
    args, _keep = _arguments(inputs, gamma)
    total = _lib.dfl_sigmoid_forward(*args, torch.get_num_threads())
    return torch.tensor(total, dtype=torch.float32)


def backward(inputs, gamma, scale: torch.Tensor):
    """Gradients of ``scale`` times the summed loss: (d / d logits (N, C, 1), d / d gamma)."""
    grad = torch.empty_like(inputs.logits)
    args, _keep = _arguments(inputs, gamma)
    grad_gamma = _lib.dfl_sigmoid_backward(*args, float(scale), grad.data_ptr(),
                                           torch.get_num_threads())
    return grad, torch.tensor(grad_gamma * float(scale), dtype=torch.float32)
