# A small RTMDet (CSPNeXt at 1/8 width, RTMDet-tiny's depth, no pretrained weights) with
# DualFocalLoss in QualityFocalLoss's place (soft targets: the assigner's IoU-aware
# score at the assigned class; gamma 2, no alpha) on the embedded demo
# data: the RetinaNet demo's data, pipeline and schedule (configs/demo/retinanet_r18_dfl_demo.py).
# Trains on CPU in minutes; the efficacy study compares it with RTMDet's own QFL.
#
#   python tools/train.py configs/demo/rtmdet_dfl_demo.py
_base_ = './retinanet_r18_dfl_demo.py'

norm_cfg = dict(type='BN')
act_cfg = dict(type='SiLU', inplace=True)
model = dict(
    _delete_=True,
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.167, widen_factor=0.125,
        channel_attention=True, norm_cfg=norm_cfg, act_cfg=act_cfg),
    neck=dict(
        type='CSPNeXtPAFPN', in_channels=[32, 64, 128], out_channels=32, num_csp_blocks=1,
        expand_ratio=0.5, norm_cfg=norm_cfg, act_cfg=act_cfg),
    bbox_head=dict(
        type='RTMDetSepBNHead',
        num_classes={{_base_.num_classes}},
        in_channels=32,
        stacked_convs=2,
        feat_channels=32,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(**_base_.dfl_quality_loss_cls, num_classes=_base_.num_classes),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False,
        exp_on_reg=False,
        share_conv=True,
        pred_kernel_size=1,
        norm_cfg=norm_cfg,
        act_cfg=act_cfg),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))
# RTMDet shares its head's convs across levels: skip the duplicates when grouping
optim_wrapper = dict(paramwise_cfg=dict(bypass_duplicate=True))
