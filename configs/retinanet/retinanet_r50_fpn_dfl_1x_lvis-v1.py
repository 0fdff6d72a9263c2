# RetinaNet R50-FPN 1x on LVIS v1 (1203 long-tailed classes) with DualFocalLoss:
# sigmoid, gamma 2, alpha 0.25, no class weights (the detection default; adaptive
# weights are one key away: class_weight='adaptive', as configs/retinanet/*dfl-weights*).
# Dataset settings are mmdet's LVIS v1 ones (repeat-factor sampling,
# oversample_thr=1e-3), boxes only; LVIS's test settings (score_thr
# 1e-4, up to 300 detections). Evaluation needs the `lvis` package (lvis-api).
#
#   tools/dist_train.sh configs/retinanet/retinanet_r50_fpn_dfl_1x_lvis-v1.py 8
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/dfl_det.py',
]

num_classes = 1203
model = dict(
    bbox_head=dict(
        num_classes=num_classes,
        # the detection preset (configs/_base_/dfl_det.py), not measured on LVIS;
        # one learnable gamma per class is one key away: learnable_gamma='per_class'
        loss_cls=dict(_delete_=True, **_base_.dfl_loss_cls, num_classes=num_classes)),
    test_cfg=dict(score_thr=0.0001, max_per_img=300))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768),
                 (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    paramwise_cfg=_base_.gamma_no_decay)
