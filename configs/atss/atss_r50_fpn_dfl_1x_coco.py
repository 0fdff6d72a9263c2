# ATSS R50 FPN, 1x schedule on COCO, with DualFocalLoss as the classification
# loss, gamma 2, alpha 0.25, no class weights (centerness and GIoU losses unchanged;
# the loss settings are in configs/_base_/dfl_det.py).
#
#   python tools/train.py configs/atss/atss_r50_fpn_dfl_1x_coco.py
_base_ = ['mmdet::atss/atss_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

model = dict(
    bbox_head=dict(loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
