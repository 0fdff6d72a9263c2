# DeepLabV3+ R18-D8 on Cityscapes 512x1024 (80k) with DualFocalLoss.
_base_ = './deeplabv3plus_r50-d8_dfl_40k_cityscapes.py'
model = dict(
    pretrained='open-mmlab://resnet18_v1c',
    backbone=dict(depth=18),
    decode_head=dict(c1_in_channels=64, c1_channels=12, in_channels=512, channels=128),
    auxiliary_head=dict(in_channels=256, channels=64))
train_cfg = dict(max_iters=80000, val_interval=8000)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
