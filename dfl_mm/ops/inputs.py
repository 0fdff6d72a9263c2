"""The normalised inputs of one loss call: the contract every backend reads.

``dfl_mm.functional`` validates a call and normalises it to (B, C, S) tensors
(B batch, C classes, S spatial positions; S = 1 for (N, C) logits); the PyTorch
core, the C kernel and the Triton kernels all take that one ``LossInputs``.
"""
import enum
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ['LossInputs', 'KernelMode', 'CallRefused']


class CallRefused(RuntimeError):
    """A backend can not take this one call (its arguments), though it works here:
    the registry routes the call elsewhere without switching the backend off."""


class KernelMode(enum.IntEnum):
    """What one kernel launch computes."""

    SUM = 0  # per-program partial sums of the weighted loss
    MAP = 1  # the weighted element loss map (B, C, S)
    GRAD = 2  # d loss / d logits (B, C, S) and d loss / d gamma
    SUM_AND_GRAD = 3  # both in one launch (a forward pass that needs gradients)


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

    logits: Optional[Tensor]
    target: Optional[Tensor]
    row_weight: Optional[Tensor] = None
    elem_weight: Optional[Tensor] = None
    class_weight: Optional[Tensor] = None
    alpha: Optional[float] = None
    ignore_index: Optional[int] = None
    use_sigmoid: bool = True

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the maths runs in: float64 for float64 logits, else float32."""
        return torch.float64 if self.logits.dtype == torch.float64 else torch.float32

    @property
    def soft_target(self) -> bool:
        return self.target.is_floating_point()

    def tensors(self):
        return (self.logits, self.target, self.row_weight, self.elem_weight,
                self.class_weight)

    def replace_tensors(self, tensors) -> None:
        (self.logits, self.target, self.row_weight, self.elem_weight,
         self.class_weight) = tensors
