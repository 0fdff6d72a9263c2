# Ablation: DualFocalLoss with gamma 2 and no class weights (no adaptive
# weights, no learnable exponent).
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(bbox_head=dict(loss_cls=dict(class_weight=None)))
