# RetinaNet R18-FPN with DualFocalLoss (the detection preset of configs/_base_/dfl_det.py), 1x COCO.
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(
    backbone=dict(
        depth=18,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
