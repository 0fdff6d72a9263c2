# One learnable gamma per class (80 for COCO); the log shows gamma's mean/min/max.
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(
    bbox_head=dict(loss_cls=dict(learnable_gamma='per_class', num_classes=80)))
