# Ablation: DualFocalLoss with a fixed gamma = 2 (no learnable exponent).
_base_ = '../retinanet_dfl.py'
model = dict(bbox_head=dict(loss_cls=dict(learnable_gamma=False)))
