"""mmdet's and mmseg's call conventions mapped onto ``dual_focal_loss``.

``DualFocalLoss`` tells them apart by the rank of the prediction: (N, C)
anchor scores (mmdet dense heads) or (B, C, ...) logits (mmseg decode heads);
the quality heads' targets (QualityFocalLoss's ``(labels, scores)``,
VarifocalLoss's IoU-weighted (N, C) map) and probabilities (``activated``)
are mapped first.
Each adapter returns the core's ``(target, weight, avg_factor)`` and, after the
core, ``finish`` shapes its 'none' output as the framework expects.
Only torch.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..ops.inputs import compute_dtype
from .checks import check_binary_labels, check_label_range

Adapted = Tuple[Tensor, Optional[Tensor], Optional[object]]


def one_hot_as_target(logits: Tensor, target: Tensor, use_sigmoid: bool,
                      as_labels: bool = False) -> Tensor:
    """An integer one-hot map shaped like ``logits`` as the loss takes it.

    Softmax mode, and sigmoid mode with ``as_labels`` (adaptive class weights
    count labels): the labels (B, ...) of its rows (sigmoid: an all-zero row is
    the background, label C). Sigmoid mode otherwise: one-hot rows (at most one
    1) as labels too, so that a label map and its one-hot form give the same
    result, ``ignore_index`` included (the rows whose 1 is at that index, as
    mmseg's FocalLoss reads them); a multi-label map (or one channel, or under
    ``torch.compile``) as floats. Anything else is returned unchanged.

    Raises:
        ValueError: a row that is not one-hot (sigmoid with ``as_labels``: more
            than one 1).
    """
    if (not isinstance(target, Tensor) or target.is_floating_point()
            or target.dtype == torch.bool or target.is_complex()
            or not isinstance(logits, Tensor) or logits.dim() < 2
            or target.shape != logits.shape):
        return target
    as_floats = target.to(compute_dtype(logits))
    if use_sigmoid and not as_labels and (logits.shape[1] == 1
                                          or torch.compiler.is_compiling()):
        return as_floats
    rows = target.sum(dim=1)
    one_hot = ((target == 0) | (target == 1)).all() & (
        (rows <= 1) if use_sigmoid else (rows == 1)).all()
    if use_sigmoid and not as_labels and not bool(one_hot):
        return as_floats  # multi-label rows
    if not torch.compiler.is_compiling() and not bool(one_hot):
        if use_sigmoid:
            raise ValueError("class_weight='adaptive' counts labels: an integer target "
                             'shaped like the logits must be one-hot rows (at most one 1; '
                             'all 0 = background), got a multi-label map')
        raise ValueError('softmax mode: a target shaped like the logits must be a one-hot '
                         'map (each row one 1, the rest 0); pass (B, ...) labels to ignore '
                         'pixels')
    labels = target.argmax(dim=1)
    return torch.where(rows > 0, labels, logits.shape[1]) if use_sigmoid else labels


def assigned_labels(target: Tensor) -> Tensor:
    """The class a float target (B, C, ...) assigns to each row: its largest entry
    where that is positive, else ``C`` (background): (B, ...) int64. A quality
    score (an IoU) is not a count: the row counts once, for its class."""
    top, index = target.max(dim=1)
    return torch.where(top > 0, index, target.shape[1])


def quality_target(pred: Tensor, target) -> Tuple[Tensor, Tensor]:
    """QualityFocalLoss's ``(labels (N,), scores (N,))`` as an (N, C) float target.

    GFL, TOOD, RTMDet and LD pass it: label ``C`` (or any label outside
    [0, C)) is background, the all-zero row; a positive row holds its quality
    score (e.g. the IoU) at its label. Returns ``(target, labels)``.

    Raises:
        TypeError / ValueError: not two tensors of N integer labels and N
            float scores, or labels outside [0, C].
    """
    if len(target) != 2 or not all(isinstance(t, Tensor) for t in target):
        raise TypeError('a tuple target must be (labels, scores) as QualityFocalLoss takes '
                        f'it: two tensors, got {len(target)} items of types '
                        f'{[type(t).__name__ for t in target]}')
    labels, scores = target
    rows = pred.shape[0] if pred.dim() == 2 else None
    if rows is None or labels.shape != (rows, ) or scores.shape != (rows, ):
        raise ValueError(f'a (labels, scores) target takes (N, C) scores and N labels and '
                         f'N quality scores, got pred {tuple(pred.shape)}, labels '
                         f'{tuple(labels.shape)}, scores {tuple(scores.shape)}')
    channels = pred.shape[1]
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f'labels of a (labels, scores) target must be integers, got {labels.dtype}')
    if not scores.is_floating_point():
        raise TypeError(f'scores of a (labels, scores) target must be floats in [0, 1], got '
                        f'{scores.dtype}')
    check_label_range(labels, channels, use_sigmoid=True)
    slot = torch.where(labels < channels, labels, channels).long().unsqueeze(1)
    dtype = compute_dtype(pred)
    dense = torch.zeros(rows, channels + 1, dtype=dtype, device=pred.device)
    dense.scatter_(1, slot, scores.to(dtype).unsqueeze(1))
    return dense[:, :channels], labels


def channels_last_rows(pred: Tensor, target, weight):
    """(..., C) maps with the classes last (YOLOv3) as mmdet's (N, C) rows:
    ``(pred (N, C), target (N, C) or (N,), weight (N, C) or (N,))``."""
    channels = pred.shape[-1]
    rows = pred.reshape(-1, channels)
    if isinstance(target, Tensor):
        target = target.reshape(rows.shape if target.shape == pred.shape else (-1, ))
    if isinstance(weight, Tensor):
        weight = weight.reshape(rows.shape if weight.numel() == pred.numel() else (-1, ))
    return rows, target, weight


def from_probabilities(prob: Tensor) -> Tensor:
    """Logits of probabilities (``activated=True``, as TOOD's losses take them),
    in float32 (float64 for float64 input), clamped one float32 step inside (0, 1)
    so that p = 0 or 1 stays finite. Half-precision probabilities are converted
    first: clamping at float16's or bfloat16's eps (9.8e-4, 7.8e-3) would cut the
    gradient of every probability outside that band, the missed hard positive's
    included.

    Raises:
        ValueError: a value outside [0, 1] (or NaN): they are not probabilities.
    """
    if not torch.compiler.is_compiling() and prob.numel():
        bad = ~((prob >= 0) & (prob <= 1))
        if bool(bad.any()):
            raise ValueError(f'activated=True takes probabilities in [0, 1], got '
                             f'{prob.detach()[bad][:5].tolist()}')
    prob = prob.to(compute_dtype(prob))
    eps = torch.finfo(prob.dtype).eps
    return torch.logit(prob.clamp(eps, 1 - eps))


def quality_weight(target: Tensor, weight):
    """``iou_weighted`` (VarifocalLoss): a positive element (target > 0) weighs its
    target, the others 1; times ``weight`` per row (N,) or per element (N, C)."""
    factor = torch.where(target > 0, target, 1.0)
    if weight is None:
        return factor
    if not isinstance(weight, Tensor) or weight.numel() not in (target.shape[0], target.numel()):
        raise ValueError(f'weight must have shape ({target.shape[0]},) (per row) or '
                         f'{tuple(target.shape)} (per element), got '
                         f'{getattr(weight, "shape", type(weight).__name__)}')
    return factor * weight.reshape(-1, 1 if weight.numel() == target.shape[0] else
                                   target.shape[1])


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


def finish(loss: Tensor, pred: Tensor, reduction: str, per_row: bool = False) -> Tensor:
    """mmseg's 'none' is per pixel (summed over classes), as is QualityFocalLoss's
    (``per_row``: per anchor); mmdet's FocalLoss's and VarifocalLoss's per element."""
    summed = reduction == 'none' and (pred.dim() > 2 or per_row)
    return loss.sum(dim=1) if summed else loss
