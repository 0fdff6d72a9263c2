"""Peer losses of the efficacy study that mmdet / mmseg do not ship.

Study tooling, not the product (``dfl_mm`` never imports this file):

- ``EqualizedFocalLoss`` (mmdet): the Equalized Focal Loss of Li et al.,
  "Equalized Focal Loss for Dense Long-Tailed Object Detection", CVPR 2022
  (arXiv 2201.02593), implemented here from the paper.
- ``PixelSigmoidFocalLoss`` (mmseg): torchvision's sigmoid focal loss over
  one-hot pixels (mmseg 1.2.2's FocalLoss fails on CPU).
- ``AdaptiveWeightCrossEntropyLoss`` (mmseg): softmax CE weighted per pixel by
  DualFocalLoss's adaptive class weights.
- ``AdaptiveWeightFocalLoss`` (mmdet): mmdet's sigmoid focal loss (alpha 0.25,
  gamma 2) weighted by the very same adaptive class weights (is it the weights
  or DFL that helps?).
- ``BalancedSoftmaxCrossEntropyLoss`` (mmseg): logit-adjusted CE (Ren et al.
  2020, Menon et al. 2021), ``-log softmax(z + tau log pi)_y`` with ``pi`` the
  running class frequency of the adaptive statistics.
- ``Poly1CrossEntropyLoss`` (mmseg): Poly-1 (Leng et al. 2022),
  ``CE + eps (1 - p_t)``.

``register()`` adds them to the registries (once).
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class EqualizedFocalLoss(nn.Module):
    """Sigmoid focal loss with a focusing factor and a weight per class.

    Class j's focusing factor grows as its positives' share of the gradient
    falls (a rare class: few positives, many negatives):

    .. math::

        \\gamma_j = \\gamma_b + s\\,(1 - g_j),\\qquad
        L = -\\sum_{i,j} \\frac{\\gamma_j}{\\gamma_b}\\,\\alpha_t (1 - p_t)^{\\gamma_j}\\log p_t

    where ``g_j`` in [0, 1] is the accumulated gradient ratio of class j: the
    sum over all training steps so far of ``|dL/dz|`` on its positive elements
    over that on its negative elements (clipped to 1; 1 before any step, so
    EFL starts as focal loss). The sums are collected by a hook on the logits'
    gradient and all-reduced under DDP. Defaults are the paper's (gamma_b 2,
    s 8, alpha 0.25).

    The mmdet loss interface of ``FocalLoss``: ``pred`` (N, C) logits,
    ``target`` (N,) labels in [0, C] (C = background), ``weight`` (N,),
    ``avg_factor``.
    """

    def __init__(self, num_classes, gamma_b=2.0, scale=8.0, alpha=0.25, loss_weight=1.0,
                 use_sigmoid=True):
        super().__init__()
        assert use_sigmoid, 'EqualizedFocalLoss is a sigmoid loss'
        self.use_sigmoid = True
        self.num_classes, self.gamma_b, self.scale = num_classes, gamma_b, scale
        self.alpha, self.loss_weight = alpha, loss_weight
        self.register_buffer('pos_grad', torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer('neg_grad', torch.zeros(num_classes, dtype=torch.float64))

    def gradient_ratio(self):
        """(C,) g_j: accumulated positive over negative gradient (1 before any)."""
        if not bool(self.neg_grad.any()):
            return torch.ones_like(self.pos_grad)
        return (self.pos_grad / self.neg_grad.clamp(min=1e-12)).clamp(0, 1)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        onehot = F.one_hot(target, self.num_classes + 1)[:, :self.num_classes].to(pred.dtype)
        gamma = (self.gamma_b + self.scale * (1 - self.gradient_ratio())).to(pred.dtype)
        p = pred.sigmoid()
        p_t = torch.where(onehot > 0, p, 1 - p)
        alpha_t = torch.where(onehot > 0, self.alpha, 1 - self.alpha)
        ce = F.binary_cross_entropy_with_logits(pred, onehot, reduction='none')
        loss = (gamma / self.gamma_b) * alpha_t * (1 - p_t).pow(gamma) * ce
        if weight is not None:
            loss = loss * weight.reshape(-1, 1)
        if self.training and pred.requires_grad:
            pred.register_hook(lambda grad: self._collect(grad, onehot, weight))
        total = loss.sum()
        if (reduction_override or 'mean') == 'sum':
            return self.loss_weight * total
        return self.loss_weight * total / (avg_factor if avg_factor is not None
                                           else max(loss.numel(), 1))

    def _collect(self, grad, onehot, weight):
        with torch.no_grad():
            grad = grad.abs().double()
            if weight is not None:
                grad = grad * weight.reshape(-1, 1).double()
            sums = torch.stack([(grad * onehot).sum(0), (grad * (1 - onehot)).sum(0)])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(sums)
            self.pos_grad += sums[0]
            self.neg_grad += sums[1]


class PixelSigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss over one-hot pixels, mean over non-ignored pixels."""

    def __init__(self, gamma=2.0, alpha=0.25, loss_weight=1.0, loss_name='loss_focal'):
        super().__init__()
        self.gamma, self.alpha, self.loss_weight = gamma, alpha, loss_weight
        self.loss_name = loss_name

    def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
        from torchvision.ops import sigmoid_focal_loss
        valid = seg_label != ignore_index
        onehot = F.one_hot(torch.where(valid, seg_label, 0), seg_logits.shape[1])
        loss = sigmoid_focal_loss(seg_logits, onehot.permute(0, 3, 1, 2).float(),
                                  alpha=self.alpha, gamma=self.gamma, reduction='none')
        per_pixel = loss.sum(dim=1) * valid
        return self.loss_weight * per_pixel.sum() / valid.sum().clamp(min=1)


class AdaptiveWeightCrossEntropyLoss(nn.Module):
    """Softmax CE weighted per pixel by DualFocalLoss's adaptive weights.

    The mean is over non-ignored pixels, as the DFL rows' (mmseg 1.2.2's
    CrossEntropyLoss with class_weight and 'mean' indexes its weights with
    label 255 and fails on any ignored pixel).
    """

    def __init__(self, num_classes, adaptive_weight=None, loss_weight=1.0,
                 loss_name='loss_ce'):
        super().__init__()
        self.adaptive = _adaptive(num_classes, adaptive_weight)
        self.loss_weight, self.loss_name = loss_weight, loss_name

    def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
        loss = self._loss(seg_logits, seg_label, ignore_index)  # the steps before this one
        if self.training and torch.is_grad_enabled():
            self.adaptive.count(seg_logits, seg_label, ignore_index, use_sigmoid=False)
        return loss

    def _loss(self, seg_logits, seg_label, ignore_index):
        loss = F.cross_entropy(seg_logits, seg_label, weight=self.adaptive.weights(),
                               ignore_index=ignore_index, reduction='none')
        valid = seg_label != ignore_index
        return self.loss_weight * loss.sum() / valid.sum().clamp(min=1)


def _adaptive(num_classes, adaptive_weight):
    from dfl_mm.models.adaptive import ADAPTIVE_DEFAULTS, AdaptiveClassWeight
    return AdaptiveClassWeight(num_classes, **{**ADAPTIVE_DEFAULTS, **(adaptive_weight or {})})


class AdaptiveWeightFocalLoss(nn.Module):
    """mmdet's sigmoid focal loss (``FocalLoss`` at alpha 0.25, gamma 2) with
    DualFocalLoss's adaptive class weights, applied as DFL applies them
    ('row': every element of a positive row; 'positive': its class's element).

    The mmdet loss interface of ``FocalLoss`` (labels in [0, C], C = background).
    """

    def __init__(self, num_classes, class_weight='adaptive', adaptive_weight=None, gamma=2.0,
                 alpha=0.25, loss_weight=1.0, use_sigmoid=True):
        super().__init__()
        assert use_sigmoid and class_weight == 'adaptive'
        self.use_sigmoid, self.num_classes = True, num_classes
        self.gamma, self.alpha, self.loss_weight = gamma, alpha, loss_weight
        self.adaptive = _adaptive(num_classes, adaptive_weight)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
        C = self.num_classes
        onehot = F.one_hot(target, C + 1)[:, :C].to(pred.dtype)
        loss = py_sigmoid_focal_loss(pred, onehot, gamma=self.gamma, alpha=self.alpha,
                                     reduction='none')
        class_weight, mode = self.adaptive.weights_for(pred, target)
        row = torch.where(target < C, class_weight[target.clamp(max=C - 1)], 1.0)[:, None]
        loss = loss * (torch.where(onehot > 0, row, 1.0) if mode == 'positive' else row)
        if weight is not None:
            loss = loss * weight.reshape(pred.shape[0], -1)
        if self.training and torch.is_grad_enabled():
            self.adaptive.count(pred, target, None, use_sigmoid=True)
        if (reduction_override or 'mean') == 'sum':
            return self.loss_weight * loss.sum()
        return self.loss_weight * loss.sum() / (avg_factor if avg_factor is not None
                                                else max(loss.numel(), 1))


class BalancedSoftmaxCrossEntropyLoss(nn.Module):
    """Logit-adjusted softmax CE, mean over non-ignored pixels:

    .. math:: \\ell = -\\log \\mathrm{softmax}(z + \\tau \\log(\\pi + \\epsilon))_y

    ``pi`` the running class frequency (the adaptive statistics, momentum 0.99,
    from the steps before this one: uniform, i.e. plain CE, before any step).
    """

    def __init__(self, num_classes, tau=1.0, eps=1e-4, loss_weight=1.0, loss_name='loss_ce'):
        super().__init__()
        self.adaptive = _adaptive(num_classes, None)
        self.tau, self.eps = tau, eps
        self.loss_weight, self.loss_name = loss_weight, loss_name

    def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
        prior = self.adaptive.frequency().to(seg_logits)
        shift = self.tau * torch.log(prior + self.eps) if bool(prior.any()) else 0 * prior
        loss = F.cross_entropy(seg_logits + shift.view(1, -1, 1, 1), seg_label,
                               ignore_index=ignore_index, reduction='sum')
        if self.training and torch.is_grad_enabled():
            self.adaptive.count(seg_logits, seg_label, ignore_index, use_sigmoid=False)
        valid = seg_label != ignore_index
        return self.loss_weight * loss / valid.sum().clamp(min=1)


class Poly1CrossEntropyLoss(nn.Module):
    """Poly-1: ``CE + eps (1 - p_t)``, mean over non-ignored pixels (eps 1)."""

    def __init__(self, epsilon=1.0, loss_weight=1.0, loss_name='loss_ce'):
        super().__init__()
        self.epsilon, self.loss_weight, self.loss_name = epsilon, loss_weight, loss_name

    def forward(self, seg_logits, seg_label, weight=None, ignore_index=255, **kwargs):
        valid = seg_label != ignore_index
        label = torch.where(valid, seg_label, 0)
        ce = F.cross_entropy(seg_logits, label, reduction='none')
        p_t = seg_logits.softmax(1).gather(1, label.unsqueeze(1)).squeeze(1)
        loss = (ce + self.epsilon * (1 - p_t)) * valid
        return self.loss_weight * loss.sum() / valid.sum().clamp(min=1)


def register():
    """Add the study's losses to mmdet's and mmseg's MODELS (idempotent)."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for cls in (EqualizedFocalLoss, AdaptiveWeightFocalLoss):
        if DET_MODELS.get(cls.__name__) is None:
            DET_MODELS.register_module(module=cls)
    for cls in (PixelSigmoidFocalLoss, AdaptiveWeightCrossEntropyLoss,
                BalancedSoftmaxCrossEntropyLoss, Poly1CrossEntropyLoss):
        if SEG_MODELS.get(cls.__name__) is None:
            SEG_MODELS.register_module(module=cls)
