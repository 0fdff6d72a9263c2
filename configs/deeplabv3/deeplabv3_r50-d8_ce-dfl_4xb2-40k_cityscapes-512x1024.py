# Cross entropy plus DualFocalLoss through mmseg's list of losses: the decode
# head logs loss_ce and loss_dfl and backpropagates their sum.
_base_ = './deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(loss_decode=[
        dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
             avg_non_ignore=True, loss_name='loss_ce'),
        dict(**_base_.dfl_loss, num_classes=19),
    ]))
