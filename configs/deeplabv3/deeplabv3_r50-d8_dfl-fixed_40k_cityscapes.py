# Ablation: fixed gamma = 2 on both heads.
_base_ = './deeplabv3_r50-d8_dfl_40k_cityscapes.py'
model = dict(
    decode_head=dict(loss_decode=dict(learnable_gamma=False)),
    auxiliary_head=dict(loss_decode=dict(learnable_gamma=False)))
