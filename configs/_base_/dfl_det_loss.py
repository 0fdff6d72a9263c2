# The detection loss presets, one home (configs/_base_/dfl_det.py adds the hook): the
# sigmoid DualFocalLosses of dfl_mm.models.presets (a test checks that they agree).
# Children use them as
# `loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80)`, which drops
# FocalLoss's keys. A config whose base sets custom_hooks (RTMDet's EMA hooks)
# inherits this file instead of dfl_det.py (mmengine refuses a key in two bases).
custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

# hard labels, FocalLoss's place (SIGMOID_DFL): the setting chosen by leave-one-set-out
# (docs/results.md): gamma 2 with FocalLoss's alpha 0.25, no class weights (adaptive
# weights, class_weight='adaptive', lost on held-out long tails); the loss weight is
# DualFocalLoss's default (docs/loss.md)
dfl_loss_cls = dict(
    type='DualFocalLoss',
    use_sigmoid=True,
    gamma=2.0,
    alpha=0.25)
# soft quality targets, QualityFocalLoss's / VarifocalLoss's place (EQUAL_SIGMOID_DFL):
# gamma 2 at equal importance, as the losses it replaces
dfl_quality_loss_cls = dict(
    type='DualFocalLoss',
    use_sigmoid=True,
    gamma=2.0)

# gamma is a parameter of the loss: no weight decay on it (children:
# `optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)`)
gamma_no_decay = dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)})
