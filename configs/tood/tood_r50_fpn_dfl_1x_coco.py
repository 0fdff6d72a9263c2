# TOOD R50 FPN, 1x schedule on COCO, with DualFocalLoss in both classification
# losses: the first epochs' FocalLoss (hard labels) and QualityFocalLoss (soft
# alignment targets); TOOD's head emits probabilities, so both take
# activated=True, as upstream's. Gamma 2, no class weights.
#
#   python tools/train.py configs/tood/tood_r50_fpn_dfl_1x_coco.py
_base_ = ['mmdet::tood/tood_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

_dfl = dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80, activated=True)
model = dict(bbox_head=dict(initial_loss_cls=_dfl, loss_cls=_dfl))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
