# Shared pieces of the detection configs that inherit an mmdet dense detector: the
# loss presets of ./dfl_det_loss.py (`_base_.dfl_loss_cls`, `_base_.dfl_quality_loss_cls`,
# `_base_.gamma_no_decay`)
# and the hook that logs gamma (and adaptive weights, where a config turns them on) and
# closes each iteration of the loss's state (the project's tools add it to configs
# that lack it).
_base_ = ['./dfl_det_loss.py']

custom_hooks = [dict(type='DFLStepHook')]
