"""The loss as two ``torch.library`` custom ops, for ``torch.compile``.

Under compilation the functional layer calls :func:`compiled_loss`, so a
compiled model holds the loss as one opaque op (``dfl_mm::loss``) and its
backward as another (``dfl_mm::loss_backward``), each with a fake (meta)
implementation for tracing; inside them the registry (``dfl_mm.ops``)
dispatches to a backend as in eager mode. Eager calls do not come here: they
keep the autograd function of ``dfl_mm.functional``, which also hands the
kept softmax gradients out without a pass when the incoming gradient is 1.

Under compilation a softmax sum whose gradients are needed always goes through
the backend's fused ``forward_backward`` and backward scales its kept
gradients; second derivatives are not available there.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .inputs import LossInputs, compute_dtype

__all__ = ['compiled_loss']


def _inputs(logits, target, row_weight, elem_weight, class_weight, alpha, ignore_index,
            use_sigmoid) -> LossInputs:
    return LossInputs(logits, target, row_weight, elem_weight, class_weight, alpha,
                      ignore_index, use_sigmoid)


def _fused(reduce_sum: bool, use_sigmoid: bool, with_grad: bool) -> bool:
    return with_grad and reduce_sum and not use_sigmoid


@torch.library.custom_op('dfl_mm::loss', mutates_args=())
def _loss(logits: Tensor, target: Tensor, row_weight: Optional[Tensor],
          elem_weight: Optional[Tensor], class_weight: Optional[Tensor], gamma: Tensor,
          alpha: Optional[float], ignore_index: Optional[int], use_sigmoid: bool,
          reduce_sum: bool, with_grad: bool, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss: the sum times ``scale`` or the (B, C, S) map, in the compute dtype;
    its gradients when computed with it (fused softmax sums), else empty)."""
    from . import forward, forward_backward, select
    inputs = _inputs(logits, target, row_weight, elem_weight, class_weight, alpha,
                     ignore_index, use_sigmoid)
    backend = select(inputs, gamma, reduce_sum)
    if _fused(reduce_sum, use_sigmoid, with_grad):  # every backend, the reference included
        (out, grad_logits, grad_gamma), _ = forward_backward(backend, inputs, gamma, scale)
    else:
        out, _, _ = forward(backend, inputs, gamma, reduce_sum, False, scale)
        grad_logits, grad_gamma = logits.new_empty(0), gamma.new_empty(0)
    dtype = compute_dtype(logits)
    return (out.to(dtype).contiguous(), grad_logits.contiguous(),
            grad_gamma.to(dtype).reshape(gamma.shape if grad_gamma.numel() else (0, )))


# The fakes promise contiguous outputs, as the ops return them, whatever the
# logits' strides (channels_last maps, transposed scores).
@_loss.register_fake
def _(logits, target, row_weight, elem_weight, class_weight, gamma, alpha, ignore_index,
      use_sigmoid, reduce_sum, with_grad, scale):
    dtype = compute_dtype(logits)
    out = logits.new_empty((), dtype=dtype) if reduce_sum else logits.new_empty(
        logits.shape, dtype=dtype)
    if _fused(reduce_sum, use_sigmoid, with_grad):
        return out, logits.new_empty(logits.shape), gamma.new_empty(gamma.shape, dtype=dtype)
    return out, logits.new_empty(0), gamma.new_empty(0)


@torch.library.custom_op('dfl_mm::loss_backward', mutates_args=())
def _loss_backward(logits: Tensor, target: Tensor, row_weight: Optional[Tensor],
                   elem_weight: Optional[Tensor], class_weight: Optional[Tensor],
                   gamma: Tensor, alpha: Optional[float], ignore_index: Optional[int],
                   use_sigmoid: bool, reduce_sum: bool, grad_out: Tensor,
                   scale: float) -> Tuple[Tensor, Tensor]:
    """(d / d logits, d / d gamma) of ``sum(grad_out * scale * loss)``."""
    from . import backward, select
    inputs = _inputs(logits, target, row_weight, elem_weight, class_weight, alpha,
                     ignore_index, use_sigmoid)
    backend = select(inputs, gamma, reduce_sum)
    grad_logits, grad_gamma = backward(backend, inputs, gamma, grad_out * scale, reduce_sum)
    return grad_logits.contiguous(), grad_gamma.to(compute_dtype(logits)).reshape(gamma.shape)


@_loss_backward.register_fake
def _(logits, target, row_weight, elem_weight, class_weight, gamma, alpha, ignore_index,
      use_sigmoid, reduce_sum, grad_out, scale):
    return logits.new_empty(logits.shape), gamma.new_empty(gamma.shape,
                                                     dtype=compute_dtype(logits))


def _setup_context(ctx, inputs, output):
    (logits, target, row_weight, elem_weight, class_weight, gamma, alpha, ignore_index,
     use_sigmoid, reduce_sum, with_grad, scale) = inputs
    _, grad_logits, grad_gamma = output
    ctx.save_for_backward(logits, target, row_weight, elem_weight, class_weight, gamma,
                          grad_logits, grad_gamma)
    ctx.options = (alpha, ignore_index, use_sigmoid, reduce_sum, scale)
    ctx.fused = _fused(reduce_sum, use_sigmoid, with_grad)


def _backward(ctx, grad_out, _grad_logits_out, _grad_gamma_out):
    (logits, target, row_weight, elem_weight, class_weight, gamma, kept_logits,
     kept_gamma) = ctx.saved_tensors
    alpha, ignore_index, use_sigmoid, reduce_sum, scale = ctx.options
    if ctx.fused:  # computed with the loss (times scale): only the incoming gradient is left
        factor = grad_out.to(kept_gamma.dtype)
        grad_logits, grad_gamma = kept_logits * factor.to(kept_logits.dtype), kept_gamma * factor
    else:
        grad_logits, grad_gamma = _loss_backward(
            logits, target, row_weight, elem_weight, class_weight, gamma, alpha,
            ignore_index, use_sigmoid, reduce_sum, grad_out, scale)
    return (grad_logits, None, None, None, None, grad_gamma.to(gamma.dtype), None, None,
            None, None, None, None)


_loss.register_autograd(_backward, setup_context=_setup_context)


def compiled_loss(inputs: LossInputs, gamma: Tensor, reduce_sum: bool, with_grad: bool,
                  scale: float) -> Tensor:
    """The loss of ``inputs`` through ``dfl_mm::loss`` (what a compiled graph holds)."""
    out, _, _ = _loss(inputs.logits, inputs.target, inputs.row_weight, inputs.elem_weight,
                      inputs.class_weight, gamma, inputs.alpha, inputs.ignore_index,
                      inputs.use_sigmoid, reduce_sum, with_grad, float(scale))
    return out
