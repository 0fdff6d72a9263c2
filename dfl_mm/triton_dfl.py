"""Triton kernels of the Dual Focal Loss: one pass over the logits per call.

The forward kernel reads logits and labels once and writes either per-block
partial sums or the element map; the backward kernel reads them once more and
writes the gradient (and per-block or per-class partial sums of d loss / d
gamma). Same maths as ``dfl_mm.functional`` (the reference), in float32:
log1p/expm1 use Kahan's accurate forms built from exp/log, so the kernels also
run in Triton's CPU interpreter (``TRITON_INTERPRET=1``), which is how CI tests
them.

Used automatically for float16/bfloat16/float32 CUDA tensors with integer
labels; ``DFL_MM_TRITON=0`` turns it off, ``DFL_MM_TRITON=1`` forces it (on
CPU together with ``TRITON_INTERPRET=1``).
"""
import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ['available', 'should_use', 'forward', 'backward']

LN2 = math.log(2.0)
TAIL = -30.0
BLOCK = 1024
BLOCK_ROWS = 32


def available() -> bool:
    return triton is not None


def should_use(inputs) -> bool:
    """Whether the kernels take this call (see module docstring)."""
    setting = os.environ.get('DFL_MM_TRITON', 'auto')
    if setting == '0' or triton is None:
        return False
    if inputs.target.is_floating_point() or inputs.logits.dtype == torch.float64:
        return False  # soft targets and float64 stay on the reference path
    if setting == '1':
        return True
    return inputs.logits.is_cuda


if triton is not None:

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
        tail = u < -30.0
        loss = u * 0.0
        grad_u = u * 0.0
        grad_gamma = u * 0.0
        if WITH_LOSS:
            loss = tl.where(s < 0.6931471805599453, -tl.log(one_minus), -_log1p(-e_gamma))
            loss = tl.where(tail, -(tl.log(gamma) + u), loss)
        if WITH_GRAD:
            ratio = -e_gamma / one_minus
            sig = tl.where(u >= 0, 1.0 / (1.0 + e_abs), e_abs / (1.0 + e_abs))
            grad_u = tl.where(tail, -1.0, gamma * sig * ratio)
            grad_gamma = tl.where(tail, -1.0 / gamma, surprise * ratio)
        return loss, grad_u, grad_gamma

    @triton.jit
    def _weights(offs, row, c, is_pos, label, mask, row_w_ptr, elem_w_ptr, class_w_ptr,
                 upstream_ptr, ignore_index, alpha, HAS_ROW_W: tl.constexpr,
                 HAS_ELEM_W: tl.constexpr, HAS_CLASS_W: tl.constexpr, HAS_ALPHA: tl.constexpr,
                 HAS_IGNORE: tl.constexpr, HAS_UPSTREAM: tl.constexpr):
        w = tl.where(mask, 1.0, 0.0)
        if HAS_IGNORE:
            w = tl.where(label != ignore_index, w, 0.0)
        if HAS_ROW_W:
            w = w * tl.load(row_w_ptr + row, mask=mask, other=0.0).to(tl.float32)
        if HAS_ELEM_W:
            w = w * tl.load(elem_w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_CLASS_W:
            w = w * tl.load(class_w_ptr + c, mask=mask, other=0.0).to(tl.float32)
        if HAS_ALPHA:
            w = w * tl.where(is_pos, alpha, 1.0 - alpha)
        if HAS_UPSTREAM:
            w = w * tl.load(upstream_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        return w

    @triton.jit
    def _times(x, w):
        # x * w, exactly 0 where w is 0 whatever x is (NaN included)
        return tl.where(w == 0.0, 0.0, x * w)

    @triton.jit
    def _sigmoid_kernel(z_ptr, label_ptr, gamma_ptr, row_w_ptr, elem_w_ptr, class_w_ptr,
                        upstream_ptr, out_ptr, grad_ptr, gamma_grad_ptr,
                        n_elem, C, S, ignore_index, alpha,
                        MODE: tl.constexpr, PER_CLASS_GAMMA: tl.constexpr,
                        HAS_ROW_W: tl.constexpr, HAS_ELEM_W: tl.constexpr,
                        HAS_CLASS_W: tl.constexpr, HAS_ALPHA: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
                        BLOCK: tl.constexpr):
        # MODE 0: partial loss sums, 1: loss map, 2: gradients
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elem
        b = offs // (C * S)
        c = (offs // S) % C
        row = b * S + offs % S
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        label = tl.load(label_ptr + row, mask=mask, other=0)
        is_pos = label == c
        if PER_CLASS_GAMMA:
            gamma = tl.load(gamma_ptr + c, mask=mask, other=1.0)
        else:
            gamma = tl.load(gamma_ptr + offs * 0)
        u = tl.where(is_pos, z, -z)
        w = _weights(offs, row, c, is_pos, label, mask, row_w_ptr, elem_w_ptr, class_w_ptr,
                     upstream_ptr, ignore_index, alpha, HAS_ROW_W, HAS_ELEM_W, HAS_CLASS_W,
                     HAS_ALPHA, HAS_IGNORE, HAS_UPSTREAM)
        loss, grad_u, grad_gamma = _elements(u, gamma, MODE != 2, MODE == 2)
        if MODE == 0:
            tl.store(out_ptr + pid, tl.sum(tl.where(mask, _times(loss, w), 0.0), axis=0))
        elif MODE == 1:
            tl.store(out_ptr + offs, _times(loss, w), mask=mask)
        else:
            grad_z = _times(tl.where(is_pos, grad_u, -grad_u), w)
            tl.store(grad_ptr + offs, grad_z, mask=mask)
            gg = tl.where(mask, _times(grad_gamma, w), 0.0)
            if PER_CLASS_GAMMA:
                tl.atomic_add(gamma_grad_ptr + c, gg, mask=mask)
            else:
                tl.store(gamma_grad_ptr + pid, tl.sum(gg, axis=0))

    @triton.jit
    def _softmax_kernel(z_ptr, label_ptr, gamma_ptr, row_w_ptr, elem_w_ptr, class_w_ptr,
                        upstream_ptr, out_ptr, grad_ptr, gamma_grad_ptr,
                        n_rows, C, S, ignore_index, alpha,
                        MODE: tl.constexpr, PER_CLASS_GAMMA: tl.constexpr,
                        HAS_ROW_W: tl.constexpr, HAS_ELEM_W: tl.constexpr,
                        HAS_CLASS_W: tl.constexpr, HAS_ALPHA: tl.constexpr,
                        HAS_IGNORE: tl.constexpr, HAS_UPSTREAM: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        cls = tl.arange(0, BLOCK_C)
        row_ok = rows < n_rows
        b = rows // S
        s = rows % S
        offs = b[None, :] * (C * S) + cls[:, None] * S + s[None, :]
        c = cls[:, None] + rows[None, :] * 0
        row = rows[None, :] + cls[:, None] * 0
        mask = (cls[:, None] < C) & row_ok[None, :]
        z_raw = tl.load(z_ptr + offs, mask=mask, other=-float('inf')).to(tl.float32)
        z_max = tl.max(z_raw, axis=0)
        z_max = tl.where(row_ok, z_max, 0.0)
        first = tl.min(tl.where(z_raw == z_max[None, :], c, BLOCK_C), axis=0)
        is_max = c == first[None, :]
        lse = z_max + tl.log(tl.sum(tl.exp(z_raw - z_max[None, :]), axis=0))
        # a +inf logit: a NaN loss, not a finite one with NaN gradients
        lse = tl.where(z_max == float('inf'), float('nan'), lse)
        z_rest = tl.where(is_max, -float('inf'), z_raw)
        rest_max = tl.where(row_ok, tl.max(z_rest, axis=0), 0.0)
        lse_rest = rest_max + tl.log(tl.sum(tl.exp(z_rest - rest_max[None, :]), axis=0))
        z = tl.where(mask, z_raw, 0.0)
        log_p = z - lse[None, :]
        p = tl.where(mask, tl.exp(log_p), 0.0)
        v = tl.where(is_max, z_max[None, :] - lse_rest[None, :], log_p - _log1p(-p))
        label = tl.load(label_ptr + rows, mask=row_ok, other=0)
        label2 = label[None, :] + cls[:, None] * 0
        is_pos = c == label2
        u = tl.where(mask, tl.where(is_pos, v, -v), 0.0)
        if PER_CLASS_GAMMA:
            gamma = tl.load(gamma_ptr + c, mask=mask, other=1.0)
        else:
            gamma = tl.load(gamma_ptr + c * 0)
        w = _weights(offs, row, c, is_pos, label2, mask, row_w_ptr, elem_w_ptr, class_w_ptr,
                     upstream_ptr, ignore_index, alpha, HAS_ROW_W, HAS_ELEM_W, HAS_CLASS_W,
                     HAS_ALPHA, HAS_IGNORE, HAS_UPSTREAM)
        loss, grad_u, grad_gamma = _elements(u, gamma, MODE != 2, MODE == 2)
        if MODE == 0:
            tl.store(out_ptr + pid,
                     tl.sum(tl.sum(tl.where(mask, _times(loss, w), 0.0), axis=1), axis=0))
        elif MODE == 1:
            tl.store(out_ptr + offs, _times(loss, w), mask=mask)
        else:
            grad_v = tl.where(mask, _times(tl.where(is_pos, grad_u, -grad_u), w), 0.0)
            h = tl.where(is_max, grad_v, grad_v / (1.0 - p))
            k = tl.sum(tl.where(is_max, 0.0, h), axis=0)
            g_max = tl.sum(tl.where(is_max, grad_v, 0.0), axis=0)
            pi = tl.where(is_max | (mask == 0), 0.0, tl.exp(z - lse_rest[None, :]))
            grad_z = h - p * k[None, :] - pi * g_max[None, :]
            # a row whose every element weighs 0 gets no gradient
            active = tl.max(tl.where(w != 0.0, 1, 0), axis=0) > 0
            grad_z = tl.where(active[None, :], grad_z, 0.0)
            tl.store(grad_ptr + offs, grad_z, mask=mask)
            gg = tl.where(mask, _times(grad_gamma, w), 0.0)
            if PER_CLASS_GAMMA:
                tl.atomic_add(gamma_grad_ptr + cls, tl.sum(gg, axis=1), mask=cls < C)
            else:
                tl.store(gamma_grad_ptr + pid, tl.sum(tl.sum(gg, axis=1), axis=0))


def _launch(inputs, gamma, mode, upstream=None):
    """Run the kernel of ``inputs.use_sigmoid`` in ``mode`` (0 sum, 1 map, 2 grad)."""
    logits = inputs.logits.contiguous()
    batch, channels, spatial = logits.shape
    device = logits.device
    labels = inputs.target.reshape(-1).contiguous()
    per_class = gamma.dim() > 0 and gamma.numel() > 1
    gamma32 = gamma.reshape(-1).to(device=device, dtype=torch.float32).contiguous()
    dummy = torch.empty(1, device=device, dtype=torch.float32)

    def ptr(t):
        return dummy if t is None else t.reshape(-1).contiguous()

    n_elem = logits.numel()
    if inputs.use_sigmoid:
        grid = (triton.cdiv(n_elem, BLOCK), )
    else:
        grid = (triton.cdiv(batch * spatial, BLOCK_ROWS), )
    out = grad = gamma_grad = dummy
    if mode == 0:
        out = torch.empty(grid[0], device=device, dtype=torch.float32)
    elif mode == 1:  # the kernel computes in float32 and stores in the logits' dtype
        out = torch.empty_like(logits)
    else:
        grad = torch.empty_like(logits)
        gamma_grad = torch.zeros(channels if per_class else grid[0], device=device,
                                 dtype=torch.float32)
    ignore = inputs.ignore_index
    flags = dict(MODE=mode, PER_CLASS_GAMMA=per_class,
                 HAS_ROW_W=inputs.row_weight is not None,
                 HAS_ELEM_W=inputs.elem_weight is not None,
                 HAS_CLASS_W=inputs.class_weight is not None,
                 HAS_ALPHA=inputs.alpha is not None, HAS_IGNORE=ignore is not None,
                 HAS_UPSTREAM=upstream is not None)
    args = (logits, labels, gamma32, ptr(inputs.row_weight), ptr(inputs.elem_weight),
            ptr(inputs.class_weight), ptr(upstream), out, grad, gamma_grad)
    scalars = (channels, spatial, -1 if ignore is None else int(ignore),
               0.0 if inputs.alpha is None else float(inputs.alpha))
    if inputs.use_sigmoid:
        _sigmoid_kernel[grid](*args, n_elem, *scalars, **flags, BLOCK=BLOCK)
    else:
        block_c = triton.next_power_of_2(channels)
        _softmax_kernel[grid](*args, batch * spatial, *scalars, **flags,
                              BLOCK_C=block_c, BLOCK_R=BLOCK_ROWS)
    return out, grad, gamma_grad


def forward(inputs, gamma, reduce_sum):
    """Summed loss (0-d, float32) or the element map (B, C, S, logits' dtype)."""
    out, _, _ = _launch(inputs, gamma, 0 if reduce_sum else 1)
    return out.sum() if reduce_sum else out


def backward(inputs, gamma, upstream=None):
    """d loss / d logits (B, C, S, logits' dtype) and d loss / d gamma (float32).

    ``upstream``: the per-element incoming gradient for a 'none' reduction.
    """
    _, grad, gamma_grad = _launch(inputs, gamma, 2, upstream)
    per_class = gamma.dim() > 0 and gamma.numel() > 1
    return grad, (gamma_grad if per_class else gamma_grad.sum()).reshape(gamma.shape)
