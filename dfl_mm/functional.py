"""Functional core of the Dual Focal Loss (DFL).

Every element (sample or pixel ``n``, class ``c``) with prediction ``p`` and
target ``y`` contributes

.. math::

    \\ell = -\\ln\\bigl(1 - |y - p|^{\\gamma}\\bigr)

summed over the true class and every false class alike (see
``docs/DFL_SPEC.md``). All maths runs on the *signed logit*
``u = ln((1 - e) / e)`` of the error ``e = |y - p|``: for a hard label
``u = z`` (target 1) or ``u = -z`` (target 0) in sigmoid mode, and the log-odds
of the softmax probability in softmax mode. Then ``-ln e = softplus(u)`` and

.. math::

    \\ell = -\\ln(1 - e^{-s}),\\quad s = \\gamma\\,\\mathrm{softplus}(u),\\qquad
    \\frac{\\partial \\ell}{\\partial u} = \\frac{-\\gamma\\,\\sigma(u)}{\\mathrm{expm1}(s)},\\qquad
    \\frac{\\partial \\ell}{\\partial \\gamma} = \\frac{-\\mathrm{softplus}(u)}{\\mathrm{expm1}(s)}

which is finite for every finite logit. The forward pass keeps only its inputs
for backward; backward recomputes the elements chunk by chunk and writes the
gradient straight into one buffer, so peak extra memory stays near one copy of
the logits (no autograd graph of full-size intermediates).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernel, triton_dfl

__all__ = ['dual_focal_loss', 'dual_focal_loss_elements', 'GAMMA_MAX']

GAMMA_MAX = 20.0
REDUCTIONS = ('none', 'mean', 'sum')

# Below this signed logit softplus(u) == exp(u) and 1 - exp(-s) == s to double
# precision, so the loss is -ln(gamma) - u and d loss / d u = -1 exactly there
# (and exp(u) may underflow, so the general formula must not be used).
_TAIL = -30.0
_LN2 = math.log(2.0)
# Elements per chunk: the per-chunk temporaries stay in cache and their memory
# is negligible next to the logits.
CHUNK_ELEMENTS = 1 << 16


def dual_focal_loss_elements(u: Tensor, gamma: Tensor, with_grad: bool = True,
                             with_loss: bool = True):
    """Element loss and its derivatives in terms of the signed logit ``u``.

    Args:
        u (Tensor): signed logits ``ln((1 - e) / e)``, any shape, float32/64.
        gamma (Tensor): focusing exponent, broadcastable to ``u``.
        with_grad (bool): return the derivatives.
        with_loss (bool): return the loss (backward needs only derivatives).

    Returns:
        ``loss``, ``(d loss / d u, d loss / d gamma)`` or
        ``(loss, d loss / d u, d loss / d gamma)``, each shaped like ``u``.

    .. math:: \\ell = -\\ln(1 - \\sigma(-u)^\\gamma)
    """
    surprise = F.softplus(u)  # -ln e
    s = gamma * surprise  # -ln(e ** gamma)
    neg_em1 = -torch.expm1(-s)  # 1 - e ** gamma, exact for small s
    e_gamma = torch.exp(-s)
    tail = u < _TAIL
    out = ()
    if with_loss:
        # -ln(1 - x) loses digits through log() when x is tiny and through
        # expm1() when x is near 1: pick the exact form for each side of x = 1/2.
        loss = torch.where(s < _LN2, -torch.log(neg_em1), -torch.log1p(-e_gamma))
        out += (torch.where(tail, -(torch.log(gamma) + u), loss), )
    if with_grad:
        # -1 / expm1(s) written with the already computed exp(-s) and expm1(-s).
        ratio = -e_gamma / neg_em1
        grad_u = torch.where(tail, -1.0, gamma * torch.sigmoid(u) * ratio)
        grad_gamma = torch.where(tail, -1.0 / gamma, surprise * ratio)
        out += (grad_u, grad_gamma)
    return out[0] if len(out) == 1 else out


def _chunks(shape: Tuple[int, int, int]):
    """Slices (rows, columns) of a (B, C, S) tensor of about CHUNK_ELEMENTS each."""
    batch, channels, spatial = shape
    cols = max(1, min(spatial, CHUNK_ELEMENTS // max(channels, 1)))
    rows = max(1, CHUNK_ELEMENTS // max(channels * spatial, 1))
    for b0 in range(0, batch, rows):
        for s0 in range(0, spatial, cols):
            yield (slice(b0, b0 + rows), slice(None), slice(s0, s0 + cols))


def _weighted(tensors, weight):
    """Multiply one tensor or a tuple of tensors by ``weight`` (None: as is).

    A zero weight gives exactly 0, whatever the value it weighs (NaN and inf
    included): ignored and zero-weight elements never reach the loss.
    """
    if weight is None:
        return tensors
    if isinstance(tensors, tuple):
        return tuple(_weighted(t, weight) for t in tensors)
    return torch.where(weight == 0, 0.0, tensors * weight)


@dataclass
class _Inputs:
    """The normalised inputs of one call, computed on chunk by chunk.

    Attributes:
        logits (Tensor): (B, C, S).
        target (Tensor): labels (B, 1, S) or float targets (B, C, S).
        row_weight (Tensor | None): (B, 1, S).
        elem_weight (Tensor | None): (B, C, S).
        class_weight (Tensor | None): (1, C, 1).
    """

    logits: Optional[Tensor]
    target: Optional[Tensor]
    row_weight: Optional[Tensor]
    elem_weight: Optional[Tensor]
    class_weight: Optional[Tensor]
    alpha: Optional[float]
    ignore_index: Optional[int]
    use_sigmoid: bool

    def __post_init__(self):
        self.dtype = (torch.float64 if self.logits.dtype == torch.float64
                      else torch.float32)

    def tensors(self):
        return (self.logits, self.target, self.row_weight, self.elem_weight,
                self.class_weight)

    def replace_tensors(self, tensors):
        (self.logits, self.target, self.row_weight, self.elem_weight,
         self.class_weight) = tensors

    def _positives_and_weight(self, index, classes, weight=None):
        """Where the target is 1 (b, C, s) and the product of all weights."""
        factors = [weight, self.class_weight]
        if self.target.is_floating_point():
            targets = self.target[index]
            is_pos = targets > 0.5
            if self.ignore_index is not None:
                factors.append(targets != self.ignore_index)
        else:
            labels = self.target[index]
            is_pos = labels == classes
            if self.ignore_index is not None:
                factors.append(labels != self.ignore_index)
        for per_chunk in (self.row_weight, self.elem_weight):
            if per_chunk is not None:
                factors.append(per_chunk[index])
        if self.alpha is not None:
            factors.append(torch.where(is_pos, self.alpha, 1.0 - self.alpha))
        weight = None
        for factor in factors:
            if factor is not None:
                factor = factor.to(self.dtype)
                weight = factor if weight is None else weight * factor
        return is_pos, weight

    def chunk(self, index, gamma, with_grad, weight=None):
        """Weighted loss of one chunk, or with ``with_grad`` its gradients.

        ``weight`` (b, C, s) multiplies each element's loss before the chain
        rule: backward passes the incoming per-element gradient here.

        Returns:
            loss (b, C, s), or (d loss / d logits, d loss / d gamma).
        """
        z = self.logits[index].to(self.dtype)
        classes = torch.arange(z.shape[1], device=z.device).view(1, -1, 1)
        is_pos, weight = self._positives_and_weight(index, classes, weight)
        if not self.use_sigmoid:
            return _softmax_chunk(z, is_pos, classes, gamma, with_grad, weight)
        if self.target.is_floating_point():
            u, du_dz = _soft_target_signed_logit(z, self.target[index].to(self.dtype))
        else:
            u, du_dz = torch.where(is_pos, z, -z), None
        if not with_grad:
            return _weighted(dual_focal_loss_elements(u, gamma, False), weight)
        grad_u, grad_gamma = dual_focal_loss_elements(u, gamma, True, with_loss=False)
        grad_z = (torch.where(is_pos, grad_u, -grad_u) if du_dz is None
                  else grad_u * du_dz)
        return _weighted((grad_z, grad_gamma), weight)


def _soft_target_signed_logit(z: Tensor, y: Tensor):
    """Signed logit of ``e = |y - sigmoid(z)|`` and its derivative d u / d z.

    Hard entries (y in {0, 1}) use the exact ``u = +-z``; soft ones the direct
    ``u = ln(1 - e) - ln e`` with ``e`` kept off 0.
    """
    hard = (y == 0) | (y == 1)
    sign = torch.where(y > 0.5, 1.0, -1.0).to(z.dtype)
    p = torch.sigmoid(z)
    diff = y - p
    err = diff.abs().clamp(min=torch.finfo(z.dtype).tiny)
    u_soft = torch.log1p(-err) - torch.log(err)
    # de/dz = -sign(y - p) p (1 - p); du/dz = -de/dz / (e (1 - e))
    du_soft = torch.sign(diff) * p * (1 - p) / (err * (1 - err))
    u = torch.where(hard, sign * z, u_soft)
    du_dz = torch.where(hard, sign, du_soft)
    return u, du_dz


def _softmax_chunk(z, is_pos, classes, gamma, with_grad, weight=None):
    """Softmax-mode elements of a (b, C, s) chunk through their log-odds.

    With ``v_c = ln p_c - ln(1 - p_c)`` every class is a sigmoid element of
    logit ``v_c``. For the row's argmax ``m`` (the only class that can have
    ``p > 1/2``) ``v_m = z_m - logsumexp(z without m)`` avoids the
    cancellation of ``ln(1 - p_m)``; the others use ``log1p(-p_c)``.

    Backward: ``d v_c / d z_j = (delta_cj - p_j) / (1 - p_c)``, arranged so
    that ``1 / (1 - p_m)`` is never formed:
    ``dz = h - p * K - pi * g_m`` with ``h_c = g_c / (1 - p_c)`` (c != m),
    ``h_m = g_m``, ``K = sum_{c != m} h_c`` and ``pi_j = p_j / (1 - p_m)``.
    """
    z_max, argmax = z.max(dim=1, keepdim=True)
    is_max = classes == argmax
    # a +inf logit would give p = (1, 0, ...) and a finite loss with NaN
    # gradients: make it a NaN loss instead, so divergence shows
    lse = torch.logsumexp(z, dim=1, keepdim=True).masked_fill(z_max == math.inf, math.nan)
    lse_rest = torch.logsumexp(z.masked_fill(is_max, -math.inf), dim=1,
                               keepdim=True)
    log_p = z - lse
    p = torch.exp(log_p)
    v = torch.where(is_max, z_max - lse_rest, log_p - torch.log1p(-p))
    u = torch.where(is_pos, v, -v)
    if not with_grad:
        return _weighted(dual_focal_loss_elements(u, gamma, False), weight)
    grad_u, grad_gamma = dual_focal_loss_elements(u, gamma, True, with_loss=False)
    grad_v = torch.where(is_pos, grad_u, -grad_u)
    # the chain rule below mixes classes: weight the element terms first
    grad_v, grad_gamma = _weighted((grad_v, grad_gamma), weight)
    h = torch.where(is_max, grad_v, grad_v / (1 - p))
    k = torch.where(is_max, 0.0, h).sum(dim=1, keepdim=True)
    g_max = torch.where(is_max, grad_v, 0.0).sum(dim=1, keepdim=True)
    pi = torch.where(is_max, 0.0, torch.exp(z - lse_rest))
    grad_z = h - p * k - pi * g_max
    if weight is not None:  # a row whose every element weighs 0 gets no gradient
        counted = (weight != 0).expand_as(grad_z).any(dim=1, keepdim=True)
        grad_z = torch.where(counted, grad_z, 0.0)
    return grad_z, grad_gamma


def _broadcastable_gamma(gamma, dtype):
    g = gamma.to(dtype)
    return g.view(1, -1, 1) if g.dim() else g


def _chunked_backward(inputs, gamma, upstream, need_logits, need_gamma):
    """Gradients by the reference path: recompute chunk by chunk."""
    logits = inputs.logits
    grad_logits = torch.empty_like(logits)
    grad_gamma = torch.zeros(gamma.shape, dtype=inputs.dtype, device=gamma.device)
    g = _broadcastable_gamma(gamma, inputs.dtype)
    for index in _chunks(logits.shape):
        gz, gg = inputs.chunk(index, g, True, None if upstream is None else upstream[index])
        if need_logits:
            grad_logits[index] = gz
        if need_gamma:
            grad_gamma += gg.sum(dim=(0, 2)) if gamma.dim() else gg.sum()
    return grad_logits, grad_gamma


class _DualFocalFunction(torch.autograd.Function):
    """Fused DFL: forward keeps only the inputs; backward recomputes the
    elements (Triton kernels on GPU, the C kernel for reduced float32 calls
    on CPU, chunked PyTorch elsewhere)."""

    @staticmethod
    def forward(ctx, logits, gamma, inputs: _Inputs, reduce_sum: bool):
        with torch.autocast(logits.device.type, enabled=False):
            if triton_dfl.should_use(inputs):
                out = triton_dfl.forward(inputs, gamma, reduce_sum)
                out = out.to(logits.dtype) if reduce_sum else out
            elif reduce_sum and cpu_kernel.should_use(inputs, gamma):
                out = cpu_kernel.forward(inputs, gamma).to(logits.dtype)
            elif reduce_sum:
                g = _broadcastable_gamma(gamma, inputs.dtype)
                total = logits.new_zeros((), dtype=inputs.dtype)
                for index in _chunks(logits.shape):
                    total += inputs.chunk(index, g, False).sum()
                out = total.to(logits.dtype)
            else:
                g = _broadcastable_gamma(gamma, inputs.dtype)
                out = torch.empty_like(logits)
                for index in _chunks(logits.shape):
                    out[index] = inputs.chunk(index, g, False)
        ctx.inputs = inputs
        ctx.reduce_sum = reduce_sum
        ctx.save_for_backward(gamma, *inputs.tensors())
        inputs.replace_tensors((None, ) * 5)  # only saved tensors are kept
        return out

    @staticmethod
    def backward(ctx, grad_out):
        gamma, *tensors = ctx.saved_tensors
        inputs: _Inputs = ctx.inputs
        inputs.replace_tensors(tensors)
        logits = inputs.logits
        need_logits, need_gamma = ctx.needs_input_grad[:2]
        with torch.autocast(logits.device.type, enabled=False):
            scale = grad_out.to(inputs.dtype)
            # per-element upstream gradients ('none'), or None: the gradient of a sum
            upstream = None if ctx.reduce_sum else scale
            if triton_dfl.should_use(inputs):
                grad_logits, grad_gamma = triton_dfl.backward(inputs, gamma, upstream)
            elif ctx.reduce_sum and cpu_kernel.should_use(inputs, gamma):
                # the kernel applies the scale as it writes (no extra pass)
                grad_logits, grad_gamma = cpu_kernel.backward(inputs, gamma, scale)
                upstream = scale
            else:
                grad_logits, grad_gamma = _chunked_backward(
                    inputs, gamma, upstream, need_logits, need_gamma)
            if upstream is None:
                grad_logits.mul_(scale)
                grad_gamma = grad_gamma * scale
        return (grad_logits if need_logits else None,
                grad_gamma.to(gamma.dtype) if need_gamma else None, None, None)


def check_number(name, value, low, high, low_open=True):
    """Raise unless ``value`` is a number in ``(low, high]`` (``[low, high]``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number, got {type(value).__name__} {value!r}')
    too_low = value <= low if low_open else value < low
    if too_low or value > high or math.isnan(value):
        left = '(' if low_open else '['
        raise ValueError(f'{name} must be in {left}{low}, {high}], got {value}')


class Checks:
    """Checks of tensor values, resolved together with one host sync.

    On CUDA every ``.item()`` stalls the stream; a call's checks (labels in
    range, gamma, class weights, float targets) are gathered and read at once.
    """

    def __init__(self):
        self._parts, self._verdicts = [], []

    def add(self, part: Tensor, verdict) -> None:
        """``verdict(values)`` raises if ``part``'s values (a list) are bad."""
        self._parts.append(part.detach().reshape(-1).to(torch.float64))
        self._verdicts.append(verdict)

    def run(self) -> None:
        if not self._parts:
            return
        device = self._parts[0].device
        values = torch.cat([p.to(device) for p in self._parts]).tolist()  # the one sync
        start = 0
        for part, verdict in zip(self._parts, self._verdicts):
            verdict(values[start:start + part.numel()])
            start += part.numel()


def check_values(name, values: Tensor, expected: str, low, high=math.inf, low_open=True,
                 checks: Optional[Checks] = None):
    """Raise ValueError unless every value is finite and in the interval.

    NaN fails every comparison, so it is caught with the out-of-range values.
    With ``checks`` the verdict waits for ``checks.run()`` (one sync for all).
    """
    values = values.detach()
    ok = (values > low if low_open else values >= low) & (values <= high) & values.isfinite()

    def verdict(flag):
        if not flag[0]:
            shown = values.flatten()[:10].tolist()
            raise ValueError(f'{name} must be {expected}, got {shown}'
                             + (' ...' if values.numel() > 10 else ''))

    own = checks or Checks()
    own.add(ok.all(), verdict)
    if checks is None:
        own.run()


def _check_tensor(name, value, expected):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of {expected}, '
                        f'got {type(value).__name__}')


def _as_gamma(gamma, channels, like: Tensor, checks: Checks) -> Tensor:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, Tensor)):
        raise TypeError(f'gamma must be a positive number or a tensor, got '
                        f'{type(gamma).__name__}')
    if not isinstance(gamma, Tensor):
        check_number('gamma', gamma, 0, GAMMA_MAX)
        return torch.tensor(float(gamma), device=like.device)
    if gamma.dim() > 1 or (gamma.dim() == 1 and gamma.numel() != channels):
        raise ValueError(f'gamma must be a scalar or have one value per class '
                         f'({channels},), got shape {tuple(gamma.shape)}')
    if not gamma.is_floating_point():
        gamma = gamma.float()
    check_values('gamma', gamma, f'in (0, {GAMMA_MAX}]', 0, GAMMA_MAX, checks=checks)
    return gamma


def dual_focal_loss(logits: Tensor,
                    target: Tensor,
                    gamma: Union[float, Tensor] = 2.0,
                    *,
                    use_sigmoid: bool = True,
                    weight: Optional[Tensor] = None,
                    class_weight: Optional[Union[Tensor, list]] = None,
                    alpha: Optional[float] = None,
                    ignore_index: Optional[int] = None,
                    reduction: str = 'mean',
                    avg_factor: Optional[float] = None) -> Tensor:
    """Dual Focal Loss of logits against labels or float targets.

    .. math:: \\mathcal{L} = \\sum_{n,c} w_{nc}\\,\\bigl(-\\ln(1 - |y_{nc} - p_{nc}|^{\\gamma})\\bigr)

    Args:
        logits (Tensor): (N, C) or dense (B, C, d1, ...), any float dtype.
        target (Tensor): integer labels (N,) / (B, d1, ...) or, in sigmoid
            mode only, float targets shaped like ``logits``. Sigmoid labels
            lie in [0, C] with C = background (the all-zero row); softmax
            labels in [0, C). Labels equal to ``ignore_index`` contribute 0.
        gamma (float | Tensor): exponent in (0, 20], a scalar or (C,) tensor;
            a tensor that requires grad gets its gradient.
        use_sigmoid (bool): sigmoid per class (multi-label) or softmax.
        weight (Tensor, optional): per row (N,) / (N, 1) / (B, d1, ...) or per
            element (shaped like ``logits``).
        class_weight (Tensor | list, optional): (C,) factor per class.
        alpha (float, optional): sigmoid mode: weight ``alpha`` for targets
            of 1 and ``1 - alpha`` for targets of 0 (default: equal).
        ignore_index (int, optional): label to leave out, whatever its value
            (a valid class id leaves that class's rows out, as in mmseg).
        reduction (str): 'none' (element map shaped like ``logits``),
            'mean' (sum / ``avg_factor``, or over all elements) or 'sum'.
        avg_factor (float, optional): divisor for 'mean'.

    Returns:
        Tensor: the loss, in the dtype of ``logits``.

    Example:
        >>> logits = torch.randn(8, 3, requires_grad=True)
        >>> labels = torch.tensor([0, 1, 2, 3, 3, 1, 0, 3])  # 3 = background
        >>> dual_focal_loss(logits, labels, gamma=2.0).backward()
    """
    loss = _dual_focal_loss(logits, target, gamma, use_sigmoid, weight,
                            class_weight, alpha, ignore_index,
                            reduce_sum=reduction != 'none',
                            reduction=reduction, avg_factor=avg_factor)
    return reduce_loss_sum(loss, logits, reduction, avg_factor)


def reduce_loss_sum(loss: Tensor, logits: Tensor, reduction: str,
                    avg_factor: Optional[float]) -> Tensor:
    """Turn the summed loss into the requested reduction (mmdet semantics)."""
    if reduction != 'mean':
        return loss
    if avg_factor is None:
        return loss / max(logits.numel(), 1)
    # mmdet's weight_reduce_loss: an eps keeps avg_factor = 0 finite (loss 0)
    return loss / (avg_factor + torch.finfo(torch.float32).eps)


def _dual_focal_loss(logits, target, gamma, use_sigmoid, weight, class_weight,
                     alpha, ignore_index, *, reduce_sum, reduction='sum',
                     avg_factor=None) -> Tensor:
    """Validate, normalise to (B, C, S) and run the fused function."""
    checks = Checks()  # value checks, read with one sync before the loss runs
    _check_tensor('logits', logits, 'floats of shape (N, C) or (B, C, ...)')
    _check_tensor('target', target, 'integer labels or float targets')
    if not logits.is_floating_point():
        raise TypeError(f'logits must be a floating point tensor, got {logits.dtype}')
    if logits.dim() < 2:
        raise ValueError(f'logits must have shape (N, C) or (B, C, ...), got '
                         f'{tuple(logits.shape)}')
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    channels = logits.shape[1]
    if not use_sigmoid and channels < 2:
        raise ValueError(
            f'softmax mode needs at least 2 channels, got logits of shape '
            f'{tuple(logits.shape)}; use use_sigmoid=True for a binary head '
            'with one output channel')
    batch = logits.shape[0]
    spatial = logits.shape[2:]
    row_shape = (batch, ) + tuple(spatial)
    flat = math.prod(spatial)
    logits3 = logits.reshape(batch, channels, flat)

    if target.is_floating_point():
        if not use_sigmoid:
            raise TypeError('softmax mode takes integer class labels of shape '
                            f'{row_shape}, got a float target')
        if target.shape != logits.shape:
            raise ValueError(f'expected float target of shape '
                             f'{tuple(logits.shape)}, got {tuple(target.shape)}')
        counted = target if ignore_index is None else target[target != ignore_index]
        check_values('a float target', counted, checks=checks, expected=
                     'in [0, 1]' + ('' if ignore_index is None else
                                    f' (or ignore_index={ignore_index})'),
                     low=0, high=1, low_open=False)
        target3 = target.reshape(batch, channels, flat)
    else:
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f'target must hold integer labels or floats, got '
                            f'{target.dtype}')
        if tuple(target.shape) != row_shape:
            raise ValueError(f'expected target of shape {row_shape} (one label '
                             f'per row), got {tuple(target.shape)}')
        _check_label_range(target, channels, use_sigmoid, ignore_index, checks)
        target3 = target.reshape(batch, 1, flat)

    row_weight = elem_weight = None
    if weight is not None:
        _check_tensor('weight', weight, 'per-row or per-element weights')
        if weight.numel() == logits.numel() and weight.shape in (
                logits.shape, (batch, channels)):
            elem_weight = weight.reshape(batch, channels, flat)
        elif weight.numel() == math.prod(row_shape) and (
                tuple(weight.shape) in (row_shape, row_shape + (1, ))
                or weight.dim() == 1):
            row_weight = weight.reshape(batch, 1, flat)
        else:
            raise ValueError(
                f'weight must have shape {row_shape} (per row) or '
                f'{tuple(logits.shape)} (per element), got {tuple(weight.shape)}')

    if class_weight is not None:
        class_weight = torch.as_tensor(class_weight, dtype=torch.float32,
                                       device=logits.device)
        if class_weight.shape != (channels, ):
            raise ValueError(f'class_weight must have one value per class '
                             f'({channels},), got shape {tuple(class_weight.shape)}')
        check_values('class_weight', class_weight, 'non-negative finite numbers', 0,
                     low_open=False, checks=checks)
        class_weight = class_weight.view(1, channels, 1)
    if alpha is not None:
        if not use_sigmoid:
            raise ValueError('alpha is a sigmoid-mode option; use class_weight '
                             'in softmax mode')
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not 0 <= alpha <= 1:
            raise ValueError(f'alpha must be a float in [0, 1] or None, got {alpha!r}')
    gamma = _as_gamma(gamma, channels, logits, checks)
    checks.run()

    inputs = _Inputs(logits3, target3, row_weight, elem_weight, class_weight,
                     alpha, ignore_index, use_sigmoid)
    out = _DualFocalFunction.apply(logits3, gamma, inputs, reduce_sum)
    return out if reduce_sum else out.view(logits.shape)


def _check_label_range(labels, channels, use_sigmoid, ignore_index, checks: Checks):
    """Raise ValueError (at ``checks.run()``) for labels outside the valid range."""
    if labels.numel() == 0:
        return
    high = channels if use_sigmoid else channels - 1
    masked = labels if ignore_index is None else labels.masked_fill(
        labels == ignore_index, 0)

    def verdict(lo_hi):
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        if lo < 0 or hi > high:
            bad = lo if lo < 0 else hi
            meaning = (f'0..{channels - 1} for classes and {channels} for background'
                       if use_sigmoid else f'0..{channels - 1}')
            raise ValueError(f'label {bad} out of range: expected {meaning}'
                             + (f' or ignore_index={ignore_index}'
                                if ignore_index is not None else ''))

    checks.add(torch.stack(torch.aminmax(masked)), verdict)
