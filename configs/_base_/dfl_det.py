# Shared pieces of the detection configs that inherit an mmdet dense detector:
# the sigmoid DualFocalLoss with a learnable exponent (children use it as
# `loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls)`, which drops
# FocalLoss's alpha/gamma keys), the package import, the gamma logger and the
# weight-decay exception for gamma (`_base_.gamma_no_decay`).
custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

# the preset of dfl_mm.switch.SIGMOID_DFL (a test checks that they agree); bounds,
# pull strength and loss weight are DualFocalLoss's defaults (docs/loss.md)
dfl_loss_cls = dict(
    type='DualFocalLoss',
    use_sigmoid=True,
    gamma=2.0,  # initial value of the learnable exponent
    learnable_gamma='scalar')

# gamma is a parameter of the loss: no weight decay on it (children:
# `optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)`)
gamma_no_decay = dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)})

# logs gamma (and its pull term) at every logging interval
custom_hooks = [dict(type='DFLGammaHook')]
