"""tools/test.py on par with mmdet's and mmseg's: --show-dir, --tta, --out (.pkl
and mmseg's folder), checkpoints by URL; on the demo configs, real runners."""
import functools
import glob
import http.server
import os
import subprocess
import sys
import threading

import pytest

from testkit import ROOT, link_data, tool

pytestmark = pytest.mark.slow  # trains and tests real models

DET = str(ROOT / 'configs' / 'demo' / 'retinanet_r18_dfl_demo.py')
SEG = str(ROOT / 'configs' / 'demo' / 'deeplabv3_r18_dfl_demo.py')
DET_SMALL = ['train_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=4',
             'val_dataloader.dataset.indices=4', 'train_dataloader.batch_size=4',
             'model.test_cfg.score_thr=0.001']
SEG_SMALL = ['train_dataloader.dataset.indices=8', 'test_dataloader.dataset.indices=3',
             'val_dataloader.dataset.indices=3', 'train_dataloader.batch_size=4']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, shared_data):
    """One checkpoint of each demo, trained for a moment."""
    train_tool = tool('train')
    root = tmp_path_factory.mktemp('trained')
    link_data(shared_data, root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train_tool.main([DET, '--work-dir', str(root / 'det'), '--cfg-options', *DET_SMALL,
                         'train_cfg.max_epochs=1', 'train_cfg.val_interval=100'])
        train_tool.main([SEG, '--work-dir', str(root / 'seg'), '--cfg-options', *SEG_SMALL,
                         'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                         'default_hooks.checkpoint.interval=2'])
    finally:
        os.chdir(cwd)
    return dict(root=root, det=str(root / 'det' / 'epoch_1.pth'),
                seg=str(root / 'seg' / 'iter_2.pth'))


def _test(trained, in_tmp, kind, *flags, work='test', options=()):
    test_tool = tool('test')
    link_data(trained['root'], in_tmp)
    config, small = (DET, DET_SMALL) if kind == 'det' else (SEG, SEG_SMALL)
    return test_tool.main([config, trained[kind], '--work-dir', str(in_tmp / work), *flags,
                           '--cfg-options', *small, *options])


def test_help_lists_the_mmdet_and_mmseg_flags():
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'test.py'), '--help'],
                          capture_output=True, text=True, timeout=120)
    for flag in ('--show', '--show-dir', '--wait-time', '--tta', '--out', 'URL'):
        assert flag in proc.stdout, flag


def test_show_dir_writes_painted_predictions(trained, in_tmp):
    _test(trained, in_tmp, 'det', '--show-dir', 'painted')
    assert len(glob.glob(str(in_tmp / 'test' / '*' / 'painted' / '*.*'))) == 4
    # both tasks: a relative folder lands under the work dir, never in the cwd
    _test(trained, in_tmp, 'seg', '--show-dir', 'seg_painted', work='seg')
    assert len(glob.glob(str(in_tmp / 'seg' / 'seg_painted' / '**' / '*.png'),
                         recursive=True)) == 3
    assert not (in_tmp / 'seg_painted').exists() and not (in_tmp / 'painted').exists()
    _test(trained, in_tmp, 'seg', '--show-dir', str(in_tmp / 'abs'), work='seg')
    assert len(glob.glob(str(in_tmp / 'abs' / '**' / '*.png'), recursive=True)) == 3


def test_tta_runs_with_the_configs_tta_model(trained, in_tmp):
    metrics = _test(trained, in_tmp, 'det', '--tta')
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    metrics = _test(trained, in_tmp, 'seg', '--tta', work='seg')
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_tta_without_a_tta_pipeline_is_mmdets_default_or_a_clear_error(trained, in_tmp):
    none = ['tta_model=None', 'tta_pipeline=None']
    with pytest.warns(UserWarning, match='no tta_pipeline in the config'):
        metrics = _test(trained, in_tmp, 'det', '--tta', options=none)
    assert 'coco/bbox_mAP' in metrics
    with pytest.raises(SystemExit, match='--tta needs tta_model and tta_pipeline'):
        _test(trained, in_tmp, 'seg', '--tta', options=none)


def test_out_takes_a_pkl_or_mmsegs_folder(trained, in_tmp):
    _test(trained, in_tmp, 'det', '--out', str(in_tmp / 'det.pkl'))
    assert (in_tmp / 'det.pkl').stat().st_size > 0
    metrics = _test(trained, in_tmp, 'seg', '--out', str(in_tmp / 'pred'), work='seg')
    assert len(list((in_tmp / 'pred').glob('*.png'))) == 3 and 'mIoU' in metrics
    with pytest.raises(SystemExit, match='--out must be a .pkl file for mmdet configs'):
        _test(trained, in_tmp, 'det', '--out', str(in_tmp / 'folder'))


def test_checkpoint_by_url(trained, in_tmp, monkeypatch):
    folder = os.path.dirname(trained['det'])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv('TORCH_HOME', str(in_tmp / 'torch_home'))  # the download cache
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/epoch_1.pth'
        by_url = _test(dict(trained, det=url), in_tmp, 'det', work='url')
    finally:
        server.shutdown()
    assert by_url == _test(trained, in_tmp, 'det', work='file')
    test_tool = tool('test')
    with pytest.raises(SystemExit, match='checkpoint not found: nope.pth'):
        test_tool.main([DET, 'nope.pth'])
