# One learnable gamma per class (80 for COCO); the log shows mean/min/max.
_base_ = '../retinanet_dfl.py'
model = dict(
    bbox_head=dict(loss_cls=dict(learnable_gamma='per_class', num_classes=80)))
