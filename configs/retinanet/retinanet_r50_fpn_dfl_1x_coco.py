# RetinaNet R50-FPN, 1x schedule on COCO, with DualFocalLoss (gamma 2, alpha 0.25, no
# class weights: the detection default) as the classification loss: mmdet's config with
# the loss of configs/_base_/dfl_det.py.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/dfl_det.py']

model = dict(
    bbox_head=dict(loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=80)))
optim_wrapper = dict(paramwise_cfg=_base_.gamma_no_decay)
