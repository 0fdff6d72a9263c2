"""Triton kernels of the Dual Focal Loss: one pass over the logits per call.

Both kernels walk (B, C, S) logits in (classes x rows) tiles, rows being the
B * S samples or pixels: the sigmoid kernel tiles the classes too, the softmax
kernel holds a row's classes in one tile (its normaliser needs them all). The
forward launch reads logits and labels once and writes per-program partial
sums or the element map (and, when gradients are needed, the gradients
in the same pass, times the mean's factor); the backward launch reads them once more and
writes the gradient, already scaled by the incoming gradient, and per-program (or,
for per-class gamma, block-reduced per-class) sums of d loss / d gamma. Same
maths as ``dfl_mm.ops.reference``, in float32: log1p/expm1 use Kahan's
accurate forms built from exp/log, so the kernels also run in Triton's CPU
interpreter (``TRITON_INTERPRET=1``), which is how CI tests them. Offsets are
64-bit: an LVIS batch (2M anchors x 1203 classes) has more than 2^31 logits.

Backend ``triton`` of ``dfl_mm.ops``: ``auto`` uses it on CUDA tensors,
``DFL_MM_BACKEND=triton`` everywhere (CPU tensors with ``TRITON_INTERPRET=1``).
Its ``unavailable()`` is a probe: on the first use per (device, dtype, mode)
the kernels run small inputs that cover tails, ignored rows and both weight
kinds against the reference (loss, both gradients, the loss map and, for
softmax, the fused launch); a compile or launch error, or a mismatch, is the
reason they are unavailable there.
"""
import dataclasses
import enum
from typing import Dict, Optional, Tuple

import torch

from . import reference
from .inputs import LossInputs
from .reference import LN2, TAIL

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ['NAME', 'AUTO_DEVICES', 'KernelMode', 'available', 'applies', 'unavailable',
           'probe', 'forward', 'backward', 'forward_backward']

NAME = 'triton'
AUTO_DEVICES = ('cuda', )
# probe tolerance: max |triton - reference| / max |reference|, per compute precision
PROBE_TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}

ELEMENTS_PER_PROGRAM = 1024  # sigmoid tile size (classes x rows)
SOFTMAX_ROWS = 32  # rows per softmax tile (each with all its classes)
MAX_CLASS_BLOCK = 32  # the sigmoid kernel's widest class tile
# what the kernels read of the incoming gradient
UPSTREAM_NONE, UPSTREAM_SCALAR, UPSTREAM_MAP, UPSTREAM_VALUE = 0, 1, 2, 3


class KernelMode(enum.IntEnum):
    """What one kernel launch computes."""

    SUM = 0  # per-program partial sums of the weighted loss
    MAP = 1  # the weighted element loss map (B, C, S)
    GRAD = 2  # d loss / d logits (B, C, S) and d loss / d gamma
    SUM_AND_GRAD = 3  # both in one launch (a forward pass that needs gradients)


def available() -> bool:
    return triton is not None


def applies(inputs: LossInputs, gamma=None, reduce_sum: bool = True) -> bool:
    """Whether the kernels implement this call: integer labels, no float64 (pure)."""
    return not inputs.soft_target and inputs.logits.dtype != torch.float64


# (device, dtype, sigmoid) -> None (the probe passed there) or why not
_probed: Dict[Tuple[str, torch.dtype, bool], Optional[str]] = {}


def unavailable(inputs: LossInputs) -> Optional[str]:
    """Why the kernels can not take calls like ``inputs``, or None (probed once per
    device, dtype and mode)."""
    if triton is None:
        return 'triton is not installed'
    key = (str(inputs.logits.device), inputs.logits.dtype, bool(inputs.use_sigmoid))
    if key not in _probed:
        _probed[key] = probe(*key)
    return _probed[key]


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


def probe(device, dtype, use_sigmoid: bool) -> Optional[str]:
    """Run the kernels once on a probe against the reference: None if they agree,
    else why. Raises nothing: a compile or launch error is returned as the reason."""
    inputs = _probe_inputs(device, dtype, use_sigmoid)
    gamma = torch.tensor(2.0, device=inputs.logits.device)
    grad_out = torch.tensor(1.5, device=inputs.logits.device)
    exact = dataclasses.replace(inputs, logits=inputs.logits.float())
    try:
        got = (forward(inputs, gamma, True), *backward(inputs, gamma, grad_out, True),
               forward(inputs, gamma, False),
               *(() if use_sigmoid else forward_backward(inputs, gamma, 0.5)))
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any compile/launch failure counts
        return f'{type(error).__name__}: {str(error).strip()[:300]}'
    want = (reference.forward(exact, gamma, True),
            *reference.backward(exact, gamma, grad_out, True),
            reference.forward(exact, gamma, False),
            *(() if use_sigmoid else reference.forward_backward(exact, gamma, 0.5)))
    tolerance = PROBE_TOLERANCE.get(dtype, PROBE_TOLERANCE[torch.float16])
    names = ('loss', 'd loss / d logits', 'd loss / d gamma', 'loss map', 'fused loss',
             'fused d loss / d logits', 'fused d loss / d gamma')
    for name, g, w in zip(names, got, want):
        g, w = g.detach().double().cpu(), w.detach().double().cpu()
        error = (g - w).abs().max().item() / max(w.abs().max().item(), 1e-12)
        if not error <= tolerance:  # NaN fails too
            return (f'{name} differs from the PyTorch reference on a probe: relative '
                    f'error {error:.3g} > {tolerance:g}')
    return None


def class_block(channels: int) -> int:
    """The sigmoid kernel's class tile.

    Up to 32 classes fit one tile; beyond, the widest of 32/16/8 that pads the
    classes by at most 1/8 (wide tiles read (N, C) logits in long runs).
    """
    if channels <= MAX_CLASS_BLOCK:
        return 1 << max(channels - 1, 0).bit_length()
    for block in (32, 16, 8):
        if -(-channels // block) * block * 8 <= channels * 9:
            return block
    return 8


if triton is not None:
    _TAIL = tl.constexpr(TAIL)
    _LN2 = tl.constexpr(LN2)

    @triton.jit
    def _log1p(x):
        w = 1.0 + x
        return tl.where(w == 1.0, x, tl.log(w) * x / (w - 1.0))

    @triton.jit
    def _one_minus_exp_neg(s, e_neg):
        # 1 - exp(-s) for s >= 0 with the accuracy of -expm1(-s) (Kahan)
        d = e_neg - 1.0
        em1 = tl.where(e_neg == 1.0, -s, tl.where(d == -1.0, -1.0, d * (-s) / tl.log(e_neg)))
        return -em1

    @triton.jit
    def _elements(u, gamma, WITH_LOSS: tl.constexpr, WITH_GRAD: tl.constexpr):
        """loss, d loss / d u, d loss / d gamma of signed logits u."""
        e_abs = tl.exp(-tl.abs(u))
        surprise = tl.maximum(u, 0.0) + _log1p(e_abs)  # softplus(u)
        s = gamma * surprise
        e_gamma = tl.exp(-s)
        one_minus = _one_minus_exp_neg(s, e_gamma)
        tail = u < _TAIL
        loss = u * 0.0
        grad_u = u * 0.0
        grad_gamma = u * 0.0
        if WITH_LOSS:
            loss = tl.where(s < _LN2, -tl.log(one_minus), -_log1p(-e_gamma))
            loss = tl.where(tail, -(tl.log(gamma) + u), loss)
        if WITH_GRAD:
            ratio = -e_gamma / one_minus
            sig = tl.where(u >= 0, 1.0 / (1.0 + e_abs), e_abs / (1.0 + e_abs))
            grad_u = tl.where(tail, -1.0, gamma * sig * ratio)
            grad_gamma = tl.where(tail, -1.0 / gamma, surprise * ratio)
        return loss, grad_u, grad_gamma

    @triton.jit
    def _tile(row_block, class_block, n_rows, C, S, BLOCK_C: tl.constexpr,
              BLOCK_R: tl.constexpr):
        """A (BLOCK_C, BLOCK_R) tile of (B, C, S) logits.

        Returns the 64-bit element offsets ``b * C * S + c * S + s`` (tile), the
        row ids ``b * S + s`` (BLOCK_R, int64), the class ids (BLOCK_C) and the
        in-bounds mask (tile).
        """
        rows = row_block.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        cls = class_block * BLOCK_C + tl.arange(0, BLOCK_C)
        b = rows // S
        s = rows - b * S
        offs = (b * C * S + s)[None, :] + cls.to(tl.int64)[:, None] * S
        mask = (cls < C)[:, None] & (rows < n_rows)[None, :]
        return offs, rows, cls, mask

    @triton.jit
    def _weights(offs, rows, cls, is_pos, label, mask, C, n_rows, row_w_ptr, elem_w_ptr,
                 class_w_ptr, upstream_ptr, ignore_index, alpha, factor,
                 HAS_ROW_W: tl.constexpr,
                 HAS_ELEM_W: tl.constexpr, HAS_CLASS_W: tl.constexpr,
                 HAS_ALPHA: tl.constexpr, HAS_IGNORE: tl.constexpr, UPSTREAM: tl.constexpr):
        """Each element's weight (tile): 0 out of bounds and on ignored rows."""
        w = tl.where(mask, 1.0, 0.0)
        if HAS_IGNORE:
            w = tl.where((label != ignore_index)[None, :], w, 0.0)
        if HAS_ROW_W:
            row_w = tl.load(row_w_ptr + rows, mask=rows < n_rows, other=0.0)
            w = w * row_w.to(tl.float32)[None, :]
        if HAS_ELEM_W:
            w = w * tl.load(elem_w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_CLASS_W:
            w = w * tl.load(class_w_ptr + cls, mask=cls < C, other=0.0).to(tl.float32)[:, None]
        if HAS_ALPHA:
            w = w * tl.where(is_pos, alpha, 1.0 - alpha)
        if UPSTREAM == 1:
            w = w * tl.load(upstream_ptr).to(tl.float32)
        if UPSTREAM == 2:
            w = w * tl.load(upstream_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if UPSTREAM == 3:
            w = w * factor
        return w

    @triton.jit
    def _times(x, w):
        # x * w, exactly 0 where w is 0 whatever x is (NaN included)
        return tl.where(w == 0.0, 0.0, x * w)

    @triton.jit
    def _row_of(x, pick):
        # each row's value of x at the (at most one) class where pick holds, else 0
        return tl.sum(tl.where(pick, x, 0.0), axis=0)

    @triton.jit
    def _gamma_of(gamma_ptr, cls, C, PER_CLASS_GAMMA: tl.constexpr):
        if PER_CLASS_GAMMA:
            return tl.load(gamma_ptr + cls, mask=cls < C, other=1.0)[:, None]
        return tl.load(gamma_ptr)

    @triton.jit
    def _store(loss, grad_z, grad_gamma, w, offs, cls, mask, C, program, out_ptr, grad_ptr,
               gamma_grad_ptr, MODE: tl.constexpr, PER_CLASS_GAMMA: tl.constexpr):
        """Write what ``MODE`` computes (see ``KernelMode``)."""
        if MODE == 0 or MODE == 3:
            tl.store(out_ptr + program,
                     tl.sum(tl.sum(tl.where(mask, _times(loss, w), 0.0), axis=1), axis=0))
        if MODE == 1:
            tl.store(out_ptr + offs, _times(loss, w), mask=mask)
        if MODE >= 2:
            tl.store(grad_ptr + offs, grad_z, mask=mask)
            gg = tl.where(mask, _times(grad_gamma, w), 0.0)
            if PER_CLASS_GAMMA:  # one atomic per class and program
                tl.atomic_add(gamma_grad_ptr + cls, tl.sum(gg, axis=1), mask=cls < C)
            else:
                tl.store(gamma_grad_ptr + program, tl.sum(tl.sum(gg, axis=1), axis=0))

    @triton.jit
    def _sigmoid_kernel(z_ptr, label_ptr, gamma_ptr, row_w_ptr, elem_w_ptr, class_w_ptr,
                        upstream_ptr, out_ptr, grad_ptr, gamma_grad_ptr,
                        n_rows, C, S, ignore_index, alpha, factor,
                        MODE: tl.constexpr, PER_CLASS_GAMMA: tl.constexpr,
                        HAS_ROW_W: tl.constexpr, HAS_ELEM_W: tl.constexpr,
                        HAS_CLASS_W: tl.constexpr, HAS_ALPHA: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, UPSTREAM: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        offs, rows, cls, mask = _tile(tl.program_id(0), tl.program_id(1), n_rows, C, S,
                                      BLOCK_C, BLOCK_R)
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        label = tl.load(label_ptr + rows, mask=rows < n_rows, other=0)
        is_pos = cls[:, None] == label[None, :]
        u = tl.where(is_pos, z, -z)
        w = _weights(offs, rows, cls, is_pos, label, mask, C, n_rows, row_w_ptr, elem_w_ptr,
                     class_w_ptr, upstream_ptr, ignore_index, alpha, factor, HAS_ROW_W,
                     HAS_ELEM_W, HAS_CLASS_W, HAS_ALPHA, HAS_IGNORE, UPSTREAM)
        gamma = _gamma_of(gamma_ptr, cls, C, PER_CLASS_GAMMA)
        loss, grad_u, grad_gamma = _elements(u, gamma, MODE != 2, MODE >= 2)
        grad_z = _times(tl.where(is_pos, grad_u, -grad_u), w)
        _store(loss, grad_z, grad_gamma, w, offs, cls, mask, C, program, out_ptr, grad_ptr,
               gamma_grad_ptr, MODE, PER_CLASS_GAMMA)

    @triton.jit
    def _normaliser(z_raw, c, mask, row_ok, BLOCK_C: tl.constexpr):
        """The softmax normaliser from one exp per element: e_c = exp(z_c - m2) (c
        not the argmax m, m2 the largest logit but the argmax's), rest = sum e_c;
        then p_c = e_c exp(m2 - lse), pi_c = p_c / (1 - p_m) = e_c / rest."""
        z_max = tl.where(row_ok, tl.max(z_raw, axis=0), 0.0)
        first = tl.min(tl.where(z_raw == z_max[None, :], c, BLOCK_C), axis=0)
        is_max = c == first[None, :]
        others = mask & (is_max == 0)
        m2 = tl.where(row_ok, tl.max(tl.where(others, z_raw, -float('inf')), axis=0), 0.0)
        e_rest = tl.where(others, tl.exp(z_raw - m2[None, :]), 0.0)
        rest = tl.sum(e_rest, axis=0)
        d = m2 + tl.log(rest) - z_max  # the argmax's log-odds, negated
        neg_log_pmax = _log1p(tl.exp(d))
        # a +inf logit: a NaN loss, not a finite one with NaN gradients
        lse = tl.where(z_max == float('inf'), float('nan'), z_max + neg_log_pmax)
        return is_max, others, m2, e_rest, rest, d, neg_log_pmax, lse

    @triton.jit
    def _negative_loss(e_gamma, one_minus):
        """-ln(1 - E) of a negative; 1 - E below 1/2 is exact: log1p(-E) (Kahan) there."""
        arg = tl.where(e_gamma < 0.5, 1.0 - e_gamma, one_minus)
        log_arg = tl.log(arg)
        return tl.where(e_gamma < 0.5,
                        tl.where(arg == 1.0, e_gamma, log_arg * e_gamma / (arg - 1.0)),
                        -log_arg)

    @triton.jit
    def _mixed_grad(h, g_max, is_max, e_rest, rest, p_rest, p_max, w, mask):
        """d loss / d z_j = h_j - p_j K - pi_j g_m, K = sum h; a row whose every
        element weighs 0 gets no gradient."""
        k = tl.sum(h, axis=0)
        grad_z = tl.where(is_max, (g_max - p_max * k)[None, :],
                          h - e_rest * (p_rest * k + g_max / rest)[None, :])
        active = tl.max(tl.where(w != 0.0, 1, 0), axis=0) > 0
        return tl.where(active[None, :] & mask, grad_z, 0.0)

    @triton.jit
    def _softmax_kernel(z_ptr, label_ptr, gamma_ptr, row_w_ptr, elem_w_ptr, class_w_ptr,
                        upstream_ptr, out_ptr, grad_ptr, gamma_grad_ptr,
                        n_rows, C, S, ignore_index, alpha, factor,
                        MODE: tl.constexpr, PER_CLASS_GAMMA: tl.constexpr,
                        HAS_ROW_W: tl.constexpr, HAS_ELEM_W: tl.constexpr,
                        HAS_CLASS_W: tl.constexpr, HAS_ALPHA: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, UPSTREAM: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        program = tl.program_id(0)
        offs, rows, cls, mask = _tile(program, 0, n_rows, C, S, BLOCK_C, BLOCK_R)
        row_ok = rows < n_rows
        c = cls[:, None] + tl.zeros([BLOCK_C, BLOCK_R], dtype=tl.int32)
        z_raw = tl.load(z_ptr + offs, mask=mask, other=-float('inf')).to(tl.float32)
        is_max, others, m2, e_rest, rest, d, neg_log_pmax, lse = _normaliser(
            z_raw, c, mask, row_ok, BLOCK_C)
        z = tl.where(mask, z_raw, 0.0)
        log_p = z - lse[None, :]
        label = tl.load(label_ptr + rows, mask=row_ok, other=0)
        is_pos = c == label[None, :]
        w = _weights(offs, rows, cls, is_pos, label, mask, C, n_rows, row_w_ptr, elem_w_ptr,
                     class_w_ptr, upstream_ptr, ignore_index, alpha, factor, HAS_ROW_W,
                     HAS_ELEM_W, HAS_CLASS_W, HAS_ALPHA, HAS_IGNORE, UPSTREAM)
        gamma = _gamma_of(gamma_ptr, cls, C, PER_CLASS_GAMMA) + tl.zeros(
            [BLOCK_C, BLOCK_R], dtype=tl.float32)
        # every class but the argmax and the label is a negative with p <= 1/2:
        # E = p^gamma, D = 1 - E, loss = -ln D, h = w gamma E / D,
        # d loss / d gamma = ln p E / D (dfl_mm/ops/csrc/dfl_cpu.c, softmax)
        s = -gamma * log_p
        e_gamma = tl.exp(-s)
        one_minus = tl.where(e_gamma > 0.5, _one_minus_exp_neg(s, e_gamma), 1.0 - e_gamma)
        ratio = tl.where(e_gamma == 0.0, 0.0, e_gamma / one_minus)
        # the argmax and the label in log-odds form, one value per row
        is_label = is_pos & (is_max == 0)
        pos_max = tl.sum(tl.where(is_max & is_pos, 1.0, 0.0), axis=0)
        sign_m = 2.0 * pos_max - 1.0  # +1 where the argmax is the label
        loss_m, grad_u_m, gg_m = _elements(-sign_m * d, _row_of(gamma, is_max),
                                           MODE != 2, MODE >= 2)
        log_p_y = _row_of(log_p, is_label)
        p_y = tl.exp(log_p_y)
        loss_y, grad_u_y, gg_y = _elements(log_p_y - _log1p(-p_y), _row_of(gamma, is_label),
                                           MODE != 2, MODE >= 2)
        loss = z * 0.0
        if MODE != 2:
            loss = tl.where(is_max, loss_m[None, :],
                            tl.where(is_label, loss_y[None, :],
                                     _negative_loss(e_gamma, one_minus)))
        grad_gamma = tl.where(is_max, gg_m[None, :],
                              tl.where(is_label, gg_y[None, :], log_p * ratio))
        grad_z = z * 0.0
        if MODE >= 2:
            # d loss / d z_j = h_j - p_j K - pi_j g_m (classes mix here)
            g_max = tl.where(row_ok, _times(sign_m * grad_u_m, _row_of(w, is_max)), 0.0)
            h_y = _times(grad_u_y / (1.0 - p_y), _row_of(w, is_label))
            h = tl.where(is_label, h_y[None, :], _times(gamma * ratio, w))
            grad_z = _mixed_grad(tl.where(others, h, 0.0), g_max, is_max, e_rest, rest,
                                 tl.exp(m2 - lse), tl.exp(-neg_log_pmax), w, mask)
        _store(loss, grad_z, grad_gamma, w, offs, cls, mask, C, program, out_ptr, grad_ptr,
               gamma_grad_ptr, MODE, PER_CLASS_GAMMA)


def _per_class(gamma) -> bool:
    return gamma.dim() > 0 and gamma.numel() > 1


def _gamma_grad(gamma, gamma_grad):
    """d loss / d gamma shaped like gamma: per class as written, else the programs' sum."""
    return (gamma_grad if _per_class(gamma) else gamma_grad.sum()).reshape(gamma.shape)


def _launch(inputs: LossInputs, gamma, mode: KernelMode, upstream=None):
    """Run the kernel of ``inputs.use_sigmoid`` in ``mode``.

    ``upstream``: None, a number or a 0-d incoming gradient (scales every
    element; a number is a kernel argument, so no host-to-device copy) or a
    (B, C, S) one (per element). Returns (out, grad, gamma_grad).
    """
    logits = inputs.logits.contiguous()
    batch, channels, spatial = logits.shape
    n_rows = batch * spatial
    device = logits.device
    labels = inputs.target.reshape(-1).contiguous()
    per_class = _per_class(gamma)
    gamma32 = gamma.reshape(-1).to(device=device, dtype=torch.float32).contiguous()
    dummy = torch.empty(1, device=device, dtype=torch.float32)

    def ptr(t):
        return dummy if t is None else t.reshape(-1).contiguous()

    if inputs.use_sigmoid:
        block_c = class_block(channels)
        block_r = ELEMENTS_PER_PROGRAM // block_c
        grid = (triton.cdiv(n_rows, block_r), triton.cdiv(channels, block_c))
        kernel = _sigmoid_kernel
    else:
        block_c, block_r = triton.next_power_of_2(channels), SOFTMAX_ROWS
        grid = (triton.cdiv(n_rows, block_r), 1)
        kernel = _softmax_kernel
    programs = grid[0] * grid[1]
    out = grad = gamma_grad = dummy
    if mode in (KernelMode.SUM, KernelMode.SUM_AND_GRAD):
        out = torch.empty(programs, device=device, dtype=torch.float32)
    elif mode == KernelMode.MAP:  # computed and stored in float32 (half would underflow)
        out = torch.empty_like(logits, dtype=torch.float32)
    if mode in (KernelMode.GRAD, KernelMode.SUM_AND_GRAD):
        grad = torch.empty_like(logits)
        gamma_grad = torch.zeros(channels if per_class else programs, device=device,
                                 dtype=torch.float32)
    factor = 1.0
    if upstream is None:
        upstream_mode = UPSTREAM_NONE
    elif isinstance(upstream, float):
        upstream_mode, factor, upstream = UPSTREAM_VALUE, upstream, None
    else:
        upstream_mode = UPSTREAM_SCALAR if upstream.dim() == 0 else UPSTREAM_MAP
        upstream = upstream.to(device=device, dtype=torch.float32)
    ignore = inputs.ignore_index
    flags = dict(MODE=int(mode), PER_CLASS_GAMMA=per_class,
                 HAS_ROW_W=inputs.row_weight is not None,
                 HAS_ELEM_W=inputs.elem_weight is not None,
                 HAS_CLASS_W=inputs.class_weight is not None,
                 HAS_ALPHA=inputs.alpha is not None, HAS_IGNORE=ignore is not None,
                 UPSTREAM=upstream_mode, BLOCK_C=block_c, BLOCK_R=block_r)
    kernel[grid](logits, labels, gamma32, ptr(inputs.row_weight), ptr(inputs.elem_weight),
                 ptr(inputs.class_weight), ptr(upstream), out, grad, gamma_grad,
                 n_rows, channels, spatial, -1 if ignore is None else int(ignore),
                 0.0 if inputs.alpha is None else float(inputs.alpha), factor, **flags)
    return out, grad, gamma_grad


def forward(inputs: LossInputs, gamma, reduce_sum: bool):
    """Summed loss (0-d, float32) or the element map (B, C, S, float32)."""
    out, _, _ = _launch(inputs, gamma, KernelMode.SUM if reduce_sum else KernelMode.MAP)
    return out.sum() if reduce_sum else out


def forward_backward(inputs: LossInputs, gamma, scale: float):
    """The summed loss and its gradients, all times ``scale``, in one launch.

    Returns:
        (loss 0-d float32, d / d logits (B, C, S, logits' dtype), d / d gamma float32).
    """
    out, grad, gamma_grad = _launch(inputs, gamma, KernelMode.SUM_AND_GRAD, float(scale))
    return out.sum(), grad, _gamma_grad(gamma, gamma_grad)


def backward(inputs: LossInputs, gamma, grad_out, reduce_sum: bool):
    """Gradients of ``sum(grad_out * loss)``, scaled in the kernel as it writes them.

    Returns:
        (d / d logits (B, C, S, logits' dtype), d / d gamma (float32, shaped like gamma)).
    """
    _, grad, gamma_grad = _launch(inputs, gamma, KernelMode.GRAD, grad_out)
    return grad, _gamma_grad(gamma, gamma_grad)
