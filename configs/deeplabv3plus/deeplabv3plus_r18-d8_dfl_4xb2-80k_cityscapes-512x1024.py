# DeepLabV3+ R18-D8 on Cityscapes 512x1024 (80k iterations) with DualFocalLoss: mmseg's
# R18 config with configs/_base_/dfl_seg.py.
_base_ = [
    'mmseg::deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/dfl_seg.py'
]

model = _base_.cityscapes_heads
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
