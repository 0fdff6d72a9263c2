# Ablation: DualFocalLoss with a fixed gamma = 2 (no learnable exponent).
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(bbox_head=dict(loss_cls=dict(learnable_gamma=False)))
