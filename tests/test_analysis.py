"""The plotting tools and the efficacy benchmark, on small inputs."""
import json
import sys

import pytest
from PIL import Image

from testkit import ROOT, link_data, read_scalars, tool

pytestmark = pytest.mark.slow  # trains the demos for the analysis tools


def _check_png(path, min_side=300):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == 'PNG' and min(img.size) >= min_side


def test_plot_loss_shapes_writes_an_image(tmp_path):
    plot_loss_shapes = tool('analysis/plot_loss_shapes')
    plot_loss_shapes.main(['--out', str(tmp_path / 'shapes.png'), '--gammas', '1', '3'])
    _check_png(tmp_path / 'shapes.png')


def _fake_work_dir(root, per_class):
    vis = root / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for it in range(10, 110, 10):
            entry = dict(iter=it, loss=1.0 / it, loss_cls=0.5 / it, gamma=2.0 + it / 100)
            if per_class:
                entry.update(gamma_min=1.8 + it / 200, gamma_max=2.2 + it / 50)
            f.write(json.dumps(entry) + '\n')
        f.write(json.dumps({'coco/bbox_mAP': 0.1, 'step': 12}) + '\n')
    return root


@pytest.mark.parametrize('suffix', ['png', 'svg'])
def test_plot_gamma_reads_work_dirs(tmp_path, suffix):
    plot_gamma = tool('analysis/plot_gamma')
    a = _fake_work_dir(tmp_path / 'a', per_class=False)
    b = _fake_work_dir(tmp_path / 'b', per_class=True)
    series = plot_gamma.read_scalars(str(b))
    assert series['gamma'][0][:2] == [10, 20] and 'gamma_min' in series
    out = tmp_path / f'gamma.{suffix}'
    plot_gamma.main([str(a), str(b), '--out', str(out), '--labels', 'scalar', 'per-class'])
    if suffix == 'png':
        _check_png(out)
    else:
        assert out.read_text().lstrip().startswith('<?xml') and out.stat().st_size > 5000


def test_plot_gamma_explains_missing_gamma(tmp_path):
    plot_gamma = tool('analysis/plot_gamma')
    vis = tmp_path / 'w' / '1' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(json.dumps(dict(iter=1, loss=1.0)) + '\n')
    with pytest.raises(SystemExit, match='DFLStepHook'):
        plot_gamma.main([str(tmp_path / 'w'), '--out', str(tmp_path / 'x.png')])
    with pytest.raises(SystemExit, match='is it an mmengine work dir'):
        plot_gamma.main([str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x.png')])


def test_efficacy_benchmark_smoke(in_tmp, shared_data):
    benchmark_efficacy = tool('benchmarks/benchmark_efficacy')
    link_data(shared_data, in_tmp)
    out = in_tmp / 'efficacy.md'
    argv = ['--tasks', 'det', 'seg', '--losses', 'focal', 'DFL learnable', 'DFL sigmoid alpha',
            '--seeds', '0', '--det-epochs', '1', '--seg-iters', '2', '--subset', '8',
            '--out', str(out), '--work-dir', str(in_tmp / 'eff')]
    records = benchmark_efficacy.main(argv)
    # 'DFL sigmoid alpha' is a segmentation-only row
    assert [(r['task'], r['loss']) for r in records] == [
        ('det', 'focal'), ('det', 'DFL learnable'),
        ('seg', 'focal'), ('seg', 'DFL learnable'), ('seg', 'DFL sigmoid alpha')]
    table = out.read_text()
    for needle in ('| focal |', '| DFL learnable |', '| DFL sigmoid alpha |', 'triangle AP',
                   'dot IoU', 'bbox mAP', 'mIoU'):
        assert needle in table
    dfl = [r for r in records if r['loss'] == 'DFL learnable']
    assert all(r['gamma'] is not None and r['gamma'] != 2.0 for r in dfl)
    assert all(r['seconds'] > 0 for r in records)
    # every run logs into its own work dir (what plot_gamma reads)
    for r in records:
        run_dir = in_tmp / 'eff' / r['task'] / r['loss'].replace(' ', '_') / 'seed0'
        assert read_scalars(run_dir)
    # --reuse keeps finished runs (same budget) instead of training again; a new
    # budget trains again, and records.json keeps the runs of both budgets
    assert benchmark_efficacy.main(argv + ['--reuse']) == records
    longer = benchmark_efficacy.main(argv + ['--reuse', '--tasks', 'seg', '--seg-iters', '3'])
    assert [r['budget'] for r in longer] == ['3 iterations'] * 3
    kept = json.loads((in_tmp / 'eff' / 'records.json').read_text())
    assert len(kept) == 8 and all(r in kept for r in records + longer)


def test_efficacy_records_are_never_half_written(tmp_path):
    """A study's runs survive a write that fails midway (what a crash or a reader of a
    running study would otherwise meet: half a JSON file)."""
    benchmark_efficacy = tool('benchmarks/benchmark_efficacy')
    path = str(tmp_path / 'records.json')
    run = dict(task='det', loss='focal', seed=0, budget='1 epochs', metrics={})
    benchmark_efficacy.write_records(path, [run], [])
    before = (tmp_path / 'records.json').read_text()
    with pytest.raises(TypeError, match='not JSON serializable'):
        benchmark_efficacy.write_records(path, [dict(run, seed=1, metrics=object())], [run])
    assert (tmp_path / 'records.json').read_text() == before
    assert json.loads(before) == [run]


def test_efficacy_benchmark_long_tail_tasks_and_lanes(in_tmp, shared_data):
    """The long-tail tasks report head and tail halves; the peers mmdet / mmseg lack
    run (EFL, CE with the adaptive weights); --summarise-only merges the lanes."""
    benchmark_efficacy = tool('benchmarks/benchmark_efficacy')
    link_data(shared_data, in_tmp)
    common = ['--seeds', '0', '--det-epochs', '1', '--seg-iters', '2', '--subset', '8']
    det = benchmark_efficacy.main(['--tasks', 'det-lt', '--losses', 'EFL', 'CE + weights',
                                   '--work-dir', 'eff/lane_a', '--out', 'a.md'] + common)
    seg = benchmark_efficacy.main(['--tasks', 'seg-lt', '--losses', 'CE + weights',
                                   'DFL learnable + effective', '--work-dir', 'eff/lane_b',
                                   '--out', 'b.md'] + common)
    # 'CE + weights' is a segmentation-only row
    assert [(r['task'], r['loss']) for r in det + seg] == [
        ('det-lt', 'EFL'), ('seg-lt', 'CE + weights'), ('seg-lt', 'DFL learnable + effective')]
    assert all('IoU.plus' in r['metrics'] for r in seg)
    merged = benchmark_efficacy.main(['--summarise-only', '--work-dir', 'eff', '--out', 'all.md',
                                      '--tasks', 'det-lt', 'seg-lt'])
    assert sorted(map(json.dumps, merged)) == sorted(map(json.dumps, det + seg))
    table = (in_tmp / 'all.md').read_text()
    for needle in ('**det-lt**, 1 epochs', '**seg-lt**, 2 iterations', 'head AP', 'tail AP',
                   'tail IoU > 0', 'rarest IoU', '| EFL |', '| DFL learnable + effective |'):
        assert needle in table


def test_class_weights_counts_the_training_set_of_seg_and_det_configs(tmp_path, monkeypatch,
                                                                     shared_data):
    import numpy as np
    import torch

    from dfl_mm import DualFocalLoss
    from dfl_mm.models.adaptive import frequency_weights

    class_weights = tool('analysis/class_weights')
    monkeypatch.chdir(tmp_path)
    link_data(shared_data, tmp_path)
    seg_cfg = str(ROOT / 'configs' / 'demo' / 'deeplabv3_r18_dfl_demo.py')
    classes, counts, weights = class_weights.main(
        [seg_cfg, '--out', 'seg.npy', '--cfg-options', 'train_dataloader.dataset.indices=12'])
    # the same counts straight from the label files (255 = ignored)
    files = sorted((tmp_path / 'data' / 'dfl_demo_seg' / 'ann_dir' / 'train').glob('*.png'))
    direct = sum(np.bincount(np.asarray(Image.open(f)).reshape(-1), minlength=256)[:4]
                 for f in files[:12])
    assert classes == ('background', 'blob', 'line', 'dot')
    assert counts.tolist() == direct.tolist()
    np.testing.assert_allclose(np.load('seg.npy'), frequency_weights(torch.tensor(direct)),
                               rtol=1e-6)
    assert weights[2] > weights[1] > weights[0]  # rarer class, larger weight
    # the file is a valid static class_weight
    loss = DualFocalLoss(use_sigmoid=False, class_weight='seg.npy', num_classes=4)
    assert loss.class_weight.tolist() == pytest.approx(weights.tolist())

    # the static demo variant holds what the tool prints for the whole training set
    from mmengine.config import Config
    _, _, full = class_weights.main([seg_cfg, '--out', 'full.npy'])
    static = Config.fromfile(str(ROOT / 'configs' / 'demo' / 'deeplabv3_r18_dfl-static_demo.py'))
    np.testing.assert_allclose(static.model.decode_head.loss_decode.class_weight, full,
                               atol=1e-4)

    det_cfg = str(ROOT / 'configs' / 'demo' / 'retinanet_r18_dfl_demo.py')
    _, det_counts, _ = class_weights.main([det_cfg, '--out', 'det.npy', '--apply-to', 'row'])
    ann = json.load(open(tmp_path / 'data' / 'dfl_demo_det' / 'annotations' / 'train.json'))
    kept = {img['id'] for img in ann['images']}
    direct = np.bincount([a['category_id'] for a in ann['annotations'] if a['image_id'] in kept],
                         minlength=len(ann['categories']) + 1)
    cat_ids = sorted(c['id'] for c in ann['categories'])
    assert det_counts.tolist() == [int(direct[i]) for i in cat_ids]
    freq = det_counts / det_counts.sum()
    assert float((freq * np.load('det.npy')).sum()) == pytest.approx(1.0, rel=1e-5)


def test_adaptive_step_time_arms_differ_in_the_weights_only():
    """The two arms of adaptive_step_time.py: the demo's loss without class weights and
    with adaptive ones (both demos ship adaptive weights: comparing the config with
    itself would measure nothing)."""
    from mmengine.config import Config

    from dfl_mm import DualFocalLoss

    adaptive_step_time = tool('analysis/adaptive_step_time')
    for config, *heads in adaptive_step_time.DEMOS.values():
        cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / config))
        arms = adaptive_step_time.arms(cfg, heads)
        for head in heads:
            key = 'loss_cls' if head == 'bbox_head' else 'loss_decode'
            losses = {name: arm.model[head][key].to_dict() for name, arm in arms.items()}
            built = {name: DualFocalLoss(**{k: v for k, v in loss.items() if k != 'type'})
                     for name, loss in losses.items()}
            assert built['without'].adaptive is None and built['with'].adaptive is not None
            differs = {k for k in set(losses['with']) | set(losses['without'])
                       if losses['with'].get(k) != losses['without'].get(k)}
            assert differs == {'class_weight'}, differs


def test_module_ab_prints_one_hash_per_configuration_and_is_repeatable():
    import subprocess
    script = str(ROOT / 'tools' / 'analysis' / 'module_ab.py')
    runs = [subprocess.run([sys.executable, script, str(ROOT)], capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    lines = runs[0].stdout.splitlines()
    assert len(lines) == 15 and lines[-1].startswith('ALL ')
    assert runs[0].stdout == runs[1].stdout  # bit for bit: the A/B means something
