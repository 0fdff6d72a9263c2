# RetinaNet R18-FPN with DualFocalLoss (learnable gamma), 1x COCO.
_base_ = '../retinanet_dfl.py'
model = dict(
    backbone=dict(
        depth=18,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
