# Shared pieces of the segmentation configs: the DualFocalLoss settings of a
# decode head (softmax, learnable gamma, adaptive class weights), the package
# import, the gamma/weights logger and the weight-decay exception for gamma.
# Children use them as `_base_.dfl_loss` (adding `num_classes=...`, which the
# adaptive weights need) and `_base_.gamma_no_decay`.
custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)

# the preset of dfl_mm.models.presets.SOFTMAX_DFL plus mmseg's loss name (a test checks that
# they agree); bounds and pull strength are DualFocalLoss's defaults (docs/loss.md)
dfl_loss = dict(
    type='DualFocalLoss',
    use_sigmoid=False,
    gamma=2.0,  # initial value of the learnable exponent
    learnable_gamma='scalar',
    avg_non_ignore=True,
    # running class frequencies -> per-pixel weights (docs/loss.md, "Adaptive class
    # weights"; defaults from the efficacy study)
    class_weight='adaptive',
    loss_name='loss_dfl')

# gamma is a parameter of the loss: no weight decay on it
gamma_no_decay = dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)})

# logs gamma (and its pull term) and the class weights at every logging
# interval, and closes each iteration of the adaptive weights
custom_hooks = [dict(type='DFLStepHook')]

# the decode head and (at its usual weight 0.4) the auxiliary head of a
# 19-class Cityscapes model: children write `model = _base_.cityscapes_heads`
cityscapes_heads = dict(
    decode_head=dict(
        loss_decode=dict(_delete_=True, **dfl_loss, num_classes=19)),
    auxiliary_head=dict(
        loss_decode=dict(_delete_=True, **dfl_loss, num_classes=19, loss_weight=0.4)))
