# DeepLabV3 R50-D8 on ADE20K 512x512 (80k iterations) with DualFocalLoss.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py',
    '../_base_/dfl_seg.py'
]
model = dict(
    decode_head=dict(
        loss_decode=dict(
            _delete_=True, **_base_.dfl_loss, num_classes=150)),
    auxiliary_head=dict(
        loss_decode=dict(
            _delete_=True, **_base_.dfl_loss, num_classes=150, loss_weight=0.4)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
