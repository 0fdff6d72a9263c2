# Shared pieces of the detection configs that inherit an mmdet dense detector:
# the sigmoid DualFocalLoss with gamma 2 and adaptive class weights (children
# use it as `loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80)`,
# which drops FocalLoss's alpha/gamma keys), the package import, the logger of
# gamma and the weights, and the weight-decay exception for a learnable gamma
# (`_base_.gamma_no_decay`, kept so that a variant with learnable_gamma is safe).
custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

# the preset of dfl_mm.apis.switch.SIGMOID_DFL (a test checks that they agree): the
# setting that won on both detection demos by the worst seed (docs/results.md);
# adaptive settings and loss weight are DualFocalLoss's defaults (docs/loss.md)
dfl_loss_cls = dict(
    type='DualFocalLoss',
    use_sigmoid=True,
    gamma=2.0,
    class_weight='adaptive')

# gamma is a parameter of the loss: no weight decay on it (children:
# `optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)`)
gamma_no_decay = dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)})

# logs gamma and the adaptive weights at every logging interval
custom_hooks = [dict(type='DFLGammaHook')]
