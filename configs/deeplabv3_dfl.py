# DeepLabV3 R50-D8 on Cityscapes 512x1024 (40k iterations) with DualFocalLoss
# in softmax mode with a learnable exponent and adaptive class weights, on the
# decode head and (at its usual weight 0.4) on the auxiliary head.
#
#   python tools/train.py configs/deeplabv3_dfl.py
#   tools/dist_train.sh configs/deeplabv3_dfl.py 4
#
# Variants (fixed/per-class gamma, no class weights, CE + DFL, ADE20K) are in
# configs/deeplabv3/; the shared loss settings in configs/_base_/dfl_seg.py.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    './_base_/dfl_seg.py'
]

model = _base_.cityscapes_heads

optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
