# RetinaNet R50-FPN, 1x schedule on COCO, with DualFocalLoss as the
# classification loss and a learnable focusing exponent.
#
#   python tools/train.py configs/retinanet_dfl.py            # 1 GPU
#   tools/dist_train.sh configs/retinanet_dfl.py 8            # 8 GPUs
#
# Variants (fixed gamma, per-class gamma, R18) are in configs/retinanet/.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,  # drop FocalLoss's alpha/gamma keys
            type='DualFocalLoss',
            use_sigmoid=True,
            gamma=2.0,  # initial value of the learnable exponent
            learnable_gamma='scalar',
            gamma_min=0.5,
            gamma_max=10.0,
            gamma_reg=0.01,  # pull toward gamma=2.0; see README "Learnable gamma"
            loss_weight=1.0)))

# gamma is a parameter of the loss: no weight decay on it
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)}))

# logs gamma (and its pull term) at every logging interval
custom_hooks = [dict(type='DFLGammaHook')]
