# ATSS R50 FPN, 1x schedule on COCO, with DualFocalLoss as the
# classification loss and a learnable focusing exponent (centerness and GIoU
# losses unchanged).
#
#   python tools/train.py configs/atss/atss_r50_fpn_dfl_1x_coco.py
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,  # drop FocalLoss's alpha/gamma keys
            type='DualFocalLoss',
            use_sigmoid=True,
            gamma=2.0,  # initial value of the learnable exponent
            learnable_gamma='scalar',
            gamma_reg=0.01,  # pull toward gamma=2.0; see README "Learnable gamma"
            loss_weight=1.0)))

# gamma is a parameter of the loss: no weight decay on it
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)}))
custom_hooks = [dict(type='DFLGammaHook')]
