"""Every dense head: DualFocalLoss across mmdet's FocalLoss heads and mmseg's
softmax decode heads (tools/analysis/head_sweep.py), and the one-line switch
of any config (tools/dfl_switch.py)."""

import pytest

from testkit import ROOT, link_data, read_scalars, tool

head_sweep = tool('analysis/head_sweep')

pytestmark = pytest.mark.slow  # the model-zoo sweep

# heads that fail with their own loss as well, for a reason outside this project
# (docs/zoo.md): GLIP and Grounding DINO need transformers/fairscale;
# SAN asserts a CE classification loss, and with its own loss fails here too (NaN
# matching costs without CLIP weights, or a class-weight mismatch: it varies)
# mmdet 3.3's RPN-only Cascade RPN config does not build (CascadeRPNHead needs a
# num_classes the config lacks)
# TridentNet trains a step alone (docs/zoo.md counts it so), but late in a long run in
# one process its step can be non-finite with its own loss too (state earlier runs leave
# behind, outside this project: two runs of it in a row, same seeds, give ok then NaN)
FLAKY = {'tridentnet/tridentnet_r50-caffe_1x_coco.py'}
OUTSIDE = FLAKY | {
    'cascade_rpn/cascade-rpn_r50-caffe_fpn_1x_coco.py',
    'glip/glip_atss_swin-l_fpn_dyhead_16xb2_ms-2x_funtune_coco.py',
    'grounding_dino/grounding_dino_r50_scratch_8xb2_1x_coco.py',
    'san/san-vit-b16_voc12aug-640x640.py',
}


@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_every_zoo_head_trains_a_step_with_dfl(kind):
    rows = head_sweep.sweep(kind)
    assert len(rows) >= (50 if kind == 'det' else 30)  # the walk found the zoo
    by_config = {r['config']: r for r in rows}
    faults = [r for r in rows if not r['ok'] and r['config'] not in OUTSIDE]
    assert not faults, '\n'.join(f"{r['config']}: {r['verdict']}: {r['message']}"
                                 for r in faults)
    for config in OUTSIDE & set(by_config):
        assert by_config[config]['ok'] or \
            by_config[config]['verdict'] == 'fails with its own loss too', config
    # docs/zoo.md states this run's N of M (a flaky config counted as it runs alone)
    passed = sum(r['ok'] or r['config'] in FLAKY for r in rows)
    line = head_sweep.markdown(rows, kind).splitlines()[0]
    line = f'{passed} of {len(rows)} ' + line.split(' of ', 1)[1].split(' ', 1)[1]
    assert line in (ROOT / 'docs' / 'zoo.md').read_text(), line


def _switch(tmp_path, config, *extra):
    dfl_switch = tool('dfl_switch')
    out = tmp_path / 'derived.py'
    dfl_switch.main([config, '-o', str(out), *extra])
    from mmengine.config import Config
    return Config.fromfile(str(out)), out


def test_switch_turns_an_unshipped_detector_into_its_dfl_version(tmp_path, capsys):
    cfg, out = _switch(tmp_path, 'mmdet::fsaf/fsaf_r50_fpn_1x_coco.py')
    assert capsys.readouterr().out.strip() == str(out)
    assert "_base_ = 'mmdet::fsaf/fsaf_r50_fpn_1x_coco.py'" in out.read_text()
    loss = cfg.model.bbox_head.loss_cls
    assert loss == dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                        loss_weight=1.0, reduction='none')  # the detection default:
    # FSAF's FocalLoss's alpha, no class weights
    assert 'dfl_mm' in cfg.custom_imports.imports
    assert [h.type for h in cfg.custom_hooks] == ['DFLStepHook']
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.gamma_logit.decay_mult == 0.0
    assert cfg.optim_wrapper.optimizer.lr == 0.01  # the rest is inherited
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model).train()
        data = model.data_preprocessor(demo_mm_inputs(2, [(3, 128, 128)] * 2, [3, 3],
                                                      num_classes=80), True)
        ok, message = head_sweep._step(model, data)
    assert ok, message


def test_switch_rewrites_lists_whole_and_keeps_the_rest(tmp_path):
    """OCRNet's decode heads are a list: mmengine replaces lists, so the derived
    config restates both heads, each with its own settings and a DFL loss."""
    from mmengine.config import Config
    original = Config.fromfile(head_sweep._configs_root('mmseg') +
                               '/ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py')
    cfg, _ = _switch(tmp_path, 'mmseg::ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py')
    assert len(cfg.model.decode_head) == 2
    for old, new in zip(original.model.decode_head, cfg.model.decode_head):
        assert {k: v for k, v in new.items() if k != 'loss_decode'} == \
            {k: v for k, v in old.items() if k != 'loss_decode'}
        assert new.loss_decode == dict(
            type='DualFocalLoss', use_sigmoid=False, gamma=2.0, learnable_gamma='scalar',
            avg_non_ignore=True, class_weight='adaptive', num_classes=150,
            loss_weight=old.loss_decode.loss_weight)
    cfg, _ = _switch(tmp_path, 'mmseg::ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py',
                     '--no-adaptive')
    assert 'class_weight' not in cfg.model.decode_head[0].loss_decode


def test_switch_errors_name_the_problem(tmp_path):
    dfl_switch = tool('dfl_switch')
    with pytest.raises(SystemExit, match='dfl_switch: config file not found: nope.py'):
        dfl_switch.main(['nope.py'])
    with pytest.raises(SystemExit, match="no such config in mmdet"):
        dfl_switch.main(['mmdet::nope/nope.py'])
    with pytest.raises(SystemExit, match='has no dense classification loss to replace'):
        dfl_switch.main(['mmdet::centernet/centernet_r18_8xb16-crop512-140e_coco.py',
                         '-o', str(tmp_path / 'x.py')])


def test_switched_user_config_trains_with_the_project_tools(in_tmp, shared_data):
    """A user's own CE config (not shipped) -> dfl_switch -> tools/train.py."""
    dfl_switch = tool('dfl_switch')
    train_tool = tool('train')
    link_data(shared_data, in_tmp)
    user = in_tmp / 'my_fcn_ce.py'
    ce = "dict(_delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight={})"
    user.write_text(
        f"_base_ = {str(ROOT / 'configs' / 'demo' / 'deeplabv3_r18_dfl_demo.py')!r}\n"
        f"model = dict(decode_head=dict(loss_decode={ce.format(1.0)}),\n"
        f"             auxiliary_head=dict(loss_decode={ce.format(0.4)}))\n"
        "custom_hooks = []\n")
    derived = in_tmp / 'my_fcn_dfl.py'
    dfl_switch.main([str(user), '-o', str(derived)])
    work = in_tmp / 'work'
    train_tool.main([str(derived), '--work-dir', str(work), '--cfg-options',
                     'train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
                     'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                     'default_hooks.logger.interval=1'])
    scalars = read_scalars(work)
    assert any('gamma.decode_head.decode' in s and 'gamma.auxiliary_head.decode' in s
               for s in scalars)
    assert any(k.startswith('class_weight_min.decode_head') for s in scalars for k in s)
