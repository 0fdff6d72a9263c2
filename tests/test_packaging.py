"""OpenMMLab-native distribution: the wheel ships configs, tools and the model
index (dfl_mm/.mim), `mim train` and the console entry points run from an
installed (not editable) copy, and the model-zoo metadata is complete."""
import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from testkit import ROOT, link_data

pytestmark = pytest.mark.slow  # builds and installs wheels

CONFIG_FOLDERS = sorted(p.parent.name for p in (ROOT / 'configs').glob('*/*.py')
                        if p.parent.name != '_base_')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The wheel built from a copy of the checkout, installed into a folder."""
    tmp = tmp_path_factory.mktemp('wheel')
    source = tmp / 'src'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'work_dirs', 'data', '__pycache__', '*.egg-info', '.mim'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', '-w', str(tmp / 'dist'), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = glob.glob(str(tmp / 'dist' / 'dfl_mm-*.whl'))[0]
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(tmp / 'site'), wheel], check=True, capture_output=True, timeout=300)
    return dict(wheel=wheel, site=tmp / 'site')


def test_wheel_ships_configs_tools_model_index_and_license(installed):
    names = set(zipfile.ZipFile(installed['wheel']).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*')
               if p.is_file() and '__pycache__' not in p.parts}
    shipped |= {str(p.relative_to(ROOT)) for p in (ROOT / 'tools').rglob('*.py')}
    missing = {f'dfl_mm/.mim/{name}' for name in shipped} - names
    assert not missing, sorted(missing)[:10]
    for name in ('dfl_mm/.mim/model-index.yml', 'dfl_mm/ops/csrc/dfl_cpu.c',
                 'dfl_mm-0.1.0.dist-info/licenses/LICENSE', 'dfl_mm/.mim/tools/install.sh'):
        assert name in names, name
    assert not [n for n in names if '__pycache__' in n]
    entry_points = zipfile.ZipFile(installed['wheel']).read(
        'dfl_mm-0.1.0.dist-info/entry_points.txt').decode()
    for script in ('dfl-train = dfl_mm.apis.cli:train', 'dfl-test = dfl_mm.apis.cli:test',
                   'dfl-switch = dfl_mm.apis.cli:switch',
                   'dfl-gpu-check = dfl_mm.apis.cli:gpu_check'):
        assert script in entry_points


def _env(installed):
    return dict(os.environ, PYTHONPATH=str(installed['site']), OMP_NUM_THREADS='2')


def test_python_m_runs_the_shipped_tools(installed, tmp_path):
    env = _env(installed)
    proc = subprocess.run([sys.executable, '-m', 'dfl_mm', 'switch',
                           'configs/demo/retinanet_r18_dfl_demo.py', '-o',
                           str(tmp_path / 'x.py')], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    # the shipped demo config already uses DFL: nothing to replace, and it says so
    assert proc.returncode != 0 and 'has no dense classification loss' in proc.stderr, \
        proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, '-c',
                           'import dfl_mm.apis.cli as c; print(c._root("tools"))'],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == str(installed['site'] / 'dfl_mm' / '.mim')  # not the checkout
    proc = subprocess.run([sys.executable, '-m', 'dfl_mm'], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert 'usage: python -m dfl_mm {train,test,switch,gpu-check}' in proc.stderr


@pytest.mark.skipif(shutil.which('mim', path=os.path.dirname(sys.executable)) is None,
                    reason='openmim is not installed (bash tools/install.sh --tests)')
def test_mim_train_runs_the_installed_package(installed, tmp_path, shared_data):
    link_data(shared_data, tmp_path)
    mim = os.path.join(os.path.dirname(sys.executable), 'mim')
    proc = subprocess.run(
        [mim, 'train', 'dfl_mm', 'retinanet_r18_dfl_demo.py', '--gpus', '0', '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1',
         'train_dataloader.dataset.indices=8', 'val_dataloader.dataset.indices=4',
         'test_dataloader.dataset.indices=4'],
        env=_env(installed), cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = installed['site'] / 'dfl_mm' / '.mim' / 'configs' / 'demo'
    assert f'will use {expected}/retinanet_r18_dfl_demo.py' in proc.stdout
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


def test_every_config_folder_has_a_readme_and_a_complete_metafile():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    imported = {Path(p).parent.name for p in index['Import']}
    assert imported == set(CONFIG_FOLDERS)
    for folder in CONFIG_FOLDERS:
        assert (ROOT / 'configs' / folder / 'README.md').is_file(), folder
        meta = yaml.safe_load((ROOT / 'configs' / folder / 'metafile.yml').read_text())
        collections = {c['Name'] for c in meta['Collections']}
        listed = set()
        for model in meta['Models']:
            assert model['In Collection'] in collections
            assert (ROOT / model['Config']).is_file(), model['Config']
            assert model['Name'] == Path(model['Config']).stem
            listed.add(model['Config'])
        in_folder = {f'configs/{folder}/{p.name}' for p in (ROOT / 'configs' / folder).glob('*.py')}
        assert in_folder <= listed, sorted(in_folder - listed)
        assert len(listed) == len(meta['Models']), 'a config listed twice'


# what an entry config's "Variants (...) are in configs/<folder>/" names -> file name part
VARIANT_WORDS = {'fixed gamma': 'fixed', 'fixed': 'fixed', 'per-class gamma': 'perclass',
                 'per-class': 'perclass', 'R18': 'r18', 'CE + DFL': 'ce-dfl',
                 'ADE20K': 'ade20k', 'no class weights': 'noweights',
                 'adaptive weights': 'weights',
                 'learnable gamma': 'learnable', 'LVIS': 'lvis'}


def test_entry_configs_name_only_variants_that_exist():
    import re
    for config in sorted((ROOT / 'configs').glob('*.py')):
        text = ' '.join(line.lstrip('# ') for line in config.read_text().splitlines()
                        if line.startswith('#'))
        match = re.search(r'Variants \(([^)]*)\) are in (configs/[\w.]+)/', text)
        assert match, f'{config.name}: no "Variants (...) are in configs/<folder>/" line'
        folder = ROOT / match.group(2)
        names = [p.name for p in folder.glob('*.py')]
        for word in re.split(r',\s*|/', match.group(1)):
            word = word.strip()
            part = VARIANT_WORDS.get(word, VARIANT_WORDS.get(word + ' gamma'))
            assert part, f'{config.name}: unknown variant {word!r}'
            assert any(part in name for name in names), f'{config.name}: no {word} in {folder}'
