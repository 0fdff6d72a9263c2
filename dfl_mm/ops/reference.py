"""The PyTorch core of the Dual Focal Loss: the reference every kernel matches.

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

Backend ``reference`` of ``dfl_mm.ops``: the contract of the kernels
(``forward``, ``backward``, ``forward_backward``), and it takes every call,
whatever device, dtype, target or weight; its backward is made of
differentiable torch ops, so it also gives second derivatives.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .inputs import LossInputs

__all__ = ['NAME', 'AUTO_DEVICES', 'applies', 'unavailable', 'dual_focal_loss_elements',
           'forward', 'backward', 'forward_backward', 'neurocomputing_elements',
           'neurocomputing_loss', 'TAIL', 'LN2']

NAME = 'reference'
AUTO_DEVICES = None  # every device

# Below this signed logit softplus(u) == exp(u) and 1 - exp(-s) == s to double
# precision, so the loss is -ln(gamma) - u and d loss / d u = -1 exactly there
# (and exp(u) may underflow, so the general formula must not be used).
TAIL = -30.0
# -ln(1 - exp(-s)) switches between its two accurate forms at s = ln 2.
LN2 = math.log(2.0)
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
    tail = u < TAIL
    out = ()
    if with_loss:
        # -ln(1 - x) loses digits through log() when x is tiny and through
        # expm1() when x is near 1: pick the exact form for each side of x = 1/2.
        loss = torch.where(s < LN2, -torch.log(neg_em1), -torch.log1p(-e_gamma))
        out += (torch.where(tail, -(torch.log(gamma) + u), loss), )
    if with_grad:
        # -1 / expm1(s) written with the already computed exp(-s) and expm1(-s).
        ratio = -e_gamma / neg_em1
        grad_u = torch.where(tail, -1.0, gamma * torch.sigmoid(u) * ratio)
        grad_gamma = torch.where(tail, -1.0 / gamma, surprise * ratio)
        out += (grad_u, grad_gamma)
    return out[0] if len(out) == 1 else out


def applies(inputs: LossInputs, gamma=None, reduce_sum: bool = True) -> bool:
    """Every call."""
    return True


def unavailable(inputs: Optional[LossInputs] = None) -> Optional[str]:
    """Never: it is plain torch."""
    return None


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


def _positives_and_weight(inputs: LossInputs, index, classes, weight=None):
    """Where the target is 1 (b, C, s) and the product of all weights (or None)."""
    factors = [weight, inputs.class_weight]
    target = inputs.target[index]
    if inputs.soft_target:
        is_pos = target > 0.5
    else:
        is_pos = target == classes
    if inputs.ignore_index is not None:
        factors.append(target != inputs.ignore_index)
    for per_chunk in (inputs.row_weight, inputs.elem_weight):
        if per_chunk is not None:
            factors.append(per_chunk[index])
    if inputs.alpha is not None:
        factors.append(torch.where(is_pos, inputs.alpha, 1.0 - inputs.alpha))
    product = None
    for factor in factors:
        if factor is not None:
            factor = factor.to(inputs.dtype)
            product = factor if product is None else product * factor
    return is_pos, product


def chunk(inputs: LossInputs, index, gamma: Tensor, with_grad: bool,
          weight: Optional[Tensor] = None):
    """Weighted loss of one chunk, or with ``with_grad`` its gradients.

    ``weight`` (b, C, s) multiplies each element's loss before the chain
    rule: backward passes the incoming per-element gradient here.

    Returns:
        loss (b, C, s), or (d loss / d logits, d loss / d gamma).
    """
    z = inputs.logits[index].to(inputs.dtype)
    classes = torch.arange(z.shape[1], device=z.device).view(1, -1, 1)
    is_pos, weight = _positives_and_weight(inputs, index, classes, weight)
    if not inputs.use_sigmoid:
        return _softmax_chunk(z, is_pos, classes, gamma, with_grad, weight)
    if inputs.soft_target:
        u, du_dz = _soft_target_signed_logit(z, inputs.target[index].to(inputs.dtype))
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


def _softmax_log_odds(z: Tensor, classes: Tensor):
    """Log-odds ``v_c = ln p_c - ln(1 - p_c)`` of a (b, C, s) chunk's softmax.

    For the row's argmax ``m`` (the only class that can have ``p > 1/2``)
    ``v_m = z_m - logsumexp(z without m)`` avoids the cancellation of
    ``ln(1 - p_m)``; the others use ``log1p(-p_c)``. Made of differentiable ops.

    Returns:
        (v, p, is_max, logsumexp of the row without its argmax), the first
        three (b, C, s), the last (b, 1, s).
    """
    z_max, argmax = z.max(dim=1, keepdim=True)
    is_max = classes == argmax
    # a +inf logit would give p = (1, 0, ...) and a finite loss with NaN
    # gradients: make it a NaN loss instead, so divergence shows
    lse = torch.logsumexp(z, dim=1, keepdim=True).masked_fill(z_max == math.inf, math.nan)
    lse_rest = torch.logsumexp(z.masked_fill(is_max, -math.inf), dim=1, keepdim=True)
    log_p = z - lse
    p = torch.exp(log_p)
    # the argmax's p is masked out of the other branch: where's backward would
    # send 0 * inf = NaN through log1p(-1) when p_m = 1
    v = torch.where(is_max, z_max - lse_rest, log_p - torch.log1p(-p.masked_fill(is_max, 0)))
    return v, p, is_max, lse_rest


def _softmax_chunk(z, is_pos, classes, gamma, with_grad, weight=None):
    """Softmax-mode elements of a (b, C, s) chunk through their log-odds.

    With ``v_c = ln p_c - ln(1 - p_c)`` (:func:`_softmax_log_odds`) every
    class is a sigmoid element of logit ``v_c``.

    Backward: ``d v_c / d z_j = (delta_cj - p_j) / (1 - p_c)``, arranged so
    that ``1 / (1 - p_m)`` is never formed:
    ``dz = h - p * K - pi * g_m`` with ``h_c = g_c / (1 - p_c)`` (c != m),
    ``h_m = g_m``, ``K = sum_{c != m} h_c`` and ``pi_j = p_j / (1 - p_m)``.
    """
    v, p, is_max, lse_rest = _softmax_log_odds(z, classes)
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


def _broadcastable_gamma(gamma: Tensor, dtype) -> Tensor:
    g = gamma.to(dtype)
    return g.view(1, -1, 1) if g.dim() else g


def forward(inputs: LossInputs, gamma: Tensor, reduce_sum: bool) -> Tensor:
    """Summed loss (0-d) or the element map (B, C, S), both in the compute dtype
    (float32 for half logits: their small losses would underflow in float16)."""
    g = _broadcastable_gamma(gamma, inputs.dtype)
    logits = inputs.logits
    if reduce_sum:
        total = logits.new_zeros((), dtype=inputs.dtype)
        for index in _chunks(logits.shape):
            total += chunk(inputs, index, g, False).sum()
        return total
    out = torch.empty_like(logits, dtype=inputs.dtype)
    for index in _chunks(logits.shape):
        out[index] = chunk(inputs, index, g, False)
    return out


def backward(inputs: LossInputs, gamma: Tensor, grad_out: Tensor, reduce_sum: bool):
    """Gradients of ``sum(grad_out * loss)``, recomputed chunk by chunk.

    Args:
        grad_out (Tensor): the incoming gradient: 0-d for a summed loss, else
            (B, C, S) per element.

    Returns:
        (d / d logits (B, C, S) in the logits' dtype, d / d gamma shaped like
        ``gamma`` in the compute dtype), already scaled by ``grad_out``.
    """
    logits = inputs.logits
    grad_out = grad_out.to(inputs.dtype)
    upstream = None if reduce_sum else grad_out
    grad_logits = torch.empty_like(logits)
    grad_gamma = torch.zeros(gamma.shape, dtype=inputs.dtype, device=gamma.device)
    g = _broadcastable_gamma(gamma, inputs.dtype)
    for index in _chunks(logits.shape):
        gz, gg = chunk(inputs, index, g, True, None if upstream is None else upstream[index])
        grad_logits[index] = gz
        grad_gamma += gg.sum(dim=(0, 2)) if gamma.dim() else gg.sum()
    if reduce_sum:
        grad_logits.mul_(grad_out)
        grad_gamma = grad_gamma * grad_out
    return grad_logits, grad_gamma


def forward_backward(inputs: LossInputs, gamma: Tensor, scale: float):
    """The summed loss and its gradients, all times ``scale`` (the kernels' fused
    contract, here as two chunked passes: what a failed fused launch falls back to)."""
    factor = torch.tensor(scale, dtype=inputs.dtype, device=inputs.logits.device)
    return (forward(inputs, gamma, True) * factor, *backward(inputs, gamma, factor, True))


# ---------------------------------------------------------------- Neurocomputing 2021
def neurocomputing_elements(u: Tensor, gamma: Tensor, is_pos: Tensor, alpha: float,
                            beta: float, rho: float) -> Tensor:
    """Elements of the Neurocomputing 2021 form for hard targets, through the signed
    logit ``u`` (``e = sigmoid(-u)``: ``1 - p`` for the true class, ``p`` for the others).

    .. math:: \\ell = -[y]\\ln p - \\beta [1 - y] \\ln(\\rho - p) - \\alpha\\, e^{\\gamma}

    ``-ln p = softplus(-u)`` on the true class and, for ``rho = 1``,
    ``-ln(1 - p) = softplus(-u)`` on the others: exact at every finite logit,
    no ``eps`` inside a log; ``e^gamma = exp(-gamma softplus(u))``.
    """
    e_gamma = torch.exp(-gamma * F.softplus(u))
    if rho == 1.0:
        false = beta * F.softplus(-u)
    else:  # rho - e = (rho - 1) + sigmoid(u) > 0, also where rho rounds to 1 in float32
        false = -beta * torch.log((rho - 1.0) + torch.sigmoid(u))
    return torch.where(is_pos, F.softplus(-u), false) - alpha * e_gamma


def _neurocomputing_soft(z: Tensor, y: Tensor, gamma: Tensor, alpha: float, beta: float,
                         rho: float) -> Tensor:
    """Sigmoid-mode elements for float targets; entries of 0 or 1 take the exact
    hard form (:func:`neurocomputing_elements`)."""
    p = torch.sigmoid(z)
    log_rest = -F.softplus(z) if rho == 1.0 else torch.log((rho - 1.0) + torch.sigmoid(-z))
    err = (y - p).abs().clamp(min=torch.finfo(z.dtype).tiny)
    soft = (y * F.softplus(-z) - beta * (1 - y) * log_rest
            - alpha * torch.exp(gamma * torch.log(err)))
    hard = (y == 0) | (y == 1)
    is_pos = y == 1
    exact = neurocomputing_elements(torch.where(is_pos, z, -z), gamma, is_pos, alpha, beta,
                                    rho)
    return torch.where(hard, exact, soft)


def neurocomputing_loss(inputs: LossInputs, gamma: Tensor, alpha: float, beta: float,
                        rho: float) -> Tensor:
    """The weighted (B, C, S) element map of the Neurocomputing 2021 form, in the
    compute dtype, made of differentiable torch ops (autograd gives its gradients,
    second derivatives too; ``torch.compile`` traces it): no kernel implements it.

    ``inputs.alpha`` must be None (``alpha`` here is the form's coefficient);
    class, row and element weights and ``ignore_index`` apply as in the
    default form.
    """
    z = inputs.logits.to(inputs.dtype)
    g = _broadcastable_gamma(gamma, inputs.dtype)
    everything = (slice(None), ) * 3
    classes = torch.arange(z.shape[1], device=z.device).view(1, -1, 1)
    is_pos, weight = _positives_and_weight(inputs, everything, classes)
    if weight is not None:
        # autograd's chain rule: masking the value (_weighted) is not masking the
        # gradient (0 * NaN); a masked logit (a softmax pixel: all its classes)
        # is replaced by 0 before any maths, so it gets exactly 0 gradient
        dead = weight == 0
        if not inputs.use_sigmoid:
            dead = dead.all(dim=1, keepdim=True)
        z = torch.where(dead, 0.0, z)
    if inputs.use_sigmoid and inputs.soft_target:
        out = _neurocomputing_soft(z, inputs.target.to(inputs.dtype), g, alpha, beta, rho)
    else:
        v = _softmax_log_odds(z, classes)[0] if not inputs.use_sigmoid else z
        out = neurocomputing_elements(torch.where(is_pos, v, -v), g, is_pos, alpha, beta, rho)
    return _weighted(out, weight)
