"""Segmentation end to end on CPU: configs, tools, resume, evaluation, DDP."""
import glob
import os
from pathlib import Path

import pytest
import torch

from dfl_mm import mmengine_checkpoint_loading

from testkit import ROOT, link_data, read_scalars, run_dist_train, tool, write_probe_config

pytestmark = pytest.mark.slow  # trains real segmenters end to end

SEG_CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'deeplabv3*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'deeplabv3' / '*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'deeplabv3plus' / '*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'demo' / 'deeplabv3*.py')) +
                [str(p) for name in ('pspnet', 'upernet', 'segformer')
                 for p in sorted((ROOT / 'configs' / name).glob('*.py'))])
DEMO = str(ROOT / 'configs' / 'demo' / 'deeplabv3_r18_dfl_demo.py')
SMALL = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=4',
         'test_dataloader.dataset.indices=4', 'train_dataloader.batch_size=4',
         'default_hooks.logger.interval=1']


@pytest.mark.parametrize('config', SEG_CONFIGS, ids=lambda p: Path(p).name)
def test_segmentation_config_builds_and_trains_one_step(config):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    import dfl_mm
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config)
    assert 'dfl_mm' in cfg.custom_imports['imports']
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (64, 64)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    heads = [model.decode_head] + ([model.auxiliary_head] if model.with_auxiliary_head else [])
    dfls = [m for h in heads for m in h.modules() if isinstance(m, dfl_mm.DualFocalLoss)]
    assert dfls, 'no DualFocalLoss in the heads'
    binary = model.decode_head.out_channels == 1
    assert all(m.use_sigmoid == binary for m in dfls)
    # the shipped default: adaptive class weights (not for a one-channel head)
    adaptive = not (binary or 'noweights' in config or 'static' in config)
    assert all((m.adaptive is not None) == adaptive for m in dfls)
    if 'static' in config:
        assert all(m.class_weight is not None for m in dfls)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    for loss in dfls:
        if loss.learnable_gamma:
            group = next(g for g in optim.optimizer.param_groups
                         if any(p is loss.gamma_logit for p in g['params']))
            assert group['weight_decay'] == 0.0
            # a parameter of the head trains at the head's lr (SegFormer: 10x)
            head = [g for g in optim.optimizer.param_groups
                    if any(p is model.decode_head.conv_seg.weight for p in g['params'])]
            assert group['lr'] == head[0]['lr']

    torch.manual_seed(0)
    num_labels = 2 if binary else model.decode_head.num_classes
    samples = []
    for _ in range(2):  # ASPP's image pooling needs BatchNorm over > 1 value
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                             ori_shape=(64, 64)))
        label = torch.randint(0, num_labels, (1, 64, 64))
        label[:, :4] = 255
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in samples],
             data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)
    assert all(m.gamma_logit.grad is not None for m in dfls if m.learnable_gamma)


def test_demo_train_resume_and_test(in_tmp, shared_data):
    test_tool = tool('test')
    train_tool = tool('train')
    from dfl_probe import ResumeProbeHook
    link_data(shared_data, in_tmp)
    work = str(in_tmp / 'work')
    train_tool.main([DEMO, '--work-dir', work, '--cfg-options', *SMALL,
                     'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                     'default_hooks.checkpoint.interval=2'])
    scalars = read_scalars(work)
    logged = [s for s in scalars if 'gamma.decode_head.decode' in s]
    assert logged and all(0.5 < s['gamma.decode_head.decode'] < 10 for s in logged)
    assert any('gamma.auxiliary_head.decode' in s for s in scalars)
    assert any('mIoU' in s for s in scalars)

    with mmengine_checkpoint_loading():  # what the runner's loads use
        ckpt = torch.load(os.path.join(work, 'iter_2.pth'), map_location='cpu',
                          weights_only=True)
    probe_cfg = write_probe_config(in_tmp / 'probe.py', DEMO, 'dfl_mm.demo.segmentation',
                                   'ResumeProbeHook')
    ResumeProbeHook.records.clear()
    train_tool.main([probe_cfg, '--work-dir', str(in_tmp / 'resumed'),
                     '--resume', os.path.join(work, 'iter_2.pth'), '--cfg-options', *SMALL,
                     'train_cfg.max_iters=3', 'train_cfg.val_interval=100'])
    record = ResumeProbeHook.records[-1]
    assert record['iter'] == 2
    assert torch.equal(record['gamma_logit'],
                       ckpt['state_dict']['decode_head.loss_decode.exponent.gamma_logit'])
    assert record['optimizer_state']['step'] == 2

    metrics = test_tool.main([DEMO, os.path.join(work, 'iter_4.pth'), '--work-dir',
                              str(in_tmp / 'test'), '--cfg-options', *SMALL])
    assert 0.0 <= metrics['mIoU'] <= 100.0
    assert {'IoU.background', 'IoU.line', 'IoU.dot'} <= set(metrics)
    log = open(glob.glob(str(in_tmp / 'test' / '*' / '*.log'))[0]).read()
    assert 'per class results' in log and '|    line    |' in log


ADAPTIVE = ['model.decode_head.loss_decode.class_weight=adaptive',
            'model.decode_head.loss_decode.num_classes=4',
            'model.auxiliary_head.loss_decode.class_weight=adaptive',
            'model.auxiliary_head.loss_decode.num_classes=4']


def test_adaptive_weights_are_logged_checkpointed_and_resumed_exactly(in_tmp, shared_data):
    train_tool = tool('train')
    from dfl_probe import ResumeProbeHook
    link_data(shared_data, in_tmp)
    work = str(in_tmp / 'work')
    train_tool.main([DEMO, '--work-dir', work, '--cfg-options', *SMALL, *ADAPTIVE,
                     'train_cfg.max_iters=3', 'train_cfg.val_interval=100',
                     'default_hooks.checkpoint.interval=3'])
    scalars = read_scalars(work)
    logged = [s for s in scalars if 'class_weight_max.decode_head.decode' in s]
    # iteration 1 trains with weights 1; from the second on the rare classes weigh more
    assert logged[0]['class_weight_max.decode_head.decode'] > 1.0
    # the per-class weights: in the scalars file (every logger interval), not the text log
    per_class = [s for s in scalars if 'class_weight_3.decode_head.decode' in s]
    assert [s['step'] for s in per_class] == [1, 2, 3]
    assert per_class[-1]['class_weight_3.decode_head.decode'] > per_class[-1][
        'class_weight_0.decode_head.decode']
    log_text = ''.join(open(f).read() for f in glob.glob(os.path.join(work, '*', '*.log')))
    assert 'class_weight_max.decode_head.decode' in log_text
    assert 'class_weight_0.decode_head.decode' not in log_text
    with mmengine_checkpoint_loading():
        ckpt = torch.load(os.path.join(work, 'iter_3.pth'), map_location='cpu',
                          weights_only=True)
    state = ckpt['state_dict']
    assert int(state['decode_head.loss_decode.adaptive.steps']) == 3  # folded by the hook
    assert 'decode_head.loss_decode.adaptive.pending' not in state
    probe_cfg = write_probe_config(in_tmp / 'probe.py', DEMO, 'dfl_mm.demo.segmentation',
                                   'ResumeProbeHook')
    ResumeProbeHook.records.clear()
    train_tool.main([probe_cfg, '--work-dir', str(in_tmp / 'resumed'), '--resume',
                     os.path.join(work, 'iter_3.pth'), '--cfg-options', *SMALL, *ADAPTIVE,
                     'train_cfg.max_iters=4', 'train_cfg.val_interval=100'])
    restored = ResumeProbeHook.records[-1]['adaptive']
    for head in ('decode_head', 'auxiliary_head'):
        index = 0 if head == 'decode_head' else 1
        for name in ('counts', 'hits', 'steps'):
            saved = state[f'{head}.loss_decode.adaptive.{name}']
            assert torch.equal(restored[f'{index}.{name}'], saved)  # bit for bit
            assert restored[f'{index}.{name}'].dtype == saved.dtype


def test_user_config_trains_through_mmseg_runner_without_project_tools(in_tmp, shared_data):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from dfl_mm.demo.segmentation import CLASSES, generate_segmentation_demo
    link_data(shared_data, in_tmp)
    generate_segmentation_demo('data/dfl_demo_seg')
    cfg = Config.fromfile(DEMO)
    cfg.custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)
    cfg.custom_hooks = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.type = 'BaseSegDataset'
        cfg[loader].dataset.metainfo = dict(classes=CLASSES)
        cfg[loader].dataset.img_suffix = '.png'
        cfg[loader].dataset.seg_map_suffix = '.png'
        cfg[loader].dataset.indices = 8
    cfg.model.decode_head.loss_decode = dict(type='DualFocalLoss', use_sigmoid=False,
                                             learnable_gamma='scalar')
    cfg.model.auxiliary_head.loss_decode = dict(type='CrossEntropyLoss', loss_weight=0.4)
    cfg.train_cfg.max_iters = 3
    cfg.train_cfg.val_interval = 3
    cfg.work_dir = str(in_tmp / 'user')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert float(runner.model.decode_head.loss_decode.gamma) != 2.0


def test_dist_train_two_cpu_ranks_keep_gamma_identical(in_tmp, shared_data):
    from dfl_mm.demo.segmentation import generate_segmentation_demo
    link_data(shared_data, in_tmp)
    generate_segmentation_demo('data/dfl_demo_seg')
    cfg = write_probe_config(in_tmp / 'dist.py', DEMO, 'dfl_mm.demo.segmentation',
                             'DumpStateHook')
    states = run_dist_train(cfg, in_tmp / 'dist_work', [
        *SMALL, *ADAPTIVE, 'train_cfg.max_iters=3', 'train_cfg.val_interval=100'])
    assert [s['world_size'] for s in states] == [2, 2]
    assert states[0]['gammas'] == states[1]['gammas'] and len(states[0]['gammas']) == 2
    # ranks see different images; the all-reduced statistics give identical weights
    assert states[0]['class_weights'] == states[1]['class_weights']
    assert states[0]['gammas'][0][0] != 2.0
    assert states[0]['checksum'] == states[1]['checksum']
