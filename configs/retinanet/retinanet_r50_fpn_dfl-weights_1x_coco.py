# Variant: DualFocalLoss with gamma 2 and adaptive class weights (the detection default
# before issue 34: it lost to FocalLoss on held-out many-class long tails,
# docs/results.md; rare classes weigh more, head classes less).
_base_ = './retinanet_r50_fpn_dfl_1x_coco.py'
model = dict(bbox_head=dict(loss_cls=dict(class_weight='adaptive', num_classes=80)))
