"""Promises where users meet them, through a real mmengine Runner where they are
met there: checkpoints and resume, the counting rule, edge cases that were silently
reinterpreted, the README's snippet on every demo, threads (compile: tests/test_compile.py;
a fresh clone: tests/test_fresh_clone.py).
"""
import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

from dfl_mm import DualFocalLoss, dual_focal_loss, mmengine_checkpoint_loading, ops
from dfl_mm.models.adaptive import AdaptiveClassWeight

from crafted_pickles import glob, text, write_checkpoint
from testkit import ROOT


# ------------------------------------------------ a real runner on a tiny model
class _Pixels(BaseModel):
    """A 1x1 conv whose logits go to an adaptive DualFocalLoss (mmseg convention)."""

    def __init__(self, fail_at=None, **loss):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.loss = DualFocalLoss(use_sigmoid=False, class_weight='adaptive', num_classes=4,
                                  adaptive_weight=dict(momentum=0.5), ignore_index=255,
                                  **loss)
        self.fail_at, self.calls = fail_at, 0

    def forward(self, inputs, labels, mode='tensor'):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError('crash mid-run')
        logits = self.conv(inputs)
        if mode == 'loss':  # two calls per iteration, as two FPN levels or heads
            return dict(loss_a=self.loss(logits, labels),
                        loss_b=self.loss(logits[:, :, :2], labels[:, :2]))
        return logits


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, 4, (4, 4), generator=g)
        labels[0, 0] = 255
        return dict(inputs=torch.randn(3, 4, 4, generator=g), labels=labels)


def _runner(work_dir, iters, hook, resume=None, model=None, name='promise'):
    hooks = [dict(type=hook if isinstance(hook, str) else 'DFLStepHook')] if hook else []
    return Runner(
        model=model or _Pixels(), work_dir=str(work_dir),
        experiment_name=f'{name}_{os.path.basename(str(work_dir))}_{iters}_{resume is not None}',
        train_dataloader=dict(dataset=_Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=hooks, resume=resume is not None, load_from=resume,
        default_scope='mmengine', log_level='ERROR')


def _adaptive_state(model):
    return {k: v.clone() for k, v in model.loss.state_dict().items()}


# ------------------------------------------------ resume exact in every mode
@pytest.mark.parametrize('hook', [True, False])
def test_resume_is_exact_with_and_without_the_hook(tmp_path, hook):
    from dfl_mm.engine.checkpoint import scope_checkpoint_loads
    whole = _runner(tmp_path / 'whole', 6, hook)
    whole.train()
    expected = _adaptive_state(whole.model)
    assert int(whole.model.loss.adaptive.steps) == (6 if hook else 12)  # 2 calls a step
    resumed = _runner(tmp_path / 'resumed', 6, hook,
                      resume=str(tmp_path / 'whole' / 'iter_3.pth'))
    scope_checkpoint_loads(resumed)
    resumed.train()
    got = _adaptive_state(resumed.model)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert torch.equal(whole.model.conv.weight, resumed.model.conv.weight)


# ------------------------------------------------ legacy checkpoints resume
def test_legacy_checkpoints_are_accepted_and_truncated_ones_refused(tmp_path):
    from dfl_mm.apis.launch import check_resume_checkpoint
    legacy = str(tmp_path / 'legacy.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}}, legacy, _use_new_zipfile_serialization=False)
    check_resume_checkpoint(legacy)  # torch.load reads it: so must --resume
    with mmengine_checkpoint_loading():
        assert torch.equal(torch.load(legacy, weights_only=True)['state_dict']['w'],
                           torch.ones(2))
    cut = str(tmp_path / 'cut.pth')
    torch.save({'w': torch.ones(100)}, cut)
    with open(cut, 'r+b') as f:
        f.truncate(os.path.getsize(cut) // 2)
    with pytest.raises(SystemExit, match='truncated or damaged'):
        check_resume_checkpoint(cut)


def test_a_legacy_runner_checkpoint_resumes_through_the_scoped_loader(tmp_path):
    from dfl_mm.engine.checkpoint import scope_checkpoint_loads
    first = _runner(tmp_path / 'a', 3, True)
    first.train()
    path = str(tmp_path / 'a' / 'iter_3.pth')
    with mmengine_checkpoint_loading():
        checkpoint = torch.load(path, weights_only=True)
    legacy = str(tmp_path / 'legacy_iter_3.pth')
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    resumed = _runner(tmp_path / 'b', 4, True, resume=legacy)
    scope_checkpoint_loads(resumed)
    resumed.train()
    assert resumed.iter == 4


# ------------------------------------------------ corrupt statistics refused
@pytest.mark.parametrize('buffer, value', [
    ('counts', [math.nan, 1.0, 0.0]), ('counts', [-1.0, 1.0, 0.0]),
    ('counts', [math.inf, 1.0, 0.0]), ('hits', [5.0, 0.0, 0.0]), ('steps', -3)])
def test_corrupt_adaptive_statistics_are_refused_naming_the_buffer(buffer, value):
    source = DualFocalLoss(class_weight='adaptive', num_classes=3)
    source(torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 3, 3]))
    state = source.state_dict()
    state[f'adaptive.{buffer}'] = torch.tensor(value, dtype=state[f'adaptive.{buffer}'].dtype)
    target = DualFocalLoss(class_weight='adaptive', num_classes=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=f'adaptive.{buffer}'):
        target.load_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


# ------------------------------------------------ a crashed runner freezes nothing
def test_a_crashed_runner_leaves_later_training_counting(tmp_path):
    model = _Pixels(fail_at=3)
    runner = _runner(tmp_path / 'crash', 6, True, model=model)
    with pytest.raises(RuntimeError, match='crash mid-run'):
        runner.train()
    adaptive = model.loss.adaptive
    steps = int(adaptive.steps)
    assert steps == 2 and not adaptive.pending.any()  # the crashed iteration is dropped
    # a later plain loop, with the same loss or a new one, counts every call
    fresh = DualFocalLoss(class_weight='adaptive', num_classes=4)
    for loss in (model.loss, fresh):
        before = int(loss.adaptive.steps)
        for _ in range(3):
            loss(torch.randn(1, 4, 2, 2), torch.randint(0, 4, (1, 2, 2)))
        assert int(loss.adaptive.steps) == before + 3
    assert not torch.equal(fresh.adaptive.weights(), torch.ones(4))


def test_the_hooks_old_name_builds_the_same_hook_and_the_tools_add_no_second(tmp_path):
    from mmengine.config import Config

    from dfl_mm.apis.launch import ensure_dfl_hook
    from dfl_mm.engine.hooks import DFLStepHook
    model = _Pixels()
    runner = _runner(tmp_path / 'old-name', 3, 'DFLGammaHook', model=model)
    assert [type(h) for h in runner.hooks].count(DFLStepHook) == 1
    runner.train()
    assert int(model.loss.adaptive.steps) == 3  # one step an iteration: the hook ran
    cfg = Config(dict(custom_hooks=[dict(type='DFLGammaHook')]))
    ensure_dfl_hook(cfg)
    assert cfg.custom_hooks == [dict(type='DFLGammaHook')]


# ------------------------------------------------ only calls that train count
def test_mmseg_ohem_sampler_calls_are_not_counted():
    from mmengine.structures import PixelData
    from mmseg.models.decode_heads import FCNHead
    from mmseg.structures import SegDataSample

    def head(sampler):
        torch.manual_seed(0)
        return FCNHead(in_channels=4, channels=4, num_convs=1, num_classes=3,
                       sampler=sampler, loss_decode=dict(
                           type='DualFocalLoss', use_sigmoid=False, class_weight='adaptive',
                           num_classes=3, adaptive_weight=dict(basis='effective')))

    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 8, 8)))
        samples.append(sample)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        plain, ohem = head(None), head(dict(type='OHEMPixelSampler', thresh=0.7, min_kept=20))
    for each in (plain, ohem):
        each.train()
        each.loss_by_feat(logits, samples)
    torch.testing.assert_close(ohem.loss_decode.adaptive.counts,
                               plain.loss_decode.adaptive.counts)
    assert int(ohem.loss_decode.adaptive.steps) == 1
    # no_grad and eval calls do not count either
    loss = ohem.loss_decode
    with torch.no_grad():
        loss(logits, torch.randint(0, 3, (2, 8, 8)), reduction_override='none')
    loss.eval()
    loss(logits, torch.randint(0, 3, (2, 8, 8)))
    assert int(loss.adaptive.steps) == 1


# ------------------------------------------------ no overflow in the weights
@pytest.mark.parametrize('settings', [dict(eps=1e-160, power=2.0), dict(power=80.0),
                                      dict(eps=1e-300, power=1e3)])
def test_extreme_settings_give_finite_normalised_weights(settings):
    module = AdaptiveClassWeight(4, momentum=0.0, **settings)
    module.observe(torch.tensor([0, 0, 1, 1]))  # classes 2, 3 unseen
    weights = module.weights()
    assert torch.isfinite(weights).all()
    assert torch.equal(weights, torch.ones(4))  # equal frequencies: 1; unseen: 1
    module.observe(torch.tensor([0] * 30 + [1]))
    weights = module.weights()
    assert torch.isfinite(weights).all() and weights[1] == 10.0  # capped, not NaN


# ------------------------------------------------ integer one-hot with adaptive
def test_an_integer_one_hot_map_is_labels_for_adaptive_weights():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (20, ))  # 3 = background
    one_hot = torch.nn.functional.one_hot(labels, 4)[:, :3]
    scores = torch.randn(20, 3)
    by_labels = DualFocalLoss(class_weight='adaptive', num_classes=3)
    by_map = DualFocalLoss(class_weight='adaptive', num_classes=3)
    for _ in range(2):
        torch.testing.assert_close(by_map(scores, one_hot, avg_factor=5.0),
                                   by_labels(scores, labels, avg_factor=5.0))
    assert torch.equal(by_map.adaptive.counts, by_labels.adaptive.counts)
    multi = one_hot.clone()
    multi[0] = 1
    with pytest.raises(ValueError, match='multi-label'):
        by_map(scores, multi)


# ------------------------------------------------ targets and weights are data
@pytest.mark.parametrize('what', ['target', 'weight'])
def test_a_target_or_weight_that_requires_grad_is_refused(what):
    scores, soft = torch.randn(6, 3), torch.rand(6, 3)
    weight = torch.rand(6)
    (soft if what == 'target' else weight).requires_grad_()
    with pytest.raises(ValueError, match=f'{what} requires grad.*{what}.detach'):
        dual_focal_loss(scores, soft, weight=weight)
    with pytest.raises(ValueError, match=f'{what} requires grad'):
        DualFocalLoss()(scores, soft, weight)


# ------------------------------------------------ avg_factor: real numbers only
@pytest.mark.parametrize('avg_factor', [torch.tensor(2.0 + 1j), torch.tensor(True)])
def test_complex_and_bool_avg_factor_tensors_are_refused(avg_factor):
    with pytest.raises(TypeError, match='avg_factor must be a real number'):
        DualFocalLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), avg_factor=avg_factor)


# ------------------------------------------------ class_weight files
def test_class_weight_files_are_refused_unless_flat_real_numbers(tmp_path):
    cases = {'complex.npy': lambda p: np.save(p, np.array([1 + 2j, 1.0])),
             'strings.json': lambda p: json.dump(['1.0', '2.0'], open(p, 'w')),
             'nested.json': lambda p: json.dump([[1.0, 2.0], [3.0]], open(p, 'w')),
             'matrix.npy': lambda p: np.save(p, np.ones((2, 2))),
             'flag.json': lambda p: json.dump([True, 1.0], open(p, 'w'))}
    for name, write in cases.items():
        path = str(tmp_path / name)
        write(path)
        with pytest.raises((TypeError, ValueError), match=f"class_weight file '{path}'"):
            DualFocalLoss(class_weight=path)
    ok = str(tmp_path / 'ok.json')
    json.dump([1.0, 2, 0.5], open(ok, 'w'))
    assert DualFocalLoss(class_weight=ok).class_weight.tolist() == [1.0, 2.0, 0.5]


# ------------------------------------------------ half-precision element maps
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('use_sigmoid', [True, False])
def test_half_logits_give_a_float32_map_computed_in_float32(dtype, use_sigmoid, backend):
    if backend == 'cpu':
        pytest.skip("the C kernel computes sums only: 'none' maps run on the reference")
    torch.manual_seed(0)
    if use_sigmoid:
        logits, labels = (6 * torch.randn(64, 5)).to(dtype), torch.randint(0, 6, (64, ))
    else:
        logits, labels = (6 * torch.randn(2, 5, 4, 4)).to(dtype), torch.randint(0, 5, (2, 4, 4))
    out = dual_focal_loss(logits, labels, use_sigmoid=use_sigmoid, reduction='none')
    exact = dual_focal_loss(logits.double(), labels, use_sigmoid=use_sigmoid, reduction='none')
    assert out.dtype == torch.float32
    rel = ((out.double() - exact).abs() / exact.abs().clamp(min=1e-30)).max()
    assert rel < 1e-4, float(rel)


# ------------------------------------------------ one odd call, one fallback
def test_zero_class_scores_do_not_switch_the_c_kernel_off(switch, monkeypatch):
    from dfl_mm.ops import cpu
    if cpu.unavailable() is not None:
        pytest.skip(cpu.unavailable())
    monkeypatch.setattr(ops, '_failed', {})
    empty = torch.randn(5, 0)
    switch('cpu')
    assert float(dual_focal_loss(empty, torch.zeros(5, dtype=torch.long))) == 0.0
    switch('auto')
    dual_focal_loss(empty, torch.zeros(5, dtype=torch.long))
    # a call the kernel refuses routes that call only: the kernel stays on
    refused = []

    def refuse(*args):
        refused.append(1)
        raise ops.CallRefused('dfl_mm CPU kernel: refused its arguments (status 2)')

    monkeypatch.setattr(cpu, 'forward', refuse)
    scores, labels = torch.randn(8, 3), torch.randint(0, 4, (8, ))
    with pytest.warns(ops.BackendFallbackWarning, match='this call only'):
        expected = dual_focal_loss(scores, labels)
    assert refused and ops._failed == {}
    monkeypatch.undo()
    inputs = ops.LossInputs(scores.view(8, 3, 1), labels.view(8, 1, 1))
    assert ops.select(inputs, torch.tensor(2.0), True) is cpu
    torch.testing.assert_close(dual_focal_loss(scores, labels), expected)


# ------------------------------------------------ numpy integers are ints
def test_a_numpy_ignore_index_is_an_int():
    loss = DualFocalLoss(use_sigmoid=False, ignore_index=np.int64(255))
    assert type(loss.ignore_index) is int
    logits, labels = torch.randn(1, 3, 2, 2), torch.tensor([[[0, 255], [1, 2]]])
    torch.testing.assert_close(loss(logits, labels, ignore_index=np.int32(255)),
                               loss(logits, labels, ignore_index=255))


# ------------------------------------------------ the checkpoint scope
def _history_buffer_state(entries):
    """A HistoryBuffer whose pickled statistics_methods dict holds ``entries``
    (pickle opcodes pushing key, value)."""
    hb = glob('mmengine.logging.history_buffer', 'HistoryBuffer')
    return (b'\x80\x02' + hb + b')\x81' + b'}' + text('statistics_methods') + b'}' + b'('
            + b''.join(entries) + b'u' + b'sb.')


def _stat(name):
    return (glob('__builtin__', 'getattr') + glob('mmengine.logging.history_buffer',
                                                  'HistoryBuffer') + text(name) + b'\x86R')


SCOPE_PAYLOADS = {
    # a rebinding plus a non-string key: sorting the keys raised before the undo
    'mixed keys': _history_buffer_state([text('mean') + _stat('max'),
                                         b'J' + (7).to_bytes(4, 'little') + _stat('min')]),
    'int key only': _history_buffer_state([b'J' + (1).to_bytes(4, 'little') + _stat('min')]),
    # a tuple key holding a list: unhashable, raised while unpickling the dict
    'unhashable key': (b'\x80\x02' + b'}' + b'(' + b'(' + b']' + b't' + text('x') + b'u.'),
    # statistics_methods as a list: dict.update applies 'mean' -> max, then raises
    # inside __setstate__ on the malformed second entry
    'raises in __setstate__': (
        b'\x80\x02' + glob('mmengine.logging.history_buffer', 'HistoryBuffer') + b')\x81'
        + b'}' + text('statistics_methods') + b']' + b'('
        + text('mean') + _stat('max') + b'\x86' + text('x') + b'\x85' + b'e' + b's' + b'b.'),
}


@pytest.mark.parametrize('payload', sorted(SCOPE_PAYLOADS))
def test_nothing_a_checkpoint_holds_changes_process_state(tmp_path, payload):
    from mmengine.logging.history_buffer import HistoryBuffer
    path = str(tmp_path / 'crafted.pth')
    write_checkpoint(path, SCOPE_PAYLOADS[payload])
    methods = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(Exception) as raised:
        with mmengine_checkpoint_loading():
            torch.load(path, weights_only=True)
    assert HistoryBuffer._statistics_methods == methods  # undone, whatever was raised
    assert all(HistoryBuffer._statistics_methods[k] is v for k, v in methods.items())
    assert isinstance(raised.value, pickle.UnpicklingError), repr(raised.value)
    if payload in ('mixed keys', 'int key only', 'raises in __setstate__'):
        assert 'refused' in str(raised.value)
        if payload != 'raises in __setstate__':
            assert '<a int key>' in str(raised.value)


# ------------------------------------------------ the README's snippet on a demo
DEMO_CONFIGS = sorted(p.name for p in (ROOT / 'configs' / 'demo').glob('*.py'))


@pytest.mark.slow  # a fresh interpreter per framework, every demo's data generated
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_the_readme_snippet_in_a_config_inheriting_each_demo_builds_its_data(scope, tmp_path):
    """``custom_imports = dict(imports=['dfl_mm'])`` alone (no project tool) makes each
    demo's datasets and metric known: one fresh interpreter per framework builds every
    demo of it (the first through dfl_mm's stand-in), from another folder."""
    demos = []
    for demo in DEMO_CONFIGS:
        config = tmp_path / f'mine_{demo}'
        config.write_text(f"_base_ = {str(ROOT / 'configs' / 'demo' / demo)!r}\n"
                          "custom_imports = dict(imports=['dfl_mm'], allow_failed_imports=False)\n")
        demos.append(str(config))
    script = (
        'import sys; from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'for path in sys.argv[2:]:\n'
        '    cfg = Config.fromfile(path)\n'
        '    if cfg.default_scope != sys.argv[1]:\n'
        '        continue\n'
        '    init_default_scope(cfg.default_scope)\n'
        '    scope = __import__(cfg.default_scope + ".registry", fromlist=["DATASETS"])\n'
        '    for key in ("train_dataloader", "val_dataloader"):\n'
        '        ds = scope.DATASETS.build(cfg[key].dataset)\n'
        '        assert len(ds) > 0\n'
        '    if cfg.get("val_evaluator"):\n'
        '        scope.METRICS.build(cfg.val_evaluator)\n'
        '    print("built", path.rsplit("/", 1)[1], type(ds).__name__)\n')
    proc = subprocess.run([sys.executable, '-c', script, scope, *demos], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = [line.split() for line in proc.stdout.splitlines() if line.startswith('built ')]
    assert {name for _, name, _ in built} == {
        f'mine_{demo}' for demo in DEMO_CONFIGS
        if demo.startswith(('retinanet', 'rtmdet')) == (scope == 'mmdet')}
    assert all(kind.startswith('DFL') for _, _, kind in built), built
    assert 'prefix is not set' not in proc.stderr  # the demo metric is quiet


# ------------------------------------------------ threads that cannot oversubscribe
def test_cpu_runs_pick_the_free_cores_and_say_so(monkeypatch, capsys):
    from dfl_mm.apis import launch
    if torch.cuda.is_available():
        pytest.skip('a GPU host keeps torch\'s threads')
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(launch, '_threads_chosen', None)
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
        cores = len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, 'getloadavg', lambda: (cores + 3.0, 0.0, 0.0))
        assert launch.choose_cpu_threads() == 1 and torch.get_num_threads() == 1
        assert 'CPU run with 1 torch thread(s)' in capsys.readouterr().out
        monkeypatch.setattr(launch, '_threads_chosen', None)
        monkeypatch.setattr(os, 'getloadavg', lambda: (0.0, 0.0, 0.0))
        assert launch.choose_cpu_threads() == cores
        monkeypatch.setattr(launch, '_threads_chosen', None)
        monkeypatch.setenv('OMP_NUM_THREADS', '1')
        assert launch.choose_cpu_threads() is None  # the user's choice stands
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------ messages that are not failures
def test_the_benchmark_profiler_noise_is_filtered(capfd):
    from measure import peak_extra_bytes
    peak_extra_bytes(lambda: torch.randn(1000).sum(), 'cpu')
    err = capfd.readouterr().err
    assert 'USDT' not in err and 'gpuGetDeviceCount' not in err


# ------------------------------------------------ benchmark_loss --quick
@pytest.mark.slow  # runs the benchmark
def test_benchmark_loss_states_its_limits_and_has_a_quick_mode():
    script = str(ROOT / 'tools' / 'benchmarks' / 'benchmark_loss.py')
    help_text = subprocess.run([sys.executable, script, '--help'], capture_output=True,
                               text=True, timeout=120).stdout
    assert '--quick' in help_text and '>= 9' in help_text and 'default: 9' in help_text
    proc = subprocess.run([sys.executable, script, '--repeats', '3'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and 'got 3' in proc.stderr and '--quick' in proc.stderr
    proc = subprocess.run([sys.executable, script, '--quick', '--threads', '1', '--only',
                           'softmax'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'median of 3' in proc.stdout and 'DFL softmax' in proc.stdout
    assert 'USDT' not in proc.stderr
