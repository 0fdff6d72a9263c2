# DeepLabV3 R50-D8 on ADE20K 512x512 (80k iterations) with DualFocalLoss.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py'

custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

dfl = dict(
    type='DualFocalLoss', use_sigmoid=False, gamma=2.0, learnable_gamma='scalar',
    gamma_min=0.5, gamma_max=10.0, gamma_reg=0.01, avg_non_ignore=True,
    loss_name='loss_dfl')
model = dict(
    decode_head=dict(loss_decode=dict(_delete_=True, **dfl, loss_weight=1.0)),
    auxiliary_head=dict(loss_decode=dict(_delete_=True, **dfl, loss_weight=0.4)))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)}))
custom_hooks = [dict(type='DFLGammaHook')]
