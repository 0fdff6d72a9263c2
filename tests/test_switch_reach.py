"""What the switch replaces in mmdet's own configs beyond FocalLoss (quality losses,
dense sigmoid CE, SSD), the RTMDet preset, and DFLSSDHead's hard-negative mining
against mmdet's SSDHead."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from dfl_mm.apis.switch import EQUAL_SIGMOID_DFL, SIGMOID_DFL, SSD_DFL, dfl_overrides

from testkit import ROOT, tool


def _zoo(rel):
    from mmengine.utils import get_installed_path
    return Config.fromfile(f"{get_installed_path('mmdet')}/.mim/configs/{rel}")


def _switched(rel):
    overrides, replaced = dfl_overrides(_zoo(rel))
    return overrides.get('model', {}), dict(replaced)


def test_quality_losses_are_replaced_with_their_meaning_kept():
    model, replaced = _switched('gfl/gfl_r50_fpn_1x_coco.py')
    assert replaced == {'model.bbox_head.loss_cls': 'QualityFocalLoss'}  # not loss_dfl
    assert model['bbox_head']['loss_cls'] == dict(EQUAL_SIGMOID_DFL, _delete_=True,
                                                  loss_weight=1.0)  # QFL has no alpha
    model, _ = _switched('vfnet/vfnet_r50_fpn_1x_coco.py')
    assert model['bbox_head']['loss_cls'] == dict(EQUAL_SIGMOID_DFL, _delete_=True,
                                                  iou_weighted=True, loss_weight=1.0)
    model, replaced = _switched('tood/tood_r50_fpn_1x_coco.py')
    assert set(replaced) == {'model.bbox_head.loss_cls', 'model.bbox_head.initial_loss_cls'}
    assert all(model['bbox_head'][k]['activated'] is True for k in ('loss_cls', 'initial_loss_cls'))
    # the first epochs' FocalLoss keeps its balance, the QualityFocalLoss has none
    assert model['bbox_head']['initial_loss_cls']['alpha'] == SIGMOID_DFL['alpha']
    assert 'alpha' not in model['bbox_head']['loss_cls']


def test_dense_sigmoid_ce_is_replaced_but_not_second_stage_heads():
    model, replaced = _switched('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    assert replaced == {'model.rpn_head.loss_cls': 'CrossEntropyLoss'}  # not the RoI head's
    assert model['rpn_head']['loss_cls'] == dict(EQUAL_SIGMOID_DFL, _delete_=True,
                                                 loss_weight=1.0)  # CE: no alpha, no weights
    model, replaced = _switched('yolox/yolox_s_8xb8-300e_coco.py')
    head = model['bbox_head']
    assert set(replaced) == {'model.bbox_head.loss_cls', 'model.bbox_head.loss_obj'}
    assert 'class_weight' not in head['loss_cls'] and head['loss_cls']['reduction'] == 'sum'
    assert 'class_weight' not in head['loss_obj'] and head['loss_obj']['reduction'] == 'sum'
    model, replaced = _switched('yolo/yolov3_d53_8xb8-320-273e_coco.py')
    assert set(replaced) == {'model.bbox_head.loss_cls', 'model.bbox_head.loss_conf'}
    assert model['bbox_head']['loss_cls']['channels_last'] is True  # (B, N, C) maps
    assert 'channels_last' not in model['bbox_head']['loss_conf']  # (B, N): elements
    assert _switched('cascade_rpn/cascade-rpn_r50-caffe_fpn_1x_coco.py')[1]  # a list of stages


def test_ssd_gets_the_head_that_takes_a_loss():
    model, replaced = _switched('ssd/ssd300_coco.py')
    assert replaced == {'model.bbox_head': 'SSDHead'}
    assert model['bbox_head'] == dict(type='DFLSSDHead', loss_cls=SSD_DFL)


def test_the_rtmdet_config_spells_the_quality_preset():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'rtmdet' / 'rtmdet_tiny_dfl_8xb32-300e_coco.py'))
    loss = cfg.model.bbox_head.loss_cls.to_dict()
    assert {k: v for k, v in loss.items() if k != 'num_classes'} == EQUAL_SIGMOID_DFL
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'PipelineSwitchHook',
                                                    'DFLStepHook']


class _CrossEntropyMap(nn.Module):
    """Softmax CE as a (N, 1) 'none' map: what makes DFLSSDHead mmdet's SSDHead."""

    def forward(self, pred, target, reduction_override=None):
        assert reduction_override == 'none'
        return F.cross_entropy(pred, target, reduction='none')[:, None]


def _ssd_heads():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import dfl_mm  # noqa: F401  (registers DFLSSDHead's stand-in)
    register_all_modules(init_default_scope=False)
    from mmengine.registry import DefaultScope
    model = _zoo('ssd/ssd300_coco.py').model
    head, train_cfg = model.bbox_head.to_dict(), model.train_cfg.to_dict()
    with DefaultScope.overwrite_default_scope('mmdet'):  # as mmdet's configs set it
        ours = MODELS.build(dict(head, type='DFLSSDHead', loss_cls=dict(type=_CrossEntropyMap),
                                 train_cfg=train_cfg))
        theirs = MODELS.build(dict(head, train_cfg=train_cfg))
    return ours, theirs


def test_dfl_ssd_head_mines_hard_negatives_as_ssd_does():
    ours, theirs = _ssd_heads()
    g = torch.Generator().manual_seed(0)
    n, c = 300, ours.num_classes + 1
    labels = torch.full((n, ), ours.num_classes)
    labels[:20] = torch.randint(0, ours.num_classes, (20, ), generator=g)
    args = (torch.randn(n, c, generator=g), torch.randn(n, 4, generator=g),
            torch.rand(n, 4, generator=g), labels, torch.ones(n), torch.randn(n, 4, generator=g),
            torch.ones(n, 4), 20.0)
    for a, b in zip(ours.loss_by_feat_single(*args), theirs.loss_by_feat_single(*args)):
        torch.testing.assert_close(a, b)


def test_dfl_ssd_head_trains_with_dual_focal_loss():
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    ours, _ = _ssd_heads()
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours.loss_cls = MODELS.build(SSD_DFL)
    cls_score = torch.randn(50, ours.num_classes + 1, requires_grad=True)
    labels = torch.full((50, ), ours.num_classes)
    labels[:5] = torch.arange(5)
    loss_cls, _ = ours.loss_by_feat_single(cls_score, torch.zeros(50, 4), torch.rand(50, 4),
                                           labels, torch.ones(50), torch.zeros(50, 4),
                                           torch.ones(50, 4), 5.0)
    loss_cls.sum().backward()
    assert torch.isfinite(loss_cls).all() and cls_score.grad.abs().sum() > 0
    # only the 5 positives and the 15 hardest negatives get a gradient
    assert int((cls_score.grad.abs().sum(1) > 0).sum()) == 20


@pytest.mark.parametrize('rel', ['rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'ssd/ssd300_coco.py'])
def test_the_switch_tool_writes_a_config_that_builds(tmp_path, rel):
    dfl_switch = tool('dfl_switch')
    out = tmp_path / 'derived.py'
    dfl_switch.main([f'mmdet::{rel}', '-o', str(out)])
    cfg = Config.fromfile(str(out))
    assert 'DualFocalLoss' in out.read_text() and 'dfl_mm' in cfg.custom_imports.imports


def test_a_decode_heads_sigmoid_ce_is_replaced_at_its_own_scale():
    """Fast-SCNN: mmseg's sigmoid CE averages over pixels x classes; the switch divides
    DualFocalLoss's loss_weight by the classes, so at gamma 1 (where the element is
    BCE) the two are the same loss, ignored pixels included."""
    from mmengine.utils import get_installed_path
    from mmseg.models.losses import CrossEntropyLoss

    from dfl_mm import DualFocalLoss
    cfg = Config.fromfile(f"{get_installed_path('mmseg')}/.mim/configs/fastscnn/"
                          'fast_scnn_8xb4-160k_cityscapes-512x1024.py')
    overrides, replaced = dfl_overrides(cfg)
    assert len(replaced) == 3  # the decode head and both auxiliary heads
    loss = overrides['model']['decode_head']['loss_decode']
    assert loss['use_sigmoid'] and loss['num_classes'] == 19
    assert loss['loss_weight'] == pytest.approx(1 / 19)
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 6, 7)
    labels = torch.randint(0, 19, (2, 6, 7))
    labels[0, :2] = 255
    theirs = CrossEntropyLoss(use_sigmoid=True)(logits, labels, ignore_index=255)
    ours = DualFocalLoss(use_sigmoid=True, gamma=1.0, loss_weight=loss['loss_weight'],
                         ignore_index=255)(logits, labels)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_channels_last_maps_are_the_rows_of_mmdets_convention(reduction):
    """YOLOv3: (B, N, C) scores, (B, N, C) float targets, (B, N, 1) weights."""
    from dfl_mm import DualFocalLoss
    torch.manual_seed(0)
    pred = torch.randn(2, 7, 5, requires_grad=True)
    target = (torch.rand(2, 7, 5) > 0.7).float()
    weight = (torch.rand(2, 7, 1) > 0.3).float()
    ours = DualFocalLoss(channels_last=True, reduction=reduction)(pred, target, weight)
    rows = DualFocalLoss(reduction=reduction)(pred.reshape(14, 5), target.reshape(14, 5),
                                              weight.reshape(14))
    assert ours.shape == (pred.shape if reduction == 'none' else ())
    torch.testing.assert_close(ours, rows.reshape(ours.shape))
    labels = torch.randint(0, 6, (2, 7))  # integer labels (B, N), C = background
    torch.testing.assert_close(
        DualFocalLoss(channels_last=True, reduction=reduction)(pred, labels),
        DualFocalLoss(reduction=reduction)(pred.reshape(14, 5), labels.reshape(14)).reshape(
            ours.shape))


def _ssd_loss_gamma_grad(gamma_reg):
    """gamma_logit's gradient of a DFLSSDHead's losses (SSD300, one image, one box)."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    ours, _ = _ssd_heads()
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours.loss_cls = MODELS.build(dict(SSD_DFL, learnable_gamma='scalar', gamma_reg=gamma_reg))
    with torch.no_grad():
        ours.loss_cls.exponent.gamma_logit.fill_(1.0)  # away from gamma_init: a pull
    torch.manual_seed(0)
    feats = [torch.randn(1, c, s, s) for c, s in zip(ours.in_channels, (38, 19, 10, 5, 3, 1))]
    gt = InstanceData(bboxes=torch.tensor([[10.0, 20.0, 120.0, 140.0]]), labels=torch.tensor([3]))
    meta = dict(img_shape=(300, 300), pad_shape=(300, 300), scale_factor=(1.0, 1.0))
    ours.loss_cls.train()
    losses = ours.loss_by_feat(*ours(feats), [gt], [meta])
    total = sum(v if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
    grad, = torch.autograd.grad(total, ours.loss_cls.exponent.gamma_logit)
    return losses, grad


def test_dfl_ssd_head_pulls_a_learnable_gamma_once_per_batch():
    """SSD calls its loss with 'none' only (the loss adds the pull to reduced calls):
    the head adds it, as 'loss_gamma_pull', so gamma_reg acts there too."""
    losses, free = _ssd_loss_gamma_grad(0.0)
    assert float(losses['loss_gamma_pull'].detach()) == 0.0
    losses, pulled = _ssd_loss_gamma_grad(1.0)
    assert float(losses['loss_gamma_pull'].detach()) > 0
    assert not torch.equal(free, pulled)


@pytest.mark.parametrize('given', ['name', 'configs path', 'mmdet', 'mmseg', 'elsewhere'])
def test_the_switch_writes_a_config_that_loads_from_any_directory(tmp_path, monkeypatch, given):
    dfl_switch = tool('dfl_switch')
    shipped = 'deeplabv3/deeplabv3_r50-d8_ce-dfl_4xb2-40k_cityscapes-512x1024.py'
    mine = tmp_path / 'mine' / 'my_retinanet.py'
    mine.parent.mkdir()
    mine.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    arg = {'name': shipped.split('/')[-1], 'configs path': f'configs/{shipped}',
           'mmdet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
           'mmseg': 'mmseg::cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py',
           'elsewhere': '../mine/my_retinanet.py'}[given]
    for folder in ('work', 'other'):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / 'work')
    dfl_switch.main([arg, '-o', 'out/derived.py'])
    monkeypatch.chdir(tmp_path / 'other')
    cfg = Config.fromfile(str(tmp_path / 'work' / 'out' / 'derived.py'))
    assert 'DualFocalLoss' in str(cfg.model) and 'dfl_mm' in cfg.custom_imports.imports


def test_the_switch_refuses_to_reinterpret_ce_class_weights(tmp_path):
    """CE's class_weight weighs the pixels labelled c, DFL's static one the class-c
    element of every pixel (CGNet: 19 weights): --no-adaptive refuses, saying why."""
    dfl_switch = tool('dfl_switch')
    config = 'mmseg::cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py'
    with pytest.raises(SystemExit, match="class_weight weighs the pixels labelled c"):
        dfl_switch.main([config, '--no-adaptive', '-o', str(tmp_path / 'x.py')])
    assert not (tmp_path / 'x.py').exists()
    dfl_switch.main([config, '-o', str(tmp_path / 'x.py')])  # adaptive: placed per pixel
    cfg = Config.fromfile(str(tmp_path / 'x.py'))
    assert cfg.model.decode_head.loss_decode.class_weight == 'adaptive'


def test_the_switch_on_a_config_without_a_model_says_so(tmp_path):
    dfl_switch = tool('dfl_switch')
    with pytest.raises(SystemExit, match='has no dense classification loss to replace'):
        dfl_switch.main(['mmdet::_base_/datasets/coco_detection.py', '-o',
                         str(tmp_path / 'x.py')])


def test_the_switch_names_the_ssd_head_it_puts_in(tmp_path, capsys):
    dfl_switch = tool('dfl_switch')
    dfl_switch.main(['mmdet::ssd/ssd300_coco.py', '-o', str(tmp_path / 'x.py')])
    assert 'model.bbox_head: SSDHead -> DFLSSDHead' in capsys.readouterr().err
    assert 'SSDHead -> DFLSSDHead' in (tmp_path / 'x.py').read_text()
