"""The loss's one autograd path: two ``torch.library`` custom ops.

Every call, eager or compiled, runs ``dfl_mm::loss`` (its backward is
``dfl_mm::loss_backward``); each has a fake (meta) implementation, so a
compiled model holds the loss as one opaque op, and inside both the registry
(``dfl_mm.ops``) picks the backend. One rule decides when the gradients are
computed with the loss (:func:`fused`): a softmax sum whose gradients are
needed, on every backend (the kernels in one pass, the reference in two). The
forward keeps them, and backward only scales them by the incoming gradient.

A backward that builds a graph (``create_graph=True``, eager only) runs the
PyTorch reference's backward as differentiable torch ops, so second
derivatives are the core's.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference
from .inputs import LossInputs, compute_dtype

__all__ = ['loss', 'fused']


def fused(reduce_sum: bool, use_sigmoid: bool, with_grad: bool) -> bool:
    """Whether the forward computes the gradients too: softmax sums that need them
    (measured on CPU: 1.5x faster, for one kept copy of the gradient). Sigmoid calls
    keep two passes and save nothing but their inputs: there the fused pass bought
    no time (its forward is cheap) and cost a copy of 150M-logit RetinaNet gradients."""
    return with_grad and reduce_sum and not use_sigmoid


@torch.library.custom_op('dfl_mm::loss', mutates_args=())
def _loss(logits: Tensor, target: Tensor, row_weight: Optional[Tensor],
          elem_weight: Optional[Tensor], class_weight: Optional[Tensor], gamma: Tensor,
          alpha: Optional[float], ignore_index: Optional[int], use_sigmoid: bool,
          reduce_sum: bool, with_grad: bool, scale: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(loss: the sum times ``scale`` (a float64 0-d CPU tensor) or the (B, C, S) map,
    in the compute dtype; its gradients times ``scale`` when :func:`fused`, else empty)."""
    from . import forward, forward_backward, select
    inputs = LossInputs(logits, target, row_weight, elem_weight, class_weight, alpha,
                        ignore_index, use_sigmoid)
    scale = float(scale)
    with torch.autocast(logits.device.type, enabled=False):
        backend = select(inputs, gamma, reduce_sum)
        if fused(reduce_sum, use_sigmoid, with_grad):
            out, grad_logits, grad_gamma = forward_backward(backend, inputs, gamma, scale)
        else:
            out = forward(backend, inputs, gamma, reduce_sum, scale)
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
    if fused(reduce_sum, use_sigmoid, with_grad):
        return out, logits.new_empty(logits.shape), gamma.new_empty(gamma.shape, dtype=dtype)
    return out, logits.new_empty(0), gamma.new_empty(0)


@torch.library.custom_op('dfl_mm::loss_backward', mutates_args=())
def _loss_backward(logits: Tensor, target: Tensor, row_weight: Optional[Tensor],
                   elem_weight: Optional[Tensor], class_weight: Optional[Tensor],
                   gamma: Tensor, alpha: Optional[float], ignore_index: Optional[int],
                   use_sigmoid: bool, reduce_sum: bool, grad_out: Tensor,
                   scale: Tensor) -> Tuple[Tensor, Tensor]:
    """(d / d logits, d / d gamma) of ``sum(grad_out * scale * loss)``."""
    from . import backward, select
    inputs = LossInputs(logits, target, row_weight, elem_weight, class_weight, alpha,
                        ignore_index, use_sigmoid)
    with torch.autocast(logits.device.type, enabled=False):
        backend = select(inputs, gamma, reduce_sum)
        grad_logits, grad_gamma = backward(backend, inputs, gamma, grad_out * float(scale),
                                           reduce_sum)
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
                          scale, grad_logits, grad_gamma)
    ctx.options = (alpha, ignore_index, use_sigmoid, reduce_sum)
    ctx.fused = fused(reduce_sum, use_sigmoid, with_grad)


def _backward(ctx, grad_out, _grad_logits_out, _grad_gamma_out):
    *tensors, gamma, scale, kept_logits, kept_gamma = ctx.saved_tensors
    alpha, ignore_index, use_sigmoid, reduce_sum = ctx.options
    if torch.is_grad_enabled():  # create_graph: a backward made of differentiable torch ops
        inputs = LossInputs(*tensors, alpha, ignore_index, use_sigmoid)
        with torch.autocast(gamma.device.type, enabled=False):
            grad_logits, grad_gamma = reference.backward(inputs, gamma,
                                                         grad_out * float(scale), reduce_sum)
    elif ctx.fused:  # computed with the loss (times scale): only the incoming gradient is left
        factor = grad_out.to(kept_gamma.dtype)
        grad_logits, grad_gamma = kept_logits * factor.to(kept_logits.dtype), kept_gamma * factor
    else:
        grad_logits, grad_gamma = _loss_backward(
            *tensors, gamma, alpha, ignore_index, use_sigmoid, reduce_sum, grad_out, scale)
    return (grad_logits, None, None, None, None, grad_gamma.to(gamma.dtype), None, None,
            None, None, None, None)


_loss.register_autograd(_backward, setup_context=_setup_context)


def loss(inputs: LossInputs, gamma: Tensor, reduce_sum: bool, with_grad: bool,
         scale: Tensor) -> Tensor:
    """The loss of ``inputs`` through ``dfl_mm::loss``: its sum times ``scale`` (a
    float64 0-d CPU tensor) or the (B, C, S) map, in the compute dtype."""
    out, _, _ = _loss(inputs.logits, inputs.target, inputs.row_weight, inputs.elem_weight,
                      inputs.class_weight, gamma, inputs.alpha, inputs.ignore_index,
                      inputs.use_sigmoid, reduce_sum, with_grad, scale)
    return out
