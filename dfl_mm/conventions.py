"""mmdet's and mmseg's call conventions mapped onto ``dual_focal_loss``.

``DualFocalLoss`` tells them apart by the rank of the prediction: (N, C)
anchor scores (mmdet dense heads) or (B, C, ...) logits (mmseg decode heads).
Each adapter returns the core's ``(target, weight, avg_factor)`` and, after the
core, ``finish`` shapes its 'none' output as the framework expects.
Only torch.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_binary_labels

Adapted = Tuple[Tensor, Optional[Tensor], Optional[object]]


def anchors(pred: Tensor, target: Tensor, weight, *, reduction: str, avg_factor,
            avg_non_ignore: bool, ignore_index, use_sigmoid: bool) -> Adapted:
    """mmdet: (N, C) scores, labels (N,) in [0, C] (C = background).

    mmdet's FocalLoss takes per-element weights flattened to (N * C,) (FSAF
    passes them); 'mean' with ``avg_non_ignore`` averages over the elements of
    rows that are not ignored.
    """
    if (isinstance(weight, Tensor) and weight.dim() == 1 and pred.dim() == 2
            and pred.shape[1] > 1 and weight.numel() == pred.numel()):
        weight = weight.view(pred.shape)
    if reduction == 'mean' and avg_factor is None and avg_non_ignore and ignore_index is not None:
        kept = (target != ignore_index).sum()
        avg_factor = kept if target.is_floating_point() else kept * pred.shape[1]
    return target, weight, avg_factor


def pixels(pred: Tensor, labels: Tensor, weight, *, reduction: str, avg_factor,
           avg_non_ignore: bool, ignore_index, use_sigmoid: bool) -> Adapted:
    """mmseg: (B, C, ...) logits, labels (B, ...) or a float map like ``pred``.

    The pixel is the unit whatever the target's encoding: integer labels and
    the same data as a float (one-hot or soft) map give the same 'mean' and
    the same per-pixel 'none'. A binary head (C = 1, sigmoid) takes labels 0/1
    with 1 = foreground.
    """
    valid = None if ignore_index is None else labels != ignore_index
    if labels.is_floating_point():
        valid = None if valid is None else valid.any(dim=1)  # ignored: all entries are
    elif pred.shape[1] == 1 and use_sigmoid:
        check_binary_labels(labels, valid)
        # class 0 of the core is the foreground; label 1 (background) is the
        # core's all-zero row
        labels = 1 - labels if valid is None else torch.where(valid, 1 - labels, labels)
    if reduction == 'mean' and avg_factor is None:
        if avg_non_ignore and valid is not None:
            avg_factor = valid.sum()  # a tensor: no host sync
        else:
            avg_factor = labels.numel() // (pred.shape[1] if labels.is_floating_point() else 1)
    return labels, weight, avg_factor


def finish(loss: Tensor, pred: Tensor, reduction: str) -> Tensor:
    """mmseg's 'none' is per pixel (summed over classes); mmdet's per element."""
    return loss.sum(dim=1) if reduction == 'none' and pred.dim() > 2 else loss
