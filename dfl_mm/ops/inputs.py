"""The normalised inputs of one loss call: the contract every backend reads.

``dfl_mm.functional`` validates a call and normalises it to (B, C, S) tensors
(B batch, C classes, S spatial positions; S = 1 for (N, C) logits); the PyTorch
core, the C kernel and the Triton kernels all take that one ``LossInputs``.
"""
from dataclasses import dataclass
from typing import Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor

__all__ = ['LossInputs', 'CallRefused', 'Backend']


def compute_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype the loss's maths runs in, one rule for every path: float64 for
    float64 input, else float32 (half-precision input included)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


class CallRefused(RuntimeError):
    """A backend can not take this one call (its arguments), though it works here:
    the registry routes the call elsewhere without switching the backend off."""


@dataclass
class LossInputs:
    """One call's tensors and options, in the (B, C, S) layout.

    Attributes:
        logits (Tensor): (B, C, S), any float dtype.
        target (Tensor): integer labels (B, 1, S) or float targets (B, C, S).
        row_weight (Tensor | None): (B, 1, S), one weight per row/pixel.
        elem_weight (Tensor | None): (B, C, S), one weight per element.
        class_weight (Tensor | None): (1, C, 1) float32.
        alpha (float | None): sigmoid mode: weight of targets of 1 (0: ``1 - alpha``).
        ignore_index (int | None): label whose rows contribute nothing.
        use_sigmoid (bool): sigmoid (per class) or softmax (per row) mode.
    """

    logits: Tensor
    target: Tensor
    row_weight: Optional[Tensor] = None
    elem_weight: Optional[Tensor] = None
    class_weight: Optional[Tensor] = None
    alpha: Optional[float] = None
    ignore_index: Optional[int] = None
    use_sigmoid: bool = True

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the maths runs in (:func:`compute_dtype`)."""
        return compute_dtype(self.logits)

    @property
    def soft_target(self) -> bool:
        return self.target.is_floating_point()


@runtime_checkable
class Backend(Protocol):
    """The surface every backend module has (``dfl_mm.ops.BACKENDS``; a test checks
    each against it, names and parameters): what the registry calls."""

    NAME: str
    AUTO_DEVICES: Optional[Tuple[str, ...]]  # device types 'auto' uses it on (None: all)

    def applies(self, inputs: LossInputs, gamma, reduce_sum: bool) -> bool:
        """Pure: whether it implements this call (no environment, no compiling)."""

    def unavailable(self, inputs: LossInputs) -> Optional[str]:
        """Why it can not run here (not installed, build or probe failed), cached."""

    def forward(self, inputs: LossInputs, gamma: Tensor, reduce_sum: bool) -> Tensor:
        """The summed loss (0-d) or the element map (B, C, S)."""

    def backward(self, inputs: LossInputs, gamma: Tensor, grad_out: Tensor,
                 reduce_sum: bool) -> Tuple[Tensor, Tensor]:
        """(d / d logits, d / d gamma), already times ``grad_out``."""

    def forward_backward(self, inputs: LossInputs, gamma: Tensor, scale: float):
        """The sum and its gradients, all times ``scale``, in one pass."""
