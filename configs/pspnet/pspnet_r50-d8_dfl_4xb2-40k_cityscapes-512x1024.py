# PSPNet R50-D8 on Cityscapes 512x1024 (40k iterations) with DualFocalLoss in
# softmax mode (learnable exponent, adaptive class weights) on the decode head
# and, at its usual weight 0.4, on the auxiliary head.
#
#   python tools/train.py configs/pspnet/pspnet_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py
_base_ = [
    'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    '../_base_/dfl_seg.py'
]

model = _base_.cityscapes_heads

optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
