# RTMDet-tiny, 300 epochs on COCO (8 GPUs x 32 images), with DualFocalLoss in
# QualityFocalLoss's place: soft targets (the assigner's alignment metric at the
# assigned class), gamma 2, adaptive class weights. RTMDet is mmdet 3.x's
# recommended detector; its EMA and pipeline-switch hooks are kept, so this config
# cannot also inherit configs/_base_/dfl_det.py (both set custom_hooks): the loss
# below is its preset (tests/test_detection.py checks that they agree).
#
#   tools/dist_train.sh configs/rtmdet/rtmdet_tiny_dfl_8xb32-300e_coco.py 8
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'

custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)
model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='DualFocalLoss', use_sigmoid=True, gamma=2.0,
    class_weight='adaptive', num_classes=80)))
custom_hooks = [*_base_.custom_hooks, dict(type='DFLGammaHook')]
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'gamma_logit': dict(decay_mult=0.0)}))
