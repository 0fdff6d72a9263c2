"""The functional Dual Focal Loss: validation, normalisation and autograd.

``dual_focal_loss`` checks a call, normalises it to (B, C, S) ``LossInputs``
and runs the loss's one autograd path, the custom op of ``dfl_mm.ops.custom_ops``
(eager and compiled alike; the maths: ``dfl_mm.ops.reference``), with a mean's
divisor folded in. Which implementation computes it (Triton, the C kernel or
the PyTorch reference) is chosen by ``dfl_mm.ops`` (one switch, ``DFL_MM_BACKEND``).

.. math:: \\ell = -\\ln\\bigl(1 - |y - p|^{\\gamma}\\bigr)

This module and the backends need only torch (and Triton for the kernels):
no mmengine, mmdet or mmseg.
"""
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ..ops import custom_ops, reference
from ..ops.inputs import LossInputs
from ..ops.reference import dual_focal_loss_elements
from .checks import (
    FORMS,
    Checks,
    check_call_options,
    check_form,
    check_ignore_index,
    check_label_dtype,
    check_label_range,
    check_no_grad,
    check_number,
    check_tensor,
    check_values,
)
from .conventions import assigned_labels, one_hot_as_target

__all__ = ['dual_focal_loss', 'parse', 'compute', 'LossCall', 'dual_focal_loss_elements',
           'GAMMA_MAX', 'FORMS']

GAMMA_MAX = 20.0


def _compiling() -> bool:
    return torch.compiler.is_compiling()


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


def dual_focal_loss(logits: Tensor, target: Tensor, gamma: Union[float, Tensor] = 2.0, *,
                    use_sigmoid: bool = True, weight: Optional[Tensor] = None,
                    class_weight: Optional[Union[Tensor, list]] = None,
                    class_weight_mode: str = 'element', alpha: Optional[float] = None,
                    ignore_index: Optional[int] = None, reduction: str = 'mean',
                    avg_factor: Optional[Union[float, Tensor]] = None,
                    form: str = 'arxiv2019', beta: float = 1.0, rho: float = 1.0) -> Tensor:
    """Dual Focal Loss of logits against labels or float targets.

    .. math::

        \\mathcal{L} = \\sum_{n,c} w_{nc}\\,\\bigl(-\\ln(1 - |y_{nc} - p_{nc}|^{\\gamma})\\bigr)

    or, with ``form='neurocomputing2021'``, elements
    ``-y ln p - beta (1 - y) ln(rho - p) - alpha |y - p|^gamma``.

    Args:
        logits (Tensor): (N, C) or dense (B, C, d1, ...), any float dtype.
        target (Tensor): integer labels (N,) / (B, d1, ...), an integer
            one-hot map shaped like ``logits`` (the same loss as its labels)
            or, in sigmoid mode only, float targets shaped like ``logits``.
            Sigmoid labels lie in [0, C] with C = background (the all-zero
            row); softmax labels in [0, C). Labels equal to ``ignore_index``
            contribute 0; the label dtype must be able to hold it.
        gamma (float | Tensor): exponent in (0, 20], a scalar or (C,) tensor;
            a tensor that requires grad gets its gradient.
        use_sigmoid (bool): sigmoid per class (multi-label) or softmax.
        weight (Tensor, optional): per row (N,) / (N, 1) / (B, d1, ...) or per
            element (shaped like ``logits``); non-negative and finite.
        class_weight (Tensor | list, optional): (C,) factor per class.
        class_weight_mode (str): 'element': ``class_weight[c]`` multiplies
            the class-c element of every row; 'row': it multiplies every
            element of the rows labelled c (as mmseg's CE), background and
            ignored rows weigh 1 (a float target's row: the class of its
            largest positive entry); 'positive': only the labelled class's
            element of those rows (their false classes weigh 1).
        alpha (float, optional): sigmoid mode: weight ``alpha`` for targets
            of 1 and ``1 - alpha`` for targets of 0 (default: equal). In the
            Neurocomputing form (both modes): the coefficient of
            ``|y - p|^gamma``, a finite number (default 1).
        ignore_index (int, optional): label to leave out, whatever its value.
        reduction (str): 'none' (element map shaped like ``logits``),
            'mean' (sum / ``avg_factor``, or over all elements) or 'sum'.
        avg_factor (float | Tensor, optional): divisor for 'mean', >= 0.
        form (str): 'arxiv2019' (the definition above, every backend) or
            'neurocomputing2021' (docs/DFL_SPEC.md section 8; torch ops), whose
            ``beta`` >= 0 weighs the false classes' term and ``rho`` >= 1.

    Returns:
        Tensor: the loss in the logits' dtype (float32 for float16 / bfloat16).

    Example:
        >>> labels = torch.tensor([0, 1, 2, 3, 3, 1, 0, 3])  # 3 = background
        >>> dual_focal_loss(torch.randn(8, 3, requires_grad=True), labels).backward()
    """
    return compute(parse(logits, target, gamma, use_sigmoid=use_sigmoid, weight=weight,
                         class_weight=class_weight, class_weight_mode=class_weight_mode,
                         alpha=alpha, ignore_index=ignore_index, reduction=reduction,
                         avg_factor=avg_factor, form=form, beta=beta, rho=rho))


def _reduction(logits: Tensor, reduction: str, avg_factor, checks: Checks):
    """The requested reduction (mmdet semantics) of the summed loss, as (factor folded
    into the loss op: a float64 0-d CPU tensor, the same sums eager and compiled, where
    sizes and ``avg_factor`` are symbolic and one graph serves every value; divisor
    left for after it: a ``avg_factor`` tensor off the CPU, whose value is not read
    on the host)."""
    if isinstance(avg_factor, Tensor):
        if avg_factor.dtype == torch.bool or avg_factor.is_complex():
            raise TypeError(f'avg_factor must be a real number, got a {avg_factor.dtype} '
                            'tensor')
        if avg_factor.numel() != 1:
            raise ValueError(f'avg_factor must hold one value, got shape '
                             f'{tuple(avg_factor.shape)}')
        check_values('avg_factor', avg_factor.double(), 'a finite number >= 0', 0,
                     low_open=False, checks=checks)
    elif avg_factor is not None and (isinstance(avg_factor, bool) or not isinstance(
            avg_factor, (numbers.Real, torch.SymInt, torch.SymFloat))):
        raise TypeError(f'avg_factor must be a number or a tensor, got '
                        f'{type(avg_factor).__name__} {avg_factor!r}')
    elif isinstance(avg_factor, numbers.Real) and not _compiling() and not (
            math.isfinite(avg_factor) and avg_factor >= 0):
        raise ValueError(f'avg_factor must be a finite number >= 0, got {avg_factor}')
    one = torch.ones((), dtype=torch.float64)
    if reduction != 'mean':
        return one, None
    if avg_factor is None:
        return one / torch.sym_max(logits.numel(), 1), None
    # mmdet's weight_reduce_loss: an eps keeps avg_factor = 0 finite (loss 0)
    eps = torch.finfo(torch.float32).eps
    if isinstance(avg_factor, Tensor):
        if avg_factor.device.type != 'cpu':
            return one, avg_factor + eps
        avg_factor = avg_factor.reshape(()).double()
    return one / (avg_factor + eps), None


@dataclass
class LossCall:
    """One checked call, normalised: what :func:`compute` takes, nothing left to check.

    Attributes:
        inputs (LossInputs): the logits (B, C, S), the target in one form ((B, 1, S)
            labels or (B, C, S) floats), the weights with the class weights placed,
            the options; ``inputs.dtype`` is the compute dtype.
        gamma (Tensor): the checked exponent, 0-d or (C,).
        shape (torch.Size): the logits' shape, which 'none' comes back in.
        reduction (str): 'none', 'mean' or 'sum'.
        scale (Tensor): float64 0-d CPU factor of the sum (1 / the mean's divisor).
        divisor (Tensor | None): an ``avg_factor`` off the CPU (+ eps), divided after.
        form (tuple | None): the Neurocomputing form's (alpha, beta, rho); None: DFL's.
    """

    inputs: LossInputs
    gamma: Tensor
    shape: torch.Size
    reduction: str
    scale: Tensor
    divisor: Optional[Tensor] = None
    form: Optional[Tuple[float, float, float]] = None


def parse(logits, target, gamma, *, use_sigmoid=True, weight=None, class_weight=None,
          class_weight_mode='element', alpha=None, ignore_index=None, reduction='mean',
          avg_factor=None, form='arxiv2019', beta=1.0, rho=1.0,
          labels: Optional[Tensor] = None) -> LossCall:
    """Every check of a :func:`dual_focal_loss` call in one pass (the value checks
    read with one host sync, none inside a compiled graph) and its :class:`LossCall`.

    Args:
        labels (Tensor, optional): (N,) labels that place 'row' / 'positive' class
            weights instead of the target's (a ``(labels, scores)`` target's: a
            positive whose quality score is 0 keeps its class).
        the rest: those of :func:`dual_focal_loss`.

    Raises:
        TypeError / ValueError: naming the first bad argument.
    """
    checks = Checks()
    neuro_alpha = check_form(form, alpha, beta, rho)
    if neuro_alpha is not None:
        alpha = None  # the form's coefficient, not the sigmoid positives' weight
    check_call_options(logits, target, use_sigmoid=use_sigmoid, alpha=alpha,
                       reduction=reduction, avg_factor=avg_factor,
                       class_weight_mode=class_weight_mode)
    ignore_index = check_ignore_index(ignore_index)
    target = one_hot_as_target(logits, target, use_sigmoid)
    check_label_dtype(target, ignore_index)
    target3 = _targets(logits, target, use_sigmoid, ignore_index, checks)
    row_weight, elem_weight = _call_weights(logits, weight, checks)
    placed = target3 if labels is None else labels.reshape(-1, 1, 1)
    row_weight, elem_weight, class_weight = _class_weights(
        logits, placed, class_weight, class_weight_mode, row_weight, elem_weight, checks)
    gamma = _as_gamma(gamma, logits.shape[1], logits, checks)
    scale, divisor = _reduction(logits, reduction, avg_factor, checks)
    if not _compiling():  # the value checks need the host: skipped inside a compiled graph
        checks.run()
    inputs = LossInputs(_rows(logits), target3, row_weight, elem_weight, class_weight,
                        alpha, ignore_index, use_sigmoid)
    return LossCall(inputs, gamma, logits.shape, reduction, scale, divisor,
                    None if neuro_alpha is None else (neuro_alpha, float(beta), float(rho)))


def compute(call: LossCall) -> Tensor:
    """The loss of a parsed call: its reduction, or the element map shaped like the
    logits ('none')."""
    gamma, inputs, reduce_sum = call.gamma, call.inputs, call.reduction != 'none'
    if call.form is not None:  # plain torch ops: autograd, and compile traces them
        out = reference.neurocomputing_loss(inputs, gamma, *call.form)
        out = out.sum() * call.scale.to(out.dtype) if reduce_sum else out
    else:
        with_grad = torch.is_grad_enabled() and (inputs.logits.requires_grad
                                                 or gamma.requires_grad)
        out = custom_ops.loss(inputs, gamma, reduce_sum, with_grad, call.scale)
    if not reduce_sum:
        return out.view(call.shape)
    return out if call.divisor is None else out / call.divisor


def _rows(x: Tensor) -> Tensor:
    """(B, C, ...) as (B, C, S), S the product of the trailing sizes (1 for (N, C))."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def _targets(logits, target, use_sigmoid, ignore_index, checks: Checks) -> Tensor:
    """The target as (B, C, S) floats (a float target) or (B, 1, S) labels, checked."""
    row_shape = (logits.shape[0], ) + tuple(logits.shape[2:])
    if target.is_floating_point():
        if not use_sigmoid:
            raise TypeError('softmax mode takes integer class labels of shape '
                            f'{row_shape}, got a float target')
        if target.shape != logits.shape:
            raise ValueError(f'expected float target of shape '
                             f'{tuple(logits.shape)}, got {tuple(target.shape)}')
        counted = target if ignore_index is None else target[target != ignore_index]
        check_values('a float target', counted, checks=checks, expected=(
            'in [0, 1]' + ('' if ignore_index is None else f' (or ignore_index={ignore_index})')),
            low=0, high=1, low_open=False)
        return _rows(target)
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f'target must hold integer labels or floats, got {target.dtype}')
    if tuple(target.shape) != row_shape:
        raise ValueError(f'expected target of shape {row_shape} (one label '
                         f'per row), got {tuple(target.shape)}')
    check_label_range(target, logits.shape[1], use_sigmoid, ignore_index, checks)
    return target.reshape(logits.shape[0], 1, math.prod(logits.shape[2:]))


def _call_weights(logits, weight, checks: Checks):
    """The call's ``weight`` as (row weight (B, 1, S), element weight (B, C, S)), one None."""
    if weight is None:
        return None, None
    check_tensor('weight', weight, 'per-row or per-element weights')
    check_no_grad('weight', weight)
    batch, channels = logits.shape[:2]
    row_shape = (batch, ) + tuple(logits.shape[2:])
    if weight.numel() == logits.numel() and weight.shape in (logits.shape, (batch, channels)):
        weights = None, _rows(weight.reshape(logits.shape))
    elif weight.numel() == math.prod(row_shape) and (
            tuple(weight.shape) in (row_shape, row_shape + (1, )) or weight.dim() == 1):
        weights = weight.reshape(batch, 1, math.prod(row_shape[1:])), None
    else:
        raise ValueError(f'weight must have shape {row_shape} (per row) or '
                         f'{tuple(logits.shape)} (per element), got {tuple(weight.shape)}')
    if weight.is_complex() or weight.dtype == torch.bool:
        raise TypeError(f'weight must hold real numbers, got {weight.dtype}')
    check_values('weight', weight, 'non-negative finite numbers', 0, low_open=False,
                 checks=checks)
    return weights


def _class_weights(logits, target3, class_weight, mode, row_weight, elem_weight,
                   checks: Checks):
    """Fold a (C,) ``class_weight`` in where ``mode`` says: (row, element, per-class)
    weights, the per-class one (1, C, 1) only for 'element'. A row labelled outside
    [0, C) (background, ignored) weighs 1; a float target's row: its assigned class."""
    if class_weight is None:
        return row_weight, elem_weight, None
    channels = logits.shape[1]
    class_weight = torch.as_tensor(class_weight, dtype=torch.float32, device=logits.device)
    if class_weight.shape != (channels, ):
        raise ValueError(f'class_weight must have one value per class '
                         f'({channels},), got shape {tuple(class_weight.shape)}')
    check_values('class_weight', class_weight, 'non-negative finite numbers', 0,
                 low_open=False, checks=checks)
    if mode == 'element':
        return row_weight, elem_weight, class_weight.view(1, channels, 1)
    labels = (assigned_labels(target3).unsqueeze(1) if target3.is_floating_point()
              else target3)
    known = (labels >= 0) & (labels < channels)
    row = torch.where(known, class_weight[labels.clamp(0, channels - 1)], 1.0)
    if mode == 'positive':  # only the labelled class's element
        own = torch.arange(channels, device=labels.device).view(1, channels, 1)
        row = torch.where(own == labels, row, 1.0)
        if row_weight is not None:
            row, row_weight = row * row_weight, None
    if elem_weight is not None or mode == 'positive':
        return row_weight, row if elem_weight is None else elem_weight * row, None
    return (row if row_weight is None else row_weight * row), None, None
