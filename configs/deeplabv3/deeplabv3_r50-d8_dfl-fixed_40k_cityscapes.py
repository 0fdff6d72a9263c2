# Ablation: fixed gamma = 2 on both heads.
_base_ = '../deeplabv3_dfl.py'
model = dict(
    decode_head=dict(loss_decode=dict(learnable_gamma=False)),
    auxiliary_head=dict(loss_decode=dict(learnable_gamma=False)))
