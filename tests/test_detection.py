"""Detection end to end on CPU: configs, tools, resume, evaluation, DDP."""
import glob
import os
from pathlib import Path

import pytest
import torch

from dfl_mm import mmengine_checkpoint_loading

from testkit import ROOT, link_data, read_scalars, run_dist_train, tool, write_probe_config

pytestmark = pytest.mark.slow  # trains real detectors end to end

DET_CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'retinanet*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'retinanet' / '*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'demo' / 'retinanet*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'fcos' / '*.py')) +
                     glob.glob(str(ROOT / 'configs' / 'atss' / '*.py')))
# the quality heads: DualFocalLoss with soft targets (and TOOD's probabilities)
QUALITY_CONFIGS = sorted(path for folder in ('gfl', 'rtmdet', 'tood', 'vfnet')
                         for path in glob.glob(str(ROOT / 'configs' / folder / '*.py')))
DEMO = str(ROOT / 'configs' / 'demo' / 'retinanet_r18_dfl_demo.py')
# the demo ships gamma 2 without class weights; these tests also learn gamma and turn the
# adaptive weights on (both kinds of state the loss remembers)
LEARNABLE = ["model.bbox_head.loss_cls.learnable_gamma='scalar'",
             "model.bbox_head.loss_cls.class_weight='adaptive'"]
SMALL = ['train_dataloader.dataset.indices=16', 'val_dataloader.dataset.indices=8',
         'test_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
         'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.001']


@pytest.mark.parametrize('config', DET_CONFIGS + QUALITY_CONFIGS, ids=lambda p: Path(p).name)
def test_detection_config_builds_and_trains_one_step(config):
    from mmdet.models.dense_heads import (
        ATSSHead,
        FCOSHead,
        GFLHead,
        RetinaHead,
        RTMDetSepBNHead,
        TOODHead,
        VFNetHead,
    )
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    import dfl_mm
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config)
    assert 'dfl_mm' in cfg.custom_imports['imports']
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    head = {'fcos': FCOSHead, 'atss': ATSSHead, 'gfl': GFLHead, 'tood': TOODHead,
            'vfnet': VFNetHead, 'rtmdet': RTMDetSepBNHead}.get(Path(config).parent.name,
                                                              RetinaHead)
    assert type(model.bbox_head) is head
    loss_module = model.bbox_head.loss_cls
    assert isinstance(loss_module, dfl_mm.DualFocalLoss) and loss_module.use_sigmoid
    assert any(h['type'] == 'DFLStepHook' for h in cfg.custom_hooks)

    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    if loss_module.learnable_gamma:
        group = next(g for g in optim.optimizer.param_groups
                     if any(p is loss_module.gamma_logit for p in g['params']))
        assert group['weight_decay'] == 0.0  # gamma is excluded from weight decay

    torch.manual_seed(0)
    sample = DetDataSample(metainfo=dict(img_shape=(96, 96), pad_shape=(96, 96),
                                         scale_factor=(1.0, 1.0), ori_shape=(96, 96)))
    # the first and last class, and 255 where it is a real class (>= 256 classes)
    labels = [0, model.bbox_head.num_classes - 1] + [255] * (model.bbox_head.num_classes > 255)
    boxes = [[10., 10., 50., 60.], [40., 30., 90., 80.], [5., 50., 45., 90.]]
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes[:len(labels)]),
                                       labels=torch.tensor(labels))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)],
             data_samples=[sample]), training=True)
    calls = []
    for module in model.modules():
        if isinstance(module, dfl_mm.DualFocalLoss):
            module.register_forward_hook(lambda m, args, out: calls.append(
                (type(args[1]).__name__, bool(torch.isfinite(out).all()))))
    # TOOD: the first epochs' hard-label loss, then the soft (labels, scores) one
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()  # TOOD reads the epoch there, as a runner sets it
    for epoch in ((0, 4) if head is TOODHead else (0, )):
        hub.update_info('epoch', epoch)
        losses = model(**data, mode='loss')
        total = sum(v.sum() for k, v in _flatten(losses) if 'loss' in k)
        total.backward()
        assert torch.isfinite(total)
    hub.runtime_info.pop('epoch')
    assert calls and all(finite for _, finite in calls)
    if head in (GFLHead, RTMDetSepBNHead, TOODHead):
        assert ('tuple', True) in calls  # QualityFocalLoss's (labels, scores) convention
    if head is VFNetHead:
        assert loss_module.iou_weighted
    if loss_module.learnable_gamma:
        assert loss_module.gamma_logit.grad is not None


def test_lvis_config_has_1203_classes_and_mmdet_lvis_data():
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / 'retinanet' /
                              'retinanet_r50_fpn_dfl_1x_lvis-v1.py'))
    assert cfg.model.bbox_head.num_classes == cfg.model.bbox_head.loss_cls.num_classes == 1203
    assert cfg.model.bbox_head.loss_cls.get('class_weight') is None  # the detection default
    assert cfg.train_dataloader.dataset.type == 'ClassBalancedDataset'
    assert cfg.train_dataloader.dataset.dataset.type == 'LVISV1Dataset'
    assert cfg.val_evaluator.metric == ['bbox']
    assert not any(t.get('with_mask') for t in cfg.train_dataloader.dataset.dataset.pipeline)


def _flatten(losses):
    for k, v in losses.items():
        for item in (v if isinstance(v, list) else [v]):
            yield k, item


def test_demo_train_resume_and_test(in_tmp, shared_data):
    test_tool = tool('test')
    train_tool = tool('train')
    from dfl_probe import ResumeProbeHook
    link_data(shared_data, in_tmp)
    work = str(in_tmp / 'work')
    train_tool.main([DEMO, '--work-dir', work, '--cfg-options', *SMALL, *LEARNABLE,
                     'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
                     'default_hooks.checkpoint.interval=1'])
    logged = [s for s in read_scalars(work) if 'gamma' in s]
    assert logged and all(0.5 < s['gamma'] < 10 for s in logged)
    assert all('loss' not in k for s in logged for k in s if k.startswith('gamma'))
    assert any('coco/bbox_mAP' in s for s in read_scalars(work))

    # resume from epoch 1: gamma and its optimizer state come back exactly
    with mmengine_checkpoint_loading():  # what the runner's loads use
        ckpt = torch.load(os.path.join(work, 'epoch_1.pth'), map_location='cpu',
                          weights_only=True)
    probe_cfg = write_probe_config(in_tmp / 'probe.py', DEMO, 'dfl_mm.demo.detection',
                                   'ResumeProbeHook')
    ResumeProbeHook.records.clear()
    train_tool.main([probe_cfg, '--work-dir', str(in_tmp / 'resumed'),
                     '--resume', os.path.join(work, 'epoch_1.pth'), '--cfg-options', *SMALL,
                     *LEARNABLE, 'train_cfg.max_epochs=2', 'train_cfg.val_interval=10'])
    record = ResumeProbeHook.records[-1]
    assert record['epoch'] == 1
    # the demo's adaptive class weights: their statistics come back bit for bit
    assert record['adaptive'] and all(
        torch.equal(value, ckpt['state_dict'][f'bbox_head.loss_cls.adaptive.{key[2:]}'])
        for key, value in record['adaptive'].items())
    assert float(record['adaptive']['0.steps']) == 4  # 16 images / 4 a batch, 1 epoch
    saved_logit = ckpt['state_dict']['bbox_head.loss_cls.exponent.gamma_logit']
    assert torch.equal(record['gamma_logit'], saved_logit)
    saved_opt = ckpt['optimizer']['state']
    index = _param_index(ckpt, 'bbox_head.loss_cls.exponent.gamma_logit')
    for key in ('exp_avg', 'exp_avg_sq'):
        assert torch.equal(record['optimizer_state'][key], saved_opt[index][key])

    metrics = test_tool.main([DEMO, os.path.join(work, 'epoch_2.pth'), '--work-dir',
                              str(in_tmp / 'test'), '--cfg-options', *SMALL])
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert {'coco/disc_precision', 'coco/cross_precision'} <= set(metrics)


def _param_index(ckpt, name):
    """Index of a parameter in the optimizer's state dict (model order)."""
    names = [k for k in ckpt['state_dict'] if not k.endswith(
        ('running_mean', 'running_var', 'num_batches_tracked', 'gamma_init',
         'gamma_range'))]
    return names.index(name)


def test_missing_dataset_gives_one_clear_message(in_tmp):
    train_tool = tool('train')
    with pytest.raises(SystemExit, match=r"data/coco/annotations/instances_train2017.json.*"
                                         r"configs/demo/retinanet_r18_dfl_demo.py"):
        train_tool.main([str(ROOT / 'configs' / 'retinanet_dfl.py')])


def test_user_config_trains_through_mmdet_runner_without_project_tools(in_tmp, shared_data):
    """custom_imports + type='DualFocalLoss' in a plain mmdet config."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    link_data(shared_data, in_tmp)
    from dfl_mm.demo.detection import CLASSES, generate_detection_demo
    generate_detection_demo('data/dfl_demo_det')
    cfg = Config.fromfile(DEMO)
    cfg.custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)
    cfg.custom_hooks = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.type = 'CocoDataset'
        cfg[loader].dataset.metainfo = dict(classes=CLASSES)
        cfg[loader].dataset.indices = 8
    cfg.model.bbox_head.loss_cls = dict(type='DualFocalLoss', use_sigmoid=True, gamma=2.0,
                                        learnable_gamma='scalar')
    cfg.train_cfg.max_epochs = 1
    cfg.work_dir = str(in_tmp / 'user')
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.model.bbox_head.loss_cls
    assert type(loss).__name__ == 'DualFocalLoss'
    assert float(loss.gamma) != 2.0  # it was trained


def test_dist_train_two_cpu_ranks_keep_gamma_identical(in_tmp, shared_data):
    link_data(shared_data, in_tmp)
    from dfl_mm.demo.detection import generate_detection_demo
    generate_detection_demo('data/dfl_demo_det')
    cfg = write_probe_config(in_tmp / 'dist.py', DEMO, 'dfl_mm.demo.detection',
                             'DumpStateHook')
    states = run_dist_train(cfg, in_tmp / 'dist_work', [
        *SMALL, *LEARNABLE, 'train_cfg.max_epochs=1', 'train_cfg.val_interval=10'])
    assert [s['world_size'] for s in states] == [2, 2]
    assert states[0]['iters'] == states[1]['iters'] == 2  # 16 images / (2 ranks x 4)
    assert states[0]['gammas'] == states[1]['gammas']
    assert states[0]['gammas'][0][0] != 2.0
    assert states[0]['class_weights'] == states[1]['class_weights']
    assert states[0]['class_weights'][0] != [1.0] * 4  # the adaptive weights moved
    assert states[0]['checksum'] == states[1]['checksum']


def test_runs_in_one_process_log_into_their_own_work_dirs(in_tmp):
    """mmdet configs name their visualizer 'visualizer'; without a fresh name the
    second Runner would reuse the first one's and write scalars into its work dir."""
    from mmengine.config import Config

    from dfl_mm.apis.launch import build_runner
    save_dirs = []
    for name in ('first', 'second'):
        cfg = Config.fromfile(DEMO)
        cfg.work_dir = str(in_tmp / name)
        runner = build_runner(cfg)
        backend = runner.visualizer.get_backend('LocalVisBackend')
        save_dirs.append(backend._save_dir)
    assert save_dirs[0].startswith(str(in_tmp / 'first'))
    assert save_dirs[1].startswith(str(in_tmp / 'second'))


@pytest.mark.parametrize('auto', [True, False])
def test_truncated_last_checkpoint_names_the_previous_one(in_tmp, auto):
    import time

    train_tool = tool('train')
    work = in_tmp / 'work'
    work.mkdir()
    torch.save({'meta': {'epoch': 1}, 'state_dict': {'w': torch.zeros(100)}},
               work / 'epoch_1.pth')
    time.sleep(0.01)
    torch.save({'meta': {'epoch': 2}, 'state_dict': {'w': torch.zeros(100)}},
               work / 'epoch_2.pth')
    data = (work / 'epoch_2.pth').read_bytes()
    (work / 'epoch_2.pth').write_bytes(data[:len(data) // 2])  # killed while saving
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    resume = ['--resume'] if auto else ['--resume', str(work / 'epoch_2.pth')]
    with pytest.raises(SystemExit) as info:
        train_tool.main([DEMO, '--work-dir', str(work), *resume])
    message = str(info.value)
    assert 'epoch_2.pth is truncated or damaged' in message
    assert f'--resume {work / "epoch_1.pth"}' in message
