"""mmdet heads that hard-code their classification loss, given a configurable one.

``DFLSSDHead`` is mmdet's ``SSDHead`` whose softmax cross-entropy over the
``C + 1`` channels (background last) is the config's ``loss_cls`` instead
(a softmax ``DualFocalLoss`` by default), with SSD's own hard-negative mining
on the per-anchor losses: every positive, and the ``neg_pos_ratio`` times as
many negatives with the largest loss. Registered in mmdet's MODELS (importing
this module needs mmdet; ``import dfl_mm`` registers a stand-in that imports it).
"""
from typing import Dict

from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS
from torch import Tensor

from .presets import SSD_DFL

__all__ = ['DFLSSDHead']


@MODELS.register_module()
class DFLSSDHead(SSDHead):
    """SSDHead with ``loss_cls`` from the config.

    Args:
        loss_cls (dict): the classification loss over ``num_classes + 1``
            channels; called with (N, C + 1) scores, labels (N,) in [0, C]
            (C = background) and ``reduction_override='none'``, it must
            return the (N, C + 1) element map. Default: softmax DFL, gamma 2.
            A learnable gamma's pull (added by the loss to reduced calls only)
            is added once per batch as ``loss_gamma_pull``.
        *args, **kwargs: those of ``SSDHead``.
    """

    def __init__(self, *args, loss_cls: dict = SSD_DFL, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_cls = MODELS.build(dict(loss_cls))

    def loss_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, anchor: Tensor,
                            labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                            bbox_weights: Tensor, avg_factor: int):
        """SSD's losses of one image: (classification (1,), box regression).

        .. math:: L_{cls} = \\bigl(\\sum_{pos} \\ell_n + \\sum_{hardest\\ neg} \\ell_n\\bigr)
            / \\mathrm{avg\\_factor},\\qquad \\ell_n = \\sum_c \\ell_{nc}\\, w_n
        """
        per_anchor = self.loss_cls(cls_score, labels,
                                   reduction_override='none').sum(dim=1) * label_weights
        positive = (labels >= 0) & (labels < self.num_classes)
        negative = labels == self.num_classes
        num_neg = min(int(self.train_cfg['neg_pos_ratio'] * int(positive.sum())),
                      int(negative.sum()))
        hardest = per_anchor[negative].topk(num_neg).values
        loss_cls = (per_anchor[positive].sum() + hardest.sum()) / avg_factor
        # the box term is upstream's (its cross-entropy term is dropped)
        _, loss_bbox = super().loss_by_feat_single(cls_score, bbox_pred, anchor, labels,
                                                   label_weights, bbox_targets, bbox_weights,
                                                   avg_factor)
        return loss_cls[None], loss_bbox

    def loss_by_feat(self, *args, **kwargs) -> Dict[str, Tensor]:
        """SSD's losses, plus a learnable gamma's pull (the 'none' calls above leave
        it out: without it a learnable gamma could only climb)."""
        losses = super().loss_by_feat(*args, **kwargs)
        if getattr(self.loss_cls, 'learnable_gamma', False):
            losses['loss_gamma_pull'] = self.loss_cls.gamma_pull()
        return losses
