# GFL R50 FPN, 1x schedule on COCO, with DualFocalLoss in QualityFocalLoss's place:
# soft targets (the IoU of the assigned box at its class), gamma 2 at equal
# importance (no alpha), no class weights. GFL's DistributionFocalLoss (box
# regression, mmdet's other "DFL") and GIoU loss are unchanged.
#
#   python tools/train.py configs/gfl/gfl_r50_fpn_dfl_1x_coco.py
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

model = dict(
    bbox_head=dict(loss_cls=dict(_delete_=True, **_base_.dfl_quality_loss_cls, num_classes=80)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
