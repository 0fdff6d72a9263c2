"""DualFocalLoss as mmdet and mmseg call it, the learnable gamma, registration."""
import inspect
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from dfl_mm import DualFocalLoss, dual_focal_loss

from testkit import adaptive_loss, assert_same_state, state_of

EPS = torch.finfo(torch.float32).eps


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmseg'])
def test_builds_from_every_registry_and_scope(scope):
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    cfg = dict(type='DualFocalLoss', learnable_gamma='scalar', gamma=2.5)
    for registry in (ROOT_MODELS, DET, SEG):
        if scope is None:
            loss = registry.build(cfg)
        else:
            with DefaultScope.overwrite_default_scope(scope):
                loss = registry.build(cfg)
        assert isinstance(loss, DualFocalLoss)
        assert float(loss.gamma) == pytest.approx(2.5)


# ---------------------------------------------------------------- mmdet calls
def test_mmdet_call_matches_mmdet_reduction_semantics():
    torch.manual_seed(0)
    loss = DualFocalLoss(gamma=2.0, loss_weight=0.5)
    scores = torch.randn(30, 4, requires_grad=True)
    labels = torch.randint(0, 5, (30, ))
    label_weights = (torch.rand(30) > 0.2).float()
    elems = dual_focal_loss(scores, labels, 2.0, reduction='none') * label_weights[:, None]
    torch.testing.assert_close(loss(scores, labels, label_weights, avg_factor=7.0),
                               0.5 * elems.sum() / (7.0 + EPS))
    torch.testing.assert_close(loss(scores, labels, label_weights), 0.5 * elems.mean())
    torch.testing.assert_close(loss(scores, labels, label_weights, reduction_override='sum'),
                               0.5 * elems.sum())
    torch.testing.assert_close(loss(scores, labels, label_weights, reduction_override='none'),
                               0.5 * elems)
    # weight (N,), (N, 1), (N, C) and (N * C,) agree, as in mmdet's FocalLoss
    for w in (label_weights[:, None], label_weights[:, None].expand(30, 4),
              label_weights[:, None].expand(30, 4).reshape(-1)):  # FSAF's flattened form
        torch.testing.assert_close(loss(scores, labels, w, avg_factor=7.0),
                                   loss(scores, labels, label_weights, avg_factor=7.0))


def test_mmdet_call_errors_and_zero_anchors():
    loss = DualFocalLoss(learnable_gamma='scalar')
    scores, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 3])
    with pytest.raises(ValueError, match='avg_factor can not be used'):
        loss(scores, labels, reduction_override='sum', avg_factor=2.0)
    with pytest.raises(ValueError, match='reduction_override must be None or one of'):
        loss(scores, labels, reduction_override='avg')
    empty = torch.zeros(0, 3, requires_grad=True)
    out = loss(empty, torch.zeros(0, dtype=torch.long), torch.zeros(0), avg_factor=0.0)
    out.backward()
    assert torch.isfinite(out) and loss.gamma_logit.grad is not None
    # the only term left is the gamma pull, which is 0 at the initial gamma
    assert out.item() == pytest.approx(0.0)


def test_mmdet_retina_head_loss_uses_dual_focal_loss():
    """A real mmdet head computes its loss through the module."""
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):  # whatever an earlier test left
        _retina_head_step()


def _retina_head_step():
    from mmdet.models.dense_heads import RetinaHead
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData
    head = RetinaHead(
        num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0], strides=[8, 16]),
        loss_cls=dict(type='DualFocalLoss', use_sigmoid=True, learnable_gamma='scalar'),
        train_cfg=ConfigDict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                                           neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
                             sampler=dict(type='PseudoSampler'), allowed_border=-1,
                             pos_weight=-1, debug=False))
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    gt = InstanceData(bboxes=torch.tensor([[4., 4., 30., 30.]]), labels=torch.tensor([1]))
    losses = head.loss_by_feat(*head(feats), [gt], [dict(img_shape=(64, 64), pad_shape=(64, 64))])
    total = sum(losses['loss_cls']) + sum(losses['loss_bbox'])
    total.backward()
    assert isinstance(head.loss_cls, DualFocalLoss)
    assert head.loss_cls.gamma_logit.grad is not None
    assert head.retina_cls.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- mmseg calls
def test_mmseg_call_pixel_losses_ignore_and_means():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    labels = torch.randint(0, 4, (2, 6, 6))
    labels[0, :3] = 255
    valid = labels != 255
    loss = DualFocalLoss(use_sigmoid=False, loss_name='loss_dfl')
    pixel = loss(logits, labels, weight=None, ignore_index=255, reduction_override='none')
    assert pixel.shape == (2, 6, 6)
    assert (pixel[~valid] == 0).all() and (pixel[valid] > 0).all()
    torch.testing.assert_close(loss(logits, labels, ignore_index=255), pixel.sum() / (72 + EPS))
    loss.avg_non_ignore = True
    torch.testing.assert_close(loss(logits, labels, ignore_index=255),
                               pixel.sum() / (valid.sum() + EPS))
    seg_weight = torch.rand(2, 6, 6)
    torch.testing.assert_close(
        loss(logits, labels, weight=seg_weight, ignore_index=255, reduction_override='sum'),
        (pixel * seg_weight).sum())


def test_mmseg_all_ignored_batch_is_zero_and_keeps_gamma_in_graph():
    loss = DualFocalLoss(use_sigmoid=False, learnable_gamma='scalar', avg_non_ignore=True)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = loss(logits, torch.full((2, 4, 4), 255), ignore_index=255)
    assert out.item() == 0.0
    out.backward()
    assert loss.gamma_logit.grad is not None and loss.gamma_logit.grad.item() == 0.0


def test_mmseg_binary_head_one_channel_is_bce_at_gamma_one():
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (2, 5, 5))
    labels[1, 0] = 255
    valid = labels != 255
    loss = DualFocalLoss(use_sigmoid=True, gamma=1.0, avg_non_ignore=True)
    ours = loss(logits, labels, ignore_index=255)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0][valid], labels[valid].double())
    torch.testing.assert_close(ours, bce, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match='binary head .* takes labels 0 .* and 1'):
        loss(logits, torch.full((2, 5, 5), 2), ignore_index=255)


def test_mmseg_decode_head_loss_with_dfl_list():
    """mmseg's FCNHead with CE + DFL through its list of losses."""
    from mmengine.structures import PixelData
    from mmseg.models.decode_heads import FCNHead
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):  # mmseg's CrossEntropyLoss
        head = FCNHead(in_channels=8, channels=8, num_convs=1, num_classes=3,
                       loss_decode=[dict(type='CrossEntropyLoss', loss_weight=1.0),
                                    dict(type='DualFocalLoss', use_sigmoid=False,
                                         learnable_gamma='per_class', num_classes=3)])
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 16, 16)))
    sample.set_metainfo(dict(img_shape=(16, 16)))
    losses = head.loss([torch.randn(1, 8, 8, 8)], [sample], dict())
    assert set(losses) >= {'loss_ce', 'loss_dfl', 'acc_seg'}
    losses['loss_dfl'].backward()
    assert head.loss_decode[1].gamma_logit.grad.shape == (3, )



@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_mmseg_head_ignored_pixels_never_change_the_loss(use_sigmoid):
    """Through FCNHead.loss_by_feat: logits at 255-pixels have no effect and get
    no gradient, whatever they are."""
    from mmengine.structures import PixelData
    from mmseg.models.decode_heads import FCNHead
    from mmseg.structures import SegDataSample
    torch.manual_seed(4)
    head = FCNHead(in_channels=8, channels=8, num_convs=1, num_classes=3,
                   loss_decode=dict(type='DualFocalLoss', use_sigmoid=use_sigmoid,
                                    learnable_gamma='scalar', avg_non_ignore=True))
    labels = torch.randint(0, 3, (1, 16, 16))
    labels[0, :5] = 255
    ignored = (labels == 255).expand(3, -1, -1).unsqueeze(0)
    sample = SegDataSample(gt_sem_seg=PixelData(data=labels))
    sample.set_metainfo(dict(img_shape=(16, 16)))

    def loss_of(logits):
        logits = logits.detach().requires_grad_()
        loss = head.loss_by_feat(logits, [sample])['loss_dfl']
        loss.backward()
        return loss, logits.grad

    logits = torch.randn(1, 3, 16, 16)
    loss, grad = loss_of(logits)
    wild = torch.where(ignored, torch.randn_like(logits) * 1e3, logits)
    loss_wild, grad_wild = loss_of(wild)
    assert loss > 0
    torch.testing.assert_close(loss_wild, loss)
    assert (grad[ignored] == 0).all() and (grad_wild[ignored] == 0).all()
    torch.testing.assert_close(grad_wild, grad)

# ---------------------------------------------------------------- gamma
def test_learnable_gamma_pull_is_in_the_value_and_readable():
    torch.manual_seed(3)
    loss = DualFocalLoss(learnable_gamma='scalar', gamma=2.0, gamma_reg=0.5)
    scores, labels = torch.randn(20, 3), torch.randint(0, 4, (20, ))
    with torch.no_grad():
        loss.gamma_logit.add_(0.3)
    gamma = loss.gamma
    out = loss(scores, labels)
    expected_pull = 0.5 * (gamma - 2.0) ** 2
    torch.testing.assert_close(loss.last_gamma_pull, expected_pull)
    torch.testing.assert_close(out, dual_focal_loss(scores, labels, gamma) + expected_pull)
    assert loss(scores, labels, reduction_override='none').shape == (20, 3)


def test_gamma_is_bounded_and_saved_in_state_dict():
    loss = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0,
                         gamma_min=1.0, gamma_max=4.0)
    with torch.no_grad():
        loss.gamma_logit.copy_(torch.tensor([-1e3, 0.0, 1e3]))
    # at the bounds up to the logit limit (a gradient that can bring it back)
    torch.testing.assert_close(loss.gamma, torch.tensor([1.0, 2.5, 4.0]), rtol=0, atol=1e-4)
    assert 1.0 < loss.gamma[0] and loss.gamma[2] < 4.0
    fresh = DualFocalLoss(learnable_gamma='per_class', num_classes=3, gamma=2.0,
                          gamma_min=1.0, gamma_max=4.0)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.gamma, loss.gamma)
    fixed = DualFocalLoss(gamma=3.0)
    assert 'exponent.fixed_gamma' in fixed.state_dict() and not list(fixed.parameters())
    assert float(fixed.gamma) == 3.0


def test_class_weight_from_npy_file(tmp_path):
    path = tmp_path / 'w.npy'
    np.save(path, np.array([1.0, 2.0, 0.5]))
    loss = DualFocalLoss(use_sigmoid=False, class_weight=str(path))
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(
        loss(logits, labels, reduction_override='sum'),
        dual_focal_loss(logits, labels, 2.0, use_sigmoid=False, class_weight=[1., 2., .5],
                        reduction='sum'))
    with pytest.raises(ValueError, match='class_weight must have one value per class'):
        loss(torch.randn(4, 5), labels)


BAD_INIT = [
    (dict(reduction='avg'), ValueError, 'reduction must be one of'),
    (dict(gamma=0), ValueError, r'gamma must be in \(0, 20'),
    (dict(gamma=-2.0), ValueError, 'gamma must be in'),
    (dict(gamma='2'), TypeError, 'gamma must be a number'),
    (dict(learnable_gamma='yes'), ValueError, 'learnable_gamma must be one of'),
    (dict(learnable_gamma='scalar', gamma_min=3.0, gamma_max=2.0), ValueError,
     'gamma_min must be < gamma_max'),
    (dict(learnable_gamma='scalar', gamma=12.0), ValueError, 'must start strictly inside'),
    (dict(learnable_gamma='per_class'), ValueError, 'needs num_classes'),
    (dict(learnable_gamma='scalar', gamma_reg=-1.0), ValueError, 'gamma_reg must be in'),
    (dict(loss_name='dfl'), ValueError, "loss_name must be a str starting with 'loss_'"),
    (dict(use_sigmoid=False, alpha=0.25), ValueError, 'alpha is a sigmoid-mode option'),
    (dict(use_sigmoid='yes'), TypeError, 'use_sigmoid must be True or False'),
    (dict(class_weight=[1.0, 2.0], num_classes=3), ValueError, 'class_weight has 2 values'),
    (dict(class_weight=['a']), TypeError, 'class_weight must be a list of numbers'),
    (dict(num_classes=0), ValueError, 'num_classes must be a positive int'),
]


@pytest.mark.parametrize('kwargs,error,message', BAD_INIT)
def test_bad_config_raises_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        DualFocalLoss(**kwargs)


def test_sigmoid_flag_not_matching_channels_is_an_error():
    loss = DualFocalLoss(use_sigmoid=False)
    with pytest.raises(ValueError, match='use use_sigmoid=True for a binary head'):
        loss(torch.randn(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    loss = DualFocalLoss(learnable_gamma='per_class', num_classes=3)
    with pytest.raises(ValueError, match=r'one value per class \(5,\)'):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 5]))


def test_learnable_gamma_stays_inside_bounds_with_pull_and_climbs_without():
    from dfl_mm.demo.toy import train_toy
    pulled = train_toy(gamma_reg=0.01, steps=2000, lr=0.5)['gamma']
    free = train_toy(gamma_reg=0.0, steps=2000, lr=0.5)['gamma']
    assert all(0.5 < g < 10.0 for g in pulled + free)
    # documented degeneracy: without the pull, gamma keeps climbing to gamma_max
    checkpoints = [free[i] for i in (0, 500, 1000, 1999)]
    assert checkpoints == sorted(checkpoints) and free[-1] > 8.0
    # with the default pull it settles near its start
    assert 2.0 < pulled[-1] < 4.0 and abs(pulled[-1] - pulled[1000]) < 0.05


def test_large_vocabulary_detection_works_by_default():
    """mmdet passes no ignore_index: with 1203 classes label 255 is a real class."""
    loss = ROOT_MODELS.build(dict(type='DualFocalLoss'))
    torch.manual_seed(0)
    scores = torch.randn(8, 1203, requires_grad=True)
    labels = torch.tensor([255, 1203, 7, 1202, 255, 1203, 300, 0])
    out = loss(scores, labels, avg_factor=8.0)
    out.backward()
    assert torch.isfinite(out)
    # the rows of class 255 count: their class-255 element is a positive
    positive = dual_focal_loss(scores[:1, 255:256].detach(), torch.tensor([0]),
                               reduction='sum')
    negative = dual_focal_loss(scores[:1, 255:256].detach(), torch.tensor([1]),
                               reduction='sum')
    elems = loss(scores.detach(), labels, reduction_override='none')
    torch.testing.assert_close(elems[0, 255], positive)
    assert not torch.allclose(positive, negative)
    assert scores.grad[0].abs().sum() > 0


def test_float_targets_honour_ignore_index_and_reject_out_of_range_values():
    torch.manual_seed(0)
    loss = DualFocalLoss()
    logits, t = torch.randn(2, 10), torch.rand(2, 10)
    t[0, 1] = 255  # the repro: was a silent NaN
    out = loss(logits, t, ignore_index=255)
    kept = torch.ones(2, 10)
    kept[0, 1] = 0
    expected = loss(logits, t.clamp(max=1.0), weight=kept)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, expected)
    for bad in (1.5, -0.1, float('nan')):
        t2 = torch.rand(2, 10)
        t2[1, 3] = bad
        with pytest.raises(ValueError, match=r'a float target must be in \[0, 1\]'):
            loss(logits, t2, ignore_index=255)


@pytest.mark.parametrize('use_sigmoid', [True])
def test_dense_mean_and_none_do_not_depend_on_the_target_encoding(use_sigmoid):
    """Integer labels and the same data as a one-hot float map: same 'mean', same
    'none' shape (the pixel is the unit), with and without avg_non_ignore."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5)
    labels = torch.randint(0, 4, (2, 3, 5))
    onehot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    for avg_non_ignore in (False, True):
        loss = DualFocalLoss(use_sigmoid=use_sigmoid, avg_non_ignore=avg_non_ignore)
        torch.testing.assert_close(loss(logits, onehot), loss(logits, labels))
        none_int = loss(logits, labels, reduction_override='none')
        none_float = loss(logits, onehot, reduction_override='none')
        assert none_int.shape == none_float.shape == (2, 3, 5)
        torch.testing.assert_close(none_float, none_int)
    # ignored pixels: all four entries of the float map hold ignore_index
    labels[0, 0] = 255
    onehot[0, :, 0] = 255
    loss = DualFocalLoss(use_sigmoid=True, avg_non_ignore=True)
    torch.testing.assert_close(loss(logits, onehot, ignore_index=255),
                               loss(logits, labels, ignore_index=255))


def test_avg_non_ignore_applies_to_mmdet_style_calls():
    """As mmdet's CrossEntropyLoss: 'mean' without avg_factor skips ignored rows."""
    torch.manual_seed(0)
    scores = torch.randn(10, 3)
    labels = torch.tensor([0, 1, 2, 3, 255, 255, 1, 0, 3, 2])
    plain = DualFocalLoss(ignore_index=255)
    kept = DualFocalLoss(ignore_index=255, avg_non_ignore=True)
    total = plain(scores, labels, reduction_override='sum')
    torch.testing.assert_close(plain(scores, labels), total / (10 * 3 + EPS))
    torch.testing.assert_close(kept(scores, labels), total / (8 * 3 + EPS))


def test_config_presets_and_the_switch_tool_are_one_source():
    """configs/_base_/dfl_{det,seg}.py spell the presets of dfl_mm.apis.switch; the entry
    configs are children of the full configs under the mmdet/mmseg names."""
    from mmengine.config import Config

    from dfl_mm.apis.switch import EQUAL_SIGMOID_DFL, SIGMOID_DFL, SOFTMAX_DFL

    from testkit import ROOT
    det = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'dfl_det.py'))
    seg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'dfl_seg.py'))
    assert det.dfl_loss_cls.to_dict() == SIGMOID_DFL
    assert det.dfl_quality_loss_cls.to_dict() == EQUAL_SIGMOID_DFL
    assert {k: v for k, v in seg.dfl_loss.to_dict().items() if k != 'loss_name'} == SOFTMAX_DFL
    # no restated library defaults
    defaults = {'gamma_min', 'gamma_max', 'gamma_reg', 'loss_weight'}
    assert not defaults & (set(det.dfl_loss_cls) | set(det.dfl_quality_loss_cls)
                           | set(seg.dfl_loss))
    for entry, full in (('retinanet_dfl.py', 'retinanet/retinanet_r50_fpn_dfl_1x_coco.py'),
                        ('deeplabv3_dfl.py',
                         'deeplabv3/deeplabv3_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py'),
                        ('deeplabv3plus_dfl.py',
                         'deeplabv3plus/deeplabv3plus_r50-d8_dfl_4xb2-40k_cityscapes-512x1024.py')):
        code = [line for line in (ROOT / 'configs' / entry).read_text().splitlines()
                if line.strip() and not line.startswith('#')]
        assert code == [f"_base_ = './{full}'"], entry


def test_the_switch_gives_detection_heads_no_class_weights_and_segmentation_heads_theirs():
    """Each task's shipped setting: a detector's FocalLosses (loss_cls, guided anchoring's
    1-channel loss_loc) become the detection preset, with the FocalLoss's own alpha
    (mmdet's default 0.25 when it sets none); a decode head's CE gets the adaptive
    weights with the head's num_classes, unless adaptive=False."""
    from mmdet.models.losses import FocalLoss

    from dfl_mm.apis.switch import SIGMOID_DFL, dfl_overrides
    assert SIGMOID_DFL['alpha'] == inspect.signature(FocalLoss).parameters['alpha'].default
    cfg = dict(model=dict(type='RetinaNet', bbox_head=dict(
        num_classes=80, loss_cls=dict(type='FocalLoss', loss_weight=1.0),
        loss_loc=dict(type='FocalLoss', alpha=0.5, loss_weight=2.0))))
    head = dfl_overrides(cfg)[0]['model']['bbox_head']
    assert head['loss_cls'] == dict(SIGMOID_DFL, _delete_=True, loss_weight=1.0)
    assert head['loss_loc'] == dict(SIGMOID_DFL, _delete_=True, alpha=0.5, loss_weight=2.0)
    seg = dict(model=dict(decode_head=dict(num_classes=19, loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))))
    loss = dfl_overrides(seg)[0]['model']['decode_head']['loss_decode']
    assert loss['class_weight'] == 'adaptive' and loss['num_classes'] == 19
    loss = dfl_overrides(seg, adaptive=False)[0]['model']['decode_head']['loss_decode']
    assert 'class_weight' not in loss
    DualFocalLoss(**{k: v for k, v in head['loss_cls'].items() if k not in ('_delete_', 'type')})


# ------------------------------------------------ a raising call changes nothing
def _valid_or_invalid_call(rng, use_sigmoid):
    """A random call: (pred, target, kwargs, is_valid)."""
    classes = 3
    bad = rng.random() < 0.5
    if use_sigmoid:
        pred, target = torch.randn(12, classes), torch.randint(0, classes + 1, (12, ))
        kwargs = dict(avg_factor=4.0)
    else:
        pred, target = torch.randn(2, classes, 3, 4), torch.randint(0, classes, (2, 3, 4))
        kwargs = dict(ignore_index=255)
    if not bad:
        return pred, target, kwargs, True
    kind = rng.choice(['label_high', 'label_low', 'shape', 'weight_shape', 'weight_negative',
                       'avg_factor', 'nan_weight', 'dtype'])
    if kind == 'label_high':
        target.view(-1)[rng.randrange(target.numel())] = classes + 5
    elif kind == 'label_low':
        target.view(-1)[0] = -3
    elif kind == 'shape':
        target = target[:1]
    elif kind == 'weight_shape':
        kwargs['weight'] = torch.ones(5)
    elif kind == 'weight_negative':
        kwargs['weight'] = -torch.ones(target.shape)
    elif kind == 'nan_weight':
        kwargs['weight'] = torch.full(target.shape, math.nan)
    elif kind == 'avg_factor':
        kwargs['avg_factor'] = -1.0
        kwargs.pop('ignore_index', None)
    else:
        target = target.to(torch.uint8)
        kwargs['ignore_index'] = -1
    return pred, target, kwargs, False


@pytest.mark.parametrize('use_sigmoid', [False, True])
@pytest.mark.parametrize('learnable', [False, 'scalar'])
@pytest.mark.parametrize('in_runner', [False, True])
def test_random_calls_a_raising_call_leaves_the_state_dict_as_it_was(use_sigmoid, learnable,
                                                                     in_runner):
    """Property: for random valid and invalid calls, a call that raises leaves
    every buffer, parameter and open count as it found them (inside a hook's
    steps too, two calls each)."""
    rng = random.Random(7)
    loss = DualFocalLoss(use_sigmoid=use_sigmoid, class_weight='adaptive', num_classes=3,
                         learnable_gamma=learnable, adaptive_weight=dict(basis='recall'))
    raised = 0
    stepped = [m for m in loss.modules() if hasattr(m, 'begin_step')]
    try:
        for it in range(60):
            if in_runner and it % 2 == 0:  # what DFLStepHook does around an iteration
                for module in stepped:
                    module.end_step()
                    module.begin_step()
            pred, target, kwargs, valid = _valid_or_invalid_call(rng, use_sigmoid)
            before = state_of(loss)
            try:
                out = loss(pred, target, **kwargs)
            except (ValueError, TypeError):
                assert not valid
                raised += 1
                assert_same_state(before, state_of(loss))
                continue
            assert valid and torch.isfinite(out)
    finally:
        for module in stepped:
            module.end_step()
    assert raised > 15 and int(loss.adaptive.steps) > 10


def test_labels_out_of_range_are_refused_before_anything_is_counted():
    loss = adaptive_loss()
    labels = torch.tensor([0, 1, 7, 2]).view(1, 1, 4)
    with pytest.raises(ValueError, match='label 7 out of range'):
        loss(torch.randn(1, 3, 1, 4), labels, ignore_index=255)
    assert int(loss.adaptive.steps) == 0 and not loss.adaptive.pending.any()


# ------------------------------------------------ scalar checks
@pytest.mark.parametrize('settings, error, match', [
    (dict(ignore_index=True), TypeError, 'ignore_index must be an int or None'),
    (dict(ignore_index='255'), TypeError, 'ignore_index must be an int or None'),
    (dict(loss_weight=math.inf), ValueError, 'loss_weight must be a finite number'),
    (dict(class_weight='Adaptive'), ValueError, "class_weight must be 'adaptive', a list"),
    (dict(class_weight='missing.npy'), ValueError, "file 'missing.npy' does not exist"),
    (dict(avg_non_ignore='yes'), TypeError, 'avg_non_ignore must be True or False'),
])
def test_bad_settings_are_refused_at_construction(settings, error, match):
    with pytest.raises(error, match=match):
        DualFocalLoss(**settings)


@pytest.mark.parametrize('call, error, match', [
    (dict(avg_factor=-1.0), ValueError, 'avg_factor must be a finite number >= 0, got -1.0'),
    (dict(avg_factor=math.inf), ValueError, 'avg_factor must be a finite number >= 0'),
    (dict(avg_factor='4'), TypeError, 'avg_factor must be a number or a tensor'),
    (dict(avg_factor=torch.tensor(-2.0)), ValueError, 'avg_factor must be a finite number'),
    (dict(weight=-torch.ones(8)), ValueError, 'weight must be non-negative finite numbers'),
    (dict(weight=-torch.ones(8, 3)), ValueError, 'weight must be non-negative finite'),
    (dict(weight=torch.ones(5)), ValueError, r'weight must have shape \(8,\)'),
    (dict(ignore_index=1.0), TypeError, 'ignore_index must be an int or None'),
])
@pytest.mark.parametrize('adaptive', [False, True])
def test_bad_call_values_get_one_clear_error(call, error, match, adaptive):
    loss = (DualFocalLoss(class_weight='adaptive', num_classes=3) if adaptive
            else DualFocalLoss())
    with pytest.raises(error, match=match):
        loss(torch.randn(8, 3), torch.randint(0, 4, (8, )), **call)


# ------------------------------------------------ integer one-hot maps
def test_integer_one_hot_maps_give_the_labels_loss():
    torch.manual_seed(4)
    logits, labels = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    one_hot = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2)
    for use_sigmoid in (True, False):
        loss = DualFocalLoss(use_sigmoid=use_sigmoid)
        torch.testing.assert_close(loss(logits, one_hot), loss(logits, labels.clone())
                                   if not use_sigmoid else loss(logits, one_hot.float()))
    torch.testing.assert_close(
        dual_focal_loss(logits, one_hot, use_sigmoid=False),
        dual_focal_loss(logits, labels, use_sigmoid=False))
    # mmdet-style (N, C) scores and the sigmoid labels' one-hot rows (background: all 0)
    scores, det_labels = torch.randn(10, 4), torch.randint(0, 5, (10, ))
    rows = torch.nn.functional.one_hot(det_labels, 5)[:, :4]
    torch.testing.assert_close(dual_focal_loss(scores, rows), dual_focal_loss(scores, det_labels))
    with pytest.raises(ValueError, match='one-hot map'):
        dual_focal_loss(logits, one_hot * 2, use_sigmoid=False)


@pytest.mark.parametrize('channels, ignore_index', [(5, 4), (4, 2)])
def test_a_one_hot_map_honours_ignore_index_as_its_label_map_does(channels, ignore_index):
    """mmseg's FocalLoss test_ignore_index (sigmoid): a label map and its one-hot form
    give the same 'none' result, the pixels whose 1 is at ignore_index ignored."""
    torch.manual_seed(5)
    logits = torch.rand(3, channels, 5, 6)
    labels = torch.randint(0, 4, (3, 5, 6))
    labels[0, 1, 2] = labels[2, 4, 0] = ignore_index
    one_hot = torch.nn.functional.one_hot(labels, channels).permute(0, 3, 1, 2)
    loss = DualFocalLoss(use_sigmoid=True, reduction='none')
    by_labels = loss(logits, labels, ignore_index=ignore_index)
    by_one_hot = loss(logits, one_hot, ignore_index=ignore_index)
    assert torch.equal(by_labels, by_one_hot)
    assert not by_one_hot[labels == ignore_index].any() and by_one_hot.all() >= 0
    # a multi-label integer map stays a float map (nothing to read a label from)
    multi = one_hot.clone()
    multi[:, 0] = 1
    torch.testing.assert_close(loss(logits, multi), loss(logits, multi.float()))


@pytest.mark.parametrize('kind', ['mmseg', 'mmdet', 'quality'])
def test_a_call_is_checked_in_one_pass_before_anything_is_computed(kind):
    """Validate once, then compute: every check (dfl_mm/core/checks.py) of a module call
    runs before the loss is computed (functional.compute), none after it."""
    import sys
    events = []

    def profile(frame, event, arg):
        if event == 'call':
            name = frame.f_code.co_filename.replace('\\', '/')
            if name.endswith('dfl_mm/core/checks.py'):
                events.append('check')
            elif name.endswith('dfl_mm/core/functional.py') and frame.f_code.co_name == 'compute':
                events.append('compute')
    if kind == 'mmseg':
        loss = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=3,
                             learnable_gamma='scalar', avg_non_ignore=True)
        args = (torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))
        kwargs = dict(ignore_index=255)
    else:
        loss = DualFocalLoss(class_weight='adaptive', num_classes=3,
                             adaptive_weight=dict(apply_to='row'))
        labels = torch.tensor([0, 1, 3, 2, 3])
        target = labels if kind == 'mmdet' else (labels, torch.rand(5))
        args, kwargs = (torch.randn(5, 3), target), dict(weight=torch.rand(5), avg_factor=3.0)
    sys.setprofile(profile)
    try:
        loss.train()(*args, **kwargs)
    finally:
        sys.setprofile(None)
    assert events.count('compute') == 1 and 'check' in events
    assert 'check' not in events[events.index('compute'):], events
