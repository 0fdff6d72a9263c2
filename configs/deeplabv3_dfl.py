# DeepLabV3 R50-D8 on Cityscapes 512x1024 (40k iterations) with DualFocalLoss
# in softmax mode and a learnable exponent, on the decode head and (at its
# usual weight 0.4) on the auxiliary head.
#
#   python tools/train.py configs/deeplabv3_dfl.py
#   tools/dist_train.sh configs/deeplabv3_dfl.py 4
#
# Variants (fixed/per-class gamma, CE + DFL, ADE20K) are in configs/deeplabv3/.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'

custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

dfl = dict(
    type='DualFocalLoss',
    use_sigmoid=False,
    gamma=2.0,
    learnable_gamma='scalar',
    gamma_min=0.5,
    gamma_max=10.0,
    gamma_reg=0.01,
    avg_non_ignore=True,
    loss_name='loss_dfl')

model = dict(
    decode_head=dict(loss_decode=dict(_delete_=True, **dfl, loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(_delete_=True, **dfl, loss_weight=0.4)))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)}))

custom_hooks = [dict(type='DFLGammaHook')]
