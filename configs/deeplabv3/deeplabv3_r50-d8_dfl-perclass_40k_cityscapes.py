# One learnable gamma per Cityscapes class (19) on each head.
_base_ = './deeplabv3_r50-d8_dfl_40k_cityscapes.py'
model = dict(
    decode_head=dict(loss_decode=dict(learnable_gamma='per_class', num_classes=19)),
    auxiliary_head=dict(loss_decode=dict(learnable_gamma='per_class', num_classes=19)))
