# One learnable gamma per Cityscapes class (19) on each head.
_base_ = './deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(loss_decode=dict(learnable_gamma='per_class', num_classes=19)),
    auxiliary_head=dict(loss_decode=dict(learnable_gamma='per_class', num_classes=19)))
