# VFNet R50 FPN, 1x schedule on COCO, with DualFocalLoss in VarifocalLoss's place:
# the IoU-aware (N, C) target, positives weighted by their IoU (iou_weighted, as
# VarifocalLoss's default), gamma 2 at equal importance (no alpha), no class weights.
#
#   python tools/train.py configs/vfnet/vfnet_r50_fpn_dfl_1x_coco.py
_base_ = ['mmdet::vfnet/vfnet_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

model = dict(bbox_head=dict(
    loss_cls=dict(_delete_=True, **_base_.dfl_quality_loss_cls, num_classes=80, iou_weighted=True)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
