# RetinaNet R50-FPN 1x COCO with DualFocalLoss, a learnable gamma (from 2) and no
# class weights (its rows "DFL learnable" in docs/results.md).
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(bbox_head=dict(loss_cls=dict(learnable_gamma='scalar')))
