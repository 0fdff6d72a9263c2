# RetinaNet R50-FPN 1x COCO with DualFocalLoss (fixed gamma 2) and adaptive
# class weights: each positive anchor is weighted by how rare its class is
# among the assigned positives (README "Adaptive class weights"). The setting
# of the efficacy study's detection row "DFL + weights".
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(
    bbox_head=dict(
        loss_cls=dict(learnable_gamma=False, class_weight='adaptive', num_classes=80)))
