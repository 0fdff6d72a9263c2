# RetinaNet R50-FPN 1x COCO with DualFocalLoss, a learnable gamma and no class
# weights (the detection default before the long-tail study; its rows
# "DFL learnable" in docs/results.md: below the default on both demos).
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(
    bbox_head=dict(loss_cls=dict(learnable_gamma='scalar', class_weight=None)))
