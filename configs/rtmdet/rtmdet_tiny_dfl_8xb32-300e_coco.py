# RTMDet-tiny, 300 epochs on COCO (8 GPUs x 32 images), with DualFocalLoss in
# QualityFocalLoss's place: soft targets (the assigner's alignment metric at the
# assigned class), gamma 2 at equal importance (no alpha), no class weights. RTMDet
# is mmdet 3.x's recommended detector; its EMA and pipeline-switch hooks are kept, so
# this config inherits the loss presets alone (configs/_base_/dfl_det_loss.py) and
# adds the hook.
#
#   tools/dist_train.sh configs/rtmdet/rtmdet_tiny_dfl_8xb32-300e_coco.py 8
_base_ = ['mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', '../_base_/dfl_det_loss.py']

model = dict(
    bbox_head=dict(loss_cls=dict(_delete_=True, **_base_.dfl_quality_loss_cls, num_classes=80)))
custom_hooks = [*_base_.custom_hooks, dict(type='DFLStepHook')]
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
