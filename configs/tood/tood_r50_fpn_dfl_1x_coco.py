# TOOD R50 FPN, 1x schedule on COCO, with DualFocalLoss in both classification
# losses: the first epochs' FocalLoss (hard labels: the detection preset, FocalLoss's
# alpha 0.25) and QualityFocalLoss (soft alignment targets: equal importance); TOOD's
# head emits probabilities, so both take activated=True, as upstream's. Gamma 2, no
# class weights.
#
#   python tools/train.py configs/tood/tood_r50_fpn_dfl_1x_coco.py
_base_ = ['mmdet::tood/tood_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

model = dict(bbox_head=dict(
    initial_loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80, activated=True),
    loss_cls=dict(_delete_=True, **_base_.dfl_quality_loss_cls, num_classes=80,
                  activated=True)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
