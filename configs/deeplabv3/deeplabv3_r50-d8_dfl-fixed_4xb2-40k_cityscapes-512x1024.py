# Ablation: fixed gamma = 2 on both heads.
_base_ = './deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(loss_decode=dict(learnable_gamma=False)),
    auxiliary_head=dict(loss_decode=dict(learnable_gamma=False)))
